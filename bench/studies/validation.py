"""Choose hyperparameters on a validation split carved from the training data, never on the test split.

``bench study validation --method rodeo --protocol nd --dataset digits --set rodeo.guidance_scale=1000``
(options: ``--profile``, ``--seeds``, ``--cells``, ``--attacks``, ``--fraction``, ``--outliers``, ``--oe``,
``--device``, ``--network``, ``--epochs``, ``--out FILE.csv``).

``--network NAME`` trains with that network instead of the profile's (every other profile field kept): the
way a backbone choice is measured (rows say ``profile (network NAME)``). ``--epochs N`` likewise measures
training length (rows say ``profile (epochs N)``).

For every cell of the protocol and every seed:

- **validation inliers**: ``--fraction`` (0.2) of the cell's *training* inliers, drawn per class
  (stratified, at least one image per class stays in training) with a generator seeded by the seed and the
  cell id. The method is fitted on the rest through its normal ``fit`` and the detector cache (the same
  cache keys as ``bench run``; the reduced task has its own fingerprint). With 20% carved out, three
  digits classes keep 98-99 training images, under RODEO's App. E.3 threshold of 100, so RODEO generates
  the quick profile's scaled minimum (150) of outliers for them instead of ~100; this holds for every
  setting compared, so a comparison stays fair.
- **validation outliers**, one evaluation set per kind (``--outliers``):

  - ``oe`` (the one to choose by): held-out images of the dataset's auxiliary-outlier source, drawn with
    a seed disjoint from the training pool's (:data:`HELD_OUT_OE_SEED` + seed), any image identical to
    one of the cell's training pool removed. These are outliers a method may know of at training time,
    which is what model selection in outlier detection may use; they are the same for every setting of
    every method, so the settings are ranked on a common yardstick. RODEO never trains on them.
  - ``other-classes`` (a cross-check): training-split images of the classes outside the cell (nd, osr),
    which the cell's fit never sees. They show the kind of outlier the test split holds, so selecting
    on them would tune to the test's outlier classes; report them, do not choose by them.

  Held-out *generated* exposure is not offered: scoring a generator setting on its own exposure is
  circular (every setting would look good on what it was trained against) and the sets would differ
  between the settings compared.
- **scores**: AUROC (``bench.metrics``) of the clean scores and under each attack (default ``clean`` and
  the registered ``pgd`` with the profile's budget; ``--set pgd.steps=...`` overrides it), on the
  validation inliers against each outlier set. Outliers per set: the profile's ``max_eval_per_side``
  (1,000 without a cap), drawn with the same seeded generator.

Prints one table (AUROC %, one row per cell and seed, then the mean) and with ``--out`` writes a CSV:
one row per (seed, cell, outliers, attack), plus ``cell=mean`` rows (``seed=all``) averaging the cells
and seeds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.cache import DetectorCache
from bench.config import Profile, for_dataset, get_profile, parse_overrides, with_overrides
from bench.contracts import Cell, EvalSet, Method, TrainTask
from bench.errors import BadInput, NotApplicable
from bench.execute import load_or_fit
from bench.metrics import auroc
from bench.registry import ATTACKS, DATASETS, METHODS, PROTOCOLS

OUTLIER_KINDS = ("oe", "other-classes")  # plus RODEO's "shortcut-probe" rows (probe_row)
HELD_OUT_OE_SEED = 1_000_000  # the validation OE draw's seed is this + the run seed (pools use the seed)
DEFAULT_ATTACKS = ("clean", "pgd")
UNCAPPED_OUTLIERS = 1000
CSV_COLUMNS = (
    "method",
    "settings",
    "protocol",
    "dataset",
    "profile",
    "seed",
    "cell",
    "outliers",
    "attack",
    "auroc",
    "n_train",
    "n_val_in",
    "n_val_out",
    "status",
    "reason",
)


@dataclass
class ValidationSpec:
    method: str
    protocol: str
    dataset: str = "digits"
    profile: str = "quick"
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    cells: list[str] | None = None  # None: every cell of the protocol
    attacks: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_ATTACKS))
    settings: list[str] = dataclasses.field(default_factory=list)  # "method.field=v" / "attack.field=v"
    fraction: float = 0.2
    outliers: list[str] = dataclasses.field(default_factory=lambda: list(OUTLIER_KINDS))
    oe: str | None = None
    device: str = "cpu"
    network: str | None = None  # None: the profile's
    epochs: int | None = None  # None: the profile's


@dataclass
class ValidationSplit:
    """A cell's training task cut in two, and the validation evaluation sets."""

    cell_id: str
    fit_task: TrainTask
    train_index: torch.Tensor  # rows of the cell's training task that the method trains on
    val_index: torch.Tensor  # rows carved out as validation inliers
    evalsets: list[EvalSet]


