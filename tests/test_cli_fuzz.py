"""Bad-input sweep of the command line (hypothesis): random mixes of valid and invalid names, numbers
and ``--set`` values, driven through ``bench.cli.main`` in this process.

For every invocation: the exit code is 0 or 2 and never a traceback; on exit 2 stderr is one line
``bench: error: ...`` naming one of the values that may be bad; a value that is always bad (an unknown
name, a negative seed, NaN for a number, an --out that is a file) is never accepted; and nothing is written
(``run`` always gets ``--dry-run``, so an accepted invocation writes nothing either). The default suite
runs 60 invocations; the slow test 600. ``python tests/test_cli_fuzz.py N`` runs N and prints the count
of failures; with ``PYTHONPATH`` at another checkout and ``--without-executor-options`` it sweeps a bench
from before the executor options.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

METHODS = ["msp", "energy", "oe", "atom", "rodeo", "hsc", "greg", "clip"]
ATTACKS = ["clean", "pgd", "aa", "a3", "blackbox"]
BAD_NAMES = ["nosuch", "MSP", "oe;rm", "../x", "ünï", "a" * 120, "-", "1"]
NUMERIC_FIELDS = {  # a few int/float fields of methods and attacks (bench list methods / attacks)
    "oe.lam": float,
    "atom.q": float,
    "atom.steps": int,
    "hsc.rep_dim": int,
    "greg.m_in": float,
    "pgd.steps": int,
    "pgd.restarts": int,
    "pgd.step_factor": float,
    "aa.square_queries": int,
    "a3.budget_per_sample": int,
    "blackbox.p_init": float,
    "executor.cpus_per_task": float,
    "executor.local_cpus": int,
}
ALWAYS_BAD_VALUES = ["nan", "inf", "-inf", "abc", "", "1e999", "0x10", "1,5"]
MAYBE_BAD_VALUES = ["0", "-1", "1e308", "-0.5", "99999999999999999999"]
GOOD_VALUES = {int: ["1", "3"], float: ["0.5", "1.0", "2"]}
# False: leave out --executor, --retries, --address and executor.* (to sweep a bench from before them)
EXECUTOR_OPTIONS = "--without-executor-options" not in sys.argv


@dataclass
class Case:
    argv: list[str]
    bad: list[str] = field(default_factory=list)  # values that are bad whatever the rest is
    maybe: list[str] = field(default_factory=list)  # values that may be bad in combination


@st.composite
def names(draw, valid: list[str], case: Case, option: str, most: int = 3) -> list[str]:
    chosen = []
    for _ in range(draw(st.integers(1, most))):
        if draw(st.integers(0, 4)) == 0:
            name = draw(st.sampled_from(BAD_NAMES))
            case.bad.append(name)
        else:
            name = draw(st.sampled_from(valid))
            if name in chosen:
                case.bad.append(name)  # named twice
        chosen.append(name)
    case.argv += [option, *chosen]
    return chosen


@st.composite
def invocations(draw) -> Case:
    case = Case(argv=[])
    kind = draw(st.sampled_from(["run"] * 8 + ["list", "bogus"]))
    if kind == "bogus":
        case.argv = [draw(st.sampled_from(["bogus", "runn", "--nope"]))]
        case.bad += case.argv
        return case
    if kind == "list":
        what = draw(st.sampled_from(["methods", "attacks", "oe-sources", "profiles", *BAD_NAMES]))
        case.argv = ["list", what]
        if what in BAD_NAMES:
            case.bad.append(what)
        return case
    case.argv = ["run"]
    if draw(st.integers(0, 9)):
        draw(names(METHODS, case, "--methods"))
    else:
        case.bad.append("--methods")  # missing required option
    for option, valid, required in [
        ("--protocol", ["nd", "osr", "ood"], True),
        ("--dataset", ["digits", "digits", "mnist"], False),
        ("--profile", ["ci", "quick", "paper"], False),
        ("--device", ["auto", "cpu", "cuda"], False),
        ("--oe", ["glyph-letters", "natural-patches", "tiny-imagenet", "gaussian-noise"], False),
        *([("--executor", ["local", "local", "ray"], False)] if EXECUTOR_OPTIONS else []),
    ]:
        roll = draw(st.integers(0, 9))
        if roll == 0 and required:
            case.bad.append(option)
        elif roll == 1:
            value = draw(st.sampled_from(BAD_NAMES))
            case.argv += [option, value]
            case.bad.append(value)
        elif required or roll >= 6:
            value = draw(st.sampled_from(valid))
            case.argv += [option, value]
            case.maybe += [value, option]
    if draw(st.booleans()):
        draw(names(ATTACKS, case, "--attacks"))
    if draw(st.booleans()):
        seeds = draw(
            st.lists(st.sampled_from(["0", "1", "2", "-1", "x", "1.5", "2" * 20]), min_size=1, max_size=3)
        )
        case.argv += ["--seeds", *seeds]
        case.bad += [s for s in seeds if s in ("-1", "x", "1.5", "2" * 20)]
        case.bad += [s for i, s in enumerate(seeds) if s in seeds[:i]]
    for _ in range(draw(st.integers(0, 3))):
        fields = [k for k in NUMERIC_FIELDS if EXECUTOR_OPTIONS or not k.startswith("executor.")]
        key = draw(st.sampled_from([*fields, "oe.nope", "nosuch.lam", "pgd", "=1"]))
        kind_of_value = draw(st.sampled_from(["good", "good", "maybe", "bad"]))
        target = NUMERIC_FIELDS.get(key, float)
        pool = {"good": GOOD_VALUES[target], "maybe": MAYBE_BAD_VALUES, "bad": ALWAYS_BAD_VALUES}[
            kind_of_value
        ]
        value = draw(st.sampled_from(pool))
        if target is int and value in ("0.5", "1.0", "-0.5", "1e308"):
            kind_of_value = "bad"
        pair = key if key == "pgd" else f"{key}={value}"
        case.argv += ["--set", pair]
        if key not in NUMERIC_FIELDS:
            case.bad.append(key)
        elif kind_of_value == "bad":
            case.bad.append(value if value else key)
        case.maybe += [key, value] if value else [key]
    roll = draw(st.integers(0, 9))
    if roll == 0:
        case.argv += ["--out", "existing.txt"]
        case.bad.append("existing.txt")
    elif roll == 1:
        case.argv += ["--out", "existing.txt/run"]
        case.bad.append("existing.txt/run")
    elif roll == 2:
        case.argv += ["--out", "/sys/bench-run"]
        case.bad.append("/sys/bench-run")
    elif roll == 3:
        case.argv += ["--out", "x" * 300]
        case.bad.append("x" * 80)  # the error shows the first 80 characters
    elif roll <= 6:
        case.argv += ["--out", "run"]
    roll = draw(st.integers(0, 9)) if EXECUTOR_OPTIONS else 9
    if roll == 0:
        value = draw(st.sampled_from(["-1", "two", ""]))
        case.argv += ["--retries", value]
        case.bad.append(value or "--retries")
    elif roll == 1:
        case.argv += ["--address", "auto"]
        case.maybe += ["--address", "auto"]
    case.argv.append("--dry-run")
    case.maybe += [arg for arg in case.argv if arg.startswith("--")]  # a missing or repeated option
    return case


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def invoke(argv: list[str], work: Path) -> tuple[int | None, str, str]:
    """``bench ARGV`` in this process, in the folder ``work`` with ``work/cache`` as BENCH_CACHE: (exit
    code, stdout, stderr), or (None, "", the traceback's last line) when it raised."""
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_cache = os.getcwd(), os.environ.get("BENCH_CACHE")
    os.chdir(work)
    os.environ["BENCH_CACHE"] = str(work / "cache")
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(argv)
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 1
    except BaseException:  # noqa: BLE001 - this is what the sweeps look for
        return None, "", traceback.format_exc().strip().splitlines()[-1]
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = old_cache
    return code, out.getvalue(), err.getvalue()


def check_invocation(case: Case) -> str | None:
    """None when the invocation behaves, else what went wrong."""

    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as folder:
        work = Path(folder)
        (work / "existing.txt").write_text("not a run folder\n")
        before = _tree(work)
        code, out, err = invoke(case.argv, work)
        after = _tree(work)
    if code is None:
        return f"traceback: {err}"
    lines = err.strip().splitlines()
    if code not in (0, 2):
        return f"exit {code}: {err.strip()[-300:]}"
    if "Traceback" in err or "Traceback" in out:
        return "a traceback was printed"
    if after != before:
        return f"wrote {sorted(after - before)[:5]}"
    if code == 0 and case.bad:
        return f"accepted the bad value(s) {case.bad}"
    if code == 2:
        if len(lines) != 1 or not lines[0].startswith("bench: error: "):
            return f"error is not one line: {lines[:3]}"
        if not any(token in lines[0] for token in case.bad + case.maybe):
            return f"error names none of {case.bad + case.maybe}: {lines[0]}"
    return None


def sweep(examples: int, cases=None, check=None) -> list[tuple[Case, str | None]]:
    """Run ``examples`` invocations (derandomized: the same ones every time); every outcome, failed or not.
    ``cases`` (a strategy) and ``check`` default to this file's; test_report_fuzz passes its own."""
    cases = cases if cases is not None else invocations()
    check = check if check is not None else check_invocation
    outcomes: list[tuple[Case, str | None]] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: Case) -> None:
        outcomes.append((case, check(case)))

    run()
    return outcomes


