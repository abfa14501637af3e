"""sha256 of the data sets a user places by hand, for the run's manifest.

Downloaded and converted sets carry their pinned checksums in their records; these do not: the 300K
Random Images file and tiny-imagenet (OE sources), the folder sets (MVTec-AD, Head CT, ..., ImageNet-30)
and the OOD folders under ``$BENCH_DATA/ood/``. Planning checks only their dtype and shape, so the
manifest records what each one held (a file's sha256, or a folder's: the sha256 of its files' relative
paths and sha256s in order), and two runs on different copies can be told apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bench.datasets.folder_sets import FOLDER_SPECS
from bench.datasets.oe_sources import RANDOM_IMAGES_FILE, TINY_IMAGENET_DIR
from bench.datasets.ood_sets import OOD_DIR
from bench.datasets.sources import data_root, sha256_file

USER_OE_FILES = {"300k-random-images": RANDOM_IMAGES_FILE, "tiny-imagenet": f"{TINY_IMAGENET_DIR}/train"}


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder: its files' relative paths and sha256s, in sorted order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def user_data_paths(dataset_name: str, oe_name: str | None, ood_sets: list[str], root: Path) -> list[Path]:
    """The hand-placed files and folders a run on ``dataset_name`` reads (those present)."""
    paths = []
    if dataset_name in FOLDER_SPECS:
        paths.append(root / FOLDER_SPECS[dataset_name].name)
    if oe_name in USER_OE_FILES:
        paths.append(root / USER_OE_FILES[oe_name])
    paths += [root / OOD_DIR / name for name in ood_sets]
    return [path for path in paths if path.exists()]


def user_data_sha256(plan: Any) -> dict[str, str]:
    """{path relative to BENCH_DATA: sha256} of the hand-placed data the plan's run reads."""
    from bench.plan import default_oe_name

    root = data_root()
    ood_sets = list(plan.dataset.ood_set_sizes or {}) if plan.spec.protocol == "ood" else []
    paths = user_data_paths(plan.spec.dataset, default_oe_name(plan.dataset), ood_sets, root)
    return {str(path.relative_to(root)): tree_sha256(path) for path in paths}