def _seed_words(seed: int, cell_id: str) -> list[int]:
    digest = hashlib.sha256(f"validation|{cell_id}".encode()).digest()
    return [int(seed), int.from_bytes(digest[:4], "little")]


def carve(labels: torch.Tensor, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): ``fraction`` of each class, rounded, at least one image of a class of
    two or more, and at least one image of every class left for training."""
    labels_np = labels.numpy()
    train, val = [], []
    for k in np.unique(labels_np):
        rows = np.flatnonzero(labels_np == k)
        n_val = min(max(1, round(fraction * len(rows))), len(rows) - 1) if len(rows) > 1 else 0
        picked = rng.permutation(rows)
        val.append(picked[:n_val])
        train.append(picked[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def held_out_oe(dataset, seed: int, count: int, pool: torch.Tensor | None) -> torch.Tensor:
    """``count`` images of the dataset's OE source drawn with a seed its training pools never use, minus
    any image identical to one in ``pool`` (the cell's training pool)."""
    if dataset.oe_source is None:
        raise BadInput(
            f"dataset {dataset.name!r} has no auxiliary-outlier source for --outliers oe; "
            "accepted here: --outliers other-classes (or --oe NAME)"
        )
    images = dataset.oe_source(count, HELD_OUT_OE_SEED + seed).images
    if pool is not None:
        seen = {row.numpy().tobytes() for row in pool.flatten(1)}
        fresh = torch.tensor([row.numpy().tobytes() not in seen for row in images.flatten(1)])
        images = images[fresh]
    return images


def validation_split(
    cell: Cell, dataset, profile: Profile, seed: int, fraction: float, outliers: list[str]
) -> ValidationSplit:
    """Carve the validation inliers out of ``cell``'s training task and build one evaluation set per
    outlier kind (``other-classes`` is skipped when every class is an inlier class)."""
    task = cell.task
    rng = np.random.default_rng(_seed_words(seed, cell.cell_id))
    train_rows, val_rows = carve(task.labels, fraction, rng)
    train_index, val_index = torch.from_numpy(train_rows), torch.from_numpy(val_rows)
    fit_task = dataclasses.replace(task, images=task.images[train_index], labels=task.labels[train_index])
    inliers = task.images[val_index]
    cap = profile.max_eval_per_side or UNCAPPED_OUTLIERS
    evalsets = []
    for kind in outliers:
        if kind == "oe":
            images = held_out_oe(dataset, seed, cap, task.oe.images if task.oe is not None else None)
        else:
            inside = [dataset.class_names.index(name) for name in task.class_names]
            outside = np.flatnonzero(~np.isin(dataset.train_labels.numpy(), inside))
            if len(outside) == 0:
                continue  # ood: every class is an inlier class
            chosen = np.sort(rng.choice(outside, size=min(cap, len(outside)), replace=False))
            images = dataset.train_images[torch.from_numpy(chosen)]
        evalsets.append(
            EvalSet(
                name=kind,
                images=torch.cat([inliers, images[:cap]]),
                is_outlier=torch.cat([torch.zeros(len(inliers)), torch.ones(len(images[:cap]))]).bool(),
                labels=torch.cat(
                    [task.labels[val_index], torch.full((len(images[:cap]),), -1, dtype=torch.long)]
                ),
            )
        )
    return ValidationSplit(cell.cell_id, fit_task, train_index, val_index, evalsets)


def build_method(name: str, settings: dict[str, Any]) -> Method:
    cls = METHODS.get(name)
    try:
        return cls(**settings)
    except BadInput:
        raise
    except (TypeError, ValueError) as error:
        raise BadInput(f"bad --set for {name}: {error}") from None


def run_validation(spec: ValidationSpec, cache: DetectorCache | None = None, log=None) -> list[dict]:
    """Rows (dicts with :data:`CSV_COLUMNS`) for every (seed, cell, outliers, attack), then the means."""
    from bench.plan import with_oe_source

    if not 0.0 < spec.fraction < 1.0:
        raise BadInput(f"--fraction must lie in (0, 1), got {spec.fraction}")
    for kind in spec.outliers:
        if kind not in OUTLIER_KINDS:
            raise BadInput(f"unknown --outliers {kind!r}; accepted: {', '.join(OUTLIER_KINDS)}")
    if not spec.outliers:
        raise BadInput(f"no --outliers given; accepted: {', '.join(OUTLIER_KINDS)}")
    protocol = PROTOCOLS.get(spec.protocol)()
    dataset = with_oe_source(DATASETS.get(spec.dataset)(), spec.oe)
    profile = for_dataset(get_profile(spec.profile), DATASETS.get(spec.dataset))
    profile_label = profile.name
    if spec.network is not None:
        from bench.methods.networks import NETWORKS

        if spec.network not in NETWORKS:
            raise BadInput(f"unknown --network {spec.network!r}; accepted: {', '.join(NETWORKS)}")
        profile = with_overrides(profile, network=spec.network)
        profile_label = f"{profile.name} (network {spec.network})"
    if spec.epochs is not None:
        if spec.epochs < 1:
            raise BadInput(f"bad --epochs {spec.epochs}; accepted: an integer >= 1")
        profile = with_overrides(profile, epochs=spec.epochs)
        profile_label = f"{profile_label} (epochs {spec.epochs})"
    for name in spec.attacks:
        ATTACKS.get(name)
    method_cls = METHODS.get(spec.method)
    if spec.protocol not in method_cls.protocols:
        raise BadInput(
            f"method {spec.method!r} does not support protocol {spec.protocol!r}; "
            f"accepted: {', '.join(method_cls.protocols)}"
        )
    types = {spec.method: method_cls.field_types()}
    types.update({name: ATTACKS.get(name).field_types() for name in spec.attacks})
    overrides = parse_overrides(spec.settings, types)
    method = build_method(spec.method, overrides[spec.method])
    for name in spec.attacks:
        ATTACKS.get(name).from_profile(profile, seed=0, **overrides[name])
    known = protocol.cell_ids(dataset, profile, spec.seeds[0])
    for cell_id in spec.cells or []:
        if cell_id not in known:
            raise BadInput(f"unknown cell {cell_id!r} for {spec.protocol}; accepted: {', '.join(known)}")
    cache = cache if cache is not None else DetectorCache()
    shared = {
        "method": spec.method,
        "settings": " ".join(sorted(spec.settings)),
        "protocol": spec.protocol,
        "dataset": spec.dataset,
        "profile": profile_label,
    }
    rows: list[dict] = []
    for seed in spec.seeds:
        for cell in protocol.cells(dataset, profile, seed, spec.device):
            if spec.cells and cell.cell_id not in spec.cells:
                continue
            split = validation_split(cell, dataset, profile, seed, spec.fraction, spec.outliers)
            started = time.perf_counter()
            try:
                detector = load_or_fit(spec.method, method, split.fit_task, cache, spec.device)
                reason = ""
            except NotApplicable as error:
                detector, reason = None, str(error)
            if log is not None:
                log(f"{spec.method} {cell.cell_id} seed {seed}: fit {time.perf_counter() - started:.1f} s")
            if detector is not None and hasattr(method, "validity_checks"):
                rows.append({**shared, **probe_row(method, detector, split, seed, cell.cell_id)})
            for evalset in split.evalsets:
                for attack_name in spec.attacks:
                    row = {
                        **shared,
                        "seed": seed,
                        "cell": cell.cell_id,
                        "outliers": evalset.name,
                        "attack": attack_name,
                        "n_train": len(split.fit_task.images),
                        "n_val_in": evalset.n_in,
                        "n_val_out": evalset.n_out,
                    }
                    if detector is None:
                        rows.append({**row, "auroc": "", "status": "na", "reason": reason})
                        continue
                    attack = ATTACKS.get(attack_name).from_profile(
                        profile, seed=seed, **overrides[attack_name]
                    )
                    x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, dataset.eps)
                    value = auroc(detector.score(x_adv).numpy(), evalset.is_outlier.numpy())
                    rows.append({**row, "auroc": value, "status": "ok", "reason": ""})
    return rows + mean_rows(rows)


