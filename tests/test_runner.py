"""End-to-end runs with the ci profile: the rows, the score files, resuming and refusing a changed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench import store
from bench.cache import DetectorCache
from bench.config import get_profile
from bench.contracts import Method
from bench.detector import Detector
from bench.errors import BadInput
from bench.metrics import METRICS, auroc
from bench.plan import RunSpec, plan_run
from bench.protocols import NoveltyDetection
from bench.provenance import cpu_kind
from bench.registry import ATTACKS, METHODS
from bench.runner import Runner

from .conftest import FinishedRun, bench_cmd, bench_env, execute_run, read_rows

CI = get_profile("ci")
EPS = 8 / 255
ND_CELLS = [f"class{c}" for c in range(10)]
OOD_SETS = ["glyphs", "terrain", "noise"]


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def _value(rows, **key) -> float:
    (match,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return float(match["value"])


# ---- (a) columns ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["nd_run", "ood_run"])
def test_results_csv_columns_are_the_store_columns_in_order(run, request):
    finished = request.getfixturevalue(run)
    header = (finished.run_dir / "results.csv").read_text().splitlines()[0]
    assert header.split(",") == store.COLUMNS
    rows = finished.rows
    assert rows and all(list(r) == store.COLUMNS for r in rows)
    assert {r["run_id"] for r in rows} == {"run"}
    assert {r["profile"] for r in rows} == {"ci"}
    assert {r["dataset"] for r in rows} == {"digits"}
    assert {r["device"] for r in rows} == {"cpu"}


# ---- (b) not-applicable rows --------------------------------------------------------------------------


def test_msp_on_nd_is_one_na_row_per_cell_and_attack(nd_run):
    rows = [r for r in nd_run.rows if r["method"] == "msp"]
    assert {r["status"] for r in rows} == {"na"}
    assert Counter((r["cell"], r["attack"]) for r in rows) == {
        (cell, attack): 1 for cell in ND_CELLS for attack in ("clean", "pgd")
    }
    for row in rows:
        assert ">= 2" in row["reason"]
        assert row["value"] == ""
        assert row["metric"] == "auroc"
        assert (row["grad_evals"], row["queries"]) == ("0", "0")  # nothing was spent


def test_oe_on_nd_has_every_metric_but_id_accuracy(nd_run):
    rows = [r for r in nd_run.rows if r["method"] == "oe"]
    assert {r["status"] for r in rows} == {"ok"}
    keys = Counter((r["cell"], r["attack"], r["metric"]) for r in rows)
    expected = {(c, a, m) for c in ND_CELLS for a in ("clean", "pgd") for m in METRICS if m != "id_acc"}
    assert set(keys) == expected and set(keys.values()) == {1}
    for row in rows:
        assert 0.0 <= float(row["value"]) <= 1.0
        assert int(row["n_in"]) > 0 and int(row["n_out"]) == CI.max_eval_per_side
        assert row["split_version"] == "digits-v1/nd-v2"


# ---- (c) resuming a finished run ----------------------------------------------------------------------


def test_rerunning_a_finished_run_computes_nothing(nd_run):
    before = (nd_run.run_dir / "results.csv").read_bytes()
    plan = plan_run(nd_run.spec)
    manifest = Runner(plan, cache=DetectorCache(nd_run.cache_root)).run()
    last = manifest["invocations"][-1]
    assert last["units_pending"] == 0
    assert last["units_total"] == 10 * 2 * 2  # cells x methods x attacks
    assert manifest["invocations"][0]["units_pending"] == 40
    assert (nd_run.run_dir / "results.csv").read_bytes() == before
    on_disk = json.loads((nd_run.run_dir / "manifest.json").read_text())
    assert on_disk["invocations"][-1]["units_pending"] == 0 and on_disk["finished"]


# ---- (d) OOD rows and their mean --------------------------------------------------------------------


def test_ood_rows_per_evalset_and_mean(ood_run):
    rows = _ok(ood_run.rows)
    assert {r["cell"] for r in rows} == {f"all:{name}" for name in OOD_SETS} | {"all:mean"}
    for method in ("msp", "energy", "oe"):
        for attack in ("clean", "pgd"):
            for metric in METRICS:  # ten inlier classes: id_acc too
                key = {"method": method, "attack": attack, "metric": metric}
                parts = [_value(rows, cell=f"all:{name}", **key) for name in OOD_SETS]
                mean = _value(rows, cell="all:mean", **key)
                assert mean == pytest.approx(np.mean(parts), abs=1e-9)


def test_ood_mean_row_counts(ood_run):
    rows = _ok(ood_run.rows)
    for row in rows:
        assert int(row["n_in"]) == CI.max_eval_per_side
        expected_out = 3 * CI.max_eval_per_side if row["cell"] == "all:mean" else CI.max_eval_per_side
        assert int(row["n_out"]) == expected_out


# ---- (e) attacks can only hurt ----------------------------------------------------------------------


@pytest.mark.parametrize("run", ["nd_run", "ood_run"])
def test_pgd_auroc_is_at_most_clean_auroc_everywhere(run, request):
    rows = _ok(request.getfixturevalue(run).rows)
    auroc_rows = [r for r in rows if r["metric"] == "auroc"]
    pairs = {(r["method"], r["cell"]) for r in auroc_rows}
    assert pairs
    strictly_lower = 0
    for method, cell in pairs:
        clean = _value(auroc_rows, method=method, cell=cell, attack="clean")
        attacked = _value(auroc_rows, method=method, cell=cell, attack="pgd")
        assert attacked <= clean, (method, cell, clean, attacked)
        strictly_lower += attacked < clean
    assert strictly_lower >= len(pairs) // 2  # the attack does bite


# ---- (f) score files -----------------------------------------------------------------------------


@pytest.mark.parametrize(("run", "evalsets"), [("nd_run", ["test"]), ("ood_run", OOD_SETS)])
def test_score_files_reproduce_the_csv(run, evalsets, request):
    finished = request.getfixturevalue(run)
    rows = _ok(finished.rows)
    units = {(r["method"], store.unit_of(r["cell"]), r["seed"], r["attack"]) for r in rows}
    assert units
    for method, cell, seed, attack in units:
        path = finished.run_dir / "scores" / method / cell / f"seed{seed}-{attack}.npz"
        assert path.is_file()
        with np.load(path, allow_pickle=False) as archive:
            assert set(archive.files) == {
                f"{e}__{k}" for e in evalsets for k in ("clean", "attacked", "is_outlier")
            }
            for name in evalsets:
                is_outlier = archive[f"{name}__is_outlier"]
                cell_name = cell if len(evalsets) == 1 else f"{cell}:{name}"
                key = {"method": method, "cell": cell_name, "seed": seed}
                expected = _value(rows, attack=attack, metric="auroc", **key)
                assert auroc(archive[f"{name}__attacked"], is_outlier) == pytest.approx(expected, abs=1e-9)
                clean = _value(rows, attack="clean", metric="auroc", **key)
                assert auroc(archive[f"{name}__clean"], is_outlier) == pytest.approx(clean, abs=1e-9)
                if attack == "clean":
                    np.testing.assert_array_equal(archive[f"{name}__attacked"], archive[f"{name}__clean"])
    # no score file for not-applicable units
    na_methods = {r["method"] for r in finished.rows if r["status"] == "na"}
    for method in na_methods:
        assert not (finished.run_dir / "scores" / method).exists()


# ---- (g) the budget that ran -------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["nd_run", "ood_run"])
def test_rows_record_the_attack_budget(run, request):
    rows = _ok(request.getfixturevalue(run).rows)
    pgd = [r for r in rows if r["attack"] == "pgd"]
    clean = [r for r in rows if r["attack"] == "clean"]
    assert pgd and clean
    for row in pgd:
        assert int(row["steps"]) == CI.pgd_steps
        assert int(row["restarts"]) == CI.pgd_restarts
        assert int(row["grad_evals"]) == CI.pgd_steps * CI.pgd_restarts
        assert int(row["queries"]) == 1 + CI.pgd_restarts
        assert float(row["eps"]) == pytest.approx(EPS)
    for row in clean:
        assert (row["steps"], row["restarts"], row["grad_evals"], row["queries"]) == ("0", "0", "0", "0")
        assert float(row["eps"]) == 0.0


def test_manifest_records_the_run(ood_run):
    manifest = json.loads((ood_run.run_dir / "manifest.json").read_text())
    assert manifest["config"]["protocol"] == "ood"
    assert manifest["config"]["profile"] == "ci"
    assert manifest["dataset"]["split_version"] == "digits-v1/ood-v3"
    assert manifest["profile"]["pgd_steps"] == CI.pgd_steps
    assert manifest["finished"] is not None
    assert manifest["invocations"][0]["units_total"] == 3 * 2
    # the CPU kind the floats came from (docs/ci.md), for the run and each invocation
    assert manifest["cpu"] == cpu_kind() == manifest["invocations"][0]["cpu"]


# ---- (h) a different configuration into the same directory ------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"attacks": ["clean"]},
        {"methods": ["oe"]},
        {"settings": ["oe.lam=1.0"]},
        {"settings": ["pgd.steps=3"]},
        {"seeds": [1]},
        {"profile": "quick"},
    ],
)
def test_a_different_configuration_into_the_same_out_is_refused(nd_run, change):
    before = sorted(p.name for p in nd_run.run_dir.iterdir())
    csv_before = (nd_run.run_dir / "results.csv").read_bytes()
    with pytest.raises(BadInput, match="different configuration"):
        plan_run(replace(nd_run.spec, **change))
    assert sorted(p.name for p in nd_run.run_dir.iterdir()) == before
    assert (nd_run.run_dir / "results.csv").read_bytes() == csv_before


def test_plan_run_validates_and_writes_nothing(tmp_path):
    spec = RunSpec(methods=["oe"], protocol="nd", profile="ci", device="cpu", out=tmp_path / "new-run")
    plan = plan_run(spec)
    assert plan.run_dir == tmp_path / "new-run" and plan.run_id == "new-run"
    assert plan.attacks == ATTACKS.names()  # default: every registered attack
    assert plan.attacks[:2] == ["clean", "pgd"] and {"aa", "a3", "blackbox"} <= set(plan.attacks)
    assert not plan.run_dir.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BadInput, match="named twice"):
        plan_run(replace(spec, methods=["oe", "oe"]))
    with pytest.raises(BadInput, match="seed"):
        plan_run(replace(spec, seeds=[-1]))


def test_rows_are_stored_once(nd_run, ood_run):
    for finished in (nd_run, ood_run):
        keys = Counter(
            (r["method"], r["cell"], r["seed"], r["attack"], r["metric"]) for r in read_rows(finished.run_dir)
        )
        assert set(keys.values()) == {1}


# ---- kill -9 and resume ---------------------------------------------------------------------------------

KEY = ("method", "cell", "seed", "attack", "metric")


def _units(rows) -> set[tuple[str, str, str, str]]:
    return {(r["method"], store.unit_of(r["cell"]), r["seed"], r["attack"]) for r in rows}


def _rows_now(run_dir: Path) -> list[dict[str, str]]:
    try:
        return read_rows(run_dir)
    except FileNotFoundError:
        return []


def _kill_midway(
    args: list[str], cwd: Path, env: dict, run_dir: Path, total: int
) -> list[dict[str, str]] | None:
    """Start the run, SIGKILL it once >= 2 units are stored; the rows it left, or None if it finished."""
    process = subprocess.Popen(
        bench_cmd(*args), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600  # generous: a loaded 2-core machine trains slowly
        while time.monotonic() < deadline and process.poll() is None:
            if len(_units(_rows_now(run_dir))) >= 2:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rows = _rows_now(run_dir)
    if process.returncode != -signal.SIGKILL or len(_units(rows)) >= total:
        return None
    return rows


CELLS = ("class0", "class1", "class2")  # enough units to be killed between two of them


def test_kill_9_then_resume_keeps_finished_rows_and_completes(tmp_path):
    env = bench_env(tmp_path / "cache")
    for seeds in (["0"], ["0", "1"], ["0", "1", "2"]):
        run_dir = tmp_path / f"run-{len(seeds)}"
        args = ["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--attacks", "clean", "pgd"]
        args += ["--cells", *CELLS, "--seeds", *seeds, "--out", str(run_dir)]
        total = len(CELLS) * 2 * len(seeds)  # cells x attacks x seeds
        finished = _kill_midway(args, tmp_path, env, run_dir, total)
        if finished is not None:
            break
    else:
        pytest.fail("the run always finished before it could be killed")
    csv_before = (run_dir / "results.csv").read_bytes()
    assert 2 <= len(_units(finished)) < total

    done = subprocess.run(
        bench_cmd(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr

    rows = read_rows(run_dir)
    # the resumed run only appended: every finished row is still there, byte for byte
    assert (run_dir / "results.csv").read_bytes().startswith(csv_before)
    by_key = {tuple(r[k] for k in KEY): r for r in rows}
    for old in finished:
        assert by_key[tuple(old[k] for k in KEY)] == old
    # each unit exactly once per metric, and all of them
    counts = Counter(tuple(r[k] for k in KEY) for r in rows)
    assert set(counts.values()) == {1}
    expected_units = {("oe", c, s, a) for c in CELLS for s in seeds for a in ("clean", "pgd")}
    assert _units(rows) == expected_units
    for unit in expected_units:
        metrics = {r["metric"] for r in rows if _units([r]) == {unit}}
        assert metrics == {"auroc", "fpr95", "aupr_in", "aupr_out"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["invocations"]) == 2
    assert manifest["invocations"][-1]["units_pending"] == total - len(_units(finished))
    assert manifest["invocations"][-1]["finished"] is not None
    assert (run_dir / "report.html").is_file()


def test_a_repeated_seed_is_rejected_before_anything_is_written(tmp_path):
    spec = RunSpec(
        methods=["msp"],
        protocol="nd",
        attacks=["clean"],
        seeds=[0, 1, 0],
        profile="ci",
        device="cpu",
        out=tmp_path / "r",
    )
    with pytest.raises(BadInput, match=r"a seed is named twice in --seeds 0 1 0; accepted: distinct seeds"):
        plan_run(spec)
    assert list(tmp_path.iterdir()) == []
    plan = plan_run(replace(spec, seeds=[0, 1]))  # the same seeds, each once, are accepted
    assert plan.spec.seeds == [0, 1] and not plan.run_dir.exists()


def test_oe_option_swaps_the_outlier_source_and_names_the_run():
    from bench.datasets import load_dataset
    from bench.plan import with_oe_source

    dataset = load_dataset("digits")
    assert dataset.oe_source(50, 0).name == "glyph-letters"
    swapped = with_oe_source(dataset, "natural-patches")
    assert swapped.oe_source(50, 0).name == "natural-patches"
    assert "--oe" in swapped.notes["oe"] and dataset.oe_source(50, 0).name == "glyph-letters"
    plan = plan_run(RunSpec(methods=["oe"], protocol="nd", profile="ci", oe="natural-patches"))
    assert plan.config()["oe"] == "natural-patches" and "oe_natural-patches" in plan.run_id


# ---- the adaptive and query attacks through the runner -------------------------------------------------

ADAPTIVE = ["clean", "aa", "a3", "blackbox"]


class FlatDetector(Detector):
    """A rounded mean pixel: piecewise constant, so every input gradient is zero (gradient attacks warn).
    Its one parameter is unused."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()), requires_grad=False)

    def config(self):
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(4 * x.flatten(1).mean(1)) / 4


