"""Validity checks: whether an attacked number can be trusted (issue 29; AutoAttack's ``checks.py`` for
detector scores).

Each check is a pure function of what a unit computes anyway (its clean and attacked scores, the input
gradient of the attack objective at the clean point, the budget it spent, the AUROCs of its group's
attacks); the unit runs them while it runs (``bench.execute``), never in a second pass over the data. A
check gives a :class:`Check`: its value, its threshold, and whether it trips. A unit that trips one is
still a row (``status=ok``); its rows name the tripped checks in ``warnings``, ``checks.csv`` beside
``results.csv`` holds every check's value and threshold, and ``manifest.json`` a warning line per trip.

The thresholds and why (each is a module constant below, so a test and the docs read the same number):
- ``zero_gradient``: share of test images whose input gradient of the attack objective at the clean point
  is exactly zero or not finite, trips above 0.01. A sign step cannot move such an image, so a gradient
  attack leaves it where it was; 1% of a set left unattacked can hold the attacked AUROC up by about one
  point (FACTS: the budget check's own tolerance is 0.01 AUROC).
- ``saturation``: share of attacked scores tied at the set's largest or smallest attacked score, trips
  above 0.05. A continuous score ties there with share 1/n (0.006 at n = 154, 0.001 at 1,000); a
  probability that is exactly 1.0 in float32 ties for every image it saturates, and gives the attack
  nothing to climb there (the clip and bce-clip scores, issue 29).
- ``masking``: a black-box attack (``blackbox``, ``simba``) reaches a lower AUROC than every gradient
  attack (``pgd``, ``aa``, ``a3``) on the same detector by more than 0.01: the gradients mislead (RODEO
  Sec. 5 and AutoAttack's check). 0.01 is the budget check's tolerance between attacks that agree.
- ``above_clean``: an attacked AUROC above the clean one by more than 0.001. Attacks keep the worst case
  over the clean point and every point they evaluated, so this cannot happen with a deterministic score
  whose objective ranks as the score does; 0.001 is the CI's frozen tolerance (float rounding of a
  re-evaluation in another batch).
- ``budget``: spent gradient evaluations per image (queries for a query-only attack) below 0.95 of the
  plan. The row's budget then overstates the attack; a3 spends 99.9-100% of its average budget (the
  reference grids). Not applied to SimBA, whose plan is a bound (``BOUNDED_ATTACKS``).
- ``shortcut`` (RODEO): AUROC of the detector on held-out inliers against the same inliers after a round
  trip through its generator, trips above 0.7. A detector that learned the generator's artifacts rather
  than the inliers calls its own inliers outliers after the round trip; a shortcut-free one cannot tell
  them apart (0.5). 0.7 leaves room for the semantic change of the short noising (docs/design.md).
- ``keep_rate`` (RODEO): share of generated outliers the CLIP filter kept, trips below 0.03: at 2% the
  union training set was 98% inliers and MNIST class 0 fell to 54.9 / 13.8 (docs/findings.md, diagnosis 3).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.files import atomic_write_bytes

CHECKS_FILE = "checks.csv"
CHECK_COLUMNS = (
    "run_id",
    "method",
    "cell",
    "seed",
    "attack",
    "check",
    "value",
    "threshold",
    "rule",
    "tripped",
)

ZERO_GRADIENT_MAX = 0.01
SATURATION_MAX = 0.05
MASKING_MARGIN = 0.01
ABOVE_CLEAN_MARGIN = 0.001
BUDGET_MIN_RATIO = 0.95
SHORTCUT_MAX = 0.7
KEEP_RATE_MIN = 0.03

GRADIENT_ATTACKS = ("pgd", "aa", "a3")
BLACK_BOX_ATTACKS = ("blackbox", "simba")
# attacks whose planned budget is a bound they stop short of by design, not a plan: SimBA visits each pixel
# once and queries the second direction only where the first did not rise (at most 2 per pixel, spent
# 0.37 of 2 x 64 on digits), so the budget check does not apply to them
BOUNDED_ATTACKS = ("simba",)


@dataclass(frozen=True)
class Check:
    """One check of one unit: ``value`` against ``threshold`` by ``rule`` ("above" trips when the value
    exceeds the threshold, "below" when it falls under it). ``value`` None: not measurable here."""

    name: str
    value: float | None
    threshold: float
    rule: str  # "above" | "below"

    @property
    def tripped(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value > self.threshold if self.rule == "above" else self.value < self.threshold

    def describe(self) -> str:
        """ "saturation 0.42 (trips above 0.05)"."""
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{self.name} {shown} (trips {self.rule} {self.threshold:g})"


# --- the checks, pure functions ----------------------------------------------------------------------


def zero_gradient_share(gradients: torch.Tensor) -> float:
    """Share of images (rows of ``gradients``, the input gradient of the attack objective) whose gradient
    is exactly zero everywhere or holds NaN or inf."""
    if len(gradients) == 0:
        return 0.0
    flat = gradients.flatten(1)
    dead = (flat.abs().amax(1) == 0) | ~torch.isfinite(flat).all(1)
    return float(dead.float().mean())


def zero_gradient(share: float | None) -> Check:
    return Check("zero_gradient", share, ZERO_GRADIENT_MAX, "above")


def saturation_share(scores: np.ndarray) -> float:
    """Share of ``scores`` tied at their largest or their smallest value (the larger of the two)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return 0.0
    return float(max(np.mean(scores == scores.max()), np.mean(scores == scores.min())))


