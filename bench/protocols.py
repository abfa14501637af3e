"""Protocols: novelty detection (nd), open-set recognition (osr) and out-of-distribution (ood).

``Protocol.cells(dataset, profile, seed, device)`` yields :class:`bench.contracts.Cell`. Splits carry a
version (``split_version`` column), which combines the dataset's train/test split version with the
protocol's own. The test sample of a cell (the capped subsample, the generated OOD sets) is a function of
the split version and the cell alone, never of the run seed: every seed of a run scores the same test
images, so a seed-to-seed difference is training noise only. The seed changes the training side (OE pool,
initialisation, generated exposure).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch

from bench.config import Profile
from bench.contracts import Cell, EvalSet, TrainTask
from bench.errors import BadInput
from bench.registry import register_protocol


class Protocol:
    name: str = ""
    version: str = "v2"  # v2: the test sample depends on the split version and cell, not on the seed

    def split_version(self, dataset) -> str:
        return f"{dataset.split_version}/{self.name}-{self.version}"

    def sample_seed(self, dataset, cell_id: str) -> int:
        """Seed of a cell's test sample: a hash of the split version and the cell id (no run seed)."""
        text = f"{self.split_version(dataset)}|{cell_id}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")

    def cell_sizes(self, dataset, profile: Profile) -> list[tuple[str, int, int, int]]:
        """(cell id, train images, test inliers, test outliers) per cell, from the labels alone: what a
        dry run shows, without building an OE pool or a test set."""
        raise NotImplementedError  # pragma: no cover

    def cell_ids(self, dataset, profile: Profile, seed: int) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def cells(self, dataset, profile: Profile, seed: int, device: str = "cpu") -> Iterator[Cell]:
        raise NotImplementedError  # pragma: no cover


