"""Malformed-input sweep of ``bench report`` and ``bench compare`` (hypothesis; issue 31, item 8).

Inputs are a small valid run folder (results.csv + manifest.json) or results CSV with one or more faults:
truncated or garbled bytes, a missing or renamed column, NaN, inf or text in a number column, hostile
names, a manifest of the wrong shape, an --out that cannot be written (a file, the current folder, under
/sys). For every invocation: the exit code is 0, 1 (compare: a regression) or 2, never a traceback; on exit
2 stderr is one line ``bench: error: ...``; and a failed ``report`` leaves its --out as it was. The default
suite runs 50 invocations, the slow test 300; ``python -m tests.test_report_fuzz N`` runs N.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402

from bench.store import COLUMNS  # noqa: E402

from . import test_cli_fuzz as cli_fuzz  # noqa: E402
from .test_cli_fuzz import _report  # noqa: E402

NUMBER_COLUMNS = ["seed", "eps", "steps", "grad_evals", "value", "n_in", "n_out", "fit_seconds"]
TEXT_COLUMNS = ["method", "cell", "attack", "reason", "dataset", "protocol", "metric", "status", "run_id"]
BAD_NUMBERS = ["nan", "inf", "-inf", "abc", "", "1e999", "-1", "0x10", "１"]
HOSTILE = [
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "=cmd|' /C calc'!A0",
    "ünï",
    "a" * 300,
    "\x00",
    "a\nb",
    "NA",
    '"',
    "",
]
MANIFESTS = ["[1, 2]", '"text"', "3", "null", "{", '{"config": []}', '{"config": {"methods": [1]}}',
             '{"run_id": 5, "config": {"methods": {"m0": "x"}}, "started": []}', '{"invocations": {}}',
             '{"profile": [], "command": {}}']  # fmt: skip
BAD_OUTS = ["existing.txt", "existing.txt/site", "/sys/bench-site", ".", "x" * 300]


def good_rows() -> list[dict[str, str]]:
    rows = []
    for method in ("m0", "m1"):
        for cell in ("class0", "class1"):
            for attack, value in (("clean", 0.9), ("pgd", 0.4)):
                for metric in ("auroc", "fpr95"):
                    rows.append(
                        {c: "" for c in COLUMNS}
                        | dict(run_id="run", method=method, method_hash="h", protocol="nd", dataset="digits",
                               cell=cell, seed="0", attack=attack, attack_hash="a", eps="0.03", steps="10",
                               restarts="1", grad_evals="10", queries="1", metric=metric,
                               value=str(value + 0.01 * len(rows)), status="ok", n_in="50", n_out="50",
                               fit_seconds="1.0", attack_seconds="1.0", profile="ci",
                               split_version="digits-v1/nd-v2", bench_version="0.1.0", git_sha="abc",
                               device="cpu", timestamp="2026-01-01T00:00:00")
                    )  # fmt: skip
    return rows


def csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class Case:
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    faults: list[str] = field(default_factory=list)


@st.composite
def results_file(draw, name: str, case: Case) -> str:
    """A run folder or CSV under ``name`` with some faults; its path for the command line."""
    rows, columns = good_rows(), list(COLUMNS)
    for _ in range(draw(st.integers(0, 3))):
        fault = draw(st.sampled_from(["number", "hostile", "drop column", "rename column", "no rows"]))
        case.faults.append(fault)
        if fault == "number":
            column = draw(st.sampled_from(NUMBER_COLUMNS))
            rows[draw(st.integers(0, len(rows) - 1))][column] = draw(st.sampled_from(BAD_NUMBERS))
        elif fault == "hostile":
            column = draw(st.sampled_from(TEXT_COLUMNS))
            rows[draw(st.integers(0, len(rows) - 1))][column] = draw(st.sampled_from(HOSTILE))
        elif fault == "drop column":
            columns.remove(draw(st.sampled_from(columns)))
        elif fault == "rename column":
            columns[draw(st.integers(0, len(columns) - 1))] = draw(
                st.sampled_from(["x", "value", "", "méthode"])
            )
    if "no rows" in case.faults:
        rows = []
    data = csv_text(rows, columns).encode()
    damage = draw(st.sampled_from(["none"] * 4 + ["truncate", "garble", "empty", "binary"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "garble":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(min_size=1, max_size=20)) + data[at + 1 :]
    elif damage == "empty":
        data = b""
    elif damage == "binary":
        data = b"\x89PNG\r\n\x1a\n\x00\xff" * 10
    case.faults.append(damage)
    if draw(st.booleans()):
        case.files[f"{name}.csv"] = data
        return f"{name}.csv"
    case.files[f"{name}/results.csv"] = data
    manifest = draw(st.sampled_from(["good", "none", *MANIFESTS]))
    if manifest == "good":
        manifest = json.dumps(
            {"run_id": "run", "config": {"methods": {"m0": {"lam": 1}}}, "command": "bench"}
        )
    if manifest != "none":
        case.files[f"{name}/manifest.json"] = manifest.encode()
        case.faults.append(f"manifest {manifest[:20]}")
    return name


@st.composite
def invocations(draw) -> Case:
    case = Case(argv=[])
    if draw(st.booleans()):
        inputs = [draw(results_file(f"in{i}", case)) for i in range(draw(st.integers(1, 2)))]
        out = draw(st.sampled_from(["site"] * 5 + BAD_OUTS))
        case.argv = ["report", *inputs, "--out", out, "--published", "published"]
        if draw(st.integers(0, 9)):
            case.argv.append("--no-plots")
    else:
        baseline = draw(results_file("base", case))
        candidate = draw(results_file("cand", case))
        case.argv = ["compare", baseline, candidate]
        if draw(st.integers(0, 3)) == 0:
            case.argv += ["--tolerance", draw(st.sampled_from(["0.01", "-1", "nan", "abc", "1e999"]))]
        if draw(st.booleans()):
            case.argv.append("--json")
    return case


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_invocation(case: Case) -> str | None:
    """None when the invocation behaves, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="bench-report-fuzz-") as folder:
        work = Path(folder)
        (work / "existing.txt").write_text("not a site\n")
        (work / "published").mkdir()
        for name, data in case.files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
        before = _tree(work)
        code, out, err = cli_fuzz.invoke(case.argv, work)
        after = _tree(work)
    if code is None:
        return f"traceback: {err}"
    lines = err.strip().splitlines()
    if code not in (0, 1, 2) or (code == 1 and case.argv[0] != "compare"):
        return f"exit {code}: {err.strip()[-300:]}"
    if "Traceback" in err or "Traceback" in out:
        return "a traceback was printed"
    if code == 2:
        if len(lines) != 1 or not lines[0].startswith("bench: error: "):
            return f"error is not one line: {lines[:3]}"
        if after != before:
            return f"wrote {sorted(set(after) - set(before))[:5]} on exit 2"
    return None


