"""bench study validation: the carved split is disjoint from training and from the test split, and a tiny run
(ci profile, two nd cells, oe) gives the expected rows, table and CSV."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from bench.cache import DetectorCache
from bench.config import get_profile
from bench.datasets import load_dataset
from bench.protocols import get_protocol
from bench.registry import METHODS
from bench.studies.validation import (
    HELD_OUT_OE_SEED,
    ValidationSpec,
    carve,
    format_table,
    main,
    run_validation,
    validation_split,
)


def _rows_as_bytes(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.flatten(1)}


def test_carve_is_stratified_seeded_and_disjoint():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 2 + [3])
    train, val = carve(labels, 0.2, np.random.default_rng(0))
    assert set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(len(labels)))
    counts = np.bincount(labels.numpy()[val], minlength=4).tolist()
    assert counts == [10, 6, 1, 0]  # 20% per class; a class of two gives one, a class of one keeps it
    again_train, again_val = carve(labels, 0.2, np.random.default_rng(0))
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, carve(labels, 0.2, np.random.default_rng(1))[1])


@pytest.mark.parametrize("protocol", ["nd", "osr"])
def test_split_is_disjoint_from_training_the_test_split_and_the_oe_pool(protocol):
    dataset, profile = load_dataset("digits"), get_profile("ci")
    cell = next(get_protocol(protocol).cells(dataset, profile, 0))
    split = validation_split(cell, dataset, profile, 0, 0.2, ["oe", "other-classes"])
    task = cell.task
    assert len(split.fit_task.images) + len(split.val_index) == len(task.images)
    assert set(split.train_index.tolist()).isdisjoint(split.val_index.tolist())
    # stratified: every class loses about 20%
    held = torch.bincount(task.labels[split.val_index], minlength=task.num_classes).float()
    total = torch.bincount(task.labels, minlength=task.num_classes).float()
    assert torch.allclose(held / total, torch.full_like(total, 0.2), atol=0.01)
    val_inliers = task.images[split.val_index]
    fit_rows, test_rows = _rows_as_bytes(split.fit_task.images), _rows_as_bytes(dataset.test_images)
    assert _rows_as_bytes(val_inliers).isdisjoint(fit_rows)
    assert _rows_as_bytes(val_inliers).isdisjoint(test_rows)
    by_name = {e.name: e for e in split.evalsets}
    assert list(by_name) == ["oe", "other-classes"]
    for evalset in split.evalsets:
        assert torch.equal(evalset.images[~evalset.is_outlier], val_inliers)
        outliers = _rows_as_bytes(evalset.images[evalset.is_outlier])
        assert evalset.n_out == profile.max_eval_per_side
        assert outliers.isdisjoint(test_rows) and outliers.isdisjoint(fit_rows)
    assert _rows_as_bytes(by_name["oe"].images[by_name["oe"].is_outlier]).isdisjoint(
        _rows_as_bytes(task.oe.images)
    )
    # the other classes' images come from the training split, from classes outside the cell
    other = _rows_as_bytes(by_name["other-classes"].images[by_name["other-classes"].is_outlier])
    inside = [dataset.class_names.index(name) for name in task.class_names]
    outside_train = dataset.train_images[~torch.isin(dataset.train_labels, torch.tensor(inside))]
    assert other <= _rows_as_bytes(outside_train)
    assert HELD_OUT_OE_SEED > 1000  # never a run seed's pool


def test_tiny_run_has_the_expected_rows_table_and_csv(tmp_path, monkeypatch, capsys):
    spec = ValidationSpec(method="oe", protocol="nd", profile="ci", cells=["class0", "class1"])
    rows = run_validation(spec, cache=DetectorCache(tmp_path / "cache"))
    per_cell = [r for r in rows if r["cell"] != "mean"]
    assert [(r["cell"], r["outliers"], r["attack"]) for r in per_cell] == [
        (cell, kind, attack)
        for cell in ("class0", "class1")
        for kind in ("oe", "other-classes")
        for attack in ("clean", "pgd")
    ]
    assert all(r["status"] == "ok" and 0.0 <= r["auroc"] <= 1.0 for r in rows)
    sizes = {"class0": (99, 25), "class1": (102, 25)}  # 124 and 127 training images, 20% held out
    for r in per_cell:
        assert (r["n_train"], r["n_val_in"]) == sizes[r["cell"]] and r["n_val_out"] == 120
    clean = {(r["cell"], r["outliers"]): r["auroc"] for r in per_cell if r["attack"] == "clean"}
    for r in per_cell:  # the attack keeps the worst case over the clean point: never above clean
        if r["attack"] == "pgd":
            assert r["auroc"] <= clean[(r["cell"], r["outliers"])] + 1e-9
    means = [r for r in rows if r["cell"] == "mean"]
    assert [(r["outliers"], r["attack"]) for r in means] == [
        ("oe", "clean"),
        ("oe", "pgd"),
        ("other-classes", "clean"),
        ("other-classes", "pgd"),
    ]
    expected = np.mean([r["auroc"] for r in per_cell if (r["outliers"], r["attack"]) == ("oe", "pgd")])
    assert means[1]["auroc"] == pytest.approx(expected) and means[1]["seed"] == "all"
    table = format_table(rows).splitlines()
    assert len(table) == 1 + 2 + 1 and "oe/pgd" in table[0] and table[-1].split()[:2] == ["all", "mean"]

    # the command line: the same rows from the cache (no refit), a table on stdout and the CSV
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(METHODS.get("oe"), "fit", lambda *a, **k: pytest.fail("refitted a cached detector"))
    out = tmp_path / "val.csv"
    argv = ["--method", "oe", "--protocol", "nd", "--profile", "ci", "--cells", "class0", "class1"]
    main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "oe/clean" in printed and "class1" in printed
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(rows) == 12
    assert [float(r["auroc"]) for r in written] == pytest.approx([r["auroc"] for r in rows])


def test_bad_input_exits_with_code_2(capsys):
    for argv, needle in [
        (["--method", "oe", "--protocol", "nd", "--outliers", "exposure"], "accepted: oe, other-classes"),
        (["--method", "oe", "--protocol", "nd", "--cells", "class42"], "unknown cell 'class42'"),
        (["--method", "oe", "--protocol", "nd", "--set", "oe.nope=1"], "unknown --set key"),
        (["--method", "oe", "--protocol", "nd", "--fraction", "1.5"], "--fraction"),
        (["--method", "oe", "--protocol", "nd", "--network", "wrn99"], "unknown --network 'wrn99'"),
        (["--method", "oe", "--protocol", "nd", "--epochs", "0"], "bad --epochs 0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err


def test_network_option_trains_that_network_and_labels_the_rows(tmp_path, monkeypatch):
    seen = []
    original = METHODS.get("oe").fit

    def spy(self, task, ctx):
        seen.append(task.profile.network if task.profile.epochs != 2 else "epochs 2")
        return original(self, task, ctx)

    monkeypatch.setattr(METHODS.get("oe"), "fit", spy)
    spec = ValidationSpec(
        method="oe", protocol="nd", profile="ci", cells=["class0"], attacks=["clean"], network="tiny_cnn"
    )
    rows = run_validation(spec, cache=DetectorCache(tmp_path / "cache"))
    assert seen == ["tiny_cnn"] and {r["profile"] for r in rows} == {"ci (network tiny_cnn)"}
    seen.clear()
    spec = dataclasses.replace(spec, network=None, epochs=2)
    rows = run_validation(spec, cache=DetectorCache(tmp_path / "cache"))
    assert seen == ["epochs 2"] and {r["profile"] for r in rows} == {"ci (epochs 2)"}
