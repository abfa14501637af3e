"""The ``ray`` executor: each (method, cell, seed) unit group is one Ray task.

A task builds its cell, fits the detector (or loads it from the detector cache) and runs every pending
attack of the group (``bench.execute.execute_group``); it returns the group's results and writes nothing
into the run folder. The driver (``bench run``) alone writes results.csv, one unit at a time in the order
the tasks complete, with the same atomic append as the local executor, so a killed driver loses at most
the groups in flight and the same command resumes. Ctrl-C stops the driver within ``WAIT_SECONDS``
and cancels the tasks still pending or running (``ray.cancel(force=True)``), also on a joined cluster.

Resources: a task asks for one GPU when the cluster has GPUs (``--set executor.gpus_per_task=N`` to
change it) and ``executor.cpus_per_task`` CPUs (default 1; also its torch threads, except on the
deterministic ci profile, whose thread count ``bench.determinism`` fixes as in a local run). A task
whose worker dies (killed, out of memory, node lost) is retried up to ``--retries`` times; after that
its units become ``status=error`` rows with the reason, and the other tasks go on.

Without ``--address`` the executor starts a Ray instance on this machine (``executor.local_cpus`` CPUs,
default all), bound to 127.0.0.1 so that no other machine can reach it, and stops it at the end;
``--address auto`` or ``HOST:PORT`` joins a running cluster, whose task results the driver deserialises:
that cluster must be on a trusted network. The driver's ``BENCH_CACHE`` and ``BENCH_DATA`` are passed to
the tasks: on a cluster they should name a shared filesystem path, or a path that exists on every node
(per-node caches).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

from bench.cache import DetectorCache
from bench.execute import Log, UnitResult, execute_group, failed_group, failure_reason
from bench.plan import ExecutorSettings, RunPlan, UnitGroup, resolve_device

ENV_PASSED = ("BENCH_CACHE", "BENCH_DATA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a loopback node address
LOOPBACK = "127.0.0.1"  # the node address of a private Ray (Ray's own choice is the network interface)
WAIT_SECONDS = 0.5  # how long the driver waits for a task before it checks for Ctrl-C again


def run_unit_group(plan: RunPlan, group: UnitGroup, cache_root: str, threads: int) -> list[UnitResult]:
    """The body of one Ray task (on a worker): the group's results, in attack order."""
    import torch

    from bench.determinism import configure as configure_determinism

    torch.set_num_threads(max(1, threads))
    if plan.device == "auto":  # chosen on the worker's node
        plan = dataclasses.replace(plan, device=resolve_device("auto"))
    configure_determinism(plan.profile, plan.device)  # as the local runner: the same rows on ci
    return list(execute_group(plan, group, DetectorCache(cache_root)))


def keep_on_loopback(ray) -> None:
    """Make Ray take 127.0.0.1 as this node's address. Ray turns a loopback ``_node_ip_address`` into the
    machine's network address, except where it runs single-machine only (Windows, macOS), which
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` asks for on Linux too; the module constant is read at import,
    so an imported Ray gets the same switch. Only for an instance started here, never when joining a
    cluster."""
    from ray._private import ray_constants

    os.environ[SINGLE_MACHINE_ENV] = "0"  # for the processes Ray starts from here
    ray_constants.ENABLE_RAY_CLUSTER = False


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        retries: int = 2,
        settings: ExecutorSettings | None = None,
        task: Callable[..., list[UnitResult]] = run_unit_group,
    ):
        self.address = address
        self.retries = retries
        self.settings = settings or ExecutorSettings()
        self.task = task  # tests pass a wrapper that kills its worker

    def _init(self, ray) -> bool:
        """Connect to (or start) Ray; True when this call started it (and must stop it)."""
        if ray.is_initialized():
            return False
        env = {name: os.environ[name] for name in ENV_PASSED if name in os.environ}
        options = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
            "runtime_env": {"env_vars": env} if env else None,
        }
        if self.address is None:  # a private instance: reachable from this machine only
            keep_on_loopback(ray)
            options["_node_ip_address"] = LOOPBACK
            if self.settings.local_cpus:
                options["num_cpus"] = self.settings.local_cpus
        ray.init(address=self.address, **options)
        return True

    def resources(self, ray) -> dict[str, float]:
        gpus = self.settings.gpus_per_task
        if gpus < 0:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return {"num_cpus": self.settings.cpus_per_task, "num_gpus": gpus}

    def run(
        self, plan: RunPlan, groups: list[UnitGroup], cache: DetectorCache, log: Log = None
    ) -> Iterator[UnitResult]:
        if not groups:
            return
        import ray
        from ray.exceptions import RayError

        started_here = self._init(ray)
        pending: dict = {}
        try:
            remote = ray.remote(self.task).options(max_retries=self.retries, **self.resources(ray))
            plan_ref = ray.put(plan)
            threads = max(1, int(self.settings.cpus_per_task))
            pending = {remote.remote(plan_ref, group, str(cache.root), threads): group for group in groups}
            while pending:
                # a bounded wait: a blocking ray.wait holds off Ctrl-C until some task finishes
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                for ref in done:
                    group = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except RayError as error:  # the worker died more than --retries times, or the task failed
                        reason = failure_reason(getattr(error, "cause", None) or error)
                        if log:
                            log(f"{group.method} {group.cell} seed {group.seed}: {reason}")
                        results = list(failed_group(plan, group, f"ray task failed: {reason}"))
                    yield from results
        except BaseException:  # Ctrl-C, a failed write in the driver, an abandoned iteration: stop the rest
            for ref in pending:
                ray.cancel(ref, force=True)  # on a cluster joined with --address they would run on
            raise
        finally:
            if started_here:
                ray.shutdown()
