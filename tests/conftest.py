"""Shared fixtures: a private detector cache per test, and the few real (ci-profile) runs that several
test files inspect, computed once per session because training dominates the suite's runtime."""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.cache import DetectorCache
from bench.plan import RunPlan, RunSpec, plan_run
from bench.runner import Runner

# Two threads, or one per worker when pytest-xdist runs several (`make test` runs two on 2 cores): the ci
# profile's results do not depend on the count (bench.determinism.threads, docs/ci.md).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    os.environ.setdefault("BENCH_THREADS", "1")
THREADS = os.environ.get("BENCH_THREADS", "2")
torch.set_num_threads(int(THREADS))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own BENCH_CACHE, so no test reads or writes ~/.cache/bench."""
    cache = tmp_path / "bench-cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    return cache


def bench_env(cache: Path) -> dict[str, str]:
    """Environment for a ``python -m bench`` subprocess: private cache, wide console, 2 threads."""
    env = dict(os.environ)
    env.update(
        BENCH_CACHE=str(cache),
        COLUMNS="200",
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        MPLBACKEND="Agg",
    )
    return env


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with (Path(run_dir) / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class FinishedRun:
    """A run executed through ``plan_run`` + ``Runner`` with its own detector cache."""

    spec: RunSpec
    plan: RunPlan
    run_dir: Path
    cache_root: Path
    manifest: dict

    @property
    def rows(self) -> list[dict[str, str]]:
        return read_rows(self.run_dir)


def execute_run(base: Path, **spec_fields) -> FinishedRun:
    spec = RunSpec(out=base / "run", profile="ci", device="cpu", **spec_fields)
    plan = plan_run(spec)
    cache_root = base / "cache"
    manifest = Runner(plan, cache=DetectorCache(cache_root)).run()
    return FinishedRun(spec, plan, plan.run_dir, cache_root, manifest)


@pytest.fixture(scope="session")
def nd_run(tmp_path_factory) -> FinishedRun:
    """msp (not applicable: one inlier class) and oe on the 10 novelty-detection cells, clean + pgd."""
    return execute_run(
        tmp_path_factory.mktemp("nd"), methods=["msp", "oe"], protocol="nd", attacks=["clean", "pgd"]
    )


@pytest.fixture(scope="session")
def ood_run(tmp_path_factory) -> FinishedRun:
    """msp, energy and oe on the OOD cell (3 evaluation sets), clean + pgd."""
    return execute_run(
        tmp_path_factory.mktemp("ood"),
        methods=["msp", "energy", "oe"],
        protocol="ood",
        attacks=["clean", "pgd"],
    )
