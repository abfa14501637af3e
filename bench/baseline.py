"""Regression tracking: the committed baseline in ``results/baseline/`` and the two checks CI runs against
it on any machine (docs/ci.md).

1. **Are the attacks still as strong?** ``frozen.csv`` holds every registered attack on the committed
   ci-profile detectors (``detectors.npz``, seed 0, written by ``bench run --save-detectors``). CI loads the
   same weights (``bench run --frozen-detectors``: no training), reruns every attack and holds each row to
   the baseline's: an attacked AUROC higher by more than ``FROZEN_TOLERANCE`` is a weaker attack, a clean
   AUROC that moves by more than it an evaluation change, a ``grad_evals`` or ``queries`` below the
   baseline's a budget that was not spent, another ``detector_digest`` not the frozen weights; each fails,
   as do a missing row and a status change. A lower attacked AUROC (a stronger attack) is an improvement.
2. **Do the methods still train as well?** ``seeds.csv`` holds clean and PGD (``SEED_ATTACKS``) of
   every method trained with ``SEEDS`` on the same cells. CI trains them again and compares, per (method,
   protocol, dataset, attack), the mean AUROC over cells and seeds with the baseline's: lower by more than
   ``SIGMAS`` standard errors of the difference of the two means (from the baseline's own seed spread),
   never less than ``SEED_FLOOR``, fails.

Both grids run the ci profile on digits (the seed grid ``SEED_PROTOCOLS`` on ``SEED_CELLS``, the frozen
grid ``CI_PROTOCOLS`` on ``FROZEN_CELLS``), every method but
``CI_SKIP_METHODS``, with the numerics pinned (``bench.determinism.PINNED_NUMERICS``, set before torch
is imported), so one baseline serves every CPU kind. ``provenance.json`` records what made it and every
CPU kind that reproduced it.

    bench ci run --work W                 # both grids on this machine: W/frozen.csv, W/seeds.csv
    bench ci check W                      # against results/baseline/; exit 1 on a failure
    bench ci baseline --out results/baseline --replace --work W   # regenerate it (a deliberate commit)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.compare import KEY
from bench.determinism import PINNED_NUMERICS, THREADS_VARIABLE
from bench.errors import BadInput
from bench.files import atomic_write_bytes
from bench.store import AGGREGATE_SUFFIX, unit_of

DATASET = "digits"
PROFILE = "ci"
CI_PROTOCOLS = ("nd", "osr", "ood")  # the frozen grid's
# The seed grid leaves osr out: its one split's three seeds spread so far that the check caught only
# drops of 0.03-0.11 clean and 0.04-0.21 under PGD (docs/ci.md), and ood trains the same methods on K
# classes with the same code, with sharper tolerances. Its 270 CPU seconds went to keeping CI near 15
# minutes; osr's attacks and evaluation stay in the frozen grid.
SEED_PROTOCOLS = ("nd", "ood")
# Left out: the two CLIP detectors and RODEO cost more than CI has (bce-clip alone took 2.5 minutes per nd
# cell; rodeo's guided generation 13 minutes of the ood grid).
CI_SKIP_METHODS = ("bce-clip", "clip", "rodeo")
# The seed grid: two nd cells (their mean spreads less than one's) and the ood cell (three OOD sets). The
# frozen grid: one nd cell (the attacks' code is the same on every one-class cell), one osr split, the ood
# cell.
SEED_CELLS = {"nd": ("class0", "class1")}
FROZEN_CELLS = {"nd": ("class0",), "osr": ("split0",)}
SEEDS = (0, 1, 2)
SEED_ATTACKS = ("clean", "pgd")
FROZEN_SEED = 0
DEFAULT_BASELINE = Path("results/baseline")
FROZEN_CSV, SEEDS_CSV, PROVENANCE = "frozen.csv", "seeds.csv", "provenance.json"
# The frozen detectors, one npz holding every entry's files as bytes (results/ holds data files, not a
# folder per detector); unpacked into the work folder for --frozen-detectors.
DETECTORS = "detectors.npz"
BASELINE_FILES = (FROZEN_CSV, SEEDS_CSV, DETECTORS, PROVENANCE)  # what `bench ci baseline` writes

# The same weights evaluated along the CPU's own code paths instead of the pinned ones moved 15 of 396
# AUROC rows, by at most 0.000152 (SimBA; bench study frozen-spread, docs/ci.md "How the tolerances were
# set"); the tolerance leaves room above it.
FROZEN_TOLERANCE = 0.001
# A drop of the mean larger than SIGMAS standard errors of the difference of two SEEDS-seed means fails.
# Three seeds estimate the spread poorly (s < 0.3 sigma one time in eleven), hence the floor: a drop below
# it is within what retraining on another CPU kind moved a method's mean (docs/ci.md).
SIGMAS = 3.0
SEED_FLOOR = 0.01
JUDGED_METRIC = "auroc"
BUDGET_COLUMNS = ("grad_evals", "queries")


class MergeError(ValueError):
    pass


def _sort_key(row: dict[str, str]) -> tuple:
    return tuple(int(row[k]) if k == "seed" else row[k] for k in KEY)


def merge(
    inputs: Sequence[Path],
    out: Path,
    protocols: Sequence[str] | None = None,
    skip_methods: Sequence[str] = (),
    cells: Mapping[str, Sequence[str]] | None = None,
) -> int:
    """Merge tidy results CSVs into ``out`` (rows sorted on bench compare's key); return the row count.

    ``protocols`` keeps only those protocols' rows, ``skip_methods`` drops those methods' rows and
    ``cells`` keeps, for each protocol it names, the rows of those cells. Every input must have the same
    header with the key columns; a key found twice is an error."""
    if not inputs:
        raise MergeError("nothing to merge: give one or more results CSV files")
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for path in inputs:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            if header is None:
                missing = [k for k in KEY if k not in fields]
                if missing:
                    raise MergeError(f"{path} lacks the key columns {', '.join(missing)}")
                header = fields
            elif fields != header:
                raise MergeError(f"{path} has columns {fields}, unlike {inputs[0]}: {header}")
            rows.extend(
                row
                for row in reader
                if (protocols is None or row["protocol"] in protocols)
                and row["method"] not in skip_methods
                and (
                    not cells
                    or row["protocol"] not in cells
                    or unit_of(row["cell"]) in cells[row["protocol"]]
                )
            )
    seen: set[tuple] = set()
    for row in rows:
        key = _sort_key(row)
        if key in seen:
            raise MergeError(f"row {dict(zip(KEY, key, strict=True))} appears twice in the inputs")
        seen.add(key)
    rows.sort(key=_sort_key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue().encode())
    return len(rows)


# ---------------------------------------------------------------------------------------------- checks


@dataclass
class Finding:
    """One row (or one mean) that differs from the baseline: a failure, or a change worth reporting."""

    what: str  # e.g. "weaker attack", "missing in candidate", "training regression"
    where: str  # the row's key, or the (method, protocol, dataset, attack) of a mean
    baseline: float | None = None
    candidate: float | None = None
    tolerance: float | None = None
    failure: bool = True

    def line(self) -> str:
        def shown(v: float | None) -> str:
            return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

        values = ""
        if self.baseline is not None or self.candidate is not None:
            values = f": {shown(self.baseline)} -> {shown(self.candidate)}"
            if self.baseline is not None and self.candidate is not None:
                values += f" ({self.candidate - self.baseline:+.4f})"
        tolerance = "" if self.tolerance is None else f", tolerance {self.tolerance:.4f}"
        return f"{'FAIL' if self.failure else 'note'} {self.what}: {self.where}{values}{tolerance}"


@dataclass
class Verdict:
    question: str
    compared: int = 0
    findings: list[Finding] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)  # the seed check's, per mean

    @property
    def ok(self) -> bool:
        return not any(f.failure for f in self.findings)

    def text(self) -> str:
        failures = sum(f.failure for f in self.findings)
        lines = [f"{self.question}: {self.compared} compared, {failures} failing, "
                 f"{len(self.findings) - failures} other changes"]  # fmt: skip
        lines += [f"  {f.line()}" for f in sorted(self.findings, key=lambda f: (not f.failure, f.what))]
        lines.append(f"  {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def read_rows(path: Path):
    """A results CSV as a DataFrame indexed by bench compare's key (BadInput when unreadable)."""
    from bench.results.rows import read_results_file

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} does not exist; accepted: a results CSV (bench ci run writes them)")
    df = read_results_file(path)
    missing = [c for c in (*KEY, "value", "status") if c not in df.columns]
    if missing:
        raise BadInput(f"{path} lacks the columns {', '.join(missing)}")
    for column in ("detector_digest", *BUDGET_COLUMNS):
        if column not in df.columns:
            df[column] = ""
    df["seed"] = df["seed"].astype(int)
    if df.duplicated(list(KEY)).any():
        raise BadInput(f"{path} has two rows for one key; accepted: merged rows of one grid")
    return df.set_index(list(KEY))


