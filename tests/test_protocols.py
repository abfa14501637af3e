"""Protocols on the digits dataset: which images train, which test, and that splits are stable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bench.config import get_profile
from bench.datasets import digits as digits_module
from bench.datasets import load_dataset
from bench.protocols import get_protocol
from bench.registry import PROTOCOLS

N_TEST = 540


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def quick():
    """The quick profile without its test cap, so that every test image is in the cells."""
    return dataclasses.replace(get_profile("quick"), max_eval_per_side=None)


@pytest.fixture(scope="module")
def nd_cells(dataset, quick):
    return list(get_protocol("nd").cells(dataset, quick, 0))


@pytest.fixture(scope="module")
def ood_cells(dataset, quick):
    return list(get_protocol("ood").cells(dataset, quick, 0))


def _rows_of(images: torch.Tensor) -> list[bytes]:
    return [image.numpy().tobytes() for image in images]


def _same_cells(first, second) -> None:
    assert [c.cell_id for c in first] == [c.cell_id for c in second]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.task.images, b.task.images)
        assert torch.equal(a.task.labels, b.task.labels)
        assert a.task.class_names == b.task.class_names
        assert a.task.fingerprint() == b.task.fingerprint()
        assert len(a.evalsets) == len(b.evalsets)
        for x, y in zip(a.evalsets, b.evalsets, strict=True):
            assert x.name == y.name
            assert torch.equal(x.images, y.images)
            assert torch.equal(x.is_outlier, y.is_outlier)
            assert torch.equal(x.labels, y.labels)


# ---- the split underneath -------------------------------------------------------------------------------


def test_train_and_test_images_are_disjoint_and_cover_the_data(dataset):
    train_idx, test_idx = digits_module.split_indices()
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert len(np.unique(train_idx)) == len(train_idx) and len(np.unique(test_idx)) == len(test_idx)
    assert len(train_idx) + len(test_idx) == 1797
    raw = load_digits()
    images = torch.from_numpy((raw.images / 16).astype(np.float32)).unsqueeze(1)
    assert torch.equal(dataset.train_images, images[train_idx])
    assert torch.equal(dataset.test_images, images[test_idx])
    assert torch.equal(dataset.train_labels, torch.from_numpy(raw.target[train_idx]).long())
    assert torch.equal(dataset.test_labels, torch.from_numpy(raw.target[test_idx]).long())
    assert len(dataset.test_labels) == N_TEST


# ---- nd -------------------------------------------------------------------------------------------------


def test_nd_has_one_cell_per_class(nd_cells):
    assert [c.cell_id for c in nd_cells] == [f"class{c}" for c in range(10)]


def test_nd_task_is_one_class_of_the_training_split(nd_cells, dataset):
    for c, cell in enumerate(nd_cells):
        task = cell.task
        assert task.num_classes == 1 and task.class_names == [str(c)]
        assert torch.equal(task.images, dataset.train_images[dataset.train_labels == c])
        assert torch.equal(task.labels, torch.zeros(len(task.images), dtype=torch.long))
        assert task.oe is not None and task.seed == 0
        assert task.image_shape == (1, 8, 8)
        assert task.train_eps == pytest.approx(8 / 255)


def test_nd_outliers_are_exactly_the_other_classes_test_images(nd_cells, dataset):
    for c, cell in enumerate(nd_cells):
        (evalset,) = cell.evalsets
        inlier = dataset.test_labels == c
        assert evalset.n_in == int(inlier.sum())
        assert evalset.n_out == int((~inlier).sum())
        assert evalset.n_in + evalset.n_out == N_TEST
        assert torch.equal(evalset.images[~evalset.is_outlier], dataset.test_images[inlier])
        assert torch.equal(evalset.images[evalset.is_outlier], dataset.test_images[~inlier])
        assert torch.all(evalset.labels[~evalset.is_outlier] == 0)
        assert torch.all(evalset.labels[evalset.is_outlier] == -1)


def test_nd_with_ci_caps_each_side(dataset):
    ci = get_profile("ci")
    for c, cell in enumerate(get_protocol("nd").cells(dataset, ci, 0)):
        (evalset,) = cell.evalsets
        assert evalset.n_in == min(ci.max_eval_per_side, int((dataset.test_labels == c).sum()))
        assert evalset.n_out == ci.max_eval_per_side
        # the capped outliers are still other classes' test images, without repeats
        outliers = _rows_of(evalset.images[evalset.is_outlier])
        pool = set(_rows_of(dataset.test_images[dataset.test_labels != c]))
        assert set(outliers) <= pool


def test_nd_cells_are_identical_on_two_calls(nd_cells, dataset, quick):
    _same_cells(nd_cells, list(get_protocol("nd").cells(dataset, quick, 0)))


# ---- osr ------------------------------------------------------------------------------------------------


def test_osr_known_classes_are_deterministic_60_40_splits():
    osr = get_protocol("osr")
    splits = [osr.known_classes(10, s) for s in range(5)]
    assert splits == [get_protocol("osr").known_classes(10, s) for s in range(5)]
    for known in splits:
        assert len(known) == 6 and len(set(known)) == 6
        assert known == sorted(known) and set(known) <= set(range(10))
    assert len({tuple(k) for k in splits}) > 1  # the splits are not all the same


def test_osr_cells(dataset, quick):
    osr = get_protocol("osr")
    cells = list(osr.cells(dataset, quick, 0))
    assert quick.osr_splits == 5
    assert [c.cell_id for c in cells] == [f"split{s}" for s in range(5)]
    for split, cell in enumerate(cells):
        known = osr.known_classes(10, split)
        unknown = sorted(set(range(10)) - set(known))
        assert len(unknown) == 4
        task = cell.task
        assert task.class_names == [str(c) for c in known]
        is_known_train = torch.isin(dataset.train_labels, torch.tensor(known))
        assert torch.equal(task.images, dataset.train_images[is_known_train])
        # relabelled 0..5 in the order of ``known``
        assert torch.equal(torch.tensor(known)[task.labels], dataset.train_labels[is_known_train])
        (evalset,) = cell.evalsets
        is_known_test = torch.isin(dataset.test_labels, torch.tensor(known))
        assert torch.equal(evalset.images[~evalset.is_outlier], dataset.test_images[is_known_test])
        assert torch.equal(evalset.images[evalset.is_outlier], dataset.test_images[~is_known_test])
        inlier_labels = evalset.labels[~evalset.is_outlier]
        assert torch.equal(torch.tensor(known)[inlier_labels], dataset.test_labels[is_known_test])
    _same_cells(cells, list(osr.cells(dataset, quick, 0)))


def test_osr_ci_profile_has_its_own_number_of_splits(dataset):
    ci = get_profile("ci")
    assert get_protocol("osr").cell_ids(dataset, ci, 0) == [f"split{s}" for s in range(ci.osr_splits)]


# ---- ood ------------------------------------------------------------------------------------------------


def test_ood_has_one_cell_with_three_evalsets(ood_cells, dataset):
    (cell,) = ood_cells
    assert cell.cell_id == "all"
    assert [e.name for e in cell.evalsets] == ["glyphs", "terrain", "noise"]
    assert cell.task.num_classes == 10
    assert torch.equal(cell.task.images, dataset.train_images)
    assert torch.equal(cell.task.labels, dataset.train_labels)


def test_ood_inliers_are_the_digits_test_split(ood_cells, dataset):
    (cell,) = ood_cells
    for evalset in cell.evalsets:
        assert evalset.n_in == N_TEST and evalset.n_out > 0
        assert torch.equal(evalset.images[~evalset.is_outlier], dataset.test_images)
        assert torch.equal(evalset.labels[~evalset.is_outlier], dataset.test_labels)
        assert torch.all(evalset.labels[evalset.is_outlier] == -1)
        outliers = evalset.images[evalset.is_outlier]
        assert float(outliers.min()) >= 0.0 and float(outliers.max()) <= 1.0
    # the three OOD sets are different images
    glyphs, terrain, noise = (e.images[e.is_outlier] for e in cell.evalsets)
    assert not torch.equal(glyphs, terrain) and not torch.equal(terrain, noise)


def test_ood_cells_are_identical_on_two_calls(ood_cells, dataset, quick):
    _same_cells(ood_cells, list(get_protocol("ood").cells(dataset, quick, 0)))


def test_ood_with_ci_caps_each_side(dataset):
    ci = get_profile("ci")
    (cell,) = get_protocol("ood").cells(dataset, ci, 0)
    for evalset in cell.evalsets:
        assert evalset.n_in == evalset.n_out == ci.max_eval_per_side


# ---- versions and registry ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nd", "osr", "ood"])
def test_split_version_names_dataset_and_protocol(name, dataset):
    version = get_protocol(name).split_version(dataset)
    assert dataset.split_version in version and "digits-v1" in version
    assert f"{name}-{get_protocol(name).version}" in version


def test_protocol_registry():
    assert set(PROTOCOLS.names()) == {"nd", "osr", "ood"}


@pytest.mark.parametrize("name", ["nd", "osr", "ood"])
def test_seeds_share_the_capped_test_sample_but_not_the_oe_pool(name, dataset):
    """With the quick profile's cap (a real subsample), every seed scores the same test images: the
    sample depends on the split version and cell only. The OE pool is the seed's own."""
    quick = get_profile("quick")
    assert quick.max_eval_per_side is not None
    first = next(iter(get_protocol(name).cells(dataset, quick, 0)))
    second = next(iter(get_protocol(name).cells(dataset, quick, 1)))
    assert torch.equal(first.task.images, second.task.images)
    for x, y in zip(first.evalsets, second.evalsets, strict=True):
        assert x.n_in <= quick.max_eval_per_side and x.n_out <= quick.max_eval_per_side
        assert torch.equal(x.images, y.images) and torch.equal(x.is_outlier, y.is_outlier)
    assert not torch.equal(first.task.oe.images, second.task.oe.images)
    assert first.task.fingerprint() != second.task.fingerprint()


