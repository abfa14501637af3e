"""Faults a long run meets: a second writer, a stale lock, corrupt cache entries, NaN scores, a failing
unit, an unwritable or full output folder, a GPU out-of-memory error during an attack; and the device
that ``--device auto`` chose.

A registered test method (score = mean pixel plus a learnable offset) on two nd cells keeps every run
to a second or two.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from bench import plan as plan_module
from bench import store as store_module
from bench.attacks.pgd import PGD
from bench.cache import DIGESTS, DetectorCache, payload_hash
from bench.cli import main
from bench.contracts import Method
from bench.detector import DETECTOR_CLASSES, Detector
from bench.errors import BadInput
from bench.plan import RunSpec, plan_run
from bench.protocols import NoveltyDetection
from bench.registry import METHODS
from bench.runner import Runner
from bench.store import RunFolderInUse, RunLock, StorageError

from .conftest import read_rows


class OffsetDetector(Detector):
    """Mean pixel + an offset; ``poison`` makes some scores NaN (1) or inf (2)."""

    def __init__(self, poison: int = 0):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.poison = poison

    def config(self):
        return {"poison": self.poison}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(1) + self.offset
        if self.poison:
            bad = torch.full_like(score[:3], float("nan") if self.poison == 1 else float("inf"))
            score = torch.cat([bad, score[3:]])
        return score


@dataclass
class OffsetMethod(Method):
    poison: int = 0  # --set offset.poison=1: NaN scores, 2: inf scores

    def fit(self, task, ctx):
        return OffsetDetector(self.poison)


CELLS = ["class0", "class1"]


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setattr(NoveltyDetection, "cell_ids", lambda self, dataset, profile, seed: CELLS)
    monkeypatch.setitem(METHODS._items, "offset", OffsetMethod)
    monkeypatch.setitem(DETECTOR_CLASSES, "OffsetDetector", OffsetDetector)

    def run(out="run", cache="cache", settings=(), attacks=("clean", "pgd"), **spec_fields):
        spec = RunSpec(
            methods=["offset"],
            protocol="nd",
            profile="ci",
            device="cpu",
            attacks=list(attacks),
            out=tmp_path / out,
            settings=list(settings),
            **spec_fields,
        )
        plan = plan_run(spec)
        runner = Runner(plan, cache=DetectorCache(tmp_path / cache))
        return plan, runner.run()

    return run


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- one writer per run folder -------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(run_dir: Path, record) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".lock").write_text(record if isinstance(record, str) else json.dumps(record))


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the run folder's lock and keeps it for a minute (or until killed)."""
    code = (
        "import sys, time; from bench.store import RunLock; RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    return holder


def test_a_second_writer_is_refused_naming_the_first(tiny, tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunFolderInUse, match=rf"in use by pid {holder.pid} on host .*lock file"):
            tiny()
        assert not (tmp_path / "run" / "results.csv").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("holder", ["dead pid", "garbled", "empty"])
def test_a_stale_lock_is_reclaimed(tiny, tmp_path, holder):
    record = {
        "dead pid": {"pid": _dead_pid(), "host": socket.gethostname(), "started": "t"},
        "garbled": "{not json",
        "empty": "",
    }[holder]
    _write_lock(tmp_path / "run", record)
    plan, manifest = tiny()
    assert manifest["invocations"][-1]["units_pending"] == 4
    assert not (tmp_path / "run" / ".lock").exists()  # released at the end


def test_a_lock_from_another_host_is_not_reclaimed(tmp_path):
    _write_lock(tmp_path / "run", {"pid": 1, "host": "some-other-host", "started": "t"})
    with pytest.raises(RunFolderInUse, match="some-other-host"), RunLock(tmp_path / "run"):
        pass
    lock = RunLock(tmp_path / "fresh")
    with lock:
        holder = json.loads((tmp_path / "fresh" / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with (
            pytest.raises(RunFolderInUse, match="already being written by this process"),
            RunLock(tmp_path / "fresh"),
        ):
            pass
    assert not (tmp_path / "fresh" / ".lock").exists()


# ---- corrupt cache entries --------------------------------------------------------------------------


def _corrupt_detector(entry: Path, how: str) -> None:
    weights, record = entry / "detector.safetensors", entry / "detector.json"
    if how == "truncated safetensors":
        weights.write_bytes(weights.read_bytes()[:20])
    elif how == "json key mismatch":  # a well-formed JSON that is not this entry's
        data = json.loads(record.read_text())
        data["meta"]["cache_key"] = "0" * 24
        record.write_text(json.dumps(data))
        (entry / DIGESTS).unlink()  # as an entry written before digests existed
    elif how == "json digest mismatch":
        data = json.loads(record.read_text())
        data["config"]["poison"] = 0
        record.write_text(json.dumps(data) + " ")
    elif how == "missing weights":
        weights.unlink()
    elif how == "garbled json":
        record.write_text("{")
    elif how == "unreadable digests":
        (entry / DIGESTS).write_text("[")


CORRUPTIONS = [
    "truncated safetensors",
    "json key mismatch",
    "json digest mismatch",
    "missing weights",
    "garbled json",
    "unreadable digests",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_detector_entry_is_deleted_and_rebuilt_with_a_warning(tiny, tmp_path, how):
    tiny(out="first")
    entries = sorted((tmp_path / "cache" / "detectors").iterdir())
    assert len(entries) == 2 and all((e / DIGESTS).is_file() for e in entries)
    _corrupt_detector(entries[0], how)
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        plan, manifest = tiny(out="second")
    assert {r["status"] for r in read_rows(plan.run_dir)} == {"ok"}
    recovered = [w for w in manifest["warnings"] if w.startswith("corrupt cache entry")]
    assert len(recovered) == 1 and entries[0].name in recovered[0]
    assert (entries[0] / DIGESTS).is_file()  # rebuilt, whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry loads without a warning
        assert DetectorCache(tmp_path / "cache").load_detector(entries[0].name) is not None


@pytest.mark.parametrize("how", ["truncated weights", "payload mismatch", "digest mismatch"])
def test_a_corrupt_tensor_entry_is_deleted_and_loads_as_missing(tmp_path, how):
    cache = DetectorCache(tmp_path)
    payload = {"network": "tiny", "seed": 0}
    cache.save_weights(payload, {"w": torch.arange(100.0)}, {"epochs": 1})
    entry = tmp_path / "networks" / payload_hash(payload)
    assert cache.load_weights(payload) is not None
    if how == "truncated weights":
        path = entry / "weights.safetensors"
        path.write_bytes(path.read_bytes()[:-30])
    elif how == "payload mismatch":
        meta = json.loads((entry / "meta.json").read_text())
        meta["payload"]["seed"] = 1
        (entry / "meta.json").write_text(json.dumps(meta))
        (entry / DIGESTS).unlink()
    else:
        save_file({"w": torch.zeros(100)}, str(entry / "weights.safetensors"))
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert cache.load_weights(payload) is None
    assert not entry.exists() and len(cache.recovered) == 1
    cache.save_weights(payload, {"w": torch.arange(100.0)}, {"epochs": 1})  # rebuilt by the caller
    assert torch.equal(cache.load_weights(payload)[0]["w"], torch.arange(100.0))


# ---- NaN / inf scores and failing units ------------------------------------------------------------


@pytest.mark.parametrize(("poison", "word"), [(1, "3 NaN, 0 inf"), (2, "0 NaN, 3 inf")])
def test_non_finite_scores_become_error_rows_with_the_reason(tiny, poison, word):
    plan, manifest = tiny(settings=[f"offset.poison={poison}"])
    rows = read_rows(plan.run_dir)
    assert {r["status"] for r in rows} == {"error"}
    assert len(rows) == 4  # one auroc row per unit, no number
    for row in rows:
        assert row["value"] == "" and row["metric"] == "auroc"
        assert row["reason"].startswith("non-finite clean scores on set test: ") and word in row["reason"]
    assert manifest["invocations"][-1]["units_error"] == 4
    assert not (plan.run_dir / "scores").exists()
    # error units are not finished: the same command tries them again
    _, manifest = tiny(settings=[f"offset.poison={poison}"])
    assert manifest["invocations"][-1]["units_pending"] == 4


def test_a_failing_unit_group_becomes_error_rows_and_the_others_go_on(tiny, monkeypatch):
    original = OffsetMethod.fit
    calls = []

    def fit(self, task, ctx):  # the second group (class1) fails
        calls.append(task)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in fit\nsecond line")
        return original(self, task, ctx)

    monkeypatch.setattr(OffsetMethod, "fit", fit)
    plan, _ = tiny()
    rows = read_rows(plan.run_dir)
    by_cell = {cell: {r["status"] for r in rows if r["cell"] == cell} for cell in CELLS}
    assert by_cell == {"class0": {"ok"}, "class1": {"error"}}
    failed = [r for r in rows if r["status"] == "error"]
    assert {r["reason"] for r in failed} == {"RuntimeError: simulated failure in fit"}
    assert {r["attack"] for r in failed} == {"clean", "pgd"}


# ---- output folder --------------------------------------------------------------------------------------


def test_an_unwritable_out_is_refused_before_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    target = Path("/sys/bench-run")
    try:
        fd, probe = __import__("tempfile").mkstemp(dir="/sys")
        os.close(fd)
        os.unlink(probe)
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--out", str(target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'/sys/bench-run' is not writable" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_refused_before_training(tmp_path, monkeypatch):
    usage = store_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(plan_module.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    spec = RunSpec(methods=["oe"], protocol="nd", profile="ci", out=tmp_path / "run")
    with pytest.raises(BadInput, match=r"has 10 MiB free on its disk; accepted: a folder with at least 64"):
        plan_run(spec)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_during_the_run_keeps_results_csv_whole(tiny, tmp_path, monkeypatch):
    real = store_module.atomic_write_bytes
    writes = {"csv": 0}

    def filling(path, data):
        if path.name == "results.csv":
            writes["csv"] += 1
            if writes["csv"] == 3:  # the third unit's rows do not fit
                tmp = path.parent / f".{path.name}.partial.tmp"
                tmp.write_bytes(data[: len(data) // 2])
                tmp.unlink()  # what atomic_write_bytes does on a failed write
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_module, "atomic_write_bytes", filling)
    with pytest.raises(StorageError, match="No space left on device.*run the same command to resume"):
        tiny()
    rows = read_rows(tmp_path / "run")
    assert len({(r["cell"], r["attack"]) for r in rows}) == 2  # the two stored units, whole
    assert not (tmp_path / "run" / ".lock").exists()
    monkeypatch.setattr(store_module, "atomic_write_bytes", real)
    _, manifest = tiny()  # space freed: the same command resumes
    assert manifest["invocations"][-1]["units_pending"] == 2
    assert len(read_rows(tmp_path / "run")) == 4 * 4


# ---- GPU out of memory during an attack --------------------------------------------------------------


def test_out_of_memory_halves_the_attack_batch_and_records_it(tiny, monkeypatch):
    original = PGD.perturb
    batches = []

    def perturb(self, detector, x, is_outlier, eps):
        batches.append(len(x))
        if len(x) > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, detector, x, is_outlier, eps)

    monkeypatch.setattr(PGD, "perturb", perturb)
    plan, manifest = tiny()
    rows = read_rows(plan.run_dir)
    assert {r["status"] for r in rows} == {"ok"}
    n = int(rows[0]["n_in"]) + int(rows[0]["n_out"])
    sizes = manifest["attack_batch_sizes"]
    assert set(sizes) == {f"offset {cell} seed 0 pgd" for cell in CELLS}
    expected = n
    while expected > 40:
        expected //= 2
    assert set(sizes.values()) == {expected}
    assert batches[0] == n and expected in batches
    pgd = [r for r in rows if r["attack"] == "pgd"]
    assert {r["grad_evals"] for r in pgd} == {"10"}  # the failed attempt's spending is not counted
    on_disk = json.loads((plan.run_dir / "manifest.json").read_text())
    assert on_disk["attack_batch_sizes"] == sizes


# ---- --device auto ------------------------------------------------------------------------------------


def test_device_auto_prints_the_device_it_chose(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--attacks", "clean", "--dry-run"])
    out = capsys.readouterr().out
    chosen = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"device: {chosen} (chosen by --device auto)" in out
    main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--device", "cpu", "--dry-run"])
    assert "chosen by --device auto" not in capsys.readouterr().out
