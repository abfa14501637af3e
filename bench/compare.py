"""``bench compare BASELINE.csv CANDIDATE.csv``: regression check of two tidy results files.

Rows are matched on (method, protocol, dataset, cell, seed, attack, metric). An AUROC lower than the
baseline's by more than the tolerance is a regression, higher by more than it an improvement; a key on
one side only is missing, and so is a key whose status changed (ok on one side, na on the other). Exit 1
on any regression or missing row, 0 otherwise. Other metrics are matched (so a missing row counts) but
not judged.

A validity check (``bench.checks``, the rows' ``warnings``) that trips in the candidate and not in the
baseline is a change (``new_warnings``), not a failure: the number is still compared as any other, and a
reader is told that it may no longer be trusted. Files without the column have no warnings.

Each change says whether both sides' rows came from the same detector (their ``detector_digest``):
``same`` points at the attack or the scoring, ``other`` at the training (code, or another host's
rounding); empty when a side has no digest (files from before the column).

For regression tracking across machines (frozen detectors, seed statistics) see ``bench ci``
(bench.baseline, docs/ci.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.errors import BadInput
from bench.results.rows import RESULTS_FILE, read_results_file

KEY = ("method", "protocol", "dataset", "cell", "seed", "attack", "metric")
JUDGED_METRIC = "auroc"
DEFAULT_TOLERANCE = 0.02


@dataclass
class Change:
    method: str
    protocol: str
    dataset: str
    cell: str
    seed: int
    attack: str
    metric: str
    baseline: float | None
    candidate: float | None
    difference: float | None
    baseline_status: str = "ok"
    candidate_status: str = "ok"
    detector: str = ""  # "same" / "other": the two rows' detector_digest agree or not; "": unknown

    def key_text(self) -> str:
        return (
            f"method={self.method} protocol={self.protocol} dataset={self.dataset} cell={self.cell} "
            f"seed={self.seed} attack={self.attack} metric={self.metric}"
        )


@dataclass
class CheckChange:
    """Validity checks that trip on the candidate's row and did not on the baseline's."""

    key: tuple
    checks: list[str]

    def text(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in zip(KEY, self.key, strict=True))
        return f"{shown}: {', '.join(self.checks)}"


@dataclass
class Comparison:
    baseline: str
    candidate: str
    tolerance: float
    compared: int = 0
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    missing_in_candidate: list[Change] = field(default_factory=list)
    missing_in_baseline: list[Change] = field(default_factory=list)
    status_changed: list[Change] = field(default_factory=list)
    new_warnings: list[CheckChange] = field(default_factory=list)  # reported, never a failure

    @property
    def ok(self) -> bool:
        return not (
            self.regressions or self.missing_in_candidate or self.missing_in_baseline or self.status_changed
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, indent=2, allow_nan=False, default=str)


def load_rows(path: Path) -> dict[tuple, tuple[str, float | None, str, str]]:
    """key -> (status, value, detector digest or "", warnings or "") of a results CSV (or a run folder's
    results.csv);
    BadInput on a missing file, missing columns or a key that appears twice."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise BadInput(f"{path} does not exist; accepted: a results CSV file or a run folder")
    df = read_results_file(path)
    missing = [c for c in (*KEY, "value", "status") if c not in df.columns]
    if missing:
        raise BadInput(f"{path} lacks the columns {', '.join(missing)}")
    for column in ("detector_digest", "warnings"):
        if column not in df.columns:
            df = df.assign(**{column: ""})
    rows: dict[tuple, tuple[str, float | None, str, str]] = {}
    for record in df[[*KEY, "value", "status", "detector_digest", "warnings"]].itertuples(index=False):
        key = tuple(
            int(v) if name == "seed" else str(v) for name, v in zip(KEY, record[: len(KEY)], strict=True)
        )
        if key in rows:
            shown = " ".join(f"{k}={v}" for k, v in zip(KEY, key, strict=True))
            raise BadInput(f"{path} has two rows for {shown}; compare one run's rows (no duplicates)")
        value = None if record.value is None or math.isnan(record.value) else float(record.value)
        digest = record.detector_digest
        warned = record.warnings if isinstance(record.warnings, str) else ""
        rows[key] = (str(record.status), value, "" if not isinstance(digest, str) else digest, warned)
    return rows


