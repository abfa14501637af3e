"""Dataset registry: embedded offline sets, auxiliary (OE) sources and OOD test suites.

Import name: ``bench.datasets`` (this folder is mapped to it in pyproject.toml). Every module in this
package is imported here, so adding a dataset means adding one file with ``@register_dataset``.
"""

import importlib
import pkgutil

from bench.datasets import digits  # noqa: F401  (first: listings start with the default dataset)
from bench.datasets.base import ImageDataset, default_eps
from bench.registry import DATASETS

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")


def load_dataset(name: str) -> ImageDataset:
    """Build (once per process) and return the registered dataset ``name``."""
    return DATASETS.get(name)()


__all__ = ["ImageDataset", "default_eps", "load_dataset"]