def _where(key: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(KEY, key, strict=True))


def _row_presence(base, cand, verdict: Verdict):
    """Missing rows and status changes (failures); the rows present and ok on both sides."""
    for key in base.index.difference(cand.index):
        verdict.findings.append(Finding("missing in candidate", _where(key), base.at[key, "value"]))
    for key in cand.index.difference(base.index):
        verdict.findings.append(Finding("missing in baseline", _where(key), None, cand.at[key, "value"]))
    both = base.merge(cand, left_index=True, right_index=True, suffixes=("_b", "_c"))
    verdict.compared = len(both)
    changed = both[both["status_b"] != both["status_c"]]
    for key, row in changed.iterrows():
        verdict.findings.append(Finding(f"status changed {row.status_b} -> {row.status_c}", _where(key)))
    return both[(both["status_b"] == "ok") & (both["status_c"] == "ok")]


def check_frozen(base, cand, tolerance: float = FROZEN_TOLERANCE) -> Verdict:
    """Question 1 on two frames of ``read_rows``: the same detectors, every attack (module docstring)."""
    verdict = Verdict("attacks on the frozen detectors")
    both = _row_presence(base, cand, verdict)
    digest_b, digest_c = both["detector_digest_b"].astype(str), both["detector_digest_c"].astype(str)
    for key in both.index[(digest_b != "") & (digest_c != "") & (digest_b != digest_c)]:
        verdict.findings.append(Finding("other detector (not the frozen weights)", _where(key)))
    for column in BUDGET_COLUMNS:
        spent_b = both[f"{column}_b"].astype(float)
        spent_c = both[f"{column}_c"].astype(float)
        for key in both.index[spent_c < spent_b]:
            verdict.findings.append(
                Finding(f"{column} below the baseline's", _where(key), spent_b[key], spent_c[key])
            )
    judged = both[both.index.get_level_values("metric") == JUDGED_METRIC]
    diff = judged["value_c"] - judged["value_b"]
    clean = judged.index.get_level_values("attack") == "clean"
    eps = 1e-12  # a difference of exactly the tolerance (in decimal) does not count
    for key in judged.index[clean & (diff.abs() > tolerance + eps)]:
        verdict.findings.append(_value_finding("clean AUROC changed (evaluation)", key, judged, tolerance))
    for key in judged.index[~clean & (diff > tolerance + eps)]:
        verdict.findings.append(_value_finding("weaker attack", key, judged, tolerance))
    for key in judged.index[~clean & (diff < -tolerance - eps)]:
        verdict.findings.append(_value_finding("stronger attack", key, judged, tolerance, failure=False))
    return verdict


