"""Issue 31, "nothing lost": a cache entry is deleted only when its files are corrupt, a failed recompute
keeps the good rows, one writer per run folder under a forced interleaving, an unwritable cache, ``--out``
into a folder that is not a run, and a tampered cache entry.

The runs use test_reliability's registered test method (score = mean pixel + an offset) on two nd cells.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import socket
import warnings

import pytest
import torch
from safetensors.torch import save_file

from bench import cache as cache_module
from bench import execute as execute_module
from bench.cache import DIGESTS, DetectorCache, file_digests
from bench.cli import main
from bench.detector import DETECTOR_CLASSES
from bench.store import RunFolderInUse, RunLock

from . import test_reliability
from .conftest import read_rows
from .test_reliability import OffsetDetector, OffsetMethod, _dead_pid, _write_lock, hold_lock

tiny = test_reliability.tiny  # the fixture: a registered test method on two nd cells


def _entries(tmp_path, cache="cache"):
    return sorted((tmp_path / cache / "detectors").iterdir())


def _set_offset(entry, value: float, rewrite_digests: bool) -> None:
    """Change the entry's weights (a tampered or damaged cache); optionally make its digests match."""
    save_file({"offset": torch.tensor(value)}, str(entry / "detector.safetensors"))
    if rewrite_digests:
        (entry / DIGESTS).write_text(json.dumps(file_digests(entry)))


def _rewrite(run_dir, change) -> None:
    """Rewrite results.csv with ``change(rows) -> rows`` (what another machine or code left)."""
    path = run_dir / "results.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(change(rows))


# ---- 1. the cache deletes only corrupt entries --------------------------------------------------------


