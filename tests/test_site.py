"""The leaderboard site (bench report) and bench compare: hand-computed numbers, escaping, files."""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import site
from bench.cli import main
from bench.errors import BadInput
from bench.plots import eps_plot, load_scores
from bench.results.methods import method_sources
from bench.results.published import load_published, published_comparison
from bench.results.rows import combine, load_source
from bench.results.stats import budget_summary, leaderboard, warning_index
from bench.store import COLUMNS

EPS = 8 / 255
BUDGETS = {  # eps, steps, restarts, grad_evals, queries
    "clean": (0.0, 0, 0, 0, 0),
    "pgd": (EPS, 10, 2, 20, 3),
    "aa": (EPS, 10, 1, 11, 101),
    "a3": (EPS, 80, 13, 79.9, 1),
}
NA_REASON = "msp needs >= 2 inlier classes"
EVIL_SCRIPT = "<script>window.__xss = 1</script>"
EVIL_IMG = "<img src=x onerror=window.__xss=2>"

# Leaderboard known answers, method "atom" on nd/toy: AUROC per (cell, seed) and attack.
ATOM = {
    ("c0", 0): {"clean": 0.9, "pgd": 0.6, "aa": 0.5},
    ("c1", 0): {"clean": 0.8, "pgd": 0.4, "aa": 0.45},
    ("c0", 1): {"clean": 0.7, "pgd": 0.7, "aa": 0.65},
    ("c1", 1): {"clean": 0.6, "pgd": 0.3, "aa": 0.35},
}


def row(method, cell, seed, attack, metric="auroc", value=None, *, status="ok", reason="", **over):
    eps, steps, restarts, grad_evals, queries = BUDGETS[attack]
    if status != "ok":
        steps = restarts = grad_evals = queries = 0
    r = dict.fromkeys(COLUMNS, "")
    r.update(
        run_id="r1", method=method, method_hash="mh", protocol="nd", dataset="toy", cell=cell, seed=seed,
        attack=attack, attack_hash="ah", eps=eps, steps=steps, restarts=restarts, grad_evals=grad_evals,
        queries=queries, metric=metric, value="" if value is None else value, status=status, reason=reason,
        n_in=54, n_out=100, fit_seconds=1.0, attack_seconds=0.5, profile="quick",
        split_version="toy-v1/nd-v2", bench_version="0.1.0", git_sha="abc1234", device="cpu",
        timestamp=f"2026-01-0{seed + 1}T00:00:00+00:00",
    )  # fmt: skip
    r.update(over)
    return r


def unit_rows(method, cell, seed, attack, auroc, **over):
    """The rows of one ok unit: auroc, fpr95 (1 - auroc), aupr_in, aupr_out."""
    return [
        row(method, cell, seed, attack, metric, value, **over)
        for metric, value in (("auroc", auroc), ("fpr95", 1 - auroc), ("aupr_in", 0.7), ("aupr_out", 0.8))
    ]


def atom_rows(**over):
    rows = []
    for (cell, seed), values in ATOM.items():
        for attack, v in values.items():
            rows += unit_rows("atom", cell, seed, attack, v, **over)
    return rows


def msp_na_rows(**over):
    return [
        row("msp", cell, seed, attack, status="na", reason=NA_REASON, **over)
        for cell in ("c0", "c1")
        for seed in (0, 1)
        for attack in ("clean", "pgd", "aa")
    ]


def write_scores(
    run_dir: Path, method: str, cell: str, seed: int, attack: str, shift: float, identical_to=None
):
    """Scores with a clear clean separation; ``shift`` moves both sides toward each other when attacked."""
    rng = np.random.default_rng([seed, *map(ord, cell)])
    is_out = np.r_[np.zeros(40, bool), np.ones(60, bool)]
    clean = rng.normal(size=100) + 2.0 * is_out
    attacked = clean - shift * np.where(is_out, 1.0, -1.0)
    folder = run_dir / "scores" / method / cell
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / f"seed{seed}-{attack}.npz",
        test__clean=clean,
        test__attacked=attacked,
        test__is_outlier=is_out,
    )


