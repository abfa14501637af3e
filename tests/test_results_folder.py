"""results/ is data (docs/design.md, "Layout"): committed results are CSV, JSON and npz with a README per
folder; pages, plots and pictures are built by ``make site`` and never committed."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = {".csv", ".json", ".npz"}
TEXT = {"README.md", "GRID_CODE"}  # a folder's README; the reference grids' pinned commit


def tracked_results() -> list[PurePosixPath]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [PurePosixPath(p) for p in listed]


def test_committed_results_are_data_files_only():
    other = [str(p) for p in tracked_results() if p.suffix not in DATA and p.name not in TEXT]
    assert not other, f"not data (build pages, plots and pictures with make site): {other}"


def test_every_results_folder_has_a_readme():
    files = tracked_results()
    folders = {p.parts[1] for p in files if len(p.parts) > 2}
    missing = sorted(f for f in folders if PurePosixPath("results", f, "README.md") not in files)
    assert not missing, f"results folders without a README.md saying what each file is: {missing}"
