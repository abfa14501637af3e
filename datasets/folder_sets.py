"""High-resolution, folder-backed data sets of RODEO's Table 1 and the EOE paper: manual downloads.

Nothing here downloads: the user puts the files under ``$BENCH_DATA`` in the layout below (a missing or
incomplete tree raises :class:`bench.errors.BadInput` naming the path, the layout and the source, before a
run writes anything). Images are read with PIL, converted to RGB and resized to 224 x 224 (the papers'
resolution, RODEO Sec. 5), eps 2/255 (docs/design.md: high resolution).

Anomaly sets (MVTec AD's protocol): per category, ``train/good/`` holds the normal training images,
``test/good/`` the normal test images and every other ``test/<finding>/`` folder anomalies. Novelty
detection has one cell per category: train on the category's good images, test its good images
(inliers) against its anomalies (outliers).

- ``mvtec``: ``mvtec/<category>/{train/good, test/good, test/<defect>}/*.png``, the official MVTec AD
  release (Bergmann et al. 2019) unpacked as it comes, 15 categories.
- ``headct``, ``brainmri``, ``tumor``, ``covid19``: one category each, ``<name>/{train/good, test/good,
  test/<finding>}/*``. The sources ship flat folders or a label file, not this split: the user makes it
  (RODEO Sec. 5 and its public code take normal images for training and test normal vs abnormal).

Class-folder sets: ``imagenet30``: ``imagenet30/{train,test}/<class>/**/*.{jpg,jpeg,png}``, the 30-class
ImageNet subset of Hendrycks et al. (2019b) (their ``one_class_train`` / ``one_class_test`` renamed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.errors import BadInput
from bench.registry import register_dataset

from .base import ImageDataset, default_eps
from .sources import data_root

RESOLUTION = 224  # RODEO Sec. 5: high-resolution sets at 224 x 224
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
GOOD = "good"

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
# Hendrycks et al. (2019b), "Using self-supervised learning can improve model robustness and uncertainty"
IMAGENET30_CLASSES = (
    "acorn",
    "airliner",
    "ambulance",
    "american_alligator",
    "banjo",
    "barn",
    "bikini",
    "digital_clock",
    "dragonfly",
    "dumbbell",
    "forklift",
    "goblet",
    "grand_piano",
    "hotdog",
    "hourglass",
    "manhole_cover",
    "mosque",
    "nail",
    "parking_meter",
    "pillow",
    "revolver",
    "rotary_dial_telephone",
    "schooner",
    "snowmobile",
    "soccer_ball",
    "stingray",
    "strawberry",
    "tank",
    "toaster",
    "volcano",
)


@dataclass
class AnomalyDataset(ImageDataset):
    """An :class:`ImageDataset` whose labels are categories and whose test images carry an anomaly flag:
    nd cells test a category's normal images against its anomalies (``bench.protocols``)."""

    test_is_anomaly: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))


@dataclass(frozen=True)
class FolderSpec:
    name: str
    title: str
    source: str
    licence: str
    kind: str  # "anomaly" or "classes"
    categories: tuple[str, ...]  # anomaly: sub-folders (empty: the set's folder is its one category)
    resolution: int = RESOLUTION

    @property
    def split_version(self) -> str:
        return f"{self.name}-folder-v1"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.categories or (self.name,)

    def layout(self, root: Path) -> str:
        base = root / self.name
        if self.kind == "classes":
            return f"{base}/{{train,test}}/<class>/**/*.jpg|png ({len(self.categories)} class folders)"
        where = f"{base}/<category>" if self.categories else str(base)
        return f"{where}/train/good/*.png, {where}/test/good/*.png, {where}/test/<finding>/*.png"


FOLDER_SPECS: dict[str, FolderSpec] = {
    spec.name: spec
    for spec in (
        FolderSpec(
            "mvtec",
            "MVTec AD",
            "https://www.mvtec.com/company/research/datasets/mvtec-ad (Bergmann et al. 2019)",
            "CC BY-NC-SA 4.0",
            "anomaly",
            MVTEC_CATEGORIES,
        ),
        FolderSpec(
            "headct",
            "Head CT - hemorrhage",
            "https://www.kaggle.com/dsv/152137 (Kitamura 2018)",
            "as stated on the Kaggle page",
            "anomaly",
            (),
        ),
        FolderSpec(
            "brainmri",
            "Brain tumor classification (MRI)",
            "https://www.kaggle.com/dsv/1183165 (Bhuvaji et al. 2020)",
            "as stated on the Kaggle page",
            "anomaly",
            (),
        ),
        FolderSpec(
            "tumor",
            "Brain tumor MRI dataset (Tumor Detection)",
            "https://www.kaggle.com/dsv/2645886 (Nickparvar 2021)",
            "as stated on the Kaggle page",
            "anomaly",
            (),
        ),
        FolderSpec(
            "covid19",
            "COVID-19 image data collection",
            "https://github.com/ieee8023/covid-chestxray-dataset (Cohen et al. 2020)",
            "per image, as listed in the repository's metadata",
            "anomaly",
            (),
        ),
        FolderSpec(
            "imagenet30",
            "ImageNet-30",
            "https://github.com/hendrycks/ss-ood (Hendrycks et al. 2019b; images from ImageNet)",
            "ImageNet terms of access (non-commercial research)",
            "classes",
            IMAGENET30_CLASSES,
        ),
    )
}


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _category_dir(spec: FolderSpec, root: Path, category: str) -> Path:
    return root / spec.name / category if spec.categories else root / spec.name