def make_run(
    run_dir: Path, rows, *, warnings=(), methods_config=None, scores=(), profile_cap=100, attacks_config=None
) -> Path:
    """A run folder as the runner writes it: results.csv, manifest.json and score files for ``scores``
    ((method, cell, seed, attack, shift) tuples)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    methods = dict.fromkeys(dict.fromkeys(r["method"] for r in rows), {})
    methods.update(methods_config or {})
    manifest = {
        "run_id": rows[0]["run_id"],
        "command": "bench run --methods atom msp --protocol nd",
        "config": {
            "methods": methods,
            "protocol": "nd",
            "dataset": "toy",
            "settings": [],
            "attacks": attacks_config or {},
        },  # fmt: skip
        "profile": {"name": "quick", "max_eval_per_side": profile_cap},
        "git_sha": "abc1234",
        "device": "cpu",
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-02T00:00:00+00:00",
        "warnings": list(warnings),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    for method, cell, seed, attack, shift in scores:
        write_scores(run_dir, method, cell, seed, attack, shift)
    return run_dir


def tidy(df):
    return df.sort_values(COLUMNS).reset_index(drop=True)


# --- numbers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("num") / "r1", atom_rows() + msp_na_rows())
    return combine([load_source(run)])


def test_attack_means_with_std_over_seeds(frame):
    board = leaderboard(frame)
    assert board.columns == ["clean", "pgd", "aa"]
    atom = next(r for r in board.rows if r["method"] == "atom")
    clean = atom["values"]["clean"]
    # seed 0: (0.9 + 0.8) / 2 = 0.85; seed 1: (0.7 + 0.6) / 2 = 0.65
    assert clean.mean == pytest.approx(0.75) and clean.std == pytest.approx(math.sqrt(0.02))
    assert clean.n_seeds == 2 and clean.text() == "75.0 ± 14.1"
    assert atom["values"]["pgd"].mean == pytest.approx(0.5)  # (0.5 + 0.5) / 2 per seed
    assert atom["values"]["pgd"].std == pytest.approx(0.0)


def test_worst_case_is_min_per_cell_then_mean(frame):
    atom = next(r for r in leaderboard(frame).rows if r["method"] == "atom")
    # per (cell, seed) min over pgd/aa: seed 0: 0.5, 0.4 -> 0.45; seed 1: 0.65, 0.3 -> 0.475
    assert atom["worst"].mean == pytest.approx(0.4625)
    assert atom["worst"].std == pytest.approx(np.std([0.45, 0.475], ddof=1))
    # not the min of the column means (pgd 0.5, aa 0.4875), which overstates robustness
    assert min(atom["values"]["pgd"].mean, atom["values"]["aa"].mean) == pytest.approx(0.4875)
    # drop: clean - worst per (cell, seed): seed 0: (0.4 + 0.4) / 2; seed 1: (0.05 + 0.3) / 2
    assert atom["drop"].mean == pytest.approx((0.4 + 0.175) / 2)


def test_single_seed_has_no_std_and_partial_cells_are_flagged(tmp_path):
    rows = unit_rows("atom", "c0", 0, "clean", 0.9) + unit_rows("atom", "c1", 0, "clean", 0.7)
    rows += unit_rows("atom", "c0", 0, "pgd", 0.5) + unit_rows("oe", "c0", 0, "clean", 0.8)
    rows += unit_rows("oe", "c0", 0, "pgd", 0.6) + unit_rows("oe", "c1", 0, "pgd", 0.2)
    board = leaderboard(combine([load_source(make_run(tmp_path / "r", rows))]))
    atom, oe = board.rows
    assert atom["values"]["clean"].text() == "80.0" and atom["values"]["clean"].std is None
    assert atom["values"]["pgd"].partial == "mean over 1 of 2 cells"
    assert oe["values"]["clean"].partial == "mean over 1 of 2 cells"
    assert atom["worst"].mean == pytest.approx(0.5) and atom["worst"].partial == "over 1 of 2 cells"
    # best marks: clean highest (atom 80 vs oe 80? no: oe 80.0 too -> tie, both marked)
    assert atom["values"]["clean"].best and oe["values"]["clean"].best
    assert atom["values"]["pgd"].best and not oe["values"]["pgd"].best  # 50 vs (0.6 + 0.2) / 2 = 40
    assert atom["drop"].mean == pytest.approx(0.4) and oe["drop"].mean == pytest.approx(0.2)
    assert oe["drop"].best and not atom["drop"].best  # the lowest drop is best


def test_configurations_are_separate_rows_and_repeats_count_once(tmp_path):
    r1 = make_run(tmp_path / "r1", atom_rows(), methods_config={"atom": {"steps": 5, "lr": 0.1}})
    r2 = make_run(tmp_path / "r2", atom_rows(run_id="r2"), methods_config={"atom": {"steps": 10, "lr": 0.1}})
    board = leaderboard(combine([load_source(r1), load_source(r2)]))
    assert [r["entry"] for r in board.rows] == ["atom [steps=5]", "atom [steps=10]"]
    # the same rows again as a bare CSV (no manifest): they join the one recorded configuration and
    # replace the earlier copy instead of counting twice
    sources = [load_source(r1), load_source(r1 / "results.csv", 1)]
    df = combine(sources)
    assert sources[0].superseded == len(atom_rows()) and len(df) == len(atom_rows())
    (atom,) = leaderboard(df).rows
    assert atom["entry"] == "atom" and atom["values"]["clean"].mean == pytest.approx(0.75)


def test_a_modified_attack_is_its_own_marked_row_and_never_replaces_the_profiles(tmp_path):
    """Two runs of one configuration, the second with a weakened PGD (another attack_hash): the site keeps
    both, the weakened one as its own leaderboard row marked "modified attack"."""
    normal = make_run(tmp_path / "normal", atom_rows())
    weak_rows = [
        dict(r, run_id="weak", attack_hash="w" * 12, value=min(1.0, float(r["value"]) + 0.3))
        for r in atom_rows(run_id="weak")
        if r["attack"] == "pgd"
    ]
    weak = make_run(tmp_path / "weak", weak_rows, attacks_config={"pgd": {"step_factor": 0.25}})
    df = combine([load_source(normal), load_source(weak)])
    assert len(df) == len(atom_rows()) + len(weak_rows)  # nothing superseded
    board = {r["entry"]: r for r in leaderboard(df).rows}
    assert set(board) == {"atom", "atom [modified attack: pgd.step_factor=0.25]"}
    assert board["atom"]["values"]["pgd"].mean == pytest.approx(0.5)  # the profile's attack, unchanged
    assert board["atom [modified attack: pgd.step_factor=0.25]"]["values"]["pgd"].mean > 0.5


def test_na_reason_once_per_method(frame):
    msp = next(r for r in leaderboard(frame).rows if r["method"] == "msp")
    assert msp["na"] == f"n/a on 2 of 2 cells: {NA_REASON}"
    assert all(v.missing for v in msp["values"].values()) and msp["worst"].missing


def test_budget_summary_excludes_na_rows():
    import pandas as pd

    rows = [row("atom", "c0", s, "a3", value=0.5, grad_evals=g) for s, g in ((0, 79.89), (1, 79.95))]
    rows += [row("msp", "c0", s, "a3", status="na", reason=NA_REASON) for s in (0, 1)]
    rows += [row("atom", "c0", 0, "pgd", value=0.5), row("msp", "c0", 0, "pgd", status="na", reason="x")]
    rows += [row("msp", "c0", 0, "aa", status="na", reason="x")]
    df = pd.DataFrame(rows)
    for col in ("eps", "grad_evals", "value"):
        df[col] = pd.to_numeric(df[col])
    by_attack = {b["attack"]: b for b in budget_summary(df)}
    a3 = by_attack["a3"]
    assert a3["grad_evals"] == {"text": "79.92 (range 79.89–79.95)", "average": True}
    assert a3["steps"] == {"text": "80", "average": False} and a3["na_units"] == 2 and a3["units"] == 2
    assert by_attack["pgd"]["grad_evals"] == {"text": "20", "average": False}  # not "0, 20"
    assert by_attack["pgd"]["queries"]["text"] == "3"
    assert by_attack["aa"] == {"attack": "aa", "ran": False, "na_units": 1}
    assert by_attack["pgd"]["eps"][0] == {
        "fraction": "0.03137",
        "steps": "8 of 255 grey levels",
        "text": "8/255",
    }


def test_published_comparison_difference_and_profile(tmp_path, frame):
    pub = tmp_path / "published"
    pub.mkdir()
    (pub / "rodeo-table1.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\n"
        "atom,nd,toy,mean,pgd,auroc,55.0,RODEO Table 1a\n"  # percent, as printed in the paper
        "ATOM,nd,toy,c1,clean,auroc,60,RODEO Table 3\n"  # one cell, other case
        "oe,nd,toy,mean,pgd,auroc,90,RODEO Table 1a\n",  # no such method here: not shown
        encoding="utf-8",
    )
    rows = published_comparison(frame, load_published(pub))
    assert [(r["method"], r["cell"], r["published"], r["diff"]) for r in rows] == [
        ("atom", "mean", "55.0", "-5.0"),  # ours 50.0
        ("atom", "c1", "60.0", "+10.0"),  # ours (0.8 + 0.6) / 2 = 70.0
    ]
    assert rows[0]["profile"] == "quick" and not rows[0]["reproduction"]
    # EOE's "BCE" baseline is our oe with one inlier class (nd only)
    (pub / "eoe.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\n"
        "bce,nd,toy,mean,clean,auroc,90,EOE Table 11\n"
        "bce,osr,toy,mean,clean,auroc,90,not an nd row: no alias\n",
        encoding="utf-8",
    )
    oe = frame[frame["method"] == "atom"].assign(method="oe")
    aliased = published_comparison(pd.concat([frame, oe]), load_published(pub))
    bce = [r for r in aliased if r["source"].startswith("EOE")]
    assert [(r["method"], r["protocol"], r["source"]) for r in bce] == [
        ("oe", "nd", "EOE Table 11 (published as bce)")
    ]
    (pub / "eoe.csv").unlink()
    (pub / "bad.csv").write_text("method,value\nx,1\n", encoding="utf-8")
    with pytest.raises(BadInput, match="lacks the columns"):
        load_published(pub)


def test_method_sources_read_paper_and_field_comments():
    cited = method_sources()
    assert "ATOM: Robustifying Out-of-distribution Detection" in cited["atom"]["paper"]
    assert cited["atom"]["summary"].startswith("Adversarial Training with informative Outlier Mining")
    assert cited["atom"]["fields"]["steps"].startswith("App. B.1")
    assert "Hendrycks & Gimpel" in cited["msp"]["paper"]


def test_warning_lines_map_to_units(tmp_path):
    run = make_run(
        tmp_path / "r1",
        atom_rows(),
        warnings=["atom c1 seed 0 pgd: zero gradients on 3 of 100 images", "tree was dirty"],
    )
    sources = [load_source(run)]
    by_unit, other = warning_index(sources, combine(sources))
    assert by_unit == {("r1", "atom", "c1", 0, "pgd"): ["zero gradients on 3 of 100 images"]}
    assert other == {"r1": ["tree was dirty"]}


# --- the built site --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two runs (the second with EVIL names and a score-less method), scores for atom on both cells,
    seed 0, with pgd and aa identical; built once with plots."""
    root = tmp_path_factory.mktemp("site")
    scores = [
        ("atom", c, 0, a, shift) for c in ("c0", "c1") for a, shift in (("clean", 0), ("pgd", 1), ("aa", 1))
    ]
    r1 = make_run(
        root / "r1",
        atom_rows() + msp_na_rows(),
        warnings=["atom c1 seed 0 pgd: zero gradients on 3 of 100 images"],
        methods_config={"atom": {"steps": 5, "eps": None}},
        scores=scores,
    )
    evil_rows = []
    for name in (EVIL_SCRIPT, EVIL_IMG):
        for attack, v in (("clean", 0.8), ("pgd", 0.3)):
            evil_rows += unit_rows(name, "c0", 0, attack, v, run_id="r2<b>", protocol="osr")
    r2 = make_run(root / "r2", evil_rows)
    pub = root / "published"
    pub.mkdir()
    (pub / "p.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\natom,nd,toy,mean,pgd,auroc,55.0,T1\n"
    )
    out = root / "site"
    result = site.build_site([r1, r2], out, published_dir=pub)
    return result, out, r1, r2


