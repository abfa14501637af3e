"""The HTML report of a run: a pure function of ``results.csv`` and ``manifest.json``.

``bench run`` writes it at the end of every invocation. A run stopped midway (a reference grid between
sessions) has none, or an old one: ``python -m bench.report RUN_DIR [RUN_DIR ...]`` writes it from the rows
there now.

pandas, matplotlib and jinja2 are imported inside the functions so that ``import bench.report`` stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInput
from bench.store import COLUMNS

if TYPE_CHECKING:
    import pandas as pd

RESULTS_FILE = "results.csv"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
TEMPLATE = "report.html.j2"
AGGREGATE_SUFFIX = ":mean"

_FLOAT_COLUMNS = ("value", "eps", "fit_seconds", "attack_seconds")
_INT_COLUMNS = ("seed", "steps", "restarts", "grad_evals", "queries", "n_in", "n_out")
BUDGET_COLUMNS = ("steps", "restarts", "grad_evals", "queries")
NA_TEXT = "n/a"


# --- loading ---------------------------------------------------------------------------------------------


def load_results(run_dir: Path) -> pd.DataFrame:
    """Read ``run_dir/results.csv``: text columns stay text, value/eps float, seed and budgets int."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise BadInput(f"no {RESULTS_FILE} in {run_dir}")
    return read_results_file(path)


def read_results_file(path: Path) -> pd.DataFrame:
    """Read a tidy results CSV at ``path`` (any name) with the dtypes of :func:`load_results`."""
    import pandas as pd

    try:
        # Everything as text first, so that a method called "NA" or an empty reason stays a string.
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS})
    for col in _FLOAT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in _INT_COLUMNS:
        if col in df.columns:
            df[col] = _as_int(pd.to_numeric(df[col], errors="coerce"))
    return df


def _as_int(col: pd.Series) -> pd.Series:
    """int64 when complete and integral, nullable Int64 when some are missing, float otherwise."""
    present = col.dropna()
    if not (present == present.round()).all():
        return col.astype(float)
    return col.astype("int64") if len(present) == len(col) else col.astype("Int64")


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/manifest.json`` ({} when it is missing)."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise BadInput(f"{path} is not a JSON object")
    return manifest


# --- tables ----------------------------------------------------------------------------------------------


def _is_aggregate(cells: pd.Series | pd.Index) -> Any:
    """True for aggregate cells such as ``all:mean`` (boolean Series or array, like ``cells``)."""
    return cells.astype(str).str.endswith(AGGREGATE_SUFFIX)


def _ok_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["metric"] == metric)]


def _unique(values: pd.Series) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values.tolist()))


