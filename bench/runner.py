"""Run a plan: schedule its pending unit groups on an executor and store each result as it arrives.

The pieces, each in its own module:
- ``bench.plan``: ``plan_run`` validates a RunSpec into a RunPlan and writes nothing (bad input raises
  BadInput);
- ``bench.execute``: ``execute_group`` runs one (method, cell, seed) group, a function of the plan and the
  group that yields one result per attack and writes nothing into the run folder;
- ``bench.executors``: ``local`` (this process) and ``ray`` (a task per group) schedule the groups;
- ``bench.store``: the only writer of the run folder (atomic appends per unit, the one-writer lock).

``Runner.run`` takes the run folder's lock, records the invocation in manifest.json, and appends each
finished (method, cell, seed, attack) unit to results.csv atomically as the executor hands it over, so
the same command resumes a killed run and redoes nothing that finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.cache import DetectorCache
from bench.determinism import configure as configure_determinism
from bench.execute import UnitResult
from bench.executors import Executor, create_executor
from bench.manifest import start_manifest
from bench.plan import RunPlan, Unit, group_units, pending_units, prepare_dataset
from bench.provenance import now
from bench.store import ResultStore, RunLock, StorageError


class Runner:
    def __init__(
        self,
        plan: RunPlan,
        cache: DetectorCache | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        log: Callable[[str], None] | None = None,
        executor: Executor | None = None,
    ):
        self.plan = plan
        self.store = ResultStore(plan.run_dir)
        self.cache = cache if cache is not None else DetectorCache()
        self.progress = progress
        self.log = log
        self.executor = (
            executor if executor is not None else create_executor(plan.spec, plan.executor_settings)
        )
        if plan.dataset is None:
            plan.dataset = prepare_dataset(plan.spec)
        self.manifest: dict[str, Any] = {}
        self.errors = 0  # units that became status=error rows in this invocation

    def pending_units(self) -> tuple[list[Unit], list[Unit]]:
        """(all expected units, those without rows yet or stale and to be recomputed)."""
        return pending_units(self.plan)

    def run(self) -> dict[str, Any]:
        configure_determinism(
            self.plan.profile, self.plan.device
        )  # ci profile: threads, deterministic kernels
        with RunLock(self.plan.run_dir):
            units, pending = self.pending_units()
            self.manifest = self._start_manifest(len(units), len(pending))
            if self.progress:
                self.progress("", 0, len(pending))
            groups = group_units(pending, self.store.detector_digests())
            redone = 0  # finished units recomputed with their group (another detector: bench.execute)
            last = time.perf_counter()
            for completed, result in enumerate(
                self.executor.run(self.plan, groups, self.cache, self.log), start=1
            ):
                unit_seconds, last = time.perf_counter() - last, time.perf_counter()
                self._time_checks(result, unit_seconds)
                self._store(result)
                redone += result.redone
                if self.progress:
                    unit = result.unit
                    total = len(pending) + redone
                    self.progress(f"{unit.method} {unit.cell} seed {unit.seed}", completed, total)
            self.manifest["finished"] = now()
            self.manifest["invocations"][-1]["finished"] = self.manifest["finished"]
            self.manifest["invocations"][-1]["units_error"] = self.errors
            self.manifest["invocations"][-1]["units_redone"] = redone
            self._write_manifest()
        return self.manifest

    def _time_checks(self, result: UnitResult, unit_seconds: float) -> None:
        """Add the unit's wall seconds (since the previous result: its group's fit for the first unit)
        and the seconds its validity checks took to the invocation's per-method totals."""
        invocation = self.manifest["invocations"][-1]
        method = result.unit.method
        for key, seconds in (("unit_seconds", unit_seconds), ("check_seconds", result.check_seconds)):
            totals = invocation.setdefault(key, {})
            totals[method] = round(totals.get(method, 0.0) + seconds, 3)

    def _store(self, result: UnitResult) -> None:
        """Write one unit (scores, artifacts, rows) and note its warnings and attack batch."""
        try:
            stored = self.store.write_unit(result)
        except OSError as error:
            raise StorageError(
                f"could not write {self.plan.run_dir} ({error.strerror or error}); the finished units are "
                "kept in results.csv: free space or fix the folder, then run the same command to resume"
            ) from error
        if result.status == "error":
            self.errors += 1
        warnings = list(result.warnings)
        if not stored:
            unit = result.unit
            reason = result.rows[0].get("reason", "") if result.rows else ""
            warnings.append(
                f"{unit.method} {unit.cell} seed {unit.seed} {unit.attack}: the recompute failed ({reason}); "
                "its earlier rows are kept and the same command tries it again"
            )
        changed = False
        for line in warnings:
            if line not in self.manifest["warnings"]:
                self.manifest["warnings"].append(line)
                changed = True
        if result.attack_batch is not None:
            unit = result.unit
            key = f"{unit.method} {unit.cell} seed {unit.seed} {unit.attack}"
            self.manifest.setdefault("attack_batch_sizes", {})[key] = result.attack_batch
            changed = True
        if changed:
            self._write_manifest()

    def _write_manifest(self) -> None:
        try:
            self.store.write_manifest(self.manifest)
        except OSError as error:
            raise StorageError(
                f"could not write {self.store.manifest_path} ({error.strerror or error})"
            ) from error

    def _start_manifest(self, n_units: int, n_pending: int) -> dict[str, Any]:
        previous = self.store.read_manifest()
        self.manifest = start_manifest(self.plan, previous, self.executor.name, n_units, n_pending)
        self._write_manifest()
        return self.manifest


__all__ = ["Runner"]