def read(out: Path, page: str) -> str:
    return (out / page).read_text(encoding="utf-8")


def test_pages_and_files(built):
    result, out, *_ = built
    assert result.pages[:3] == ["index.html", "nd-toy.html", "osr-toy.html"]
    assert {"method-atom.html", "method-msp.html"} <= set(result.pages)
    assert len(result.pages) == 7  # index, 2 groups, atom, msp, 2 evil methods
    for page in result.pages:
        assert (out / page).is_file()
    assert not list(out.parent.glob(".site.*"))  # no staging folder left


def test_files_are_world_readable(built):
    _, out, *_ = built
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_merged_csv_holds_every_row(built):
    from bench.results.rows import read_results_file

    _, out, r1, r2 = built
    merged = read_results_file(out / "results.csv")
    assert list(merged.columns) == COLUMNS
    parts = [read_results_file(r / "results.csv") for r in (r1, r2)]
    assert len(merged) == sum(len(p) for p in parts)
    import pandas as pd

    pd.testing.assert_frame_equal(tidy(merged), tidy(pd.concat(parts, ignore_index=True)), check_dtype=False)
    index = read(out, "index.html")
    assert 'href="results.csv"' in index and 'href="data/00-r1/results.csv"' in index
    assert (out / "data" / "00-r1" / "manifest.json").is_file()