def _value_finding(what: str, key: tuple, judged, tolerance: float, failure: bool = True) -> Finding:
    return Finding(
        what, _where(key), judged.at[key, "value_b"], judged.at[key, "value_c"], tolerance, failure
    )


MEAN_KEY = ("method", "protocol", "dataset", "attack")


def seed_means(rows):
    """Mean AUROC per (method, protocol, dataset, attack, seed) over the cells and evaluation sets of the
    ok rows (a cell's ``:mean`` aggregate left out, so each set counts once)."""
    df = rows.reset_index()
    judged = (df["metric"] == JUDGED_METRIC) & (df["status"] == "ok")
    df = df[judged & ~df["cell"].str.endswith(AGGREGATE_SUFFIX)]
    return df.groupby([*MEAN_KEY, "seed"])["value"].mean()


def seed_statistics(base) -> dict[tuple, tuple[float, float, int]]:
    """Per (method, protocol, dataset, attack): the baseline's mean AUROC over seeds, the standard
    deviation of its per-seed means (NaN with one seed) and the number of seeds."""
    out = {}
    for key, values in seed_means(base).groupby(list(MEAN_KEY)):
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out[key] = (float(values.mean()), std, len(values))
    return out


def seed_tolerance(std: float, n_base: int, n_candidate: int, sigmas: float = SIGMAS,
                   floor: float = SEED_FLOOR) -> float:  # fmt: skip
    """``sigmas`` standard errors of the difference of an ``n_base``-seed and an ``n_candidate``-seed
    mean, with the baseline's seed ``std``; at least ``floor`` (a single-seed baseline: no bound)."""
    if n_base < 2 or math.isnan(std):
        return float("inf")
    return max(floor, sigmas * std * math.sqrt(1 / n_base + 1 / n_candidate))


