"""bench study budget: the yardstick and the profile's attacks on the same test images."""

from __future__ import annotations

import csv

import pytest
import torch

from bench.cache import DetectorCache
from bench.contracts import EvalSet
from bench.studies.budget import YARDSTICK, check_budgets, first_per_side, main


def test_first_per_side_keeps_the_order_and_both_sides():
    is_outlier = torch.tensor([0, 1, 0, 1, 1, 0, 0]).bool()
    evalset = EvalSet("test", torch.arange(7.0).view(7, 1, 1, 1), is_outlier, torch.arange(7))
    cut = first_per_side(evalset, 2)
    assert cut.images.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert cut.labels.tolist() == [0, 1, 2, 3] and (cut.n_in, cut.n_out) == (2, 2)


def test_budget_check_rows_on_a_tiny_digits_cell(tmp_path):
    """A weak yardstick (1 step) against the ci budgets: every row on the same images, differences
    measured from the yardstick's AUROC, and `within` follows the tolerance."""
    rows = check_budgets(
        "digits",
        "nd",
        "ci",
        ["oe"],
        ["class2"],
        ["clean", "pgd"],
        per_side=30,
        yardstick_steps=1,
        yardstick_restarts=1,
        cache=DetectorCache(tmp_path / "cache"),
    )
    by_attack = {r["attack"]: r for r in rows}
    assert list(by_attack) == [YARDSTICK, "clean", "pgd"]
    assert {(r["n_in"], r["n_out"]) for r in rows} == {(30, 30)}
    yard = by_attack[YARDSTICK]["auroc"]
    for r in rows:
        assert r["difference"] == pytest.approx(r["auroc"] - yard, abs=1e-5)
        assert r["within"] == (r["auroc"] - yard <= 0.01)
    # clean is never below an attack on the same images (every attack keeps the clean point)
    assert by_attack["clean"]["auroc"] >= max(yard, by_attack["pgd"]["auroc"])
    assert by_attack[YARDSTICK]["grad_evals"] == 1 and by_attack["pgd"]["grad_evals"] == 10


def _argv(cell: str) -> list[str]:
    return [
        *("--dataset", "digits", "--profile", "ci", "--methods", "oe", "--cells", cell, "--attacks", "clean"),
        *("--per-side", "20", "--yardstick-steps", "1", "--yardstick-restarts", "1"),
    ]


def test_budget_check_cli_writes_a_csv_and_refuses_an_unknown_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "check.csv"
    assert main([*_argv("class2"), "--out", str(out)]) == 0
    with out.open(encoding="utf-8") as handle:
        assert [r["attack"] for r in csv.DictReader(handle)] == [YARDSTICK, "clean"]
    assert main(_argv("class42")) == 2
    assert "unknown cell 'class42'" in capsys.readouterr().err


def _check(tmp_path, restarts: int, checkpoints=None):
    return check_budgets(
        "digits",
        "nd",
        "ci",
        ["oe"],
        ["class2"],
        ["clean"],
        per_side=20,
        yardstick_steps=2,
        yardstick_restarts=restarts,
        cache=DetectorCache(tmp_path / "cache"),
        checkpoints=checkpoints,
    )


def test_yardstick_restarts_resume_from_their_checkpoints(tmp_path, monkeypatch):
    """A check killed in restart 2 of 3 keeps restart 1; the rerun runs only restarts 2 and 3 and gives
    the uninterrupted check's row. Checkpoints made for other weights are recomputed."""
    from bench.attacks.pgd import PGD

    uninterrupted = _check(tmp_path, 3)[0]
    calls = []
    original = PGD.perturb

    def failing_second(self, *args, **kwargs):
        calls.append(self.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PGD, "perturb", failing_second)
    folder = tmp_path / "restarts"
    with pytest.raises(KeyboardInterrupt):
        _check(tmp_path, 3, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["oe-class2-restart0.npz"]
    calls.clear()
    monkeypatch.setattr(
        PGD, "perturb", lambda self, *a, **k: (calls.append(self.seed), original(self, *a, **k))[1]
    )
    resumed = _check(tmp_path, 3, folder)[0]
    assert len(calls) == 2 and len(list(folder.glob("*.npz"))) == 3
    for column in ("auroc", "grad_evals", "queries"):
        assert resumed[column] == uninterrupted[column]
    assert resumed["grad_evals"] == 6

    # the same files under another detector (other weights): every restart runs again
    calls.clear()
    import bench.studies.budget as budget_check

    monkeypatch.setattr(budget_check, "detector_digest", lambda detector: "other-weights")
    _check(tmp_path, 3, folder)
    assert len(calls) == 3


def test_yardstick_keeps_the_worst_restart_per_image(tmp_path):
    """More restarts never raise the yardstick's AUROC: the worst case over restarts 1-3 includes 1's."""
    one = _check(tmp_path, 1)[0]["auroc"]
    three = _check(tmp_path, 3)[0]["auroc"]
    clean = _check(tmp_path, 1)[1]["auroc"]
    assert three <= one <= clean


def test_a_restart_claimed_by_a_live_process_is_left_to_it_and_a_dead_claim_taken_over(tmp_path, monkeypatch):
    """Two checks side by side split the restarts: a restart claimed by another live process on this host
    is skipped and waited for; once that process has died, its claim is taken over."""
    import socket
    import subprocess

    import bench.studies.budget as budget_check
    from bench.attacks.pgd import PGD

    folder = tmp_path / "restarts"
    folder.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    claim = folder / "oe-class2-restart1.claim"
    claim.write_text(f"{socket.gethostname()} {other.pid}", encoding="utf-8")
    order, waits = [], []
    original = PGD.perturb
    monkeypatch.setattr(
        PGD, "perturb", lambda self, *a, **k: (order.append(self.seed), original(self, *a, **k))[1]
    )

    def wait(seconds):  # the other process dies while this one waits
        waits.append(seconds)
        other.kill()
        other.wait()

    monkeypatch.setattr(budget_check.time, "sleep", wait)
    rows = _check(tmp_path, 3, folder)
    seeds = [budget_check.restart_seed(0, r) for r in range(3)]
    assert order == [seeds[0], seeds[2], seeds[1]] and len(waits) == 1
    assert not list(folder.glob("*.claim")) and len(list(folder.glob("*.npz"))) == 3
    assert rows[0]["auroc"] == _check(tmp_path, 3)[0]["auroc"]
