"""The paper recipes' augmentation (issue 28, item 5): ATOM App. B.1 crop + flip for msp, energy and oe,
EOE App. G.1's for HSC, on the paper profile only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.config import get_profile
from bench.methods import augment as aug
from bench.paper_settings import method_profile


def test_random_crop_is_a_shift_of_the_zero_padded_image():
    x = torch.rand(16, 3, 8, 8)
    out = aug.random_crop(x, 4, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws: tops, then lefts
    tops, lefts = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        expected = padded[i, :, tops[i] : tops[i] + 8, lefts[i] : lefts[i] + 8]
        assert torch.equal(out[i], expected)
    assert out.shape == x.shape and len({(int(t), int(u)) for t, u in zip(tops, lefts, strict=True)}) > 1


def test_flip_mirrors_about_half_of_the_images():
    x = torch.rand(200, 1, 4, 4)
    out = aug.random_flip(x, torch.Generator().manual_seed(1))
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((mirrored | same).all()) and 60 < int(mirrored.sum()) < 140


@pytest.mark.parametrize("kind", ["crop_flip", "crop", "eoe"])
def test_augmentations_keep_shape_and_range_and_change_images(kind):
    x = torch.rand(32, 3, 32, 32)
    out = aug.augment(x, kind, torch.Generator().manual_seed(2))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)
    assert aug.augment(x, "", torch.Generator()) is x


@pytest.mark.parametrize(
    ("method", "dataset", "kind"),
    [
        ("msp", "cifar10", "crop_flip"),  # ATOM App. B.1
        ("energy", "cifar100", "crop_flip"),
        ("oe", "cifar10", "crop_flip"),
        ("msp", "svhn", "crop"),  # no flip on house numbers (ours)
        ("hsc", "cifar10", "eoe"),  # EOE App. G.1 / Table 6
        ("hsc", "mnist", ""),  # EOE App. G.1: MNIST without augmentation
        ("atom", "cifar10", ""),  # not asked of ATOM's own recipe here
    ],
)
def test_paper_profile_sets_the_augmentation(method, dataset, kind):
    assert method_profile(get_profile("paper"), method, 32, dataset).augment == kind
    assert method_profile(get_profile("quick"), method, 32, dataset).augment == ""


def test_the_training_loop_augments_inlier_and_oe_batches(monkeypatch):
    from bench.datasets import load_dataset
    from bench.methods import training
    from bench.protocols import get_protocol

    cell = next(iter(get_protocol("nd").cells(load_dataset("digits"), get_profile("ci"), 0)))
    seen = []

    def recording(x, kind, generator):
        seen.append((kind, x.shape[0]))
        return x

    monkeypatch.setattr(training, "augment", recording)
    profile = replace(cell.task.profile, epochs=1, min_steps=0)
    network, _ = training.new_network(cell.task, 1)
    plain = replace(cell.task, profile=profile)
    training.train_network(network, plain, lambda n, x, y, o: n(x).sum() * 0 + n(o).sum() * 0, True)
    assert seen == []  # no augmentation off the paper profile
    training.train_network(
        network,
        replace(plain, profile=replace(profile, augment="crop_flip")),
        lambda n, x, y, o: n(x).sum() * 0 + n(o).sum() * 0,
        True,
    )
    kinds = {kind for kind, _ in seen}
    sizes = {size for _, size in seen}
    assert kinds == {"crop_flip"} and profile.oe_batch_size in sizes  # inlier and OE batches both