def check_seeds(base, cand, sigmas: float = SIGMAS, floor: float = SEED_FLOOR) -> Verdict:
    """Question 2 on two frames of ``read_rows``: retrained with SEEDS, means held to the baseline's."""
    verdict = Verdict("training over seeds (mean AUROC per method, protocol, attack)")
    _row_presence(base, cand, verdict)
    candidate = seed_statistics(cand)
    for key, (mean, std, n) in seed_statistics(base).items():
        if key not in candidate:
            continue  # its rows are reported missing above
        cand_mean, _, n_cand = candidate[key]
        tolerance = seed_tolerance(std, n, n_cand, sigmas, floor)
        where = " ".join(f"{k}={v}" for k, v in zip(MEAN_KEY, key, strict=True))
        verdict.tolerances[where] = tolerance
        diff = cand_mean - mean
        if diff < -tolerance:
            verdict.findings.append(Finding("training regression", where, mean, cand_mean, tolerance))
        elif diff > tolerance:
            verdict.findings.append(
                Finding("training improvement", where, mean, cand_mean, tolerance, failure=False)
            )
    return verdict


def check(baseline: Path, candidate: Path) -> list[Verdict]:
    """Both checks of the folder ``candidate`` (``bench ci run``'s) against ``baseline``."""
    baseline, candidate = Path(baseline), Path(candidate)
    return [
        check_frozen(read_rows(baseline / FROZEN_CSV), read_rows(candidate / FROZEN_CSV)),
        check_seeds(read_rows(baseline / SEEDS_CSV), read_rows(candidate / SEEDS_CSV)),
    ]


# ------------------------------------------------------------------------------------------------ grids


def ci_methods() -> list[str]:
    from bench.registry import METHODS

    return [m for m in METHODS.names() if m not in CI_SKIP_METHODS]


def grid_protocols(grid: str) -> tuple[str, ...]:
    return SEED_PROTOCOLS if grid == "seeds" else CI_PROTOCOLS


def grid_cells(grid: str, protocol: str) -> tuple[str, ...]:
    """The cells of ``protocol`` in ``grid`` ("seeds" or "frozen"); () for all of them."""
    return (SEED_CELLS if grid == "seeds" else FROZEN_CELLS).get(protocol, ())


def run_command(protocol: str, out_dir: Path, seeds: Sequence[int], attacks: Sequence[str] = (),
                extra: Sequence[str] = (), grid: str = "seeds") -> list[str]:  # fmt: skip
    """The ``bench run`` command line of one protocol of a CI grid (every attack unless ``attacks``)."""
    cells = grid_cells(grid, protocol)
    return [
        sys.executable, "-m", "bench", "run", "--methods", *ci_methods(), "--protocol", protocol,
        "--dataset", DATASET, "--profile", PROFILE, "--device", "cpu", "--out", str(out_dir),
        "--seeds", *map(str, seeds),
        *(["--cells", *cells] if cells else []),
        *(["--attacks", *attacks] if attacks else []),
        *extra,
    ]  # fmt: skip