def probe_row(method: Method, detector, split: ValidationSplit, seed: int, cell_id: str) -> dict:
    """RODEO's shortcut probe on the validation inliers (held-out training inliers): AUROC of the detector
    on them against their generator round trip (``outliers=shortcut-probe``; 0.5 is healthy, near 1 a
    detector that learned the generator's artifacts). Uses no outlier data."""
    inliers = split.evalsets[0].images[~split.evalsets[0].is_outlier]
    found = method.validity_checks(detector, split.fit_task, inliers, None)
    return {
        "seed": seed,
        "cell": cell_id,
        "outliers": "shortcut-probe",
        "attack": "clean",
        "n_train": len(split.fit_task.images),
        "n_val_in": len(inliers),
        "n_val_out": len(inliers),
        "auroc": found["shortcut"],
        "status": "ok",
        "reason": "",
    }


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per (outliers, attack): the mean AUROC over every ok (seed, cell) row, as ``cell=mean, seed=all``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["outliers"], row["attack"]), []).append(row)
    means = []
    for (kind, attack), members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        means.append(
            {
                **{k: members[0][k] for k in ("method", "settings", "protocol", "dataset", "profile")},
                "seed": "all",
                "cell": "mean",
                "outliers": kind,
                "attack": attack,
                "auroc": float(np.mean([r["auroc"] for r in ok])) if ok else "",
                "n_train": sum(r["n_train"] for r in members),
                "n_val_in": sum(r["n_val_in"] for r in members),
                "n_val_out": sum(r["n_val_out"] for r in members),
                "status": "ok" if len(ok) == len(members) else ("na" if not ok else "partial"),
                "reason": "" if ok else members[0]["reason"],
            }
        )
    return means