def _cap(indices: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Keep at most ``limit`` indices, chosen by ``rng`` (sorted, so the order stays stable)."""
    if limit is None or len(indices) <= limit:
        return indices
    return np.sort(rng.choice(indices, size=limit, replace=False))


def _train_indices(dataset, profile, keep_classes: list[int]) -> np.ndarray:
    """Training images of ``keep_classes``; with ``profile.max_train_per_class`` at most that many per
    class, drawn from a seed of the dataset's split version and the class (never of the run seed)."""
    labels = dataset.train_labels.numpy()
    cap = profile.max_train_per_class
    kept = []
    for c in keep_classes:
        idx = np.flatnonzero(labels == c)
        if cap is not None and len(idx) > cap:
            text = f"{dataset.split_version}|train|{c}"
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
            idx = rng.choice(idx, size=cap, replace=False)
        kept.append(idx)
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def _task(dataset, profile, seed, device, keep_classes: list[int]) -> TrainTask:
    """Inlier training data restricted to ``keep_classes`` (at most ``profile.max_train_per_class`` per
    class), relabelled 0..K-1 in that order."""
    labels = dataset.train_labels.numpy()
    index = _train_indices(dataset, profile, keep_classes)
    mask = np.zeros(len(labels), dtype=bool)
    mask[index] = True
    relabel = {c: i for i, c in enumerate(keep_classes)}
    oe = dataset.oe_source(profile.oe_pool_size, seed) if dataset.oe_source is not None else None
    return TrainTask(
        images=dataset.train_images[torch.from_numpy(mask)],
        labels=torch.tensor([relabel[int(c)] for c in labels[mask]], dtype=torch.long),
        class_names=[dataset.class_names[c] for c in keep_classes],
        class_prompts=[(dataset.class_prompts or dataset.class_names)[c] for c in keep_classes],
        oe=oe,
        image_shape=dataset.image_shape,
        train_eps=dataset.eps,
        seed=seed,
        device=device,
        profile=profile,
    )


def _capped(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


def _known_unknown_sizes(dataset, profile, keep_classes) -> tuple[int, int, int]:
    """(train images, test inliers, test outliers) of a cell whose inliers are ``keep_classes``."""
    labels = dataset.train_labels.numpy()
    cap = profile.max_train_per_class
    n_train = sum(_capped(int((labels == c).sum()), cap) for c in keep_classes)
    is_in = np.isin(dataset.test_labels.numpy(), keep_classes)
    cap = profile.max_eval_per_side
    return n_train, _capped(int(is_in.sum()), cap), _capped(int((~is_in).sum()), cap)


def _known_unknown_evalset(dataset, profile, sample_seed, keep_classes, name) -> EvalSet:
    """Test split: images of ``keep_classes`` are inliers (relabelled), all others outliers; the capped
    subsample is drawn with ``sample_seed`` (:meth:`Protocol.sample_seed`)."""
    rng = np.random.default_rng(sample_seed)
    labels = dataset.test_labels.numpy()
    is_in = np.isin(labels, keep_classes)
    idx_in = _cap(np.flatnonzero(is_in), profile.max_eval_per_side, rng)
    idx_out = _cap(np.flatnonzero(~is_in), profile.max_eval_per_side, rng)
    index = np.concatenate([idx_in, idx_out])
    relabel = {c: i for i, c in enumerate(keep_classes)}
    inlier_labels = [relabel.get(int(c), -1) for c in labels[index]]
    return EvalSet(
        name=name,
        images=dataset.test_images[torch.from_numpy(index)],
        is_outlier=torch.from_numpy(~is_in[index]),
        labels=torch.tensor(inlier_labels, dtype=torch.long),
    )


def _anomaly_flags(dataset) -> torch.Tensor | None:
    """The test images' anomaly flags of an anomaly data set (MVTec-style folders), else None."""
    return getattr(dataset, "test_is_anomaly", None)


def _anomaly_sizes(dataset, profile, c: int) -> tuple[int, int, int]:
    """(train images, test inliers, test outliers) of category ``c`` of an anomaly data set."""
    labels = dataset.train_labels.numpy()
    in_category = dataset.test_labels.numpy() == c
    flags = _anomaly_flags(dataset).numpy()
    cap = profile.max_eval_per_side
    n_train = _capped(int((labels == c).sum()), profile.max_train_per_class)
    return (
        n_train,
        _capped(int((in_category & ~flags).sum()), cap),
        _capped(int((in_category & flags).sum()), cap),
    )


def _anomaly_evalset(dataset, profile, sample_seed, c: int, name) -> EvalSet:
    """Category ``c``'s normal test images (inliers, label 0) against its anomalies (outliers)."""
    rng = np.random.default_rng(sample_seed)
    in_category = dataset.test_labels.numpy() == c
    flags = _anomaly_flags(dataset).numpy()
    idx_in = _cap(np.flatnonzero(in_category & ~flags), profile.max_eval_per_side, rng)
    idx_out = _cap(np.flatnonzero(in_category & flags), profile.max_eval_per_side, rng)
    index = np.concatenate([idx_in, idx_out])
    return EvalSet(
        name=name,
        images=dataset.test_images[torch.from_numpy(index)],
        is_outlier=torch.from_numpy(flags[index]),
        labels=torch.tensor([0] * len(idx_in) + [-1] * len(idx_out), dtype=torch.long),
    )


@register_protocol("nd")
class NoveltyDetection(Protocol):
    """One cell per class: inliers = that class, outliers = all other classes of the test split. On an
    anomaly data set (MVTec AD's protocol) one cell per category: its normal test images against its
    anomalies."""

    name = "nd"

    def cell_ids(self, dataset, profile, seed):
        return [f"class{c}" for c in range(dataset.num_classes)]

    def cell_sizes(self, dataset, profile):
        sizes = _anomaly_sizes if _anomaly_flags(dataset) is not None else _one_class_sizes
        return [
            (cell_id, *sizes(dataset, profile, c))
            for c, cell_id in enumerate(self.cell_ids(dataset, profile, 0))
        ]

    def cells(self, dataset, profile, seed, device="cpu"):
        anomaly = _anomaly_flags(dataset) is not None
        for c, cell_id in enumerate(self.cell_ids(dataset, profile, seed)):
            task = _task(dataset, profile, seed, device, [c])
            sample_seed = self.sample_seed(dataset, cell_id)
            if anomaly:
                evalset = _anomaly_evalset(dataset, profile, sample_seed, c, "test")
            else:
                evalset = _known_unknown_evalset(dataset, profile, sample_seed, [c], "test")
            yield Cell(cell_id, task, [evalset])


def _one_class_sizes(dataset, profile, c: int) -> tuple[int, int, int]:
    return _known_unknown_sizes(dataset, profile, [c])


def _refuse_anomaly_set(dataset, protocol: str) -> None:
    if _anomaly_flags(dataset) is not None:
        raise BadInput(
            f"protocol {protocol!r} does not apply to the anomaly data set {dataset.name!r} (normal vs "
            "anomalous images per category); accepted: --protocol nd"
        )


@register_protocol("osr")
class OpenSetRecognition(Protocol):
    """Random 60/40 known/unknown class splits, ``profile.osr_splits`` of them (5 in the papers),
    each from a fixed split seed; train on the known classes, test on all classes."""

    name = "osr"
    known_fraction = 0.6  # RODEO Sec. 5 (OSR): 60% known / 40% unknown classes

    def known_classes(self, num_classes: int, split: int) -> list[int]:
        rng = np.random.default_rng([20240, split])
        n_known = max(2, round(self.known_fraction * num_classes))
        return sorted(int(c) for c in rng.permutation(num_classes)[:n_known])

    def cell_ids(self, dataset, profile, seed):
        _refuse_anomaly_set(dataset, self.name)
        return [f"split{s}" for s in range(profile.osr_splits)]

    def cell_sizes(self, dataset, profile):
        return [
            (cell_id, *_known_unknown_sizes(dataset, profile, self.known_classes(dataset.num_classes, s)))
            for s, cell_id in enumerate(self.cell_ids(dataset, profile, 0))
        ]

    def cells(self, dataset, profile, seed, device="cpu"):
        for split, cell_id in enumerate(self.cell_ids(dataset, profile, seed)):
            known = self.known_classes(dataset.num_classes, split)
            task = _task(dataset, profile, seed, device, known)
            sample_seed = self.sample_seed(dataset, cell_id)
            yield Cell(cell_id, task, [_known_unknown_evalset(dataset, profile, sample_seed, known, "test")])


@register_protocol("ood")
class OutOfDistribution(Protocol):
    """Train on all classes; one EvalSet per OOD test set (inliers: the whole test split)."""

    name = "ood"
    # v2: the glyphs OOD set uses only Computer Modern fonts (the glyph corpus has the rest); v3: the test
    # sample and the generated OOD sets depend on the split version, not on the run seed
    version = "v3"

    def cell_ids(self, dataset, profile, seed):
        _refuse_anomaly_set(dataset, self.name)
        return ["all"]

    def cells(self, dataset, profile, seed, device="cpu"):
        if dataset.ood_suite is None:
            raise ValueError(f"dataset {dataset.name!r} has no OOD test suite")
        classes = list(range(dataset.num_classes))
        task = _task(dataset, profile, seed, device, classes)
        sample_seed = self.sample_seed(dataset, "all")
        rng = np.random.default_rng(sample_seed)
        idx_in = _cap(np.arange(len(dataset.test_labels)), profile.max_eval_per_side, rng)
        evalsets = []
        for name, ood_images in dataset.ood_suite(sample_seed % 2**32):
            idx_out = _cap(np.arange(len(ood_images)), profile.max_eval_per_side, rng)
            evalsets.append(
                EvalSet(
                    name=name,
                    images=torch.cat([dataset.test_images[idx_in], ood_images[idx_out]]),
                    is_outlier=torch.cat([torch.zeros(len(idx_in)), torch.ones(len(idx_out))]).bool(),
                    labels=torch.cat(
                        [dataset.test_labels[idx_in], torch.full((len(idx_out),), -1, dtype=torch.long)]
                    ),
                )
            )
        yield Cell("all", task, evalsets)

    def cell_sizes(self, dataset, profile):
        """Outliers: the capped sizes the dataset declares for its OOD sets (``ood_set_sizes``), summed
        over the sets; -1 (unknown) when it declares none."""
        if dataset.ood_suite is None:
            raise ValueError(f"dataset {dataset.name!r} has no OOD test suite")
        cap = profile.max_eval_per_side
        sizes = dataset.ood_set_sizes
        n_out = sum(_capped(n, cap) for n in sizes.values()) if sizes else -1
        labels = dataset.train_labels.numpy()
        n_train = sum(
            _capped(int((labels == c).sum()), profile.max_train_per_class) for c in range(dataset.num_classes)
        )
        return [("all", n_train, _capped(len(dataset.test_labels), cap), n_out)]


def get_protocol(name: str) -> Protocol:
    from bench.registry import PROTOCOLS

    return PROTOCOLS.get(name)()
