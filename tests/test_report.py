"""The HTML report: tables are hand-checked means, the page escapes names, writes are atomic."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from bench import report
from bench.store import COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FILES = ["manifest.json", "plots", "report.html", "results.csv"]
EVIL = "<script>alert(1)</script>"
NA_REASON = "MSP needs >= 2 inlier classes"
EPS = 0.0313725  # 8/255 as the runner writes it
BUDGETS = {"clean": (0.0, 0, 0, 0, 0), "pgd": (EPS, 10, 2, 20, 0)}


def _row(method, cell, seed, attack, metric, value, *, status="ok", reason="", run_id="r1", protocol="osr"):
    eps, steps, restarts, grad_evals, queries = BUDGETS[attack]
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        run_id=run_id, method=method, method_hash="h" + str(len(method)), protocol=protocol, dataset="toy",
        cell=cell, seed=seed, attack=attack, eps=eps, steps=steps, restarts=restarts, grad_evals=grad_evals,
        queries=queries, metric=metric, value="" if value is None else value, status=status, reason=reason,
        n_in=100, n_out=100, fit_seconds=1.5, attack_seconds=0.25, profile="ci", split_version="1",
        bench_version="0.1.0", git_sha="abc1234", device="cpu", timestamp="2024-01-01T00:00:00",
    )  # fmt: skip
    return row


def _na(method, cell, seed, attack, **kw):
    return _row(method, cell, seed, attack, "auroc", None, status="na", reason=NA_REASON, **kw)


def _ok(method, cell, attack, auroc, fpr95, seeds=(0, 1), **kw):
    rows = []
    for seed, (a, f) in zip(seeds, zip(auroc, fpr95, strict=True), strict=True):
        rows.append(_row(method, cell, seed, attack, "auroc", a, **kw))
        rows.append(_row(method, cell, seed, attack, "fpr95", f, **kw))
    return rows


def _osr_rows():
    """2 cells x 2 attacks x 2 seeds; msp is na on c1 and on every pgd cell; EVIL is a method name."""
    rows = []
    rows += _ok("maha", "c0", "clean", (0.88, 0.92), (0.3, 0.3))
    rows += _ok("maha", "c1", "clean", (0.68, 0.72), (0.5, 0.5))
    rows += _ok("maha", "c0", "pgd", (0.6, 0.6), (0.9, 0.9))
    rows += _ok("maha", "c1", "pgd", (0.4, 0.4), (1.0, 1.0))
    rows += _ok("msp", "c0", "clean", (0.75, 0.75), (0.6, 0.6))
    rows += [_na("msp", "c0", s, "pgd") for s in (0, 1)]
    rows += [_na("msp", "c1", s, a) for a in ("clean", "pgd") for s in (0, 1)]
    rows += _ok(EVIL, "c0", "clean", (0.55, 0.55), (0.7, 0.7))
    rows += _ok(EVIL, "c1", "clean", (0.65, 0.65), (0.7, 0.7))
    rows += _ok(EVIL, "c0", "pgd", (0.5, 0.5), (0.9, 0.9))
    rows += _ok(EVIL, "c1", "pgd", (0.5, 0.5), (0.9, 0.9))
    return rows


def _ood_rows():
    """OOD protocol: the aggregate ``all:mean`` row holds 0.1, which would drag the mean down if counted."""
    kw = {"protocol": "ood", "run_id": "r2", "seeds": (0,)}
    rows = []
    rows += _ok("oe", "all:a", "clean", (0.9,), (0.2,), **kw)
    rows += _ok("oe", "all:b", "clean", (0.7,), (0.4,), **kw)
    rows += _ok("oe", "all:mean", "clean", (0.1,), (0.9,), **kw)
    rows += _ok("oe", "all:a", "pgd", (0.5,), (0.8,), **kw)
    rows += _ok("oe", "all:b", "pgd", (0.3,), (1.0,), **kw)
    rows += _ok("oe", "all:mean", "pgd", (0.1,), (0.9,), **kw)
    return rows


def _make_run(run_dir: Path, rows, warnings=()) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "run_id": rows[0]["run_id"],
        "command": "bench run --profile ci --protocol osr",
        "config": {"profile": "ci", "protocol": rows[0]["protocol"], "dataset": "toy"},
        "versions": {"torch": "2.14.1", "numpy": "2.0.0"},
        "git_sha": "abc1234",
        "host": "testhost",
        "device": "cpu",
        "started": "2024-01-01T00:00:00",
        "finished": None,
        "warnings": list(warnings),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def osr_run(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("osr") / "r1", _osr_rows(), warnings=["dirty <b>tree</b>"])


@pytest.fixture(scope="module")
def osr_report(osr_run) -> str:
    path = report.write_report(osr_run)
    assert path == osr_run / "report.html"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("ood") / "r2", _ood_rows())


def test_load_results_dtypes(osr_run):
    df = report.load_results(osr_run)
    assert list(df.columns) == COLUMNS
    assert df["value"].dtype == float and df["eps"].dtype == float
    assert df["seed"].dtype == "int64" and df["steps"].dtype == "int64"
    na = df[df["status"] == "na"]
    assert na["value"].isna().all() and set(na["reason"]) == {NA_REASON}
    assert set(df.loc[df["status"] == "ok", "reason"]) == {""}
    assert EVIL in set(df["method"])


def test_summary_table_means_and_order(osr_run):
    df = report.load_results(osr_run)
    auroc = report.summary_table(df)
    assert list(auroc.index) == ["maha", "msp", EVIL]
    assert list(auroc.columns) == ["clean", "pgd"]
    assert auroc.loc["maha", "clean"] == pytest.approx(0.8)
    assert auroc.loc["maha", "pgd"] == pytest.approx(0.5)
    assert auroc.loc["msp", "clean"] == pytest.approx(0.75)  # na cell c1 is not a zero
    assert math.isnan(auroc.loc["msp", "pgd"])  # every msp pgd row is na
    assert auroc.loc[EVIL, "clean"] == pytest.approx(0.6)
    fpr = report.summary_table(df, "fpr95")
    assert fpr.loc["maha", "clean"] == pytest.approx(0.4)
    assert math.isnan(fpr.loc["msp", "pgd"])  # na rows carry metric auroc only; msp still gets a row


def test_summary_excludes_aggregate_cells(ood_run):
    df = report.load_results(ood_run)
    auroc = report.summary_table(df)
    assert auroc.loc["oe", "clean"] == pytest.approx(0.8)  # (0.9 + 0.7) / 2, not (0.9 + 0.7 + 0.1) / 3
    assert auroc.loc["oe", "pgd"] == pytest.approx(0.4)
    assert report.summary_table(df, "fpr95").loc["oe", "clean"] == pytest.approx(0.3)


def test_cell_table_keeps_aggregates_and_na(osr_run, ood_run):
    cells = report.cell_table(report.load_results(ood_run))
    assert list(cells.index) == [("oe", "all:a"), ("oe", "all:b"), ("oe", "all:mean")]
    assert cells.loc[("oe", "all:mean"), "clean"] == pytest.approx(0.1)
    cells = report.cell_table(report.load_results(osr_run))
    assert cells.loc[("maha", "c0"), "clean"] == pytest.approx(0.9)  # mean over seeds
    assert math.isnan(cells.loc[("msp", "c1"), "clean"])
    assert math.isnan(cells.loc[("msp", "c0"), "pgd"])


def test_format_eps():
    assert report.format_eps(EPS) == "8/255"
    assert report.format_eps(4 / 255) == "4/255"
    assert report.format_eps(0.0) == "0"
    assert report.format_eps(0.5) == "0.5"


def test_report_content(osr_report):
    html = osr_report
    assert "<title>Run r1" in html
    for text in ("80.0", "50.0", "75.0", "60.0", "40.0", "n/a", "8/255", "bench run --profile ci", "torch"):
        assert text in html, text
    assert NA_REASON.replace(">", "&gt;") in html
    assert 'title="mean over 1 of 2 cells">75.0<sup>*</sup>' in html  # msp clean covers c0 only
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "dirty &lt;b&gt;tree&lt;/b&gt;" in html and 'class="warnings"' in html
    assert '<img src="plots/auroc_by_attack.png"' in html
    assert '<img src="plots/auroc_by_cell.png"' in html
    assert "http://" not in html and "https://" not in html  # no external assets


def test_report_files_and_pngs(osr_run, osr_report):
    assert sorted(p.name for p in osr_run.iterdir()) == RUN_FILES
    plots = sorted((osr_run / "plots").iterdir())
    assert [p.name for p in plots] == ["auroc_by_attack.png", "auroc_by_cell.png"]
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_report_is_a_function_of_the_data(osr_run, osr_report):
    assert report.write_report(osr_run).read_text(encoding="utf-8") == osr_report


def test_ood_report(ood_run):
    html = report.write_report(ood_run).read_text(encoding="utf-8")
    assert "all:mean" in html and "Every method ran on every cell." in html and "Warnings" not in html
    assert "80.0" in html and "10.0" in html  # summary, and the aggregate cell in the breakdown
    assert sorted(p.name for p in ood_run.iterdir()) == RUN_FILES
    assert (ood_run / "plots" / "auroc_by_cell.png").read_bytes()[:8] == PNG_MAGIC


def test_single_cell_has_no_cell_plot(tmp_path):
    run = _make_run(tmp_path / "r3", _ok("maha", "c0", "clean", (0.9, 0.7), (0.1, 0.1)))
    (run / "plots").mkdir()
    (run / "plots" / "auroc_by_cell.png").write_bytes(b"stale")
    written = report.write_plots(report.load_results(run), run / "plots")
    assert [p.name for p in written] == ["auroc_by_attack.png"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["auroc_by_attack.png"]


def test_module_writes_the_report_of_a_stopped_run_and_refuses_a_bad_folder(tmp_path, capsys):
    """``python -m bench.report DIR ...``: a run stopped midway gets its report from the rows there now;
    a folder without results.csv is named, exit 2, and no folder is written."""
    run = _make_run(tmp_path / "run", _osr_rows())
    assert not (run / "report.html").exists()
    assert report.main([str(run), str(tmp_path / "nowhere")]) == 2
    assert "no results.csv in" in capsys.readouterr().err and not (run / "report.html").exists()
    assert report.main([str(run)]) == 0
    assert f"{run / 'report.html'} ({len(_osr_rows())} rows)" in capsys.readouterr().out
    assert (run / "report.html").read_text(encoding="utf-8") == report.write_report(run).read_text()
