"""The HTML report of a run: a pure function of ``results.csv`` and ``manifest.json``.

``bench run`` writes it at the end of every invocation. A run stopped midway (a reference grid between
sessions) has none, or an old one: ``python -m bench.report RUN_DIR [RUN_DIR ...]`` writes it from the rows
there now.

pandas, matplotlib and jinja2 are imported inside the functions so that ``import bench.report`` stays cheap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInput
from bench.files import atomic_path
from bench.plots import write_plots
from bench.results.rows import MANIFEST_FILE, RESULTS_FILE, load_manifest, load_results
from bench.results.stats import (
    NA_TEXT,
    cell_table,
    format_eps,
    is_aggregate,
    sha_counts,
    summary_table,
    unique,
)
from bench.store import AGGREGATE_SUFFIX

if TYPE_CHECKING:
    import pandas as pd

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
TEMPLATE = "report.html.j2"

BUDGET_COLUMNS = ("steps", "restarts", "grad_evals", "queries")


# --- loading ---------------------------------------------------------------------------------------------


# --- tables ----------------------------------------------------------------------------------------------


# --- formatting ------------------------------------------------------------------------------------------


def format_percent(value: Any) -> str:
    """0.8 -> "80.0"; NaN/None -> "n/a"."""
    if value is None:
        return NA_TEXT
    value = float(value)
    return NA_TEXT if math.isnan(value) else f"{100.0 * value:.1f}"


def _distinct(values: pd.Series, fmt=str) -> str:
    present = [v for v in values.tolist() if not _is_na(v)]
    return ", ".join(dict.fromkeys(fmt(v) for v in present)) or "—"


def _format_count(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _is_na(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def budget_rows(df: pd.DataFrame) -> list[dict[str, str]]:
    """Per attack, the distinct eps (as k/255 where it fits), steps, restarts, grad_evals, queries of
    its ok rows (na rows record no spent budget and would only add zeros)."""
    out = []
    for attack in unique(df["attack"]):
        rows = df[df["attack"] == attack]
        if (rows["status"] == "ok").any():
            rows = rows[rows["status"] == "ok"]
        entry = {"attack": str(attack)}
        entry["eps"] = _distinct(rows["eps"], format_eps) if "eps" in rows else "—"
        for col in BUDGET_COLUMNS:
            entry[col] = _distinct(rows[col], _format_count) if col in rows else "—"
        out.append(entry)
    return out


def _percent_table(table: pd.DataFrame, df: pd.DataFrame | None = None, metric: str = "") -> list[dict]:
    """Rows of {"key", "values"}; each value {"text", "na", "partial"}.

    With ``df``, ``partial`` says "k of n cells" where a mean covers fewer of the attack's non-aggregate cells
    than the run has rows for (a method that is na or missing on some cells).
    """
    covered: dict[tuple, int] = {}
    totals: dict[Any, int] = {}
    if df is not None:
        plain = df[~is_aggregate(df["cell"])]
        totals = plain.groupby("attack", sort=False)["cell"].nunique().to_dict()
        rows = plain[(plain["status"] == "ok") & (plain["metric"] == metric)]
        covered = rows.groupby(["method", "attack"], sort=False)["cell"].nunique().to_dict()
    out = []
    for key, row in zip(table.index.tolist(), table.to_numpy().tolist(), strict=True):
        values = []
        for attack, v in zip(table.columns, row, strict=True):
            text = format_percent(v)
            k, n = covered.get((key, attack), 0), totals.get(attack, 0)
            partial = f"{k} of {n} cells" if 0 < k < n else ""
            values.append({"text": text, "na": text == NA_TEXT, "partial": partial})
        out.append({"key": key, "values": values})
    return out


def sample_rows(df: pd.DataFrame) -> list[dict[str, str]]:
    """Test images per cell: inliers and outliers scored (the same for every method, seed and attack)."""
    rows = df[(df["status"] == "ok") & ~is_aggregate(df["cell"])]
    out = []
    for cell in unique(rows["cell"]):
        part = rows[rows["cell"] == cell]
        out.append(
            {
                "cell": str(cell),
                "n_in": _distinct(part["n_in"], _format_count),
                "n_out": _distinct(part["n_out"], _format_count),
            }
        )
    return out


def _joined(df: pd.DataFrame, col: str, fallback: Any = None) -> str:
    """The distinct non-empty values of a column, comma-joined; else ``fallback`` or a dash."""
    if col in df.columns:
        values = [v for v in unique(df[col]) if v not in ("", None)]
        if values:
            return ", ".join(str(v) for v in values)
    return "—" if fallback in (None, "") else str(fallback)


# --- plots -----------------------------------------------------------------------------------------------


# --- the page --------------------------------------------------------------------------------------------


def report_context(df: pd.DataFrame, manifest: dict[str, Any], plots: list[str]) -> dict[str, Any]:
    """Everything the template shows, as plain strings and lists."""
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    warnings = manifest.get("warnings") or []
    if not manifest:
        warnings = [f"{MANIFEST_FILE} is missing: run metadata below comes from {RESULTS_FILE} only."]
    auroc, fpr95 = summary_table(df, "auroc"), summary_table(df, "fpr95")
    cells = cell_table(df, "auroc")
    na = df[df["status"] != "ok"]
    na_rows = [
        {k: str(v) for k, v in row.items()}
        for row in na[["method", "cell", "attack", "status", "reason"]]
        .drop_duplicates()
        .to_dict(orient="records")
    ]
    seeds = unique(df["seed"]) if "seed" in df else []
    shas = sha_counts(df)
    invocation_shas = [
        str(i.get("git_sha")) for i in manifest.get("invocations") or [] if isinstance(i, dict)
    ]
    all_shas = list(dict.fromkeys([sha for sha, _ in shas] + [s for s in invocation_shas if s]))
    if len(shas) > 1:
        listed = ", ".join(f"{sha} ({n} rows)" for sha, n in shas)
        warnings = [
            f"The rows of this run come from {len(shas)} git commits ({listed}): numbers may mix code "
            "versions; rerun with --rerun-stale or into a new --out to get rows from one.",
            *warnings,
        ]
    profile = manifest.get("profile") if isinstance(manifest.get("profile"), dict) else {}
    cap = profile.get("max_eval_per_side")

    def meta(key: str) -> str:
        value = manifest.get(key)
        return "—" if value in (None, "") else str(value)

    return {
        "run_id": manifest.get("run_id") or _joined(df, "run_id"),
        "meta": [
            ("command", meta("command")),
            ("profile", _joined(df, "profile", config.get("profile"))),
            ("protocol", _joined(df, "protocol", config.get("protocol"))),
            ("dataset", _joined(df, "dataset", config.get("dataset"))),
            ("device", meta("device") if manifest.get("device") else _joined(df, "device")),
            ("git sha", ", ".join(all_shas) or meta("git_sha")),
            ("host", meta("host")),
            ("cpu", meta("cpu")),
            ("started", meta("started")),
            ("finished", meta("finished")),
            ("bench version", _joined(df, "bench_version")),
            ("split version", _joined(df, "split_version")),
            ("seeds", ", ".join(str(s) for s in seeds) or "—"),
            ("result rows", str(len(df))),
        ],
        "versions": sorted((str(k), str(v)) for k, v in versions.items()),
        "config_json": json.dumps(config, indent=2, sort_keys=True, default=str) if config else "",
        "warnings": [str(w) for w in warnings],
        "attacks": [str(a) for a in auroc.columns],
        "auroc": _percent_table(auroc, df, "auroc"),
        "fpr95": _percent_table(fpr95, df, "fpr95"),
        "budget": budget_rows(df),
        "cells": [
            {"method": m, "cell": c, "aggregate": str(c).endswith(AGGREGATE_SUFFIX), "values": row["values"]}
            for row in _percent_table(cells)
            for m, c in [row["key"]]
        ],
        "na_rows": na_rows,
        "plots": plots,
        "samples": sample_rows(df),
        "sample_note": (
            "every test image of the split"
            if cap is None
            else f"at most {cap} per side, drawn once per cell from the split version and cell id (the same "
            "images for every method, seed and attack)"
        ),
    }


def write_report(run_dir: Path) -> Path:
    """Render ``run_dir/report.html`` (and ``run_dir/plots/``) from results.csv and manifest.json."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    run_dir = Path(run_dir)
    df = load_results(run_dir)
    manifest = load_manifest(run_dir)
    plots = write_plots(df, run_dir / PLOTS_DIR)
    context = report_context(df, manifest, [f"{PLOTS_DIR}/{p.name}" for p in plots])
    env = Environment(
        loader=PackageLoader("bench", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template(TEMPLATE).render(**context)
    target = run_dir / REPORT_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """Write ``report.html`` and ``plots/`` of each run folder; every folder is checked before any is
    written (a bad one: exit 2, nothing written)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__.split(";")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.runs:
            if not (run_dir / RESULTS_FILE).is_file():
                raise BadInput(f"no {RESULTS_FILE} in {run_dir}; accepted: a run folder (bench run --out)")
            load_manifest(run_dir)
        for run_dir in args.runs:
            rows = len(load_results(run_dir))
            print(f"{write_report(run_dir)} ({rows} rows)")
    except BadInput as error:
        print(f"bench.report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