def test_index_leaderboard(built):
    _, out, *_ = built
    html = read(out, "index.html")
    assert html.count('<table class="sortable leaderboard">') == 2
    worst = f"{100 * np.mean([0.45, 0.475]):.1f} ± 1.8"  # 46.25 as the float rounds
    assert "75.0 ± 14.1" in html and worst in html  # atom clean and worst case
    assert html.count(NA_REASON.replace(">", "&gt;")) == 1  # once per method, not per row
    assert "not a reproduction" in html
    assert 'src="assets/sort.js"' in html and 'href="assets/site.css"' in html
    assert "http://" not in html and "https://" not in html  # no CDN


def test_names_are_escaped_everywhere(built):
    result, out, *_ = built
    for page in result.pages:
        html = read(out, page)
        assert html.count("<script") == 1, page  # only the site's own sort.js
        assert "<img src=x" not in html and "r2<b>" not in html
    osr = read(out, "osr-toy.html")
    assert (
        "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in osr
        and "&lt;img src=x onerror=window.__xss=2&gt;" in osr
    )
    assert "r2&lt;b&gt;" in osr  # run id in the provenance


def test_group_page_breakdown_metrics_and_warnings(built):
    _, out, *_ = built
    html = read(out, "nd-toy.html")
    for header in ("FPR95", "AUPR-in", "AUPR-out", "ID acc.", "n_in", "n_out", "subsampled"):
        assert header in html
    assert "yes: at most 100 per side" in html
    assert "zero gradients on 3 of 100 images" in html
    # the warning sits in the atom / c1 row, in its pgd cell
    breakdown = html.split('class="sortable breakdown"')[1].split("</table>")[0]
    c1_row = next(r for r in breakdown.split("<tr") if "<td>c1</td>" in r and ">atom<" in r)
    assert "seed 0 pgd: zero gradients" in c1_row and "&#9888;" in c1_row
    c0_row = next(r for r in breakdown.split("<tr") if "<td>c0</td>" in r and ">atom<" in r)
    assert "&#9888;" not in c0_row
    assert f"<b>msp</b>: n/a on 2 of 2 cells: {NA_REASON.replace('>', '&gt;')}" in html
    # threat model: L-inf, eps as a fraction and in grey levels
    assert "L&#8734;" in html and "0.03137 of the pixel range = 8 of 255 grey levels (8/255)" in html
    # published value beside ours
    published = html.split('class="sortable published"')[1].split("</table>")[0]
    assert "55.0" in published and "-5.0" in published and "T1" in published


