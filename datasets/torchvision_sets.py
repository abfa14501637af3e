"""``cifar10``, ``cifar100`` (20 coarse superclasses), ``cifar100-fine`` and ``svhn`` through torchvision.

``bench data fetch NAME`` reads the official files with torchvision's own dataset class (which checks
each file's md5 against the value torchvision pins) from ``$BENCH_DATA/torchvision/`` (torchvision's
layout: ``cifar-10-batches-py/``, ``cifar-100-python/``, ``train_32x32.mat`` ...), downloading them
first when they are absent and the network answers within a short timeout. It converts them once into
``$BENCH_DATA/converted/<name>.npz`` (uint8 (N, 3, 32, 32), int64 labels; loaded with
``allow_pickle=False``) and ``<name>.json`` (source, md5s, counts, split, conversion version), so a run
never opens the original pickle / .mat files. The split is the official one (version ``<name>-official-v1``).

CIFAR-100's coarse labels: torchvision returns only the fine labels, so :data:`CIFAR100_SUPERCLASSES`
(the superclass table of the CIFAR-100 page, Krizhevsky 2009, by fine-class name) maps them; RODEO's
Table 3b uses the 20 superclasses for nd and osr. ``cifar100-fine`` keeps the 100 fine classes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import BadInput
from bench.registry import register_converted, register_dataset

from .base import ConvertedSet, ImageDataset, default_eps
from .oe_sources import load_oe_source
from .ood_sets import check_ood_set, declared_sizes, default_suite, ood_suite
from .sources import (
    NETWORK_TIMEOUT_S,
    _short,
    atomic_write,
    check_converted,
    converted_paths,
    data_root,
    read_record,
    sha256_file,
)

CONVERSION_VERSION = 1  # bump when the converted arrays or the record change
# The auxiliary set of OE, ATOM and GReg on CIFAR / SVHN: 80 Million Tiny Images, withdrawn in 2020; the
# field (GReg Sec. 6.1, ATOM's successors) uses the 300K Random Images of the OE authors instead. A run
# whose methods need no OE does not need the file (bench.plan.prepare_dataset).
DEFAULT_OE = "300k-random-images"
OE_NOTE = "300K Random Images (OE authors), the stand-in for the withdrawn 80 Million Tiny Images"
TORCHVISION_DIR = "torchvision"  # torchvision's root under $BENCH_DATA
IMAGE_SHAPE = (3, 32, 32)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SVHN_CLASSES = [str(digit) for digit in range(10)]  # torchvision maps the .mat label 10 to digit 0

# The 20 CIFAR-100 superclasses in the order of the official meta file's coarse_label_names, each with
# its 5 fine classes (https://www.cs.toronto.edu/~kriz/cifar.html, fine names as in the meta file).
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_FINE_CLASSES = sorted(name for members in CIFAR100_SUPERCLASSES.values() for name in members)


def coarse_of_fine(fine_names: list[str]) -> np.ndarray:
    """Superclass index of each fine class, in the order of ``fine_names`` (the meta file's)."""
    coarse = {fine: index for index, members in enumerate(CIFAR100_SUPERCLASSES.values()) for fine in members}
    unknown = [name for name in fine_names if name not in coarse]
    if unknown:
        raise BadInput(f"cifar100: fine classes {unknown} are not in the superclass table")
    return np.array([coarse[name] for name in fine_names], dtype=np.int64)


@dataclass(frozen=True)
class TorchvisionSpec:
    """A data set read by ``torchvision.datasets.<loader>`` from ``$BENCH_DATA/torchvision``."""

    name: str
    title: str
    licence: str
    loader: str  # torchvision.datasets class name
    files: str  # what the user can put under $BENCH_DATA/torchvision/ instead of downloading
    source: str
    classes: tuple[str, ...]
    train_per_class: tuple[int, ...] = ()  # the official release's counts, for dry runs on absent data
    test_per_class: tuple[int, ...] = ()
    coarse: bool = False  # cifar100: labels are the 20 superclasses
    ood: bool = True  # has the CIFAR OOD suite (bench.datasets.ood_sets)

    @property
    def split_version(self) -> str:
        return f"{self.name}-official-v1"


TORCHVISION_SPECS: dict[str, TorchvisionSpec] = {
    spec.name: spec
    for spec in (
        TorchvisionSpec(
            "cifar10",
            "CIFAR-10",
            "no licence stated (Krizhevsky 2009; free for research)",
            "CIFAR10",
            "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            tuple(CIFAR10_CLASSES),
            (5000,) * 10,
            (1000,) * 10,
        ),
        TorchvisionSpec(
            "cifar100",
            "CIFAR-100 (20 superclasses)",
            "no licence stated (Krizhevsky 2009; free for research)",
            "CIFAR100",
            "cifar-100-python.tar.gz or its extracted cifar-100-python/",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            tuple(CIFAR100_SUPERCLASSES),
            (2500,) * 20,
            (500,) * 20,
            coarse=True,
        ),
        TorchvisionSpec(
            "cifar100-fine",
            "CIFAR-100 (100 fine classes)",
            "no licence stated (Krizhevsky 2009; free for research)",
            "CIFAR100",
            "cifar-100-python.tar.gz or its extracted cifar-100-python/",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            tuple(CIFAR100_FINE_CLASSES),
            (500,) * 100,
            (100,) * 100,
        ),
        TorchvisionSpec(
            "svhn",
            "SVHN (cropped digits)",
            "non-commercial use only (Netzer et al. 2011)",
            "SVHN",
            "train_32x32.mat and test_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/",
            tuple(SVHN_CLASSES),
            (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659),  # 73,257
            (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595),  # 26,032
        ),
    )
}


def get_spec(name: str) -> TorchvisionSpec:
    if name not in TORCHVISION_SPECS:
        raise BadInput(f"unknown data set {name!r}; accepted: {', '.join(TORCHVISION_SPECS)}")
    return TORCHVISION_SPECS[name]


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _open(spec: TorchvisionSpec, folder: Path, part: str, download: bool):
    """torchvision's dataset object for ``part`` ("train" or "test"); it checks the files' md5s."""
    from torchvision import datasets

    loader = getattr(datasets, spec.loader)
    if spec.loader == "SVHN":
        return loader(str(folder), split=part, download=download)
    return loader(str(folder), train=part == "train", download=download)


def _md5s(spec: TorchvisionSpec) -> dict[str, str]:
    """The files torchvision checks for ``spec`` and the md5 it pins for each."""
    from torchvision import datasets

    loader = getattr(datasets, spec.loader)
    if spec.loader == "SVHN":
        return {filename: md5 for _, filename, md5 in (loader.split_list[p] for p in ("train", "test"))}
    pinned = {f"{loader.base_folder}/{name}": md5 for name, md5 in [*loader.train_list, *loader.test_list]}
    pinned[f"{loader.base_folder}/{loader.meta['filename']}"] = loader.meta["md5"]
    return pinned


def _read_part(dataset, spec: TorchvisionSpec) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 labels of a torchvision dataset object."""
    if spec.loader == "SVHN":
        images, labels = np.asarray(dataset.data), np.asarray(dataset.labels)
    else:
        images = np.asarray(dataset.data).transpose(0, 3, 1, 2)  # torchvision keeps CIFAR as NHWC
        labels = np.asarray(dataset.targets)
        if spec.coarse:
            labels = coarse_of_fine(list(dataset.classes))[labels]
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


def fetch(
    name: str,
    root: str | Path | None = None,
    *,
    force: bool = False,
    download: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Convert ``name`` from torchvision's files (downloaded first when absent and ``download``); returns
    the record with ``fetch_seconds`` and ``status``. Files that fail torchvision's md5 check are refused."""
    spec = get_spec(name)
    root = data_root(root)
    started = time.perf_counter()
    if not force and is_converted(name, root):
        return {**(read_record(name, root) or {}), "status": "present", "fetch_seconds": 0.0}
    folder = root / TORCHVISION_DIR
    parts = {}
    for part in ("train", "test"):
        try:
            with _socket_timeout(NETWORK_TIMEOUT_S):
                parts[part] = _read_part(_open(spec, folder, part, download), spec)
        except Exception as error:  # RuntimeError (missing / md5 mismatch), URLError, timeouts
            raise BadInput(
                f"{name}: could not read the {part} split ({_short(error, 160)}); put {spec.files} "
                f"(source {spec.source}) in {folder}/, then run `bench data fetch {name}`"
            ) from None
    log(f"{name}: converting torchvision's {spec.loader} files in {folder}")
    return {**convert(spec, root, parts, started), "status": "converted"}


def convert(
    spec: TorchvisionSpec, root: Path, parts: dict[str, tuple[np.ndarray, np.ndarray]], started: float
) -> dict[str, Any]:
    npz_path, record_path = converted_paths(spec.name, root)
    arrays = {}
    for part, (images, labels) in parts.items():
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # CIFAR does not compress well; plain npz loads several times faster
    payload = buffer.getvalue()
    atomic_write(npz_path, lambda stream: stream.write(payload))
    folder = root / TORCHVISION_DIR
    files = [
        {"path": f"{TORCHVISION_DIR}/{relative}", "md5": md5, "sha256": sha256_file(folder / relative)}
        for relative, md5 in _md5s(spec).items()
        if (folder / relative).is_file()
    ]
    per_class = {
        part: np.bincount(labels, minlength=len(spec.classes)).astype(int).tolist()
        for part, (_, labels) in parts.items()
    }
    record = {
        "dataset": spec.name,
        "title": spec.title,
        "licence": spec.licence,
        "conversion_version": CONVERSION_VERSION,
        "split_version": spec.split_version,
        "source": {
            "kind": "torchvision",
            "loader": f"torchvision.datasets.{spec.loader}",
            "description": f"{spec.title} from {spec.source}, read by torchvision.datasets.{spec.loader} "
            "(md5 of each file checked by torchvision)",
            "files": files,
        },
        "split": {"method": "official train / test split", "version": spec.split_version},
        "counts": {
            "train": int(len(parts["train"][1])),
            "test": int(len(parts["test"][1])),
            "train_per_class": per_class["train"],
            "test_per_class": per_class["test"],
        },
        "dropped": {},
        "converted": {
            "file": str(npz_path.relative_to(root)),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "bytes": len(payload),
            "arrays": {key: f"{value.dtype} {tuple(value.shape)}" for key, value in arrays.items()},
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "convert_seconds": round(time.perf_counter() - started, 2),
    }
    record["fetch_seconds"] = record["convert_seconds"]
    atomic_write(record_path, lambda stream: stream.write((json.dumps(record, indent=2) + "\n").encode()))
    return record


def require_converted(name: str, root: str | Path | None = None) -> Path:
    """``check_converted`` for the torchvision data sets; the hint names the files and their source."""
    spec = get_spec(name)
    hint = (
        f" (it downloads {spec.files} from {spec.source}, or reads them from "
        f"{data_root(root) / TORCHVISION_DIR}/)"
    )
    return check_converted(name, root, CONVERSION_VERSION, hint)


def is_converted(name: str, root: str | Path | None = None) -> bool:
    try:
        require_converted(name, root)
    except BadInput:
        return False
    return True


def verify_one(name: str, root: str | Path | None = None) -> str:
    """Re-hash the converted file against its record and the kept torchvision files against the record."""
    root = data_root(root)
    npz_path = require_converted(name, root)
    record = read_record(name, root) or {}
    actual = sha256_file(npz_path)
    if actual != record.get("converted", {}).get("sha256"):
        raise BadInput(f"{name}: {npz_path} does not match its record; run `bench data fetch {name} --force`")
    checked = 0
    for entry in record.get("source", {}).get("files", []):
        path = root / entry["path"]
        if path.is_file():
            if sha256_file(path) != entry["sha256"]:
                raise BadInput(
                    f"{name}: {path} changed since conversion; run `bench data fetch {name} --force`"
                )
            checked += 1
    return f"{name}: ok ({npz_path.name} sha256 {actual[:16]}..., {checked} source file(s) unchanged)"


def load_converted(name: str, root: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    npz_path = require_converted(name, root)
    record = read_record(name, root) or {}
    if sha256_file(npz_path) != record.get("converted", {}).get("sha256"):
        raise BadInput(f"{name}: {npz_path} does not match its record; run `bench data fetch {name} --force`")
    with np.load(npz_path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for part in ("train", "test"):
        images = arrays[f"{part}_images"]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise BadInput(f"{name}: {npz_path} holds {part} images of unexpected shape or type")
    return arrays, record


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(torch.float32).div_(255.0)


@functools.cache
def _build(name: str, root: str) -> ImageDataset:
    spec = get_spec(name)
    arrays, record = load_converted(name, root)
    return ImageDataset(
        name=name,
        train_images=_images(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]),
        test_images=_images(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"]),
        class_names=list(spec.classes),
        class_prompts=[label.replace("_", " ") for label in spec.classes],
        split_version=record["split_version"],
        origin=f"{spec.title}, {spec.licence}: {record['source']['description']}; converted to "
        f"{record['converted']['file']} under {root} (sha256 {record['converted']['sha256'][:16]}...)",
        eps=default_eps(IMAGE_SHAPE[-1]),
        oe_source=functools.partial(load_oe_source, DEFAULT_OE, shape=IMAGE_SHAPE),
        **_ood_fields(spec),
        notes={
            "licence": f"{spec.title}: {spec.licence}",
            "split": f"official; version {record['split_version']}; {record['counts']['train']} train / "
            f"{record['counts']['test']} test",
            "oe": f"{DEFAULT_OE}: {OE_NOTE}",
        },
    )


def _ood_fields(spec: TorchvisionSpec) -> dict:
    if not spec.ood:
        return {}
    names = default_suite(spec.name.split("-")[0])
    return {
        "ood_suite": functools.partial(ood_suite, names=names, shape=IMAGE_SHAPE),
        "ood_set_sizes": declared_sizes(names),
    }


def preflight(name: str, protocol: str | None = None) -> None:
    """The converted file (and with ``protocol="ood"`` every set of the OOD suite) is here, or BadInput."""
    require_converted(name)
    spec = get_spec(name)
    if protocol == "ood":
        if not spec.ood:
            raise BadInput(f"{name} has no OOD test suite; accepted: --protocol nd or osr")
        for ood_name in default_suite(name.split("-")[0]):
            check_ood_set(ood_name)


def declared_dataset(name: str) -> ImageDataset:
    """A stand-in with the official release's labels and no pixels (zero images, expanded: no memory), so a
    dry run can count cells and budgets before ``bench data fetch``; never trained or scored."""
    spec = get_spec(name)

    def labels(per_class: tuple[int, ...]) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor(per_class))

    train, test = labels(spec.train_per_class), labels(spec.test_per_class)
    return ImageDataset(
        name=name,
        train_images=torch.zeros((1, *IMAGE_SHAPE)).expand(len(train), *IMAGE_SHAPE),
        train_labels=train,
        test_images=torch.zeros((1, *IMAGE_SHAPE)).expand(len(test), *IMAGE_SHAPE),
        test_labels=test,
        class_names=list(spec.classes),
        split_version=spec.split_version,
        origin=f"{spec.title}: not fetched; counts of the official release (dry run only)",
        eps=default_eps(IMAGE_SHAPE[-1]),
        oe_source=functools.partial(load_oe_source, DEFAULT_OE, shape=IMAGE_SHAPE),
        **_ood_fields(spec),
    )


def _builder(name: str):
    def build() -> ImageDataset:
        return _build(name, str(data_root()))

    build.__doc__ = (
        f"{TORCHVISION_SPECS[name].title} as (N, 3, 32, 32) float32 in [0, 1] (bench data fetch {name})."
    )
    build.preflight = functools.partial(preflight, name)
    build.declared = functools.partial(declared_dataset, name)
    return build


for _name in TORCHVISION_SPECS:
    register_dataset(_name)(_builder(_name))


def converted_test_images(name: str, root: str | Path | None = None) -> torch.Tensor:
    """The converted test images of ``name``, (N, 3, 32, 32) float32 in [0, 1]."""
    arrays, _ = load_converted(name, root)
    return torch.from_numpy(arrays["test_images"]).float().div_(255.0)


for _name in TORCHVISION_SPECS:
    register_converted(_name)(ConvertedSet(require_converted, converted_test_images))
