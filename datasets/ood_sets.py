"""OOD test sets of the seed tables for the CIFAR data sets, resized to the in-distribution resolution.

Suites (``ood`` protocol, one EvalSet per set):

- RODEO Table 4 (CIFAR-10 / CIFAR-100 as ID): mnist, tinyimagenet, places365, lsun, isun, birds, flowers,
  coil100 and the other CIFAR;
- ATOM Sec. 4.1 / App. C: svhn, textures, places365, lsun-crop, lsun-resize, isun (for SVHN as ID:
  cifar10 in place of svhn).

For CIFAR the default suite is their union (the data set under test is never its own OOD set); for SVHN,
ATOM's. ATOM samples 1,000 SVHN test images per class (10,000); here the whole test split is used and the
profile's ``max_eval_per_side`` caps it. ``mnist``,
``cifar10``, ``cifar100`` and ``svhn`` are the test splits converted by ``bench data fetch``; the others
``textures`` (DTD, all 5,640 images), ``flowers`` (Flowers-102 test split) and ``places365`` (10,000 of
the test split's 328,500, a fixed seeded sample, as ATOM App. C) are read through torchvision's dataset
classes from ``$BENCH_DATA/torchvision/`` (their md5 pins where torchvision has them; ``bench data fetch
textures flowers places365`` downloads them); the others are manual downloads read from
``$BENCH_DATA/ood/<name>/`` (any image files, searched recursively), each named with its source in the
error that reports it missing. Gray sets are repeated over 3 channels;
resizing is area averaging down, bilinear up (``bench.datasets.oe_sources.to_shape``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import BadInput
from bench.registry import CONVERTED

from .folder_sets import _images_in, read_images
from .oe_sources import to_shape
from .sources import data_root

OOD_DIR = "ood"


@dataclass(frozen=True)
class OODSet:
    name: str
    source: str
    size: int | None  # images in the official release (declared for dry runs); None: not fixed
    converted: bool = False  # True: a data set of ``bench data fetch`` (its test split)
    torchvision: str | None = None  # read by this torchvision.datasets class (see _torchvision_paths)
    # the terms its source states (``bench list datasets``); "" for a converted set: its own entry's
    licence: str = ""


UNSTATED = "not stated by the release; see the original images' terms"
OOD_SETS: dict[str, OODSet] = {
    s.name: s
    for s in (
        OODSet("mnist", "bench data fetch mnist (test split)", 10_000, converted=True),
        OODSet("cifar10", "bench data fetch cifar10 (test split)", 10_000, converted=True),
        OODSet("cifar100", "bench data fetch cifar100 (test split)", 10_000, converted=True),
        OODSet("svhn", "bench data fetch svhn (test split)", 26_032, converted=True),
        OODSet(
            "tinyimagenet",
            "Tiny ImageNet test images as resized by ODIN (Liang et al. 2018)",
            10_000,
            licence="ImageNet terms of access (non-commercial research)",
        ),
        OODSet(
            "places365",
            "Places365 (Zhou et al. 2017): 10,000 test images sampled as in ATOM App. C",
            10_000,
            torchvision="Places365",
            licence="Places365 terms of use (non-commercial research and education)",
        ),
        OODSet("lsun", "LSUN test images (Yu et al. 2015), as released by ODIN", 10_000, licence=UNSTATED),
        OODSet("lsun-crop", "LSUN-crop of ODIN (Liang et al. 2018)", 10_000, licence=UNSTATED),
        OODSet("lsun-resize", "LSUN-resize of ODIN (Liang et al. 2018)", 10_000, licence=UNSTATED),
        OODSet("isun", "iSUN of ODIN (Xu et al. 2015; Liang et al. 2018)", 8_925, licence=UNSTATED),
        OODSet(
            "birds",
            "CUB-200-2011 test images (Wah et al. 2011)",
            5_794,
            licence="non-commercial research and educational use (Caltech)",
        ),
        OODSet(
            "flowers",
            "Oxford Flowers-102 test images (Nilsback and Zisserman 2008)",
            6_149,
            torchvision="Flowers102",
            licence=UNSTATED,
        ),
        OODSet(
            "coil100", "COIL-100 (Nene et al. 1996)", 7_200, licence="non-commercial research (Columbia CAVE)"
        ),
        OODSet(
            "textures",
            "DTD, Describable Textures (Cimpoi et al. 2014), all 5,640 images",
            5_640,
            torchvision="DTD",
            licence="research use (images from Flickr, per the DTD page)",
        ),
    )
}
RODEO_TABLE4 = ("mnist", "tinyimagenet", "places365", "lsun", "isun", "birds", "flowers", "coil100")
ATOM_SETS = ("svhn", "textures", "places365", "lsun-crop", "lsun-resize", "isun")


def default_suite(dataset_name: str) -> tuple[str, ...]:
    """CIFAR: RODEO Table 4's sets with the other CIFAR, then ATOM's (union, in order, without
    ``dataset_name``); SVHN: ATOM's, with cifar10 for svhn."""
    if dataset_name == "svhn":
        return ("cifar10", *ATOM_SETS[1:])
    other = "cifar100" if dataset_name == "cifar10" else "cifar10"
    names = dict.fromkeys((*RODEO_TABLE4, other, *ATOM_SETS))
    names.pop(dataset_name, None)
    return tuple(names)