class FlatMethod(Method):
    """A test-only method (registered for one run) whose detector has zero gradients."""

    def fit(self, task, ctx):
        return FlatDetector()


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory) -> FinishedRun:
    """oe and the zero-gradient test method on one nd cell (class0), ci profile, clean, aa, a3, blackbox."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NoveltyDetection, "cell_ids", lambda self, dataset, profile, seed: ["class0"])
        patch.setitem(METHODS._items, "flat", FlatMethod)
        return execute_run(
            tmp_path_factory.mktemp("adaptive"), methods=["oe", "flat"], protocol="nd", attacks=ADAPTIVE
        )


def test_adaptive_and_query_attacks_run_through_the_runner(adaptive_run):
    rows = adaptive_run.rows
    assert {r["status"] for r in rows} == {"ok"}
    keys = Counter((r["method"], r["cell"], r["attack"], r["metric"]) for r in rows)
    expected = {(m, "class0", a, metric) for m in ("oe", "flat") for a in ADAPTIVE for metric in METRICS}
    expected = {key for key in expected if key[3] != "id_acc"}  # one inlier class: no classifier
    assert set(keys) == expected and set(keys.values()) == {1}
    for row in rows:
        assert 0.0 <= float(row["value"]) <= 1.0
        assert float(row["eps"]) == (0.0 if row["attack"] == "clean" else pytest.approx(EPS))
    ok = [r for r in rows if r["metric"] == "auroc" and r["method"] == "oe"]
    clean = _value(ok, attack="clean")
    for attack in ("aa", "a3", "blackbox"):
        assert _value(ok, attack=attack) <= clean
    assert _value(ok, attack="aa") < clean  # the ensemble bites on the undefended detector


def test_adaptive_rows_record_the_budget_that_ran(adaptive_run):
    aa, a3, blackbox = (ATTACKS.get(name).from_profile(CI) for name in ("aa", "a3", "blackbox"))
    assert (aa.apgd_steps, aa.apgd_restarts, aa.square_queries, aa.square_restarts) == (10, 1, 100, 1)
    for row in adaptive_run.rows:
        steps, restarts = int(row["steps"]), int(row["restarts"])
        grad_evals, queries = float(row["grad_evals"]), float(row["queries"])
        if row["attack"] == "aa":  # design.md: grad_evals (N+1)*R, queries 1 + R_sq*(Q+1)
            assert (steps, restarts) == (10, 1)
            assert grad_evals == (10 + 1) * 1 == 11
            assert queries == 1 + 1 * (100 + 1) == 102
        elif row["attack"] == "blackbox":  # query-only
            assert grad_evals == 0
            assert queries == 1 + 1 * (100 + 1)
        elif row["attack"] == "a3":  # adaptive: what ran, within the plan
            assert 0 < grad_evals <= a3.budget_per_sample == 10
            assert queries == 1  # the clean point only
            assert 1 <= restarts <= a3.outer_restarts and 2 <= steps <= a3.budget().steps
        else:
            assert (steps, restarts, grad_evals, queries) == (0, 0, 0, 0)


def test_attack_warnings_reach_the_manifest(adaptive_run):
    manifest = json.loads((adaptive_run.run_dir / "manifest.json").read_text())
    warnings = manifest["warnings"]
    assert warnings == adaptive_run.manifest["warnings"]
    zero = [line for line in warnings if "zero gradient" in line]
    # both gradient attacks on the flat detector; each line names the unit it came from
    assert any(line.startswith("flat class0 seed 0 aa: APGD: ") for line in zero), warnings
    assert any(line.startswith("flat class0 seed 0 a3: zero gradients at ") for line in zero), warnings
    assert not any(" blackbox: " in line for line in zero)  # query-only: no gradient to check


# ---- --cells: a part of the grid, the rest later into the same --out ------------------------------------


def test_cells_compute_only_those_cells_and_the_same_command_without_them_adds_the_rest(tmp_path):
    """msp is not applicable on nd (one inlier class): its rows cost no training."""
    part = execute_run(
        tmp_path, methods=["msp"], protocol="nd", attacks=["clean"], cells=["class3", "class7"]
    )
    assert {r["cell"] for r in read_rows(part.run_dir)} == {"class3", "class7"}
    assert part.manifest["invocations"][0]["units_total"] == 2
    assert part.manifest["invocations"][0]["cells"] == ["class3", "class7"]
    first = {(r["cell"], r["timestamp"]) for r in read_rows(part.run_dir)}
    rest = execute_run(tmp_path, methods=["msp"], protocol="nd", attacks=["clean"])
    rows = read_rows(rest.run_dir)
    assert {r["cell"] for r in rows} == {f"class{c}" for c in range(10)}
    assert rest.manifest["invocations"][-1]["units_pending"] == 8
    assert first <= {(r["cell"], r["timestamp"]) for r in rows}  # the finished cells were kept as they were


def test_an_unknown_cell_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        bench_cmd(
            "run", "--methods", "msp", "--protocol", "osr", "--profile", "ci", "--cells", "split0", "class1"
        )
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env=bench_env(tmp_path / "cache"),
    )
    assert done.returncode == 2
    assert "unknown cell 'class1' of --protocol osr on digits; accepted: split0, split1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(BadInput, match="named twice"):
        plan_run(RunSpec(methods=["msp"], protocol="nd", profile="ci", cells=["class1", "class1"]))


def test_the_manifest_times_the_checks_beside_the_units(nd_run):
    """Issue 29: each invocation records, per method, the wall seconds of its units and the part its
    checks took (the check overhead); msp is not applicable on nd, so it runs no check."""
    for manifest in (nd_run.manifest, json.loads((nd_run.run_dir / "manifest.json").read_text())):
        invocation = manifest["invocations"][0]  # the one that ran the units (other tests resume the run)
        assert set(invocation["unit_seconds"]) == set(invocation["check_seconds"]) == {"msp", "oe"}
        assert 0 < invocation["check_seconds"]["oe"] < invocation["unit_seconds"]["oe"]
        assert invocation["check_seconds"]["msp"] == 0
