"""Dataset registry: embedded offline sets, auxiliary (OE) sources and OOD test suites.

Import name: ``bench.datasets`` (this folder is mapped to it in pyproject.toml).
"""

from bench.datasets import (
    digits,  # noqa: F401  (registers "digits")
    folder_sets,  # noqa: F401  (registers mvtec, headct, brainmri, tumor, covid19, imagenet30: manual)
    mnist,  # noqa: F401  (registers "mnist" and "fmnist"; data: bench data fetch)
    torchvision_sets,  # noqa: F401  (registers cifar10, cifar100, cifar100-fine, svhn; bench data fetch)
)
from bench.datasets.base import ImageDataset, default_eps
from bench.registry import DATASETS


def load_dataset(name: str) -> ImageDataset:
    """Build (once per process) and return the registered dataset ``name``."""
    return DATASETS.get(name)()


__all__ = ["ImageDataset", "default_eps", "load_dataset"]
