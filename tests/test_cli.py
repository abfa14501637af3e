"""The command line, run as a real subprocess: bad input is one line on stderr, exit code 2, no files.

Every command runs in its own empty folder (cwd and BENCH_CACHE inside it). The subprocesses are started
together by one module fixture, since each spends most of its time importing torch.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.config import get_profile
from bench.datasets import load_dataset
from bench.protocols import get_protocol

from .conftest import bench_cmd, bench_env

CI = ["--profile", "ci"]

# name -> (arguments, substrings the single stderr line must contain)
BAD_INPUT = {
    "unknown_method": (
        ["run", "--methods", "nosuchmethod", "--protocol", "nd", *CI],
        ["nosuchmethod", "accepted", "msp"],
    ),
    "unknown_attack": (
        ["run", "--methods", "msp", "--protocol", "nd", "--attacks", "clean", "nosuchattack", *CI],
        ["nosuchattack", "accepted", "pgd"],
    ),
    "unknown_protocol": (
        ["run", "--methods", "msp", "--protocol", "nosuchprotocol", *CI],
        ["nosuchprotocol", "accepted", "osr"],
    ),
    "unknown_dataset": (
        ["run", "--methods", "msp", "--protocol", "nd", "--dataset", "nosuchdataset", *CI],
        ["nosuchdataset", "accepted", "digits"],
    ),
    "unknown_profile": (
        ["run", "--methods", "msp", "--protocol", "nd", "--profile", "nosuchprofile"],
        ["nosuchprofile", "accepted", "quick"],
    ),
    "set_unknown_key": (
        ["run", "--methods", "oe", "--protocol", "nd", "--set", "oe.nope=1", *CI],
        ["oe.nope", "accepted", "oe.lam"],
    ),
    "set_bad_type": (
        ["run", "--methods", "oe", "--protocol", "nd", "--set", "oe.lam=abc", *CI],
        ["oe.lam", "abc", "float"],
    ),
    "set_key_of_a_method_without_it": (
        ["run", "--methods", "msp", "--protocol", "nd", "--set", "msp.lam=1", *CI],
        ["msp.lam", "accepted"],
    ),
    "out_is_a_file": (
        ["run", "--methods", "msp", "--protocol", "nd", "--out", "existing.txt", *CI],
        ["existing.txt", "accepted"],
    ),
    "list_unknown": (["list", "nosuchlist"], ["nosuchlist", "accepted", "methods"]),
    "oe_source": (
        ["run", "--methods", "oe", "--protocol", "nd", *CI, "--oe", "tinyimages80m"],
        ["tinyimages80m", "accepted", "glyph-letters", "natural-patches"],
    ),
}

GOOD = {
    "list_methods": ["list", "methods"],
    "dry_run": [
        "run",
        "--methods",
        "msp",
        "energy",
        "--protocol",
        "nd",
        *CI,
        "--attacks",
        "clean",
        "pgd",
        "--dry-run",
        "--out",
        "run",
    ],  # fmt: skip
}

PRE_EXISTING = "existing.txt"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    before: set[str]
    after: set[str]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    base = tmp_path_factory.mktemp("cli")
    commands = {**{name: case[0] for name, case in BAD_INPUT.items()}, **GOOD}

    def run(name: str) -> Result:
        folder = base / name
        folder.mkdir()
        (folder / PRE_EXISTING).write_text("not a run directory\n")
        before = _tree(folder)
        process = subprocess.run(
            bench_cmd(*commands[name]),
            cwd=folder,
            env=bench_env(folder / "cache"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Result(process.returncode, process.stdout, process.stderr, before, _tree(folder))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(commands, pool.map(run, commands), strict=True))


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(results, name):
    result = results[name]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert lines[0].startswith("bench: error: ")
    for expected in BAD_INPUT[name][1]:
        assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.after == result.before == {PRE_EXISTING}


def test_list_methods(results):
    result = results["list_methods"]
    assert result.returncode == 0, result.stderr
    assert {"energy", "msp", "oe"} <= set(result.stdout.split())
    assert result.after == result.before
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    # each line: protocols, needs, and the paper defaults (ATOM App. B.1, ALOE's 1/255, RODEO Table 9)
    assert "protocols=nd,osr,ood" in lines["atom"] and "needs=oe" in lines["atom"]
    assert "q=0.125" in lines["atom"].split() and "steps=5" in lines["atom"].split()
    assert "eps=0.00392157" in lines["aloe"].split()
    assert "needs=-" in lines["rodeo"] and "lr=0.001" in lines["rodeo"].split()
    assert "outlier_prompt='a photo of something'" in lines["clip"]


def test_list_attacks_shows_the_paper_budgets(capsys):
    from bench.cli import main

    main(["list", "attacks"])
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert {"steps=1000", "restarts=10"} <= set(lines["pgd"])  # RODEO Sec. 5: PGD-1000, 10 restarts
    assert "square_queries=5000" in lines["aa"]


def _dry_run_expectations() -> tuple[list[str], int]:
    """The nd cell ids and the number of test images over all cells, times the two methods."""
    cells = list(get_protocol("nd").cells(load_dataset("digits"), get_profile("ci"), 0))
    return [c.cell_id for c in cells], 2 * sum(len(e.images) for c in cells for e in c.evalsets)


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the rich tables in ``text``."""
    return [[c.strip() for c in line.split("\u2502")[1:-1]] for line in text.splitlines() if "\u2502" in line]


def test_dry_run_prints_cells_and_budget_and_writes_nothing(results):
    result = results["dry_run"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    cell_ids, images = _dry_run_expectations()
    for cell_id in cell_ids:
        assert cell_id in out
    assert "methods: msp, energy;" in out  # both space-separated values were taken
    # the budget table: attack, eps, steps, restarts, grad evals per image
    budget = {cells[0]: cells[1:5] for cells in _table_rows(out) if cells and cells[0] in ("clean", "pgd")}
    assert budget == {"clean": ["0/255", "0", "0", "0"], "pgd": ["8/255", "10", "1", "10"]}
    assert "grad evals" in out
    assert f"over {images:,} image scorings" in out
    assert result.after == result.before == {PRE_EXISTING}
    assert not result.stderr.strip()


# ---- option parsing (in process) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "methods",
    [
        ["--methods", "msp", "energy"],
        ["--methods", "msp", "--methods", "energy"],
        ["--methods", "msp,energy"],
        ["--methods=msp,energy"],
    ],
)
def test_multi_value_options_accept_spaces_repeats_and_commas(methods):
    from bench.cli import run_command

    args = [*methods, "--protocol", "nd", "--seeds", "0", "1", "--attacks", "clean", "pgd", "--dry-run"]
    ctx = run_command.make_context("run", args)
    assert ctx.params["methods"] == ("msp", "energy")
    assert ctx.params["seeds"] == ("0", "1")
    assert ctx.params["attacks"] == ("clean", "pgd")
    assert ctx.params["protocol"] == "nd" and ctx.params["dry_run"] is True