def _folder(name: str, root: Path) -> Path:
    return root / OOD_DIR / name


TORCHVISION_DIR = "torchvision"
PLACES_SAMPLE_SEED = 20240  # the fixed 10,000-image sample of Places365's test split (ATOM App. C)


def _torchvision_paths(name: str, root: Path, download: bool = False) -> list[Path]:
    """The image files of a torchvision-backed OOD set, listed by torchvision's own class (``loader=str``
    makes each item its path); raises what torchvision raises when files are missing or fail their md5."""
    from torchvision import datasets

    folder = str(root / TORCHVISION_DIR)
    if name == "textures":  # ATOM App. C: the entire DTD collection (train + val + test of partition 1)
        parts = [
            datasets.DTD(folder, split=s, download=download, loader=str) for s in ("train", "val", "test")
        ]
    elif name == "flowers":
        parts = [datasets.Flowers102(folder, split="test", download=download, loader=str)]
    elif name == "places365":
        parts = [datasets.Places365(folder, split="test", small=True, download=download, loader=str)]
    else:  # pragma: no cover - every torchvision set is listed above
        raise KeyError(name)
    paths = [Path(part[i][0]) for part in parts for i in range(len(part))]
    size = OOD_SETS[name].size
    if name == "places365" and size is not None and len(paths) > size:
        keep = np.sort(np.random.default_rng(PLACES_SAMPLE_SEED).choice(len(paths), size=size, replace=False))
        paths = [paths[i] for i in keep]
    return paths


def fetch_ood_set(name: str) -> list[Path]:
    """``bench data fetch`` for a torchvision-backed OOD set: download (torchvision's md5 checks) and list."""
    return _torchvision_paths(name, data_root(), download=True)


def check_ood_set(name: str, root: str | Path | None = None) -> None:
    """BadInput naming what is missing and where it goes (file listing only)."""
    spec = OOD_SETS[name]
    root = data_root(root)
    if spec.converted:
        CONVERTED.get(name).require(name, root)
        return
    if spec.torchvision is not None:
        try:
            paths = _torchvision_paths(name, root)
        except Exception as error:  # RuntimeError / OSError from torchvision: missing or corrupted
            raise BadInput(
                f"OOD set {name}: torchvision.datasets.{spec.torchvision} cannot read "
                f"{root / TORCHVISION_DIR}/ "
                f"({' '.join(str(error).split())[:120]}); run `bench data fetch {name}` or put "
                f"{spec.source} there in torchvision's layout"
            ) from None
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise BadInput(f"OOD set {name}: {len(missing)} listed image(s) are missing, e.g. {missing[0]}")
        return
    if not _images_in(_folder(name, root), recursive=True):
        raise BadInput(
            f"OOD set {name}: {_folder(name, root)}/ is missing or holds no image; put the images of "
            f"{spec.source} there (any sub-folders), or leave it out with another --protocol"
        )


def declared_sizes(names: tuple[str, ...]) -> dict[str, int] | None:
    """Name -> size for a dry run; None when a set has no fixed size."""
    sizes = {name: OOD_SETS[name].size for name in names}
    return None if any(size is None for size in sizes.values()) else sizes  # type: ignore[return-value]


@functools.cache
def _load(name: str, root: str, shape: tuple[int, int, int]) -> torch.Tensor:
    spec = OOD_SETS[name]
    if spec.converted:
        return to_shape(CONVERTED.get(name).test_images(name, root), shape)
    if spec.torchvision is not None:
        paths = _torchvision_paths(name, Path(root))
    else:
        paths = _images_in(_folder(name, Path(root)), recursive=True)
    return to_shape(read_images(paths, shape[-1]), shape)


def ood_suite(
    seed: int, names: tuple[str, ...], shape: tuple[int, int, int]
) -> list[tuple[str, torch.Tensor]]:
    """The named OOD sets, (N, *shape) float32 in [0, 1] each (``seed`` unused: the sets are fixed)."""
    root = str(data_root())
    for name in names:
        check_ood_set(name, root)
    return [(name, _load(name, root, tuple(shape))) for name in names]
