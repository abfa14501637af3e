"""The two CI checks of bench.baseline on hand-made rows: known answers for each finding."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.baseline import (
    FROZEN_TOLERANCE,
    SEED_FLOOR,
    SIGMAS,
    check_frozen,
    check_seeds,
    seed_statistics,
    seed_tolerance,
)
from bench.compare import KEY


def frame(rows):
    """rows: dicts with the key columns and value/status/budget/digest (defaults filled in)."""
    filled = []
    for row in rows:
        base = {
            "dataset": "digits",
            "seed": 0,
            "metric": "auroc",
            "status": "ok",
            "detector_digest": "d0",
            "grad_evals": 0,
            "queries": 0,
            "value": 0.5,
        }
        filled.append({**base, **row})
    return pd.DataFrame(filled).set_index(list(KEY))


def unit(attack, value, **extra):
    return {"method": "oe", "protocol": "nd", "cell": "class0", "attack": attack, "value": value, **extra}


BASE = [unit("clean", 0.95), unit("pgd", 0.40, grad_evals=20), unit("blackbox", 0.60, queries=100)]


def whats(verdict):
    return sorted((f.what, f.failure) for f in verdict.findings)


def test_identical_rows_pass_the_frozen_check():
    verdict = check_frozen(frame(BASE), frame(BASE))
    assert verdict.ok and verdict.compared == 3 and not verdict.findings


def test_a_higher_attacked_auroc_is_a_weaker_attack_and_a_lower_one_an_improvement():
    weaker = [BASE[0], unit("pgd", 0.40 + 2 * FROZEN_TOLERANCE, grad_evals=20), BASE[2]]
    assert whats(check_frozen(frame(BASE), frame(weaker))) == [("weaker attack", True)]
    stronger = [BASE[0], unit("pgd", 0.30, grad_evals=20), BASE[2]]
    verdict = check_frozen(frame(BASE), frame(stronger))
    assert verdict.ok and whats(verdict) == [("stronger attack", False)]
    within = [BASE[0], unit("pgd", 0.40 + FROZEN_TOLERANCE / 2, grad_evals=20), BASE[2]]
    assert check_frozen(frame(BASE), frame(within)).findings == []


def test_a_clean_auroc_that_moves_either_way_fails():
    for value in (0.90, 0.99):
        moved = [unit("clean", value), *BASE[1:]]
        assert whats(check_frozen(frame(BASE), frame(moved))) == [("clean AUROC changed (evaluation)", True)]


def test_a_budget_below_the_baselines_fails_even_when_the_auroc_holds():
    half = [*BASE[:2], unit("blackbox", 0.60, queries=50)]
    assert whats(check_frozen(frame(BASE), frame(half))) == [("queries below the baseline's", True)]
    fewer = [BASE[0], unit("pgd", 0.40, grad_evals=10), BASE[2]]
    assert whats(check_frozen(frame(BASE), frame(fewer))) == [("grad_evals below the baseline's", True)]


def test_missing_rows_status_changes_and_other_weights_fail():
    assert whats(check_frozen(frame(BASE), frame(BASE[:2]))) == [("missing in candidate", True)]
    extra = [*BASE, unit("a3", 0.5)]
    assert whats(check_frozen(frame(BASE), frame(extra))) == [("missing in baseline", True)]
    errored = [*BASE[:2], unit("blackbox", math.nan, status="error", queries=100)]
    assert whats(check_frozen(frame(BASE), frame(errored))) == [("status changed ok -> error", True)]
    other = [*BASE[:2], unit("blackbox", 0.60, queries=100, detector_digest="d1")]
    assert whats(check_frozen(frame(BASE), frame(other))) == [
        ("other detector (not the frozen weights)", True)
    ]


def seeded(values_by_seed, method="oe"):
    """One method's clean AUROC on two cells per seed: {seed: (cell0, cell1)}."""
    return frame(
        {"method": method, "protocol": "nd", "cell": f"class{c}", "attack": "clean", "seed": s, "value": v}
        for s, pair in values_by_seed.items()
        for c, v in enumerate(pair)
    )