def test_capped_sample_differs_between_cells_and_split_versions(dataset):
    """The sample seed is a function of (split version, cell): other cells and other versions draw
    other samples."""
    nd = get_protocol("nd")
    seeds = {nd.sample_seed(dataset, cell) for cell in nd.cell_ids(dataset, get_profile("quick"), 0)}
    assert len(seeds) == dataset.num_classes
    renamed = dataclasses.replace(dataset, split_version="digits-v999")
    assert nd.sample_seed(renamed, "class0") != nd.sample_seed(dataset, "class0")


@pytest.mark.parametrize("name", ["nd", "osr", "ood"])
@pytest.mark.parametrize("profile_name", ["quick", "ci"])
def test_cell_sizes_match_the_built_cells(name, profile_name, dataset):
    """What a dry run shows (counted from labels, nothing built) is what the cells hold."""
    profile = get_profile(profile_name)
    protocol = get_protocol(name)
    sizes = protocol.cell_sizes(dataset, profile)
    cells = list(protocol.cells(dataset, profile, 0))
    assert [s[0] for s in sizes] == [c.cell_id for c in cells]
    for (_, n_train, n_in, n_out), cell in zip(sizes, cells, strict=True):
        assert n_train == len(cell.task.images)
        assert n_in == cell.evalsets[0].n_in
        assert n_out == sum(e.n_out for e in cell.evalsets)