def test_plots_exist_with_alt_text_and_mark_identical_curves(built):
    _, out, *_ = built
    html = read(out, "nd-toy.html")
    images = [p for p in html.split("<img ")[1:]]
    assert len(images) == 2 + 2 * 2  # scatter, grad evals; roc + hist for atom on c0 and c1
    for img in images:
        src = img.split('src="')[1].split('"')[0]
        alt = img.split('alt="')[1].split('"')[0]
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(alt) > 40 and alt != src
        assert f'<a href="{src}">' in html  # linked to full size
    assert "pgd = aa" in html and "identical curves" in html  # the two attacks' curves coincide
    osr = read(out, "osr-toy.html")
    assert "No raw scores" in osr or "roc.png" not in osr  # r2 has no score files: no per-cell plots


def test_method_page_hyperparameters_and_paper(built):
    _, out, *_ = built
    html = read(out, "method-atom.html")
    assert "ATOM: Robustifying Out-of-distribution Detection Using Outlier Mining" in html
    assert "<code>steps</code></th><td><code>5</code></td><td>App. B.1" in html
    assert "<code>eps</code></th><td><code>null</code>" in html
    assert 'href="nd-toy.html"' in html and "75.0 ± 14.1" in html
    msp = read(out, "method-msp.html")
    assert "Hendrycks &amp; Gimpel" in msp and NA_REASON.replace(">", "&gt;") in msp