def pinned_environment(threads: int | None = None) -> dict[str, str]:
    """This environment with the pinned numerics (and ``BENCH_THREADS`` when ``threads`` is given)."""
    env = {**os.environ, **PINNED_NUMERICS}
    if threads is not None:
        env[THREADS_VARIABLE] = str(threads)
    return env


@dataclass(frozen=True)
class Job:
    """One ``bench run`` of a CI grid: one protocol (and, in the seed grid, one seed) into ``folder``."""

    grid: str  # "seeds" or "frozen"
    protocol: str
    seeds: tuple[int, ...]
    folder: Path
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.grid} {self.protocol} seed {','.join(map(str, self.seeds))}"

    def command(self) -> list[str]:
        attacks = SEED_ATTACKS if self.grid == "seeds" else ()
        return run_command(self.protocol, self.folder, self.seeds, attacks, self.extra, self.grid)


# Longest first, so the last jobs to start are short ones: ood trains on 10 classes and attacks three
# OOD sets; the frozen grid's ood part runs every attack on them.
JOB_ORDER = {("seeds", "ood"): 0, ("frozen", "ood"): 1, ("seeds", "osr"): 2, ("seeds", "nd"): 3}


def longest_first(jobs: Sequence[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: JOB_ORDER.get((j.grid, j.protocol), len(JOB_ORDER)))


def grid_jobs(work: Path, grid: str, extra: Sequence[str] = ()) -> list[Job]:
    """The jobs of ``grid``: the seed grid one per (protocol, seed), the frozen grid one per protocol."""
    if grid == "seeds":
        jobs = [Job(grid, p, (s,), work / grid / p / f"seed{s}", tuple(extra))
                for p in SEED_PROTOCOLS for s in SEEDS]  # fmt: skip
    else:
        jobs = [Job(grid, p, (FROZEN_SEED,), work / grid / p, tuple(extra)) for p in CI_PROTOCOLS]
    return longest_first(jobs)


def default_jobs() -> int:
    """Parallel jobs for ``bench ci run``: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_jobs(jobs: Sequence[Job], parallel: int) -> dict[str, float]:
    """Run ``jobs``, ``parallel`` at a time (one intra-op thread each when more than one runs, so they do
    not oversubscribe the cores; the results do not depend on the count). Each job's output goes to
    ``<folder>.log``; a failed job stops the rest with its log's tail. Returns the seconds per job."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    threads = 1 if parallel > 1 else None

    def run(job: Job) -> float:
        job.folder.parent.mkdir(parents=True, exist_ok=True)
        log = job.folder.with_name(job.folder.name + ".log")
        started = time.monotonic()
        with log.open("w") as handle:
            done = subprocess.run(job.command(), stdout=handle, stderr=subprocess.STDOUT,
                                  env=pinned_environment(threads))  # fmt: skip
        seconds = round(time.monotonic() - started, 1)
        if done.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
            raise RuntimeError(f"{job.name} failed (exit {done.returncode}); the end of {log}:\n{tail}")
        print(f"{job.name}: {seconds:.0f} s", flush=True)
        return seconds

    for job in jobs:
        print("$", " ".join(job.command()[2:]), flush=True)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(run, job): job for job in jobs}
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in finished if f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()
    return {futures[f].name: f.result() for f in futures}


def _merge_grid(jobs: Sequence[Job], job_seconds: Mapping[str, float], out: Path) -> dict[str, float]:
    """Merge the jobs' results into ``out``; the seconds per protocol (summed over its jobs)."""
    n = merge([job.folder / "results.csv" for job in jobs], out)
    print(f"{out}: {n} rows", flush=True)
    seconds: dict[str, float] = {}
    for job in jobs:
        seconds[job.protocol] = round(seconds.get(job.protocol, 0.0) + job_seconds[job.name], 1)
    return seconds