def _check_tolerance(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise BadInput(f"bad {name} {value!r}; accepted: a number >= 0")


def parse_tolerance(option: str, text: str) -> float:
    """A command-line tolerance: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"bad {option} {text!r}; accepted: a number >= 0") from None
    _check_tolerance(option, value)
    return value


def compare(
    baseline: Path,
    candidate: Path,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Comparison:
    _check_tolerance("--tolerance", tolerance)
    base, cand = load_rows(baseline), load_rows(candidate)
    result = Comparison(str(baseline), str(candidate), float(tolerance))

    def change(key: tuple, b: tuple | None, c: tuple | None) -> Change:
        bv, cv = (b[1] if b else None), (c[1] if c else None)
        diff = None if bv is None or cv is None else cv - bv
        detector = ""
        if b and c and b[2] and c[2]:
            detector = "same" if b[2] == c[2] else "other"
        return Change(
            *key, baseline=bv, candidate=cv, difference=diff,
            baseline_status=b[0] if b else "", candidate_status=c[0] if c else "", detector=detector,
        )  # fmt: skip

    for key, b in base.items():
        c = cand.get(key)
        if c is None:
            result.missing_in_candidate.append(change(key, b, None))
            continue
        result.compared += 1
        tripped = [name for name in c[3].split(";") if name and name not in b[3].split(";")]
        if tripped and key[-1] == JUDGED_METRIC:
            result.new_warnings.append(CheckChange(key, tripped))
        if b[0] != c[0]:
            result.status_changed.append(change(key, b, c))
            continue
        if key[-1] != JUDGED_METRIC or b[1] is None or c[1] is None:
            continue
        diff = c[1] - b[1]
        # A small epsilon keeps a difference of exactly the tolerance (in decimal) from counting.
        if diff < -tolerance - 1e-12:
            result.regressions.append(change(key, b, c))
        elif diff > tolerance + 1e-12:
            result.improvements.append(change(key, b, c))
    for key, c in cand.items():
        if key not in base:
            result.missing_in_baseline.append(change(key, None, c))
    return result


def format_text(result: Comparison) -> str:
    """Human-readable summary: counts, then a line per regression, improvement and missing row."""

    def value(v: float | None) -> str:
        return "—" if v is None else f"{v:.4f}"

    lines = [
        f"compared {result.compared} matching rows of {result.baseline} (baseline) and {result.candidate} "
        f"(candidate); {JUDGED_METRIC} tolerance {result.tolerance:g}",
        f"regressions: {len(result.regressions)}, improvements: {len(result.improvements)}, "
        f"missing in candidate: {len(result.missing_in_candidate)}, "
        f"missing in baseline: {len(result.missing_in_baseline)}, "
        f"status changed: {len(result.status_changed)}, "
        f"newly tripped checks: {len(result.new_warnings)} (a change, not a failure)",
    ]
    detector = {"same": " [same detector]", "other": " [another detector]", "": ""}
    for title, changes in (
        ("REGRESSION", result.regressions),
        ("improvement", result.improvements),
    ):
        for ch in changes:
            change = f"{value(ch.baseline)} -> {value(ch.candidate)} ({ch.difference:+.4f})"
            lines.append(f"{title}: {ch.key_text()}: {change}{detector[ch.detector]}")
    for ch in result.missing_in_candidate:
        lines.append(f"MISSING in candidate: {ch.key_text()} (baseline {value(ch.baseline)})")
    for ch in result.missing_in_baseline:
        lines.append(f"MISSING in baseline: {ch.key_text()} (candidate {value(ch.candidate)})")
    for ch in result.status_changed:
        lines.append(f"STATUS CHANGED: {ch.key_text()}: {ch.baseline_status} -> {ch.candidate_status}")
    for ch in result.new_warnings:
        lines.append(f"check newly tripped: {ch.text()}")
    lines.append("OK: no regression and no missing row" if result.ok else "FAILED")
    return "\n".join(lines)