def test_seed_statistics_are_the_mean_and_spread_of_per_seed_means():
    base = seeded({0: (0.90, 0.80), 1: (0.92, 0.82), 2: (0.88, 0.78)})
    ((key, (mean, std, n)),) = seed_statistics(base).items()
    assert key == ("oe", "nd", "digits", "clean") and n == 3
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.02)  # per-seed means 0.85, 0.87, 0.83
    assert std == pytest.approx(pd.Series([0.85, 0.87, 0.83]).std())
    assert seed_tolerance(0.02, 3, 3) == pytest.approx(SIGMAS * 0.02 * math.sqrt(2 / 3))
    assert seed_tolerance(0.0, 3, 3) == SEED_FLOOR
    assert seed_tolerance(math.nan, 1, 3) == math.inf  # one seed: no spread, no bound


def test_a_mean_below_the_seed_tolerance_fails_and_within_it_passes():
    base = seeded({0: (0.90, 0.80), 1: (0.92, 0.82), 2: (0.88, 0.78)})
    tolerance = seed_tolerance(0.02, 3, 3)
    lower = seeded({s: (a - tolerance - 0.005, b - tolerance - 0.005) for s, (a, b) in
                    {0: (0.90, 0.80), 1: (0.92, 0.82), 2: (0.88, 0.78)}.items()})  # fmt: skip
    verdict = check_seeds(base, lower)
    assert whats(verdict) == [("training regression", True)]
    assert verdict.tolerances == {
        "method=oe protocol=nd dataset=digits attack=clean": pytest.approx(tolerance)
    }
    noisy = seeded({0: (0.93, 0.79), 1: (0.90, 0.83), 2: (0.86, 0.79)})  # same mean, other seeds' split
    assert check_seeds(base, noisy).ok and not check_seeds(base, noisy).findings


@pytest.mark.parametrize(
    "setting, shown",
    [
        ("pgd.step_factor=-1", "bad pgd.step_factor=-1.0; accepted: a number in (0, inf)"),
        ("pgd.step_factor=0", "bad pgd.step_factor=0.0; accepted: a number in (0, inf)"),
        ("blackbox.p_init=-0.5", "bad blackbox.p_init=-0.5; accepted: a number in (0, 1]"),
        ("blackbox.p_init=1.5", "bad blackbox.p_init=1.5; accepted: a number in (0, 1]"),
        ("aa.square_p_init=-3", "bad aa.square_p_init=-3.0; accepted: a number in (0, 1]"),
        ("pgd.restarts=0", "bad pgd restarts 0; accepted: integers >= 1"),
    ],
)
def test_an_attack_setting_that_weakens_the_attack_is_refused_before_any_work(
    tmp_path, capsys, setting, shown
):
    """Measured before: --set pgd.step_factor=-1 was accepted and lifted a PGD AUROC from 32.7 to 61.3."""
    from bench.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--set", setting,
              "--out", str(out)])  # fmt: skip
    assert exit_.value.code == 2 and not out.exists()
    assert capsys.readouterr().err.strip() == f"bench: error: {shown}"


def test_the_frozen_spread_study_reports_the_largest_gap_and_the_identical_rows(tmp_path):
    from bench.studies.frozen_spread import spread

    base = frame(BASE).reset_index()
    moved = base.copy()
    moved.loc[moved["attack"] == "pgd", "value"] = 0.4003
    base.to_csv(tmp_path / "base.csv", index=False)
    moved.to_csv(tmp_path / "moved.csv", index=False)
    table, largest = spread(tmp_path / "base.csv", tmp_path / "moved.csv")
    assert largest == pytest.approx(0.0003)
    assert table.loc[("oe", "pgd"), "identical"] == 0 and table.loc[("oe", "clean"), "identical"] == 1
    assert int(table["rows"].sum()) == 3