def pack_detectors(folder: Path, out: Path) -> int:
    """Every file under ``folder`` (a --save-detectors folder) into one npz of uint8 arrays keyed by
    relative path; the number of files."""
    import numpy as np

    folder = Path(folder)
    arrays = {
        str(path.relative_to(folder)): np.frombuffer(path.read_bytes(), dtype=np.uint8)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return len(arrays)


def unpack_detectors(npz: Path, folder: Path) -> Path:
    """The files of ``pack_detectors``' npz back under ``folder`` (no pickle; a name that would leave the
    folder is refused); ``folder``. bench.frozen checks each entry's digests when a run loads it."""
    import numpy as np

    folder = Path(folder)
    if not Path(npz).is_file():
        raise BadInput(f"{npz} does not exist; accepted: a baseline folder holding {DETECTORS}")
    with np.load(npz, allow_pickle=False) as data:
        for name in data.files:
            relative = Path(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise BadInput(f"{npz} holds a file outside its folder ({name!r}); it is not unpacked")
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[name].tobytes())
    return folder


def run_grids(work: Path, detectors: Path, save: bool = False, parallel: int = 1) -> dict[str, dict]:
    """Both CI grids into ``work``, ``parallel`` jobs at a time: ``seeds.csv`` (SEEDS, SEED_ATTACKS,
    trained here) and ``frozen.csv`` (every attack on the frozen detectors of the npz ``detectors``; with
    ``save``, the seed-FROZEN_SEED detectors are packed into it instead, for a new baseline: they train
    after the seed grid, from its cache). Returns the seconds per grid and protocol (summed over the
    protocol's jobs) and the wall seconds of both grids."""
    work = Path(work)
    folder = work / "detectors"
    if not save:
        unpack_detectors(detectors, folder)
    option = "--save-detectors" if save else "--frozen-detectors"
    seeds, frozen = grid_jobs(work, "seeds"), grid_jobs(work, "frozen", (option, str(folder)))
    started = time.monotonic()
    if save:  # the frozen jobs reuse the seed grid's seed-0 detectors from the cache
        job_seconds = {**run_jobs(seeds, parallel), **run_jobs(frozen, parallel)}
    else:
        job_seconds = run_jobs(longest_first([*seeds, *frozen]), parallel)
    wall = round(time.monotonic() - started, 1)
    seconds: dict[str, dict] = {
        "seeds": _merge_grid(seeds, job_seconds, work / SEEDS_CSV),
        "frozen": _merge_grid(frozen, job_seconds, work / FROZEN_CSV),
        "wall": {"seconds": wall, "parallel_jobs": parallel},
    }
    if save:
        pack_detectors(folder, detectors)
    return seconds


def make_baseline(out: Path, work: Path, parallel: int = 1) -> None:
    """Regenerate the baseline folder ``out`` (frozen.csv, seeds.csv, detectors.npz, provenance.json)."""
    import shutil

    out = Path(out)
    if (Path(work) / "detectors").exists():
        shutil.rmtree(Path(work) / "detectors")
    seconds = run_grids(work, out / DETECTORS, save=True, parallel=parallel)
    for name in (FROZEN_CSV, SEEDS_CSV):
        atomic_write_bytes(out / name, (Path(work) / name).read_bytes())
    write_provenance(out, seconds)


def write_provenance(out: Path, seconds: dict[str, dict[str, float]]) -> None:
    """``provenance.json``: the code, machine and settings that made the baseline, and the seconds per
    grid and protocol it took."""
    from bench.provenance import git_sha, hardware_kind

    record = {
        "cpu_kinds": [hardware_kind()],  # every kind that reproduced it (docs/ci.md); the first made it
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "pinned_numerics": PINNED_NUMERICS,
        "seconds": seconds,
        "seeds": list(SEEDS),
        "seed_attacks": list(SEED_ATTACKS),
        "cells": {
            grid: {p: list(grid_cells(grid, p) or ["all"]) for p in grid_protocols(grid)}
            for grid in ("seeds", "frozen")
        },
        "methods": ci_methods(),
    }
    atomic_write_bytes(Path(out) / PROVENANCE, (json.dumps(record, indent=2) + "\n").encode())