def test_declared_ood_set_sizes_match_the_suite(dataset):
    suite = dataset.ood_suite(0)
    assert {name: len(images) for name, images in suite} == dataset.ood_set_sizes


@pytest.mark.parametrize("name", ["nd", "osr", "ood"])
def test_max_train_per_class_caps_each_class_with_a_sample_fixed_across_seeds(name, dataset):
    """The training cap keeps at most N images per inlier class, the same images for every run seed, drawn
    from the training split; the dry run's counts follow it."""
    capped = dataclasses.replace(get_profile("ci"), max_train_per_class=40)
    protocol = get_protocol(name)
    first = list(protocol.cells(dataset, capped, 0))
    second = list(protocol.cells(dataset, capped, 1))
    train_rows = set(_rows_of(dataset.train_images))
    for a, b, (_, n_train, _, _) in zip(first, second, protocol.cell_sizes(dataset, capped), strict=True):
        counts = np.bincount(a.task.labels.numpy())
        assert counts.max() == 40 and len(a.task.images) == n_train == 40 * a.task.num_classes
        assert torch.equal(a.task.images, b.task.images)
        assert set(_rows_of(a.task.images)) <= train_rows
    # a cap above every class is no cap
    uncapped = dataclasses.replace(get_profile("ci"), max_train_per_class=10_000)
    full = next(iter(protocol.cells(dataset, get_profile("ci"), 0)))
    assert torch.equal(next(iter(protocol.cells(dataset, uncapped, 0))).task.images, full.task.images)


class _RecordingAttack:
    """Moves every image by +0.01 (inliers) or -0.01 (outliers) and records each call's size."""

    def __init__(self):
        self.calls = []

    def perturb(self, detector, images, is_outlier, eps):
        self.calls.append(len(images))
        step = torch.where(is_outlier, -0.01, 0.01).view(-1, 1, 1, 1)
        return images + step + 1e-6 * torch.randn(images.shape)  # a fresh draw per call


def test_ood_sets_share_their_inliers_and_an_attack_perturbs_them_once(ood_cells, nd_cells):
    from bench.execute import attack_all, shared_inliers

    evalsets = ood_cells[0].evalsets
    n = shared_inliers(evalsets)
    assert len(evalsets) == 3 and n == evalsets[0].n_in > 0
    attack = _RecordingAttack()
    adversarial, _ = attack_all(attack, None, evalsets, 0.1, None)
    assert attack.calls == [n + sum(e.n_out for e in evalsets)]  # one call: the inliers once
    for evalset, x_adv in zip(evalsets, adversarial, strict=True):
        assert x_adv.shape == evalset.images.shape
        assert torch.equal(x_adv[:n], adversarial[0][:n])  # the same attacked inliers in every set
        moved = (x_adv - evalset.images).mean(dim=(1, 2, 3))
        assert torch.allclose(moved, torch.where(evalset.is_outlier, -0.01, 0.01), atol=1e-4)
    # one set (nd), or sets whose inliers differ, are attacked set by set
    assert shared_inliers(nd_cells[0].evalsets) == 0
    other = dataclasses.replace(evalsets[1], images=evalsets[1].images.clone())
    other.images[0] += 0.5
    assert shared_inliers([evalsets[0], other]) == 0
    attack = _RecordingAttack()
    attack_all(attack, None, [evalsets[0], other], 0.1, None)
    assert attack.calls == [len(evalsets[0].images), len(other.images)]
