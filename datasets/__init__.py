"""Dataset registry: embedded offline sets, auxiliary (OE) sources and OOD test suites.

Import name: ``bench.datasets`` (this folder is mapped to it in pyproject.toml).
"""

from bench.datasets import (
    digits,  # noqa: F401  (registers "digits")
    mnist,  # noqa: F401  (registers "mnist" and "fmnist"; data: bench data fetch)
)
from bench.datasets.base import ImageDataset, default_eps
from bench.registry import DATASETS


def load_dataset(name: str) -> ImageDataset:
    """Build (once per process) and return the registered dataset ``name``."""
    return DATASETS.get(name)()


__all__ = ["ImageDataset", "default_eps", "load_dataset"]