def _report(outcomes) -> str:
    failed = [(case, problem) for case, problem in outcomes if problem]
    lines = [f"{len(outcomes)} invocations, {len(failed)} failed"]
    lines += [f"  bench {' '.join(case.argv)[:160]}\n    -> {problem}" for case, problem in failed[:20]]
    return "\n".join(lines)


# the cases the sweep found before the fix (on a dry run: accepted, or a traceback), and a few it rarely
# reaches; each must exit 2 with one line naming the value
DIRECTED = [
    (["--out", "existing.txt/run"], "existing.txt/run"),
    (["--out", "/sys/bench-run"], "/sys/bench-run"),
    (["--out", "x" * 300], "x" * 80),
    (["--set", "oe.lam=nan"], "nan"),
    (["--set", "oe.lam=-inf"], "-inf"),
    (["--seeds", str(2**32)], str(2**32)),
    (["--set", "=1"], "'=1'"),
    (["--retries", "-1"], "-1"),
    (["--executor", "ray", "--address", "x"], "'x'"),
]


@pytest.mark.parametrize(("extra", "named"), DIRECTED, ids=[" ".join(e)[:30] for e, _ in DIRECTED])
def test_directed_bad_values(extra, named):
    case = Case(
        ["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", *extra, "--dry-run"], [named]
    )
    assert check_invocation(case) is None


def test_bad_input_sweep():
    outcomes = sweep(60)
    print("\n" + _report(outcomes))
    assert not [problem for _, problem in outcomes if problem], _report(outcomes)


@pytest.mark.slow
def test_bad_input_sweep_long():
    outcomes = sweep(600)
    print("\n" + _report(outcomes))
    assert not [problem for _, problem in outcomes if problem], _report(outcomes)


if __name__ == "__main__":  # python tests/test_cli_fuzz.py [N] [--without-executor-options]
    counts = [int(arg) for arg in sys.argv[1:] if arg.isdigit()]
    print(_report(sweep(counts[0] if counts else 60)))
