"""The ``digits`` dataset: scikit-learn's 8 x 8 hand-written digits with a fixed stratified split."""

from __future__ import annotations

import functools

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from bench.registry import register_dataset

from .base import ImageDataset, default_eps
from .glyph_corpus import DIGIT_WORDS
from .oe_sources import load_oe_source
from .ood_suites import digits_ood_suite

SPLIT_VERSION = "digits-v1"  # bump whenever the split below changes
IMAGE_SHAPE = (1, 8, 8)
TEST_FRACTION = 0.3
SPLIT_SEED = 0
MAX_PIXEL_VALUE = 16  # each pixel counts the ON pixels of a 4 x 4 block of a 32 x 32 bitmap
OOD_SET_SIZE = 500  # images per OOD test set (glyphs, terrain, noise)


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    bunch = load_digits()
    images = (bunch.images / MAX_PIXEL_VALUE).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    for array in (images, labels, train_idx, test_idx):
        array.flags.writeable = False
    return images, labels, train_idx, test_idx


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``load_digits()`` of the train and test images (version :data:`SPLIT_VERSION`)."""
    _, _, train_idx, test_idx = _load()
    return train_idx.copy(), test_idx.copy()


def _subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh (N, 1, 8, 8) image and (N,) label tensors for the rows ``idx``."""
    return torch.from_numpy(images[idx]).unsqueeze(1), torch.from_numpy(labels[idx])


@register_dataset("digits")
@functools.cache
def digits() -> ImageDataset:
    """scikit-learn's digits (1,797 images, 10 classes) as (N, 1, 8, 8) float32 in [0, 1], split 70/30."""
    images, labels, train_idx, test_idx = _load()
    train_images, train_labels = _subset(images, labels, train_idx)
    test_images, test_labels = _subset(images, labels, test_idx)
    return ImageDataset(
        name="digits",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=[str(digit) for digit in range(10)],
        class_prompts=[f"digit {word}" for word in DIGIT_WORDS],  # as the glyph corpus captions them
        split_version=SPLIT_VERSION,
        origin=(
            "sklearn.datasets.load_digits(): the UCI optical recognition of hand-written digits data "
            "(test part, 1,797 images), bundled with scikit-learn"
        ),
        eps=default_eps(IMAGE_SHAPE[-1]),
        # Near-distribution auxiliary outliers, as EMNIST letters are for MNIST (seed 002, Sec. 4): letters
        # and symbols of the glyph corpus. They gave ATOM clean AUROC 0.87 on osr split2 and 0.97 on nd
        # class 5, against 0.59 and 0.47 with natural-image patches (quick profile). ``--oe
        # natural-patches`` (or any source of bench.datasets.oe_sources) replaces them.
        oe_source=functools.partial(load_oe_source, "glyph-letters", shape=IMAGE_SHAPE),
        ood_suite=functools.partial(digits_ood_suite, shape=IMAGE_SHAPE, size=OOD_SET_SIZE),
        ood_set_sizes={name: OOD_SET_SIZE for name in ("glyphs", "terrain", "noise")},
        notes={
            "data": "scikit-learn load_digits(); pixel counts 0..16 divided by 16",
            "split": f"train_test_split(test_size={TEST_FRACTION}, stratify=labels, "
            f"random_state={SPLIT_SEED}); version {SPLIT_VERSION}",
            "oe": "glyph-letters: Latin letters and symbols of the glyph corpus (DejaVu/STIXGeneral fonts), "
            "no digits",
            "ood": "glyphs (matplotlib TTF fonts), terrain (matplotlib sample elevation maps), noise",
        },
    )
