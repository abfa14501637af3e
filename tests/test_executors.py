"""Executors: the same rows on ``local`` and ``ray``, resume across executors, retries of dead workers,
and a clear exit 2 when ray is not installed.

The Ray tests start one local Ray instance of 2 CPUs (no dashboard) for the module and run a tiny grid:
digits, nd on two classes (ci profile), oe, clean and pgd: 2 unit groups, 4 units.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import plan as plan_module
from bench.cache import DetectorCache
from bench.cli import main
from bench.errors import BadInput
from bench.executors import LocalExecutor
from bench.plan import ExecutorSettings, RunSpec, UnitGroup, plan_run
from bench.runner import Runner
from bench.store import ResultStore

from .conftest import read_rows

TIMING = ("fit_seconds", "attack_seconds", "timestamp", "run_id")
GRID = dict(
    methods=["oe"],
    protocol="nd",
    cells=["class0", "class1"],
    profile="ci",
    attacks=["clean", "pgd"],
    device="cpu",
)


def _comparable(rows: list[dict[str, str]]) -> list[tuple]:
    return sorted(tuple(v for k, v in r.items() if k not in TIMING) for r in rows)


def _run_local(plan, cache_root: Path) -> float:
    """The ci profile fixes the thread count and kernels (bench.determinism) in both executors."""
    started = time.perf_counter()
    Runner(plan, cache=DetectorCache(cache_root), executor=LocalExecutor()).run()
    return time.perf_counter() - started


# ---- without ray -----------------------------------------------------------------------------------------


def test_executor_options_are_checked_before_anything_is_written(tmp_path):
    spec = RunSpec(**GRID, out=tmp_path / "run")
    for bad, match in [
        (dict(executor="spark"), r"unknown executor 'spark'; accepted: local, ray"),
        (dict(retries=-1), r"bad --retries -1"),
        (dict(address="auto"), r"--address 'auto' needs --executor ray"),
        (dict(executor="ray", address="not an address"), r"bad --address 'not an address'"),
        (dict(settings=["executor.cpus_per_task=0"]), r"executor.cpus_per_task=0"),
        (dict(settings=["executor.nope=1"]), r"unknown --set key 'executor.nope'"),
    ]:
        with pytest.raises(BadInput, match=match):
            plan_run(replace(spec, **bad))
    assert list(tmp_path.iterdir()) == []


def test_executor_settings_do_not_change_the_run(tmp_path):
    base = plan_run(RunSpec(**GRID))
    other = plan_run(RunSpec(**GRID, executor="local", settings=["executor.cpus_per_task=2"]))
    assert base.run_id == other.run_id and base.config() == other.config()
    assert other.executor_settings.cpus_per_task == 2.0


def test_missing_ray_exits_2_with_the_install_command(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        plan_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else find_spec(name, *a),
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--executor", "ray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[ray]'" in err[0] and "--executor ray" in err[0]
    assert list(tmp_path.iterdir()) == []


# ---- with ray --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    _ray_executor()._init(ray)  # a private Ray of 2 CPUs on 127.0.0.1, as bench run starts it
    yield ray
    ray.shutdown()


def _ray_executor(**kwargs):
    from bench.executors.ray_executor import RayExecutor

    return RayExecutor(settings=ExecutorSettings(local_cpus=2), **kwargs)


def test_local_and_ray_give_the_same_rows(tmp_path, ray_local):
    local = plan_run(RunSpec(**GRID, out=tmp_path / "local"))
    local_seconds = _run_local(local, tmp_path / "cache-local")
    remote = plan_run(RunSpec(**GRID, out=tmp_path / "ray", executor="ray"))
    started = time.perf_counter()
    manifest = Runner(remote, cache=DetectorCache(tmp_path / "cache-ray"), executor=_ray_executor()).run()
    ray_seconds = time.perf_counter() - started
    print(f"\nlocal {local_seconds:.1f} s, ray (2 CPUs, warm instance) {ray_seconds:.1f} s")
    local_rows, ray_rows = read_rows(tmp_path / "local"), read_rows(tmp_path / "ray")
    assert len(local_rows) == len(ray_rows) == 2 * 2 * 4  # cells x attacks x metrics (no id_acc on nd)
    assert {r["status"] for r in ray_rows} == {"ok"} and {r["device"] for r in ray_rows} == {"cpu"}
    assert _comparable(local_rows) == _comparable(ray_rows)
    assert manifest["invocations"][-1]["executor"] == "ray"
    assert not (tmp_path / "ray" / ".lock").exists()
    # the scores are the same files' content too
    for path in (tmp_path / "local" / "scores").rglob("*.npz"):
        twin = tmp_path / "ray" / path.relative_to(tmp_path / "local")
        import numpy as np

        a, b = np.load(path), np.load(twin)
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


def test_ray_resumes_a_run_of_either_executor(tmp_path, ray_local):
    spec = RunSpec(**GRID, out=tmp_path / "run")
    _run_local(plan_run(spec), tmp_path / "cache")
    store = ResultStore(tmp_path / "run")
    complete = read_rows(tmp_path / "run")
    lost = {("oe", "class1", 0, "pgd"), ("oe", "class0", 0, "clean")}  # as if killed before these
    for unit in lost:
        store.replace_unit_rows(unit, [])
    plan = plan_run(replace(spec, executor="ray"))
    manifest = Runner(plan, cache=DetectorCache(tmp_path / "cache"), executor=_ray_executor()).run()
    assert manifest["invocations"][-1]["units_pending"] == 2
    assert _comparable(read_rows(tmp_path / "run")) == _comparable(complete)
    # the code-version check holds on ray too: changed code is refused before any write
    before = (tmp_path / "run" / "results.csv").read_bytes()
    original = plan_module.method_hash
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan_module, "method_hash", lambda plan, name: "changed00000")
        with pytest.raises(BadInput, match="computed by other code"):
            plan_run(replace(spec, executor="ray"))
    assert plan_module.method_hash is original
    assert (tmp_path / "run" / "results.csv").read_bytes() == before


def _groups():
    return [UnitGroup("msp", "class0", 0, ("clean", "pgd")), UnitGroup("msp", "class1", 0, ("clean",))]


def test_a_dead_worker_is_retried_then_its_units_become_error_rows(tmp_path, ray_local):
    """msp on nd is not applicable (one inlier class), so a group finishes at once with na rows; the
    wrapped task kills its worker (os._exit) for class0: once (retried, then na rows) or always."""
    from bench.executors.ray_executor import run_unit_group

    marker = tmp_path / "crashed-once"

    def crash_once(plan, group, cache_root, threads):
        if group.cell == "class0" and not marker.exists():
            marker.write_text("x")
            os._exit(1)
        return run_unit_group(plan, group, cache_root, threads)

    def crash_always(plan, group, cache_root, threads):
        if group.cell == "class0":
            os._exit(1)
        return run_unit_group(plan, group, cache_root, threads)

    plan = plan_run(RunSpec(methods=["msp"], protocol="nd", profile="ci", device="cpu", executor="ray"))
    cache = DetectorCache(tmp_path / "cache")
    results = list(_ray_executor(retries=1, task=crash_once).run(plan, _groups(), cache))
    assert marker.exists()
    assert sorted((r.unit.cell, r.unit.attack, r.status) for r in results) == [
        ("class0", "clean", "na"),
        ("class0", "pgd", "na"),
        ("class1", "clean", "na"),
    ]
    results = list(_ray_executor(retries=1, task=crash_always).run(plan, _groups(), cache))
    by_cell = {(r.unit.cell, r.unit.attack): r for r in results}
    assert by_cell[("class1", "clean")].status == "na"  # the other group went on
    for attack in ("clean", "pgd"):
        failed = by_cell[("class0", attack)]
        assert failed.status == "error" and len(failed.rows) == 1
        assert failed.rows[0]["reason"].startswith("ray task failed: ")
        assert failed.rows[0]["value"] == "" and failed.rows[0]["grad_evals"] == 0


def test_ctrl_c_stops_the_driver_at_once_and_cancels_the_running_tasks(tmp_path, ray_local):
    """A blocking ``ray.wait`` held off Ctrl-C until a task finished (a reference grid's group takes
    10 minutes); the bounded wait lets it through, and the tasks in flight are cancelled so that their
    CPUs come back (on a cluster joined with --address they would otherwise run on)."""
    import signal
    import threading

    finished = tmp_path / "a task finished"

    def sleepy(plan, group, cache_root, threads):
        time.sleep(60)
        finished.write_text("the executor waited for its tasks instead of cancelling them")
        return []

    plan = plan_run(RunSpec(methods=["msp"], protocol="nd", profile="ci", device="cpu", executor="ray"))
    # Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it started; a shell
    # runs a background job (`.ci/run &`) with SIGINT ignored, so install the default handler here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(_ray_executor(task=sleepy).run(plan, _groups(), DetectorCache(tmp_path / "cache")))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not finished.exists()  # interrupted before its tasks' 60 s, not after them
    deadline = time.perf_counter() + 20
    while ray_local.available_resources().get("CPU", 0) < 2 and time.perf_counter() < deadline:
        time.sleep(0.5)
    assert ray_local.available_resources().get("CPU", 0) == 2  # both tasks were cancelled


def test_a_private_ray_binds_to_loopback(ray_local, monkeypatch):
    """Issue 31, item 12: the instance the tests start, and the one the executor starts without
    --address, take 127.0.0.1 as node address (Ray's own choice: the network interface), and so does
    every task; joining a cluster (--address) leaves the address to the cluster."""
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}
    assert (
        ray_local.get(ray_local.remote(lambda: ray_local.util.get_node_ip_address()).remote()) == "127.0.0.1"
    )
    calls = []
    monkeypatch.setattr(ray_local, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_local, "init", lambda **options: calls.append(options))
    _ray_executor()._init(ray_local)
    _ray_executor(address="auto")._init(ray_local)
    assert calls[0]["address"] is None and calls[0]["_node_ip_address"] == "127.0.0.1"
    assert calls[1]["address"] == "auto" and "_node_ip_address" not in calls[1]


@pytest.mark.slow
def test_kill_9_under_ray_loses_nothing_in_10_trials(tmp_path):
    """Issue 31, item 13: ``bench run --executor ray`` killed (-9, with the Ray it started) at a random
    moment, 10 times as for local runs: every unit stored before the kill is still there, the rows are
    whole, and the same command completes the run (tests/scale_figures.py, which also prints each trial)."""
    pytest.importorskip("ray")
    from .scale_figures import kill_trials

    figures = kill_trials(tmp_path, trials=10, executor="ray")
    assert figures["kept_after_kill"] == figures["finished_before_kill"]
    assert figures["all_resumed_to_20_units"]
    for trial in figures["per_trial"]:
        assert trial["csv_whole"] and trial["rows_before_resume_kept"], trial