def _missing(spec: FolderSpec, root: Path) -> str | None:
    """The first required folder that is absent or holds no image, or None when the tree is complete."""
    if spec.kind == "classes":
        for part in ("train", "test"):
            for name in spec.categories:
                folder = root / spec.name / part / name
                if not _images_in(folder, recursive=True):
                    return str(folder)
        return None
    for category in spec.classes:
        base = _category_dir(spec, root, category)
        for folder in (base / "train" / GOOD, base / "test" / GOOD):
            if not _images_in(folder):
                return str(folder)
        findings = [d for d in sorted((base / "test").glob("*")) if d.is_dir() and d.name != GOOD]
        if not any(_images_in(d) for d in findings):
            return f"{base / 'test'}/<finding>"
    return None


def require_present(name: str, root: str | Path | None = None) -> Path:
    """Cheap check of the whole tree (file listing only); BadInput naming the missing folder, the layout
    and the source."""
    spec = FOLDER_SPECS[name]
    root = data_root(root)
    missing = _missing(spec, root)
    if missing is not None:
        raise BadInput(
            f"{name}: {missing} is missing or holds no image; expected layout {spec.layout(root)} "
            f"(manual download: {spec.source}; data root {root}, $BENCH_DATA)"
        )
    return root / spec.name


def is_present(name: str, root: str | Path | None = None) -> bool:
    return _missing(FOLDER_SPECS[name], data_root(root)) is None


def read_images(paths: list[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: PIL RGB, resized with antialiasing (bilinear)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize

    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            images[i] = resize(pil_to_tensor(image.convert("RGB")), [size, size], antialias=True)
    return images.to(torch.float32).div_(255.0)


def _listing(spec: FolderSpec, root: Path) -> dict[str, list[tuple[Path, int, bool]]]:
    """Per part, (path, label, is_anomaly) of every image, in a fixed (sorted) order."""
    parts: dict[str, list[tuple[Path, int, bool]]] = {"train": [], "test": []}
    for label, category in enumerate(spec.classes):
        if spec.kind == "classes":
            for part in parts:
                folder = root / spec.name / part / category
                parts[part] += [(path, label, False) for path in _images_in(folder, recursive=True)]
            continue
        base = _category_dir(spec, root, category)
        parts["train"] += [(path, label, False) for path in _images_in(base / "train" / GOOD)]
        for folder in sorted(d for d in (base / "test").glob("*") if d.is_dir()):
            parts["test"] += [(path, label, folder.name != GOOD) for path in _images_in(folder)]
    return parts


@functools.cache
def _build(name: str, root: str) -> ImageDataset:
    spec = FOLDER_SPECS[name]
    require_present(name, root)
    parts = _listing(spec, Path(root))
    tensors = {}
    for part, rows in parts.items():
        tensors[f"{part}_images"] = read_images([path for path, _, _ in rows], spec.resolution)
        tensors[f"{part}_labels"] = torch.tensor([label for _, label, _ in rows], dtype=torch.long)
    common = dict(
        name=name,
        **tensors,
        class_names=list(spec.classes),
        class_prompts=[label.replace("_", " ") for label in spec.classes],
        split_version=spec.split_version,
        origin=f"{spec.title} ({spec.source}; {spec.licence}) from {Path(root) / name}, resized to "
        f"{spec.resolution} x {spec.resolution}",
        eps=default_eps(spec.resolution),
        notes={
            "licence": f"{spec.title}: {spec.licence}",
            "split": f"the folders' train / test; version {spec.split_version}",
            "oe": "none by default: pass --oe (e.g. tiny-imagenet)",
        },
    )
    if spec.kind == "classes":
        return ImageDataset(**common)
    anomalous = torch.tensor([flag for _, _, flag in parts["test"]], dtype=torch.bool)
    n_anomalies = np.bincount(tensors["test_labels"][anomalous].numpy(), minlength=len(spec.classes))
    common["notes"]["anomalies"] = ", ".join(
        f"{c}: {n}" for c, n in zip(spec.classes, n_anomalies, strict=True)
    )
    return AnomalyDataset(**common, test_is_anomaly=anomalous)


def _builder(name: str):
    def build() -> ImageDataset:
        return _build(name, str(data_root()))

    build.__doc__ = f"{FOLDER_SPECS[name].title}: folder-backed, manual download (bench data list)."
    build.preflight = functools.partial(require_present, name)
    return build


for _name in FOLDER_SPECS:
    register_dataset(_name)(_builder(_name))
