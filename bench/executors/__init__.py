"""Executors schedule a run's unit groups and hand back their results in completion order.

An executor has one method, ``run(plan, groups, cache, log)``, an iterator of ``execute.UnitResult``.
It never writes into the run folder: the runner passes each result to the store as it arrives, so every
executor resumes, records and refuses exactly the same way.
- ``local`` (``LocalExecutor``): in this process, one group after another, in grid order.
- ``ray`` (``bench.executors.ray_executor.RayExecutor``): each group a Ray task, locally or on a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from bench.cache import DetectorCache
from bench.execute import Log, UnitResult, execute_group, failed_group, failure_reason
from bench.plan import RunPlan, RunSpec, UnitGroup


class Executor(Protocol):
    name: str

    def run(
        self, plan: RunPlan, groups: list[UnitGroup], cache: DetectorCache, log: Log = None
    ) -> Iterator[UnitResult]: ...


class LocalExecutor:
    """Every group in this process, in order; the cells of a seed are built once, as they come."""

    name = "local"

    def run(
        self, plan: RunPlan, groups: list[UnitGroup], cache: DetectorCache, log: Log = None
    ) -> Iterator[UnitResult]:
        for seed in dict.fromkeys(g.seed for g in groups):
            todo = [g for g in groups if g.seed == seed]
            wanted = {g.cell for g in todo}
            cells = plan.protocol.cells(plan.dataset, plan.profile, seed, plan.device)
            while todo:
                try:
                    cell = next(c for c in cells if c.cell_id in wanted)
                except Exception as error:  # noqa: BLE001 - building the cells failed: error rows for the rest
                    for group in todo:
                        yield from failed_group(plan, group, failure_reason(error))
                    break
                for group in [g for g in todo if g.cell == cell.cell_id]:
                    yield from execute_group(plan, group, cache, log, cell=cell)
                todo = [g for g in todo if g.cell != cell.cell_id]


def create_executor(spec: RunSpec, settings=None) -> Executor:
    """The executor a RunSpec names (``plan_run`` has checked the name and that ray is installed)."""
    if spec.executor == "ray":
        from bench.executors.ray_executor import RayExecutor

        return RayExecutor(address=spec.address, retries=spec.retries, settings=settings)
    return LocalExecutor()