def test_provenance_on_every_page(built):
    result, out, *_ = built
    for page in result.pages:
        html = read(out, page)
        assert 'id="provenance"' in html and "abc1234" in html and "0.1.0" in html, page
        assert 'href="results.csv"' in html


def test_rebuild_replaces_the_site_and_refuses_foreign_folders(built, tmp_path):
    _, _, r1, _ = built
    out = tmp_path / "s"
    site.build_site([r1], out, plots=False)
    (out / "stale.html").write_text("old")
    site.build_site([r1], out, plots=False)
    assert not (out / "stale.html").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(BadInput, match="did not write"):
        site.build_site([r1], foreign, plots=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(BadInput, match="no results.csv"):
        site.build_site([tmp_path], tmp_path / "x", plots=False)


def test_cli_report_from_a_csv_file(built, tmp_path, capsys):
    _, _, r1, _ = built
    main(["report", str(r1 / "results.csv"), "--out", str(tmp_path / "s"), "--no-plots"])
    assert "site: 4 pages" in capsys.readouterr().out  # index, nd-toy, atom, msp
    html = (tmp_path / "s" / "method-atom.html").read_text()
    assert "Not recorded" in html  # a bare CSV carries no manifest


# --- bench compare ---------------------------------------------------------------------------------------


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _compare(capsys, *args) -> tuple[int, str]:
    try:
        main(["compare", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().out


def test_compare_with_itself_exits_0(tmp_path, capsys):
    base = _write_csv(tmp_path / "base.csv", atom_rows() + msp_na_rows())
    code, out = _compare(capsys, base, base)
    assert code == 0 and "regressions: 0" in out and "OK" in out


def test_compare_names_a_lowered_auroc_and_exits_1(tmp_path, capsys):
    rows = atom_rows() + msp_na_rows()
    base = _write_csv(tmp_path / "base.csv", rows)
    lowered = [dict(r) for r in rows]
    target = next(
        r for r in lowered if (r["cell"], r["seed"], r["attack"], r["metric"]) == ("c1", 1, "aa", "auroc")
    )
    target["value"] = 0.35 - 0.05
    cand = _write_csv(tmp_path / "cand.csv", lowered)
    code, out = _compare(capsys, base, cand)
    assert code == 1
    assert (
        "REGRESSION: method=atom protocol=nd dataset=toy cell=c1 seed=1 attack=aa metric=auroc: "
        "0.3500 -> 0.3000 (-0.0500)"
    ) in out
    assert out.count("REGRESSION") == 1
    code, out = _compare(capsys, base, cand, "--tolerance", "0.06")
    assert code == 0
    code, out = _compare(capsys, cand, base)  # the other way round it is an improvement
    assert code == 0 and "improvement: method=atom" in out
    code, out = _compare(capsys, base, cand, "--json")
    data = json.loads(out)
    assert code == 1 and not data["ok"] and len(data["regressions"]) == 1
    assert data["regressions"][0]["cell"] == "c1" and data["regressions"][0]["difference"] == pytest.approx(
        -0.05
    )


def test_compare_says_whether_a_change_came_from_the_same_detector(tmp_path, capsys):
    rows = [dict(r, detector_digest="a" * 16) for r in atom_rows()]
    base = _write_csv(tmp_path / "base.csv", rows)
    key = ("c1", 1, "aa", "auroc")
    same = [dict(r) for r in rows]
    next(r for r in same if (r["cell"], r["seed"], r["attack"], r["metric"]) == key)["value"] = 0.30
    code, out = _compare(capsys, base, _write_csv(tmp_path / "same.csv", same))
    assert code == 1 and "0.3500 -> 0.3000 (-0.0500) [same detector]" in out  # the attack or scoring moved
    other = [dict(r, detector_digest="b" * 16) if r["cell"] == "c1" else dict(r) for r in same]
    code, out = _compare(capsys, base, _write_csv(tmp_path / "other.csv", other), "--json")
    (regression,) = json.loads(out)["regressions"]
    assert regression["detector"] == "other"  # the training moved
    unknown = [dict(r, detector_digest="") for r in same]  # rows from before the column
    code, out = _compare(capsys, base, _write_csv(tmp_path / "unknown.csv", unknown))
    assert "(-0.0500)\n" in out + "\n" and "detector]" not in out


def test_compare_missing_rows_and_status_changes_exit_1(tmp_path, capsys):
    rows = atom_rows()
    base = _write_csv(tmp_path / "base.csv", rows)
    fewer = _write_csv(
        tmp_path / "fewer.csv", [r for r in rows if not (r["cell"] == "c0" and r["attack"] == "aa")]
    )
    code, out = _compare(capsys, base, fewer)
    assert code == 1 and out.count("MISSING in candidate") == 8  # 2 seeds x 4 metrics
    code, out = _compare(capsys, fewer, base)
    assert code == 1 and out.count("MISSING in baseline") == 8
    changed = [dict(r) for r in rows]
    changed[0].update(status="na", value="", reason="x")
    code, out = _compare(capsys, base, _write_csv(tmp_path / "na.csv", changed))
    assert code == 1 and "STATUS CHANGED" in out


def test_compare_bad_input_exits_2(tmp_path, capsys):
    base = _write_csv(tmp_path / "base.csv", atom_rows())
    for args in ((base, tmp_path / "missing.csv"), (base, base, "--tolerance", "-1")):
        with pytest.raises(SystemExit) as exit_:
            main(["compare", *map(str, args)])
        assert exit_.value.code == 2
    dup = _write_csv(tmp_path / "dup.csv", atom_rows() + atom_rows()[:1])
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(base), str(dup)])
    assert exit_.value.code == 2 and "two rows for" in capsys.readouterr().err


def test_no_site_file_is_a_symlink_or_private(built):
    _, out, *_ = built
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert all(os.access(p, os.R_OK) for p in out.rglob("*"))


def test_ood_sets_several_eps_and_the_eps_plot(tmp_path):
    """ood: the aggregate ``all:mean`` row is not counted; a second eps gets its own column and the
    AUROC-vs-eps plot; scores of a multi-set cell are read per set."""
    rows = []
    for attack, drop in (("clean", 0.0), ("pgd", 0.3)):
        for s, v in (("glyphs", 0.9), ("noise", 0.7), ("mean", 0.1)):  # mean 0.1 would drag the mean down
            rows += unit_rows("oe", f"all:{s}", 0, attack, v - drop, protocol="ood")
    rows += [
        row("oe", f"all:{s}", 0, "pgd", "auroc", 0.7, protocol="ood", eps=4 / 255)
        for s in ("glyphs", "noise")
    ]
    run = make_run(tmp_path / "r", rows)
    is_out = np.r_[np.zeros(3, bool), np.ones(2, bool)]
    folder = run / "scores" / "oe" / "all"
    folder.mkdir(parents=True)
    np.savez(
        folder / "seed0-pgd.npz",
        glyphs__clean=np.arange(5.0), glyphs__attacked=np.arange(5.0) - 1, glyphs__is_outlier=is_out,
        noise__clean=np.zeros(5), noise__attacked=np.ones(5), noise__is_outlier=is_out,
    )  # fmt: skip
    sources = [load_source(run)]
    df = combine(sources)
    board = leaderboard(df)
    assert board.columns == ["clean", "pgd @ 8/255", "pgd @ 4/255"] and board.several_eps
    (oe,) = board.rows
    assert oe["values"]["clean"].mean == pytest.approx(0.8)  # (0.9 + 0.7) / 2, not with all:mean
    assert oe["values"]["pgd @ 8/255"].mean == pytest.approx(0.5)
    assert oe["values"]["pgd @ 4/255"].mean == pytest.approx(0.7)
    assert oe["worst"].mean == pytest.approx(0.5)  # min over both radii per set
    glyphs = load_scores(sources[0], "oe", "all:glyphs", 0, "pgd")
    assert glyphs["attacked"].tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0] and glyphs["is_outlier"].tolist() == [
        False, False, False, True, True,
    ]  # fmt: skip
    assert load_scores(sources[0], "oe", "all:noise", 0, "pgd")["clean"].tolist() == [0.0] * 5
    assert load_scores(sources[0], "oe", "all:mean", 0, "pgd") is None
    assert load_scores(sources[0], "../..", "all:glyphs", 0, "pgd") is None  # stays inside scores/
    group = df.copy()
    plot = eps_plot(tmp_path, "eps.png", group)
    assert (tmp_path / "eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "oe / pgd: 70.0 at 4/255, 50.0 at 8/255" in plot.alt


def test_artifact_pixels_are_drawn_on_the_cell_page(tmp_path):
    """Committed results hold a method's pictures as pixels (``exposure.npz``, ``image``); the site draws
    them as PNG beside the cell's ROC curves."""
    scores = [("atom", "c0", 0, a, shift) for a, shift in (("clean", 0), ("pgd", 1))]
    run = make_run(tmp_path / "r", [r for r in atom_rows() if r["cell"] == "c0"], scores=scores)
    folder = run / "artifacts" / "atom" / "c0-seed0"
    folder.mkdir(parents=True)
    pixels = np.zeros((6, 10, 3), dtype=np.uint8)
    pixels[:, :5] = 255
    np.savez_compressed(folder / "exposure.npz", image=pixels)
    out = tmp_path / "site"
    site.build_site([run], out, published_dir=None)
    html = read(out, "nd-toy.html")
    src = next(p.split('"')[0] for p in html.split('src="')[1:] if "exposure" in p.split('"')[0])
    from PIL import Image

    assert (np.asarray(Image.open(out / src)) == pixels).all()


def test_backbone_column_marks_stand_in_rows_beside_published_numbers(tmp_path):
    """A results.csv with the optional ``backbone`` column: rows on an ``embedded...`` backbone are marked
    "stand-in backbone" next to the published value and on the per-cell table; other backbones are not;
    files without the column read it as empty."""
    rows = [dict(r, backbone="embedded:glyph-clip") for r in unit_rows("rodeo", "c0", 0, "clean", 0.8)]
    rows += [dict(r, backbone="embedded:glyph-clip") for r in unit_rows("rodeo", "c0", 0, "pgd", 0.5)]
    rows += [dict(r, backbone="hub-clip:ViT-B-32") for r in unit_rows("oe", "c0", 0, "clean", 0.9)]
    run = tmp_path / "r"
    run.mkdir()
    with open(run / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "backbone"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    source = load_source(run)
    assert set(source.df["backbone"]) == {"embedded:glyph-clip", "hub-clip:ViT-B-32"}
    assert set(load_source(make_run(tmp_path / "old", atom_rows())).df["backbone"]) == {""}
    pub = tmp_path / "published"
    pub.mkdir()
    (pub / "p.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\n"
        "rodeo,nd,toy,mean,pgd,auroc,94.6,RODEO Table 1a\noe,nd,toy,mean,clean,auroc,95.0,EOE Table 1\n"
    )
    compared = {r["method"]: r for r in published_comparison(combine([source]), load_published(pub))}
    assert compared["rodeo"]["stand_in"] and not compared["oe"]["stand_in"]
    out = tmp_path / "site"
    site.build_site([run], out, published_dir=pub, plots=False)
    html = read(out, "nd-toy.html")
    published_table = html.split('class="sortable published"')[1].split("</table>")[0]
    rodeo_row = next(r for r in published_table.split("<tr>") if ">rodeo<" in r)
    oe_row = next(r for r in published_table.split("<tr>") if ">oe<" in r)
    assert "stand-in backbone: not the paper&#39;s method" in rodeo_row
    assert "stand-in backbone" not in oe_row
    breakdown = html.split('class="sortable breakdown"')[1].split("</table>")[0]
    assert breakdown.count("stand-in backbone") == 1  # the rodeo cell only


def test_validity_checks_show_as_marks_a_per_cell_table_and_a_method_summary(tmp_path):
    """Issue 29: a tripped check marks its leaderboard cell (the title holds check, value and threshold),
    the page lists every check of every unit, and the method page counts the tripped ones."""
    from bench.checks import check_rows, replace_unit_checks, saturation

    line = "atom c1 seed 0 pgd: check " + saturation(0.42).describe()
    run = make_run(tmp_path / "r1", atom_rows(), warnings=[line])
    for cell in ("c0", "c1"):
        share = 0.42 if cell == "c1" else 0.01
        replace_unit_checks(
            run, ("atom", cell, 0, "pgd"), check_rows("r1", ("atom", cell, 0, "pgd"), [saturation(share)])
        )
    out = tmp_path / "site"
    site.build_site([run], out, published_dir=tmp_path / "none")
    page = read(out, "nd-toy.html")
    assert "check saturation 0.42 (trips above 0.05)" in page  # the mark's title and the warnings list
    assert 'id="checks"' in page and "1 of 2 tripped" in page
    method = read(out, "method-atom.html")
    assert "saturation" in method and 'class="warn"' in method