def format_table(rows: list[dict]) -> str:
    """AUROC (%) with a column per (outliers, attack) and a row per (seed, cell), then the mean row."""
    columns = list(dict.fromkeys((r["outliers"], r["attack"]) for r in rows))
    keys = list(dict.fromkeys((r["seed"], r["cell"]) for r in rows))
    value = {(r["seed"], r["cell"], r["outliers"], r["attack"]): r for r in rows}
    header = ["seed", "cell", "n_train", "n_val_in"] + [f"{kind}/{attack}" for kind, attack in columns]
    lines = [header]
    for seed, cell in keys:
        first = next(r for r in rows if (r["seed"], r["cell"]) == (seed, cell))
        line = [str(seed), cell, str(first["n_train"]), str(first["n_val_in"])]
        for kind, attack in columns:
            row = value.get((seed, cell, kind, attack))
            line.append("-" if row is None or row["auroc"] == "" else f"{100 * row['auroc']:.1f}")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(text)


def write_csv(rows: list[dict], path: Path) -> None:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise BadInput(f"--out {str(path)!r} is not a file; accepted: a CSV file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


def parse_args(argv: list[str] | None) -> tuple[ValidationSpec, Path | None]:
    parser = argparse.ArgumentParser(prog="bench study validation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cells", nargs="+", default=None)
    parser.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS))
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--outliers", nargs="+", default=list(OUTLIER_KINDS))
    parser.add_argument("--oe", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--network", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    spec = ValidationSpec(
        method=args.method,
        protocol=args.protocol,
        dataset=args.dataset,
        profile=args.profile,
        seeds=args.seeds,
        cells=args.cells,
        attacks=args.attacks,
        settings=args.settings,
        fraction=args.fraction,
        outliers=args.outliers,
        oe=args.oe,
        device=args.device,
        network=args.network,
        epochs=args.epochs,
    )
    return spec, args.out


def main(argv: list[str] | None = None) -> None:
    try:
        spec, out = parse_args(argv)
        from bench.plan import resolve_device

        spec.device = resolve_device(spec.device)
        started = time.perf_counter()
        rows = run_validation(spec, log=lambda message: print(message, file=sys.stderr, flush=True))
        if out is not None:
            write_csv(rows, out)
    except BadInput as error:
        print(f"bench study validation: error: {error}", file=sys.stderr)
        sys.exit(2)
    network = f" (network {spec.network})" if spec.network else ""
    print(
        f"validation AUROC (%): {spec.method} {' '.join(spec.settings) or '(defaults)'}, {spec.dataset} "
        f"{spec.protocol}, profile {spec.profile}{network}, {round(100 * spec.fraction)}% of the training "
        f"inliers held out"
    )
    print(format_table(rows))
    print(f"{time.perf_counter() - started:.1f} s" + (f"; CSV {out}" if out is not None else ""))
