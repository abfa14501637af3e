"""The result store of one run directory: results.csv, scores/, manifest.json.

Every write is atomic (write a temporary file beside the target, then ``os.replace``), so a run that is
killed loses at most the unit in flight, and a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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
]

# Columns of results.csv before ``attack_hash`` existed; such files are still read, and every unit in
# them counts as stale (its attack code is unknown).
LEGACY_COLUMNS = [c for c in COLUMNS if c != "attack_hash"]

AGGREGATE_SUFFIX = ":mean"  # cells named "<cell>:mean" hold the mean over a cell's evaluation sets


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; the file is 0644 (shareable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600: results are meant to be read and served
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            if reader.fieldnames is not None and list(reader.fieldnames) not in (COLUMNS, LEGACY_COLUMNS):
                raise ValueError(f"{self.results_path} has unexpected columns {reader.fieldnames}")
            return [{column: row.get(column, "") for column in COLUMNS} for row in reader]

    def finished_units(self) -> set[tuple[str, str, int, str]]:
        """(method, cell, seed, attack) of every unit that has rows."""
        return set(self.unit_hashes())

    def unit_hashes(self) -> dict[tuple[str, str, int, str], set[tuple[str, str]]]:
        """(method, cell, seed, attack) -> the (method_hash, attack_hash) pairs found in its rows."""
        found: dict[tuple[str, str, int, str], set[tuple[str, str]]] = {}
        for r in self.read_rows():
            key = (r["method"], unit_of(r["cell"]), int(r["seed"]), r["attack"])
            found.setdefault(key, set()).add((r["method_hash"], r["attack_hash"]))
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


def _format(value: Any) -> Any:
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return repr(round(value, 10))
    return value