@pytest.mark.parametrize("failure", ["device out of memory", "detector class not registered"])
def test_a_load_failure_that_is_not_corruption_keeps_the_entry(tiny, tmp_path, monkeypatch, failure):
    tiny()
    entry = _entries(tmp_path)[0]
    files = {p.name: p.read_bytes() for p in entry.iterdir()}
    if failure == "device out of memory":

        def to(self, *args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

        monkeypatch.setattr(OffsetDetector, "to", to)
        expected = torch.cuda.OutOfMemoryError
    else:
        monkeypatch.delitem(DETECTOR_CLASSES, "OffsetDetector")
        expected = KeyError
    cache = DetectorCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "corrupt cache entry" warning
        with pytest.raises(expected):
            cache.load_detector(entry.name, "cuda")
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == files and cache.recovered == []


# ---- 2. a failed recompute keeps the good rows --------------------------------------------------------


def test_a_failed_rerun_of_stale_units_keeps_their_rows(tiny, tmp_path, monkeypatch):
    plan, _ = tiny()
    _rewrite(plan.run_dir, lambda rows: [{**r, "method_hash": "0" * 12} for r in rows])  # older code
    before = read_rows(plan.run_dir)

    def fit(self, task, ctx):
        raise RuntimeError("simulated failure in fit")

    monkeypatch.setattr(OffsetMethod, "fit", fit)
    plan, manifest = tiny(cache="cold", rerun_stale=True)
    assert read_rows(plan.run_dir) == before  # 16 ok rows, not 4 error rows
    failed = [w for w in manifest["warnings"] if "the recompute failed" in w]
    assert len(failed) == 4 and all("RuntimeError: simulated failure in fit" in w for w in failed)
    assert manifest["invocations"][-1]["units_error"] == 4


def test_a_failed_redo_with_another_detector_keeps_the_rows(tiny, tmp_path, monkeypatch):
    """class0's clean rows came from another machine's detector and its pgd unit was killed: the redo of
    clean fails, and its rows stay (the same command tries again)."""
    plan, _ = tiny()
    other = "f" * 16
    _rewrite(
        plan.run_dir,
        lambda rows: [
            {**r, "detector_digest": other} if r["attack"] == "clean" else r
            for r in rows
            if not (r["cell"] == "class0" and r["attack"] == "pgd")
        ],
    )
    before = [r for r in read_rows(plan.run_dir) if r["cell"] == "class0"]

    def attack_unit(*args, **kwargs):
        raise RuntimeError("simulated failure in the attack")

    monkeypatch.setattr(execute_module, "attack_unit", attack_unit)
    plan, manifest = tiny(cache="cold")
    rows = [r for r in read_rows(plan.run_dir) if r["cell"] == "class0"]
    assert [r for r in rows if r["attack"] == "clean"] == before
    assert [r["status"] for r in rows if r["attack"] == "pgd"] == ["error"]
    assert any("class0 seed 0 clean: the recompute failed" in w for w in manifest["warnings"])


# ---- 3. one writer per run folder -------------------------------------------------------------------


def test_two_writers_never_both_hold_the_lock_under_a_forced_interleaving(tmp_path, monkeypatch):
    """The first writer reads a stale lock; before it acts, a second writer takes the lock over. The first
    must not then take it from the second."""
    run_dir = tmp_path / "run"
    _write_lock(run_dir, {"pid": _dead_pid(), "host": socket.gethostname(), "started": "t"})
    first, second = RunLock(run_dir), RunLock(run_dir)
    real_holder = RunLock.holder
    refused = []

    def holder(self):
        record = real_holder(self)
        if self is first and not refused and not second.held:
            refused.append(None)
            try:
                second.acquire()
            except RunFolderInUse as error:
                refused[-1] = error
        return record

    monkeypatch.setattr(RunLock, "holder", holder)
    try:
        with contextlib.suppress(RunFolderInUse):
            first.acquire()
        assert refused, "the interleaving did not happen"
        assert first.held != second.held  # exactly one holds it
        holder_record = json.loads((run_dir / ".lock").read_text())
        assert holder_record["pid"] > 0 and holder_record["started"] != "t"
    finally:
        first.release()
        second.release()


def test_a_lock_whose_writer_was_killed_is_taken_over_while_a_live_one_is_refused(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunFolderInUse, match=rf"in use by pid {holder.pid} on host"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()  # kill -9: the lock file stays behind
        holder.wait()
    assert (tmp_path / "run" / ".lock").exists()
    with RunLock(tmp_path / "run") as lock:
        assert lock.held
    assert not (tmp_path / "run" / ".lock").exists()


# ---- 4. an unwritable or full cache ---------------------------------------------------------------------


def test_an_unwritable_cache_is_refused_while_planning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE", "/dev/null/cache")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BENCH_CACHE '/dev/null/cache'" in err[0] and "accepted:" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_cache_save_that_fails_after_training_keeps_the_units(tiny, monkeypatch):
    def full(target, write, replace=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "publish_entry", full)
    with pytest.warns(UserWarning, match="could not save cache entry"):
        plan, manifest = tiny()
    assert {r["status"] for r in read_rows(plan.run_dir)} == {"ok"}
    assert len([w for w in manifest["warnings"] if "could not save cache entry" in w]) == 2


# ---- 5. --out into a folder that is not a run ---------------------------------------------------------


def test_out_into_a_non_empty_folder_that_is_not_a_run_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "my-paper"
    (folder / "plots").mkdir(parents=True)
    (folder / "report.html").write_text("my own report")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for extra in (["--dry-run"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "run",
                    "--methods",
                    "oe",
                    "--protocol",
                    "nd",
                    "--profile",
                    "ci",
                    "--out",
                    str(folder),
                    *extra,
                ]
            )
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(folder) in err[0] and "no manifest.json" in err[0]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


# ---- 9. cache entries are tamper-evident ---------------------------------------------------------------


def test_an_entry_without_digests_is_not_trusted(tiny, tmp_path):
    tiny()
    entry = _entries(tmp_path)[0]
    (entry / DIGESTS).unlink()
    _set_offset(entry, 5.0, rewrite_digests=False)
    cache = DetectorCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match=f"corrupt cache entry .*no {DIGESTS}"):
        assert cache.load_detector(entry.name) is None
    assert not entry.exists()


def test_a_cache_entry_that_is_not_the_detector_behind_the_rows_is_refused(tiny, tmp_path):
    """Weights changed and digests.json rewritten to match (a writable shared cache): resuming the run,
    the entry's digest differs from the rows' detector_digest, so it is refused and the detector rebuilt."""
    plan, _ = tiny()
    digests = {r["detector_digest"] for r in read_rows(plan.run_dir)}
    assert len(digests) == 1  # both cells train an offset of 0
    _rewrite(plan.run_dir, lambda rows: [r for r in rows if r["attack"] != "pgd"])  # killed before pgd
    for entry in _entries(tmp_path):
        _set_offset(entry, 0.5, rewrite_digests=True)
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        plan, manifest = tiny()
    rows = read_rows(plan.run_dir)
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 16
    assert {r["detector_digest"] for r in rows} == digests  # the tampered weights produced no row
    refused = [w for w in manifest["warnings"] if "of the run's rows" in w]
    assert len(refused) == 2
    assert manifest["invocations"][-1]["units_redone"] == 0


# ---- 8. one line instead of a traceback --------------------------------------------------------------


def test_a_manifest_that_is_a_json_list_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--out", "run", "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'run' holds an unreadable manifest.json" in err[0]


def test_a_report_that_cannot_be_written_after_a_run_is_one_line_and_keeps_the_rows(
    tiny, tmp_path, monkeypatch, capsys
):
    import bench.report

    def unwritable(run_dir):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(bench.report, "write_report", unwritable)
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--methods", "offset", "--protocol", "nd", "--profile", "ci", "--attacks", "clean"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cpu", "--out", "run"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not write the report" in err[0] and "Permission denied" in err[0]
    assert {r["status"] for r in read_rows(tmp_path / "run")} == {"ok"}


# ---- 11. what a published site leaks ------------------------------------------------------------------


def _leaky_run(folder):
    from .test_report_fuzz import COLUMNS, csv_text, good_rows

    rows = good_rows()
    rows[0]["reason"] = '=HYPERLINK("http://evil.example","click")'
    rows[1]["method"] = "@SUM(A1)"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text(csv_text(rows, COLUMNS))
    manifest = {
        "run_id": "run",
        "command": "bench run --out /home/alice/secret-project/run",
        "host": "alice-laptop.corp.example",
        "platform": "Linux-6.1-secret-kernel-x86_64",
        "config": {"methods": {"m0": {"lam": 1}}, "frozen_detectors": "/home/alice/secret-project/det"},
        "invocations": [{"command": "bench run ...", "host": "alice-laptop.corp.example"}],
        "warnings": ["corrupt cache entry /home/alice/.cache/bench/detectors/abc (x): deleted"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_site_publishes_no_host_no_command_no_absolute_path_and_no_formula(tmp_path, monkeypatch):
    run = tmp_path / "deep" / "inputs" / "run"
    _leaky_run(run)
    monkeypatch.chdir(tmp_path)
    main(["report", str(run), "--out", "site", "--no-plots", "--published", str(tmp_path)])
    text = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "site").rglob("*") if p.is_file())
    for secret in ("alice-laptop", "secret-kernel", "/home/alice", "bench run --out", str(tmp_path)):
        assert secret not in text, secret
    with (tmp_path / "site" / "results.csv").open(newline="") as handle:
        published = list(csv.DictReader(handle))
    assert published[0]["reason"] == "'" + '=HYPERLINK("http://evil.example","click")'
    assert published[1]["method"] == "'@SUM(A1)"
    assert not [r for r in published if r["value"].startswith("'")]  # numbers stay numbers
    main(["report", str(run), "--out", "site", "--no-plots", "--published", str(tmp_path), "--include-host"])
    text = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "site").rglob("*") if p.is_file())
    assert "alice-laptop" in text and str(run) in text


# ---- 10. the sha256 of hand-placed data --------------------------------------------------------------


def test_the_manifest_records_the_sha256_of_hand_placed_data(tmp_path, monkeypatch):
    """Two copies of the 300K Random Images file that pass the dtype and shape checks give two digests."""
    import hashlib

    import numpy as np

    from bench.manifest import invocation
    from bench.plan import RunSpec, plan_run

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    path = tmp_path / "data" / "300K_random_images.npy"
    path.parent.mkdir()
    spec = RunSpec(methods=["oe"], protocol="nd", profile="ci", oe="300k-random-images", out=tmp_path / "run")
    recorded = []
    for fill in (0, 1):
        np.save(path, np.full((50, 32, 32, 3), fill, dtype=np.uint8))
        record = invocation(plan_run(spec), "local", 0, 0)["data_sha256"]
        assert record == {"300K_random_images.npy": hashlib.sha256(path.read_bytes()).hexdigest()}
        recorded.append(record)
    assert recorded[0] != recorded[1]