def saturation(share: float | None) -> Check:
    return Check("saturation", share, SATURATION_MAX, "above")


def above_clean(difference: float | None) -> Check:
    """``difference``: attacked AUROC minus clean AUROC (negative or zero, as it should be)."""
    return Check("above_clean", difference, ABOVE_CLEAN_MARGIN, "above")


def budget_ratio(spent: tuple[float, float], planned: tuple[float, float]) -> float | None:
    """Spent / planned per image of the attack's main resource, from (grad_evals, queries): gradient
    evaluations where the plan has any (a3's planned queries are a bound it need not reach: its only
    forward-only query is the clean point), else queries (Square, SimBA); None with no plan (clean)."""
    (spent_grad, spent_queries), (planned_grad, planned_queries) = spent, planned
    if planned_grad > 0:
        return spent_grad / planned_grad
    return spent_queries / planned_queries if planned_queries > 0 else None


def budget(ratio: float | None, attack: str = "") -> Check:
    """The budget check; not measurable (None) for an attack whose plan is only a bound."""
    return Check("budget", None if attack in BOUNDED_ATTACKS else ratio, BUDGET_MIN_RATIO, "below")


def masking(aurocs: dict[str, float]) -> Check | None:
    """The gradient attacks' lowest AUROC minus the black-box attacks' lowest, from one detector's
    AUROCs per attack; None unless both kinds are present."""
    gradient = [v for a, v in aurocs.items() if a in GRADIENT_ATTACKS and v is not None]
    black_box = [v for a, v in aurocs.items() if a in BLACK_BOX_ATTACKS and v is not None]
    if not gradient or not black_box:
        return None
    return Check("masking", min(gradient) - min(black_box), MASKING_MARGIN, "above")


def shortcut(probe_auroc: float | None) -> Check:
    return Check("shortcut", probe_auroc, SHORTCUT_MAX, "above")


def keep_rate(rate: float | None) -> Check:
    return Check("keep_rate", rate, KEEP_RATE_MIN, "below")


# the checks a method reports of its own detector (``validity_checks``), by name
METHOD_CHECKS = {"shortcut": shortcut, "keep_rate": keep_rate}


def tripped_names(checks: list[Check]) -> str:
    """The ``warnings`` field of a unit's rows: the tripped checks' names, ";"-separated."""
    return ";".join(dict.fromkeys(c.name for c in checks if c.tripped))


# --- checks.csv ---------------------------------------------------------------------------------------


def check_rows(run_id: str, unit: tuple[str, str, int, str], checks: list[Check]) -> list[dict]:
    method, cell, seed, attack = unit
    return [
        {
            "run_id": run_id,
            "method": method,
            "cell": cell,
            "seed": seed,
            "attack": attack,
            "check": c.name,
            "value": "" if c.value is None else repr(round(float(c.value), 6)),
            "threshold": repr(c.threshold),
            "rule": c.rule,
            "tripped": int(c.tripped),
        }
        for c in checks
    ]


def read_checks(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/checks.csv`` (none when the run has no such file)."""
    path = Path(run_dir) / CHECKS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def replace_unit_checks(run_dir: Path, unit: tuple[str, str, int, str], rows: list[dict]) -> None:
    """Drop ``unit``'s rows from ``checks.csv`` and append ``rows``, in one atomic rewrite."""
    kept = [
        r
        for r in read_checks(run_dir)
        if (r["method"], r["cell"], int(r["seed"]), r["attack"]) != tuple(unit)
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CHECK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in [*kept, *rows]:
        writer.writerow({c: row.get(c, "") for c in CHECK_COLUMNS})
    atomic_write_bytes(Path(run_dir) / CHECKS_FILE, buffer.getvalue().encode())
