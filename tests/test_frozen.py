"""Frozen detectors (bench.frozen; bench run --save-detectors / --frozen-detectors): a saved run
evaluates again to the same rows without training; a missing or tampered entry is refused before any work."""

from __future__ import annotations

import csv
import json

import pytest

from bench.cli import main
from bench.frozen import NOT_APPLICABLE, entry_dir
from bench.registry import METHODS

RUN = ["run", "--methods", "oe", "msp", "--protocol", "nd", "--profile", "ci", "--cells", "class0",
       "--attacks", "clean", "pgd", "--device", "cpu"]  # fmt: skip


def _rows(run):
    with (run / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _bench(*args) -> int:
    """bench's exit code (0 when main returns)."""
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One ci run of oe (fitted) and msp (not applicable on nd) with --save-detectors."""
    root = tmp_path_factory.mktemp("frozen")
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_CACHE", str(root / "cache"))
    assert _bench(*RUN, "--out", str(root / "saved"), "--save-detectors", str(root / "detectors")) == 0
    mp.undo()
    return root


def test_a_frozen_run_trains_nothing_and_gives_the_same_rows(saved, tmp_path, monkeypatch):
    entry = entry_dir(saved / "detectors", "digits", "nd", "oe", "class0", 0)
    assert {p.name for p in entry.iterdir()} == {"detector.json", "detector.safetensors", "digests.json"}
    reason = json.loads(
        (entry_dir(saved / "detectors", "digits", "nd", "msp", "class0", 0) / NOT_APPLICABLE).read_text()
    )
    assert "inlier classes" in reason["reason"]

    def no_training(*args, **kwargs):
        raise AssertionError("a frozen run trained a detector")

    monkeypatch.setattr(type(METHODS.get("oe")()), "fit", no_training)
    code = _bench(*RUN, "--out", str(tmp_path / "frozen"), "--frozen-detectors", str(saved / "detectors"))
    assert code == 0
    timing = ("run_id", "fit_seconds", "attack_seconds", "timestamp")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "frozen")) == strip(_rows(saved / "saved"))
    assert {r["status"] for r in _rows(tmp_path / "frozen") if r["method"] == "msp"} == {"na"}
    manifest = json.loads((tmp_path / "frozen" / "manifest.json").read_text())
    assert manifest["config"]["frozen_detectors"] == str(saved / "detectors")


def test_a_missing_or_tampered_frozen_detector_is_refused_before_any_work(saved, tmp_path, capsys):
    copy = tmp_path / "detectors"
    for path in (saved / "detectors").rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(saved / "detectors")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    entry = entry_dir(copy, "digits", "nd", "oe", "class0", 0)
    weights = entry / "detector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one weight's last byte
    weights.write_bytes(bytes(data))
    out = tmp_path / "run"
    assert _bench(*RUN, "--out", str(out), "--frozen-detectors", str(copy)) == 2
    assert "does not match its sha256" in capsys.readouterr().err and not out.exists()
    (entry / "digests.json").unlink()  # without digests an entry cannot be checked: not trusted
    assert _bench(*RUN, "--out", str(out), "--frozen-detectors", str(copy)) == 2
    assert "has no digests.json" in capsys.readouterr().err and not out.exists()
    assert (
        _bench(
            *[a if a != "class0" else "class1" for a in RUN],
            "--out",
            str(out),
            "--frozen-detectors",
            str(copy),
        )
        == 2
    )
    assert "no frozen detector at" in capsys.readouterr().err and not out.exists()
    assert entry.exists()  # refused, never deleted


def test_frozen_and_save_exclude_each_other_and_save_needs_a_writable_folder(tmp_path, capsys):
    both = ["--frozen-detectors", str(tmp_path), "--save-detectors", str(tmp_path / "s")]
    assert _bench(*RUN, "--out", str(tmp_path / "a"), *both) == 2
    assert "exclude each other" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _bench(*RUN, "--out", str(tmp_path / "b"), "--save-detectors", str(blocker / "sub")) == 2
    assert "--save-detectors" in capsys.readouterr().err and not (tmp_path / "b").exists()