def sweep(examples: int) -> list[tuple[Case, str | None]]:
    """``examples`` invocations (derandomized), through test_cli_fuzz's runner."""
    return cli_fuzz.sweep(examples, invocations(), check_invocation)


# what the review found (each a traceback before the fix)
DIRECTED = [
    Case(  # the current folder holds an earlier site: rebuilding it in place would rename the cwd
        ["report", "run", "--out", ".", "--no-plots"],
        {"run/results.csv": csv_text(good_rows(), COLUMNS).encode(), ".bench-site": b"an earlier site\n"},
    ),
    Case(["report", "run", "--out", "site"], {"run/results.csv": b"", "run/manifest.json": b"[1, 2]"}),
    Case(["compare", "a.csv", "b.csv"], {"a.csv": b"\xff\xfe\x00garbage", "b.csv": b"method\n=1+1\n"}),
    Case(
        ["compare", "a.csv", "a.csv"],
        {"a.csv": csv_text(good_rows()[:1], COLUMNS).replace(",0,", ",inf,").encode()},
    ),
    Case(["report", "a.csv", "--out", "x" * 300], {"a.csv": csv_text(good_rows(), COLUMNS).encode()}),
]


@pytest.mark.parametrize("case", DIRECTED, ids=[" ".join(c.argv) for c in DIRECTED])
def test_directed_malformed_inputs(case):
    assert check_invocation(case) is None


@pytest.mark.parametrize("examples", [50, pytest.param(300, marks=pytest.mark.slow)])
def test_report_and_compare_sweep(examples):
    outcomes = sweep(examples)
    print("\n" + _report(outcomes))
    assert not [problem for _, problem in outcomes if problem], _report(outcomes)


if __name__ == "__main__":  # python -m tests.test_report_fuzz [N]
    counts = [int(arg) for arg in sys.argv[1:] if arg.isdigit()]
    print(_report(sweep(counts[0] if counts else 50)))
