"""``mnist`` and ``fmnist``: real 28 x 28 gray images, converted once by ``bench data fetch``.

The split (and its version) is the converted file's: the official 60,000 / 10,000 split from the IDX
files (``mnist-idx-v1``, ``fmnist-idx-v1``), or a seeded stratified 6/7 : 1/7 split of a registry mirror
(``mnist-tfjs65k-v1``, ``fmnist-npm70k-v1``). Results of different sources never share a split version.
Each builder carries ``preflight``: a cheap check (no array loading) that the converted file is there.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from bench.registry import register_dataset

from .base import ImageDataset, default_eps
from .glyph_corpus import DIGIT_WORDS
from .oe_sources import load_oe_source
from .ood_suites import glyph_set, noise_set
from .sources import SPECS, data_root, load_converted, require_converted

IMAGE_SHAPE = (1, 28, 28)
OOD_SIZE = 1000  # rendered glyphs and noise images per OOD set (the partner data set gives its test split)
PARTNER = {"mnist": "fmnist", "fmnist": "mnist"}  # each is the other's OOD test set

MNIST_CLASSES = [str(digit) for digit in range(10)]
MNIST_PROMPTS = [f"digit {word}" for word in DIGIT_WORDS]  # as the glyph corpus captions digits
FMNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FMNIST_PROMPTS = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]

# Auxiliary outliers (outlier exposure), disjoint from the OOD suite (other data set, Computer Modern
# glyphs, noise) and from the test classes: letters and symbols of the glyph corpus (DejaVu/STIX fonts),
# no digits. For MNIST they play the role EMNIST letters play in seed 002 (Sec. 4). For FMNIST they were
# measured against natural-patches (gray photo crops, the offline stand-in for the OE papers' natural
# images) on a validation split carved from the training data (1/7 of each class, 1,000 training images
# per class, OE, ci profile, seed 0, 10 nd cells): clean AUROC 0.744 for both, PGD-10 0.607 vs 0.374
# (PGD-100: 0.607 vs 0.374 on the same detectors, so not an attack-budget artefact).
OE_SOURCES = {"mnist": "glyph-letters", "fmnist": "glyph-letters"}
OE_NOTES = {
    "glyph-letters": "Latin letters and symbols of the glyph corpus (DejaVu/STIXGeneral fonts), no digits",
}

# How the CPU profiles run at 28x28 (bench.config.for_dataset; docs/design.md, "Profiles"). Network:
# tiny_cnn sees 7 px of a 28 px image; strided_cnn (the reference profile's) won on the validation split
# (20% of the training inliers held out; classes 0-2, reference profile, seed 0; held-out OE outliers, the
# selection criterion, clean / PGD-20 AUROC %): MNIST OE 100.0 / 99.8 vs 99.9 / 82.2, ATOM 100.0 / 99.4 vs
# 100.0 / 69.0; the other-classes cross-check agreed (OE 97.3 / 85.8 vs 83.7 / 8.9; ATOM 98.2 / 90.8 vs
# 84.6 / 14.7). results/network_choice/ holds the tables.
# quick: the main command (rodeo and atom, nd, every attack) must finish within 10 minutes on 2 cores. One
# cell cost 118.6 s with strided_cnn (fits 89.6 s, attacks 25.5 s) and 49.0 s with strided_cnn_lite (a
# third of the multiply-adds), 150 training images per class (RODEO generates one outlier per inlier), an
# OE pool of 2,000 and 50 test images per side. The 30 epochs / 150 steps stay: a probe at 10 epochs / 50
# steps left RODEO at 48 clean AUROC on class 0 (91-94 with 150 steps).
PROFILE_ADJUSTMENTS: dict[str, dict] = {
    "quick": {
        "network": "strided_cnn_lite",
        "max_train_per_class": 150,
        "oe_pool_size": 2000,
        "max_eval_per_side": 50,
    },
}


def preflight(name: str, protocol: str | None = None) -> None:
    """BadInput naming the missing file and ``bench data fetch NAME`` when ``name`` is not converted; with
    ``protocol="ood"`` also the partner data set (the OOD suite's real images)."""
    require_converted(name)
    if protocol == "ood":
        require_converted(PARTNER[name])


def _images(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(array).unsqueeze(1).to(torch.float32).div_(255.0)


@functools.cache
def _test_images(name: str, root: str) -> torch.Tensor:
    arrays, _ = load_converted(name, root, parts=("test",))
    return _images(arrays["test_images"])


def real_ood_suite(
    seed: int, name: str, root: str, shape: tuple[int, int, int] = IMAGE_SHAPE, size: int = OOD_SIZE
) -> list[tuple[str, torch.Tensor]]:
    """The partner data set's test split, ``size`` Computer Modern letter glyphs and ``size`` noise images
    (half uniform, half smooth blobs), each (N, *shape) float32 in [0, 1]."""
    shape = tuple(int(d) for d in shape)
    glyph_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    partner = PARTNER[name]
    return [
        (partner, _test_images(partner, root)),
        ("glyphs", glyph_set(glyph_rng, size, shape)),
        ("noise", noise_set(noise_rng, size, shape)),
    ]


@functools.cache
def _build(name: str, root: str) -> ImageDataset:
    spec = SPECS[name]
    arrays, record = load_converted(name, root)
    source = record["source"]
    counts = record["counts"]
    origin = (
        f"{spec.title}, {spec.licence}: {source['description']}; converted by bench data fetch to "
        f"{record['converted']['file']} under {root} (sha256 {record['converted']['sha256'][:16]}...)"
    )
    dropped = ", ".join(f"{key}: {value}" for key, value in record["dropped"].items()) or "none"
    oe_name = OE_SOURCES[name]
    return ImageDataset(
        name=name,
        train_images=_images(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]),
        test_images=_images(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"]),
        class_names=list(MNIST_CLASSES if name == "mnist" else FMNIST_CLASSES),
        class_prompts=list(MNIST_PROMPTS if name == "mnist" else FMNIST_PROMPTS),
        split_version=record["split_version"],
        origin=origin,
        eps=default_eps(IMAGE_SHAPE[-1]),
        oe_source=functools.partial(load_oe_source, oe_name, shape=IMAGE_SHAPE),
        ood_suite=functools.partial(real_ood_suite, name=name, root=root, shape=IMAGE_SHAPE),
        notes={
            "data": f"{source['kind']} source, {counts['read']} images read, dropped: {dropped}; uint8 / 255",
            "licence": f"{spec.title}: {spec.licence}",
            "split": f"{record['split']['method']}; version {record['split_version']}; "
            f"{counts['train']} train / {counts['test']} test",
            "oe": f"{oe_name}: {OE_NOTES[oe_name]}",
            "ood": f"{PARTNER[name]} (test split), glyphs (matplotlib Computer Modern letters), noise",
        },
    )


@register_dataset("mnist")
def mnist() -> ImageDataset:
    """MNIST as (N, 1, 28, 28) float32 in [0, 1], from ``$BENCH_DATA/converted/mnist.npz``."""
    return _build("mnist", str(data_root()))


@register_dataset("fmnist")
def fmnist() -> ImageDataset:
    """Fashion-MNIST as (N, 1, 28, 28) float32 in [0, 1], from ``$BENCH_DATA/converted/fmnist.npz``."""
    return _build("fmnist", str(data_root()))


mnist.preflight = functools.partial(preflight, "mnist")
fmnist.preflight = functools.partial(preflight, "fmnist")
mnist.profile_adjustments = fmnist.profile_adjustments = PROFILE_ADJUSTMENTS
