"""bench study osr-per-class: the rebuilt test sample lines up with a grid's stored scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import for_dataset, get_profile
from bench.registry import DATASETS, PROTOCOLS
from bench.studies import osr_per_class


def fake_grid(root: Path, flag_unknown: int, shuffle_flags: bool = False) -> Path:
    """A results folder as a grid leaves it: manifest and clean scores of split 0 on digits (ci profile),
    scored 1 on the images of ``flag_unknown`` and 0 elsewhere."""
    builder = DATASETS.get("digits")
    dataset = builder()
    profile = for_dataset(get_profile("ci"), builder)
    cell = next(iter(PROTOCOLS.get("osr")().cells(dataset, profile, 0, "cpu")))
    evalset = cell.evalsets[0]
    # the script's own rebuild (test_rebuilt_labels_match_the_evalset checks it against the evalset)
    labels = osr_per_class.test_labels(dataset, profile, PROTOCOLS.get("osr")(), "split0")
    assert len(labels) == len(evalset.images)
    scores = (labels == flag_unknown).astype(np.float32)
    is_outlier = evalset.is_outlier.numpy().copy()
    if shuffle_flags:
        is_outlier = np.roll(is_outlier, 1)
    folder = root / "grid"
    (folder / "scores" / "msp" / "split0").mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"config": {"dataset": "digits", "protocol": "osr", "profile": "ci"}})
    )
    np.savez(
        folder / "scores" / "msp" / "split0" / "seed0-clean.npz",
        test__clean=scores,
        test__attacked=scores,
        test__is_outlier=is_outlier,
    )
    return folder


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "study", "osr-per-class", *args], capture_output=True, text=True
    )


def test_rebuilt_labels_match_the_evalset():
    """The rebuilt labels give the evalset's outlier flags and its relabelled inlier classes."""
    builder = DATASETS.get("digits")
    dataset = builder()
    profile = for_dataset(get_profile("ci"), builder)
    protocol = PROTOCOLS.get("osr")()
    labels = osr_per_class.test_labels(dataset, profile, protocol, "split1")
    cell = list(protocol.cells(dataset, profile, 0, "cpu"))[1]
    evalset = cell.evalsets[0]
    known = protocol.known_classes(dataset.num_classes, 1)
    assert np.array_equal(~np.isin(labels, known), evalset.is_outlier.numpy())
    inliers = ~evalset.is_outlier.numpy()
    assert np.array_equal(np.array(known)[evalset.labels.numpy()[inliers]], labels[inliers])


def test_known_answer_per_class(tmp_path):
    """A score that flags one unknown class alone: AUROC 1 for that class, 0.5 for the other unknowns."""
    protocol = PROTOCOLS.get("osr")()
    known = protocol.known_classes(10, 0)
    target = next(c for c in range(10) if c not in known)
    folder = fake_grid(tmp_path, target)
    done = run(str(folder), "--out", str(tmp_path / "rows.csv"))
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(tmp_path / "rows.csv")
    unknown = rows[rows.side == "unknown"].set_index("class").auroc
    assert unknown[target] == 1.0
    assert all(unknown[c] == 0.5 for c in unknown.index if c != target)
    assert set(rows[rows.side == "known"]["class"]) == set(known)
    table = run("--markdown", "msp", "--from", str(tmp_path / "rows.csv"))
    assert table.returncode == 0 and f"| unknown | {target} | 100.0 |" in table.stdout


def test_refuses_a_sample_that_does_not_line_up(tmp_path):
    folder = fake_grid(tmp_path, 0, shuffle_flags=True)
    done = run(str(folder))
    assert done.returncode != 0 and "does not match its outlier flags" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["--markdown", "msp"], "--markdown needs --from"), ([], "name an osr grid's results folder")],
)
def test_bad_input_exits_2(args, message):
    done = run(*args)
    assert done.returncode == 2 and message in done.stderr
