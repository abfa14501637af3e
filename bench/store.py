"""The result store of one run directory: results.csv, scores/, artifacts/, manifest.json, .lock.

The store alone writes a run folder. Every write is atomic (write a temporary file beside the target,
then ``os.replace``), so a run that is killed loses at most the unit in flight, and a reader never sees
a half-written file. ``RunLock`` keeps one writer per run folder: a lock file holding the writer's pid and
host, flocked while that writer runs.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.checks import CHECKS_FILE, check_rows, replace_unit_checks
from bench.errors import BadInput
from bench.files import atomic_write_bytes
from bench.provenance import now

COLUMNS = [
    "run_id",
    "method",
    "method_hash",
    "protocol",
    "dataset",
    "cell",
    "seed",
    "attack",
    "attack_hash",
    "detector_digest",
    "eps",
    "steps",
    "restarts",
    "grad_evals",
    "queries",
    "metric",
    "value",
    "status",
    "reason",
    "n_in",
    "n_out",
    "fit_seconds",
    "attack_seconds",
    "profile",
    "split_version",
    "bench_version",
    "git_sha",
    "device",
    "timestamp",
    "backbone",  # the pre-trained backbones behind the row; "embedded:..." for a stand-in (issue 28)
    "warnings",  # the validity checks the unit tripped, ";"-separated (bench.checks, issue 29)
]

# Columns of results.csv before ``warnings`` existed; read with no warnings, and given the column when a
# unit is next written.
PRE_WARNINGS_COLUMNS = [c for c in COLUMNS if c != "warnings"]
# Columns of results.csv before ``backbone`` existed; read with an empty backbone (as rows of methods
# without pre-trained backbones have), and given the column when a unit is next written.
PRE_BACKBONE_COLUMNS = [c for c in PRE_WARNINGS_COLUMNS if c != "backbone"]
# Columns of results.csv before ``detector_digest`` existed; such files are still read (their rows' digest
# is empty: the detector behind them is unknown) and get the column when a unit is next written.
PRE_DIGEST_COLUMNS = [c for c in PRE_BACKBONE_COLUMNS if c != "detector_digest"]
# Columns of results.csv before ``attack_hash`` existed; such files are still read, and every unit in
# them counts as stale (its attack code is unknown).
LEGACY_COLUMNS = [c for c in PRE_DIGEST_COLUMNS if c != "attack_hash"]

AGGREGATE_SUFFIX = ":mean"  # cells named "<cell>:mean" hold the mean over a cell's evaluation sets


class StorageError(Exception):
    """A write into the run folder failed (disk full, folder made read-only): the finished units' rows
    are kept, the unit in flight is lost, and the same command resumes once the cause is fixed."""


class RunFolderInUse(BadInput):
    """Another live ``bench run`` holds the run folder's lock."""


def unit_of(cell: str) -> str:
    """The protocol cell a row belongs to (``all:glyphs`` -> ``all``)."""
    return cell.split(":", 1)[0]


class ResultStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.results_path = self.run_dir / "results.csv"
        self.manifest_path = self.run_dir / "manifest.json"
        self.scores_dir = self.run_dir / "scores"

    # results.csv -------------------------------------------------------------------------------
    def read_rows(self) -> list[dict[str, str]]:
        if not self.results_path.exists():
            return []
        with self.results_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is not None and list(reader.fieldnames) not in (
                COLUMNS,
                PRE_WARNINGS_COLUMNS,
                PRE_BACKBONE_COLUMNS,
                PRE_DIGEST_COLUMNS,
                LEGACY_COLUMNS,
            ):
                raise ValueError(f"{self.results_path} has unexpected columns {reader.fieldnames}")
            return [{column: row.get(column, "") for column in COLUMNS} for row in reader]

    def finished_units(self) -> set[tuple[str, str, int, str]]:
        """(method, cell, seed, attack) of every unit that has rows other than ``status=error`` (a unit
        that failed is tried again by the same command)."""
        return set(self.unit_hashes())

    def unit_hashes(self) -> dict[tuple[str, str, int, str], set[tuple[str, str]]]:
        """(method, cell, seed, attack) -> the (method_hash, attack_hash) pairs found in its rows
        (``status=error`` rows aside)."""
        found: dict[tuple[str, str, int, str], set[tuple[str, str]]] = {}
        for r in self.read_rows():
            if r["status"] == "error":
                continue
            key = (r["method"], unit_of(r["cell"]), int(r["seed"]), r["attack"])
            found.setdefault(key, set()).add((r["method_hash"], r["attack_hash"]))
        return found

    def detector_digests(self) -> dict[tuple[str, str, int], dict[str, str]]:
        """(method, cell, seed) -> {attack: the ``detector_digest`` of its rows} for the finished units
        (``status=error`` rows aside; "" for rows written before the column existed)."""
        found: dict[tuple[str, str, int], dict[str, str]] = {}
        for r in self.read_rows():
            if r["status"] != "error":
                key = (r["method"], unit_of(r["cell"]), int(r["seed"]))
                found.setdefault(key, {})[r["attack"]] = r["detector_digest"]
        return found

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append the rows of one finished unit (rewrites the file atomically)."""
        self.replace_unit_rows(None, rows)

    def replace_unit_rows(self, unit: tuple[str, str, int, str] | None, rows: list[dict[str, Any]]) -> None:
        """Drop the rows of ``unit`` (method, cell, seed, attack; None: none) and append ``rows``, in one
        atomic rewrite, so a reader sees either the old rows or the new ones."""
        kept = self.read_rows()
        if unit is not None:
            kept = [r for r in kept if (r["method"], unit_of(r["cell"]), int(r["seed"]), r["attack"]) != unit]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="raise")
        writer.writeheader()
        for row in kept:
            writer.writerow(row)
        for row in rows:
            writer.writerow({column: _format(row.get(column, "")) for column in COLUMNS})
        atomic_write_bytes(self.results_path, buffer.getvalue().encode())

    def write_unit(self, result) -> bool:
        """Store one finished unit (an ``execute.UnitResult``): its scores and the group's artifacts
        first, then its rows in one atomic rewrite of results.csv (replacing earlier rows of the unit).
        An error result never replaces finished rows (a failed recompute of a stale unit): they are kept,
        nothing is written, and False is returned."""
        unit = result.unit
        if result.status == "error" and unit.key in self.finished_units():
            return False
        if result.scores:
            self.save_scores(unit.method, unit.cell, unit.seed, unit.attack, result.scores)
        if result.artifacts:
            self.save_artifacts(f"{unit.method}/{unit.cell}-seed{unit.seed}", result.artifacts)
        if result.checks or (self.run_dir / CHECKS_FILE).exists():
            run_id = result.rows[0]["run_id"] if result.rows else ""
            replace_unit_checks(self.run_dir, unit.key, check_rows(run_id, unit.key, result.checks))
        self.replace_unit_rows(unit.key, result.rows)
        return True

    def save_artifacts(self, name: str, files: dict[str, bytes]) -> None:
        """``artifacts/<name>/`` with ``files`` (relative path -> content), written into a temporary folder
        and renamed into place; an existing folder (a stale unit's, recomputed) is replaced."""
        target = self.run_dir / "artifacts" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            for relative, data in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            if target.exists():
                old = target.with_name(f".old-{target.name}-{os.getpid()}")
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    # scores/ -----------------------------------------------------------------------------------
    def save_scores(
        self, method: str, cell: str, seed: int, attack: str, arrays: dict[str, np.ndarray]
    ) -> Path:
        path = self.scores_dir / method / cell / f"seed{seed}-{attack}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    # manifest.json -----------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=False, default=str)
        atomic_write_bytes(self.manifest_path, text.encode())


class RunLock:
    """One writer per run folder: ``<run_dir>/.lock`` holds the writer's pid, host and start time.

    The writer holds an exclusive ``fcntl.flock`` on the lock file for as long as it runs, so the kernel
    decides who holds it: a second writer is refused with ``RunFolderInUse`` naming the first, and a lock
    file left by a process that is gone (killed, crashed) carries no flock and is taken over at once. After
    taking the flock the writer checks that the path still names the file it locked (a releasing writer
    unlinks it), else it tries again. A record from another host is not taken over automatically (on a
    network filesystem that host may still be writing): the message says to delete it once that run is
    gone."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.held = False
        self._fd: int | None = None

    def holder(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _in_use(self, holder: dict[str, Any] | None) -> RunFolderInUse:
        holder = holder or {}
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return RunFolderInUse(f"--out {str(self.run_dir)!r} is already being written by this process")
        return RunFolderInUse(
            f"--out {str(self.run_dir)!r} is in use by pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} since {holder.get('started', '?')} (lock file {self.path}); "
            "accepted: wait for it, or delete the lock file if that run is gone"
        )

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._in_use(self.holder()) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our flock: try the new file
                os.close(fd)
                continue
            holder = self.holder()
            if holder and isinstance(holder.get("host"), str) and holder["host"] != socket.gethostname():
                os.close(fd)
                raise self._in_use(holder)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            self._fd, self.held = fd, True
            return self
        raise RunFolderInUse(f"--out {str(self.run_dir)!r}: could not take the lock file {self.path}")

    def release(self) -> None:
        if self.held and self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding the flock (see acquire)
            os.close(self._fd)
        self._fd, self.held = None, False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:
        return error.errno != errno.ESRCH
    return True


def _format(value: Any) -> Any:
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return repr(round(value, 10))
    return value