def summary_table(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Mean ``value`` per method x attack over ok rows, non-aggregate cells and seeds (NaN when none)."""
    import pandas as pd

    methods, attacks = _unique(df["method"]), _unique(df["attack"])
    rows = _ok_rows(df, metric)
    rows = rows[~_is_aggregate(rows["cell"])]
    means = rows.groupby(["method", "attack"], sort=False)["value"].mean()
    table = pd.DataFrame(float("nan"), index=pd.Index(methods, name="method"), columns=attacks)
    for (method, attack), value in means.items():
        table.loc[method, attack] = value
    table.columns.name = "attack"
    return table


def cell_table(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Mean ``value`` over seeds per (method, cell) x attack, aggregate cells included, NaN when none."""
    import pandas as pd

    attacks = _unique(df["attack"])
    pairs = list(dict.fromkeys(zip(df["method"].tolist(), df["cell"].tolist(), strict=True)))
    index = pd.MultiIndex.from_tuples(pairs, names=["method", "cell"])
    if not pairs:
        index = pd.MultiIndex.from_arrays([[], []], names=["method", "cell"])
    means = _ok_rows(df, metric).groupby(["method", "cell", "attack"], sort=False)["value"].mean()
    table = pd.DataFrame(float("nan"), index=index, columns=attacks)
    for (method, cell, attack), value in means.items():
        table.loc[(method, cell), attack] = value
    table.columns.name = "attack"
    return table


# --- formatting ------------------------------------------------------------------------------------------


def format_percent(value: Any) -> str:
    """0.8 -> "80.0"; NaN/None -> "n/a"."""
    if value is None:
        return NA_TEXT
    value = float(value)
    return NA_TEXT if math.isnan(value) else f"{100.0 * value:.1f}"


def format_eps(eps: float) -> str:
    """0.0313725 -> "8/255"; other values in plain notation."""
    if eps == 0:
        return "0"
    k = eps * 255.0
    if abs(k - round(k)) < 1e-3 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


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
    for attack in _unique(df["attack"]):
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
        plain = df[~_is_aggregate(df["cell"])]
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


def sha_counts(df: pd.DataFrame) -> list[tuple[str, int]]:
    """(git sha, number of rows) for every sha that produced rows, in order of first appearance."""
    if "git_sha" not in df.columns or df.empty:
        return []
    counts = df["git_sha"].value_counts(sort=False).to_dict()
    return [(str(sha), int(counts[sha])) for sha in _unique(df["git_sha"]) if sha not in ("", None)]


def sample_rows(df: pd.DataFrame) -> list[dict[str, str]]:
    """Test images per cell: inliers and outliers scored (the same for every method, seed and attack)."""
    rows = df[(df["status"] == "ok") & ~_is_aggregate(df["cell"])]
    out = []
    for cell in _unique(rows["cell"]):
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
        values = [v for v in _unique(df[col]) if v not in ("", None)]
        if values:
            return ", ".join(str(v) for v in values)
    return "—" if fallback in (None, "") else str(fallback)


# --- plots -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; move it onto ``target`` on success, remove it on failure."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the report is meant to be read
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _label(text: Any) -> str:
    """A plot label with mathtext's "$" escaped."""
    return str(text).replace("$", r"\$")


def _set_ticks(ax: Any, x: Any, names: list) -> None:
    """Category tick labels, slanted when they would overlap."""
    labels = [_label(n) for n in names]
    slant = len(labels) > 4 or max((len(t) for t in labels), default=0) > 12
    ax.set_xticks(x, labels, rotation=25 if slant else 0, ha="right" if slant else "center")


def write_plots(df: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """Write ``auroc_by_attack.png`` and, with more than one cell, ``auroc_by_cell.png``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    summary = summary_table(df, "auroc") * 100.0
    methods, attacks = list(summary.index), list(summary.columns)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(methods) * max(1, len(attacks)) ** 0.5 + 3), 4.8))
    try:
        x = np.arange(len(methods))
        width = 0.8 / max(1, len(attacks))
        for i, attack in enumerate(attacks):
            heights = summary[attack].to_numpy(dtype=float)
            offsets = x - 0.4 + width * (i + 0.5)
            ax.bar(offsets, np.nan_to_num(heights, nan=0.0), width, label=_label(attack))
            for xo, h in zip(offsets, heights, strict=True):
                if math.isnan(h):
                    ax.text(xo, 1.0, NA_TEXT, ha="center", va="bottom", fontsize=8, rotation=90)
        ax.axhline(50.0, color="grey", linestyle="--", linewidth=1, label="chance")
        _set_ticks(ax, x, methods)
        ax.set_ylim(0, 100)
        ax.set_ylabel("AUROC (%)")
        ax.set_title("Mean AUROC per method and attack (over cells and seeds)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        target = plots_dir / "auroc_by_attack.png"
        with _atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append(target)
    finally:
        plt.close(fig)

    by_cell = cell_table(df, "auroc") * 100.0
    by_cell = by_cell[~_is_aggregate(by_cell.index.get_level_values("cell"))]
    cells = list(dict.fromkeys(by_cell.index.get_level_values("cell")))
    target = plots_dir / "auroc_by_cell.png"
    if len(cells) > 1:
        fig, ax = plt.subplots(figsize=(max(8.0, 0.8 * len(cells) + 5), 4.8))
        try:
            x = np.arange(len(cells))
            for method in dict.fromkeys(by_cell.index.get_level_values("method")):
                per_cell = by_cell.loc[method].reindex(cells)
                for attack in by_cell.columns:
                    ys = per_cell[attack].to_numpy(dtype=float)
                    if np.isnan(ys).all():
                        continue
                    ax.plot(x, ys, marker="o", label=_label(f"{method} / {attack}"))
            ax.axhline(50.0, color="grey", linestyle="--", linewidth=1, label="chance")
            _set_ticks(ax, x, cells)
            ax.set_ylim(0, 100)
            ax.set_ylabel("AUROC (%)")
            ax.set_title("AUROC per cell (mean over seeds)")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            with _atomic_path(target) as tmp:
                fig.savefig(tmp, format="png", dpi=100)
            written.append(target)
        finally:
            plt.close(fig)
    else:
        # A stale plot from an earlier render of different data would not match this page.
        target.unlink(missing_ok=True)
    return written


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
    seeds = _unique(df["seed"]) if "seed" in df else []
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
    with _atomic_path(target) as tmp:
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
