"""The dataset record that protocols consume, and helpers shared by the dataset builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.contracts import OutlierSource


@dataclass
class ImageDataset:
    """A labelled image dataset with a fixed train/test split, plus its offline outlier material.

    Images are float32 tensors in [0, 1] of shape (N, C, H, W); labels are int64 in 0..K-1.
    ``oe_source(pool_size, seed)`` returns auxiliary outliers for training (outlier exposure);
    ``ood_suite(seed)`` returns named OOD test sets, disjoint from the OE source.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    split_version: str
    origin: str
    eps: float  # default attack radius: 8/255 for <= 64 px, 2/255 above (docs/design.md)
    oe_source: Callable[[int, int], OutlierSource] | None = None
    ood_suite: Callable[[int], list[tuple[str, torch.Tensor]]] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # What each class is called in text prompts (CLIP methods, RODEO's label search), e.g. "digit seven"
    # for class "7"; None: the class names themselves.
    class_prompts: list[str] | None = None
    # Name -> size of each set ``ood_suite`` generates, declared so a dry run can count test images
    # without generating them (a test checks the declaration against the suite).
    ood_set_sizes: dict[str, int] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class ConvertedSet:
    """What other modules need of a data set converted once into ``$BENCH_DATA/converted/<name>.npz``
    (``bench data fetch``), whichever module converts it: ``require(name, root)`` returns the file or
    raises BadInput naming how to fetch it; ``test_images(name, root)`` its test images, (N, C, H, W)
    float32 in [0, 1]. Registered per name with ``bench.registry.register_converted``."""

    require: Callable[[str, str | None], Any]
    test_images: Callable[[str, str | None], torch.Tensor]


def default_eps(image_size: int) -> float:
    """docs/design.md: 8/255 for low-resolution datasets (<= 64 px), 2/255 for high-resolution ones."""
    return 8 / 255 if image_size <= 64 else 2 / 255
