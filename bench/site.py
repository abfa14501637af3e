"""The leaderboard site: ``bench report RUN_DIR... --out SITE_DIR``.

A static site built from one or more run folders (or tidy results CSV files): an index with one
leaderboard per (protocol, dataset), laid out like RODEO's Table 1, a page per (protocol, dataset) with the
per-cell breakdown and every metric, a page per method with its hyperparameters as run and its paper,
the threat model and the budgets actually spent, plots from the raw scores, the published numbers beside
ours, and the provenance of every number. Jinja2 templates (autoescaped) under ``bench/templates/site/``;
no server and no external asset, so the pages work when opened from disk.

Numbers:
- a leaderboard value is the mean over the (non-aggregate) cells of a seed, then the mean over seeds,
  with the sample standard deviation (ddof 1) over seeds where there are several;
- the worst case is the minimum over the attacks (clean excluded) per cell and seed, then averaged the
  same way (RobustBench's headline: a detector is as robust as its weakest point per cell);
- the drop is clean minus worst case per cell and seed, averaged the same way.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.errors import BadInput
from bench.report import (
    AGGREGATE_SUFFIX,
    MANIFEST_FILE,
    NA_TEXT,
    RESULTS_FILE,
    format_eps,
    load_manifest,
    read_results_file,
    sha_counts,
)
from bench.store import COLUMNS, LEGACY_COLUMNS, unit_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SITE_MARKER = ".bench-site"
PUBLISHED_COLUMNS = ("method", "protocol", "dataset", "cell", "attack", "metric", "value", "source")
# Published rows with one of these cells compare with our mean over cells (a paper table's mean column).
MEAN_CELLS = ("", "mean", "all", "*", "avg", "average")
METRIC_NAMES = {
    "auroc": "AUROC",
    "fpr95": "FPR95",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "id_acc": "ID acc.",
}
DETAIL_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "id_acc")
CLEAN = "clean"
ASSETS = ("site.css", "sort.js")
PLOT_DPI = 100


# --- input -----------------------------------------------------------------------------------------------


@dataclass
class Source:
    """One input: a run folder (results.csv, manifest.json, scores/) or a bare results CSV."""

    path: Path
    df: pd.DataFrame
    manifest: dict[str, Any]
    scores_dir: Path | None
    slug: str
    results_name: str
    superseded: int = 0

    @property
    def run_ids(self) -> list[str]:
        return [str(r) for r in dict.fromkeys(self.df["run_id"].tolist())]


def load_source(path: Path, index: int = 0) -> Source:
    """Read a run folder or a results CSV; BadInput naming the path when it is neither."""
    path = Path(path)
    if path.is_dir():
        results = path / RESULTS_FILE
        if not results.is_file():
            raise BadInput(f"no {RESULTS_FILE} in {path}; accepted: a run folder or a results CSV file")
        manifest = load_manifest(path)
        scores = path / "scores"
        scores_dir = scores if scores.is_dir() else None
    elif path.is_file() and path.suffix == ".csv":
        results, manifest, scores_dir = path, {}, None
    else:
        raise BadInput(f"{path} is neither a run folder nor a .csv file")
    df = read_results_file(results)
    missing = [c for c in LEGACY_COLUMNS if c not in df.columns]
    if missing:
        raise BadInput(
            f"{results} lacks the columns {', '.join(missing)}; accepted: the columns of results.csv"
        )
    for column in ("attack_hash", "detector_digest"):  # results.csv files from before these columns
        if column not in df.columns:
            df[column] = ""
    df = df[COLUMNS].copy()
    name = path.stem if path.is_file() else path.name
    return Source(
        path=path,
        df=df,
        manifest=manifest,
        scores_dir=scores_dir,
        slug=f"{index:02d}-{slug(str(name))}",
        results_name=RESULTS_FILE if path.is_dir() else path.name,
    )


def slug(text: str) -> str:
    """A file-name-safe form of ``text``; names that had to change get a short hash (no collisions)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"
    if safe == text:
        return safe
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def combine(sources: list[Source]) -> pd.DataFrame:
    """All rows with ``_source`` (input index), ``_hyper`` (the method's config as run, JSON) and ``_entry``
    (the leaderboard row: the method, plus the differing hyperparameters where one (method, profile) ran
    with several). A row repeated by a later input (same method, config, profile, protocol, dataset, cell,
    seed, attack, eps and metric) replaces the earlier one; each source counts its superseded rows."""
    import pandas as pd

    frames = []
    for i, source in enumerate(sources):
        frame = source.df.copy()
        frame["_source"] = i
        config = source.manifest.get("config") if isinstance(source.manifest.get("config"), dict) else {}
        methods = config.get("methods") if isinstance(config.get("methods"), dict) else {}
        frame["_hyper"] = [
            json.dumps(methods[m], sort_keys=True, default=str) if m in methods else ""
            for m in frame["method"]
        ]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "_source"])
    # Rows without a manifest (a bare CSV) join the one recorded configuration of their (method, profile).
    known = df[df["_hyper"] != ""].groupby(["method", "profile"])["_hyper"].unique()
    for (method, profile), hypers in known.items():
        if len(hypers) == 1:
            unknown = (df["method"] == method) & (df["profile"] == profile) & (df["_hyper"] == "")
            df.loc[unknown, "_hyper"] = hypers[0]
    key = ["method", "profile", "_hyper", "protocol", "dataset", "cell", "seed", "attack", "eps", "metric"]
    superseded = df.duplicated(key, keep="last")
    for i, count in df[superseded].groupby("_source").size().items():
        sources[int(i)].superseded = int(count)
    df = df[~superseded].reset_index(drop=True)
    df["_entry"] = _entry_labels(df)
    return df


def _entry_labels(df: pd.DataFrame) -> list[str]:
    variants: dict[tuple[str, str], list[str]] = {}
    for method, profile, hyper in zip(df["method"], df["profile"], df["_hyper"], strict=True):
        variants.setdefault((method, profile), [])
        if hyper not in variants[(method, profile)]:
            variants[(method, profile)].append(hyper)
    labels: dict[tuple[str, str, str], str] = {}
    for (method, profile), hypers in variants.items():
        if len(hypers) == 1:
            labels[(method, profile, hypers[0])] = str(method)
            continue
        parsed = [json.loads(h) if h else None for h in hypers]
        recorded = [p for p in parsed if isinstance(p, dict)]
        keys = sorted({k for p in recorded for k in p})
        differing = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in recorded}) > 1]
        for hyper, p in zip(hypers, parsed, strict=True):
            if p is None:
                variant = "hyperparameters not recorded"
            else:
                variant = ", ".join(f"{k}={p.get(k)}" for k in differing) or "same hyperparameters"
            labels[(method, profile, hyper)] = f"{method} [{variant}]"
    return [labels[k] for k in zip(df["method"], df["profile"], df["_hyper"], strict=True)]


# --- statistics ------------------------------------------------------------------------------------------


@dataclass
class Stat:
    """A mean over seeds (of per-seed means over cells) with the sample std over seeds, in fractions."""

    mean: float
    std: float | None = None
    n_seeds: int = 0
    partial: str = ""
    best: bool = False

    @property
    def missing(self) -> bool:
        return math.isnan(self.mean)

    def text(self) -> str:
        if self.missing:
            return NA_TEXT
        if self.std is None:
            return f"{100 * self.mean:.1f}"
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"

    def sort_value(self) -> str:
        return "" if self.missing else f"{self.mean:.6f}"


def seed_stat(values: pd.DataFrame | pd.Series) -> Stat:
    """``values``: rows = cells, columns = seeds (a Series: one value per seed). Mean over cells per
    seed, then mean and sample std over the seeds that have a value."""
    import numpy as np

    per_seed = values if values.ndim == 1 else values.mean(axis=0, skipna=True)
    per_seed = per_seed.dropna().to_numpy(dtype=float)
    if per_seed.size == 0:
        return Stat(float("nan"))
    std = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else None
    return Stat(float(np.mean(per_seed)), std, int(per_seed.size))


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["cell"].astype(str).str.endswith(AGGREGATE_SUFFIX)]


def _ok(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["metric"] == metric)]


def attack_columns(group: pd.DataFrame) -> pd.Series:
    """The leaderboard column of each row: its attack, or ``attack @ eps`` where the group ran an attack
    at several eps values."""
    ok = group[group["status"] == "ok"]
    eps_count = ok.groupby("attack")["eps"].nunique()
    several = {a for a, n in eps_count.items() if n > 1}
    return group.apply(
        lambda r: f"{r['attack']} @ {format_eps(r['eps'])}" if r["attack"] in several else str(r["attack"]),
        axis=1,
    ).astype(str)


def _ordered_columns(values: list[str]) -> list[str]:
    ordered = list(dict.fromkeys(values))
    return sorted(ordered, key=lambda c: 0 if c == CLEAN else 1)


@dataclass
class Leaderboard:
    protocol: str
    dataset: str
    columns: list[str]
    rows: list[dict[str, Any]]
    cells: list[str]
    several_eps: bool


def worst_case_table(ok: pd.DataFrame, attacks: list[str]) -> tuple[pd.DataFrame, bool]:
    """Per (cell, seed): the minimum AUROC over ``attacks`` (columns ``_col``); True when some (cell,
    seed) lacks one of them (the minimum is then over fewer attacks)."""
    rows = ok[ok["_col"].isin(attacks)]
    if rows.empty:
        import pandas as pd

        return pd.DataFrame(), False
    wide = rows.pivot_table(index=["cell", "seed"], columns="_col", values="value", aggfunc="mean")
    partial = bool(wide.reindex(columns=attacks).isna().any(axis=None))
    return wide.min(axis=1, skipna=True).unstack("seed"), partial


def leaderboard(group: pd.DataFrame, warnings: dict | None = None) -> Leaderboard:
    """RODEO Table 1 for one (protocol, dataset): a row per entry, per attack the mean AUROC over cells
    (± std over seeds), the worst case and the clean-minus-worst-case drop; the best per column marked."""
    group = group.copy()
    group["_col"] = attack_columns(group) if len(group) else []
    columns = _ordered_columns(group["_col"].tolist())
    attacks = [c for c in columns if c != CLEAN]
    plain = _plain(group)
    ok_all = _ok(plain)
    universe = {c: set(ok_all.loc[ok_all["_col"] == c, "cell"]) for c in columns}
    all_cells = list(dict.fromkeys(ok_all["cell"].tolist()))
    rows = []
    for entry in dict.fromkeys(group["_entry"].tolist()):
        mine = plain[plain["_entry"] == entry]
        ok = _ok(mine)
        values = {}
        for col in columns:
            part = ok[ok["_col"] == col]
            stat = seed_stat(part.pivot_table(index="cell", columns="seed", values="value", aggfunc="mean"))
            covered, total = part["cell"].nunique(), len(universe[col])
            if 0 < covered < total:
                stat.partial = f"mean over {covered} of {total} cells"
            values[col] = stat
        worst_cells, worst_partial = worst_case_table(ok, attacks)
        worst = seed_stat(worst_cells) if not worst_cells.empty else Stat(float("nan"))
        if worst_partial:
            worst.partial = "some cells lack an attack: minimum over the attacks that ran"
        drop = Stat(float("nan"))
        clean = ok[ok["_col"] == CLEAN].pivot_table(
            index="cell", columns="seed", values="value", aggfunc="mean"
        )
        if not worst_cells.empty and not clean.empty:
            diff = clean.reindex_like(worst_cells) - worst_cells
            drop = seed_stat(diff.dropna(how="all"))
        if not worst.missing and worst_cells.shape[0] < len(all_cells):
            worst.partial = worst.partial or f"over {worst_cells.shape[0]} of {len(all_cells)} cells"
        first = mine.iloc[0] if len(mine) else group[group["_entry"] == entry].iloc[0]
        rows.append(
            {
                "entry": str(entry),
                "method": str(first["method"]),
                "profile": str(first["profile"]),
                "values": values,
                "worst": worst,
                "drop": drop,
                "na": na_note(group[group["_entry"] == entry]),
                "warnings": sum(
                    len((warnings or {}).get(key, [])) for key in _unit_keys(group[group["_entry"] == entry])
                ),
            }
        )
    _mark_best(rows, columns)
    return Leaderboard(
        protocol=str(group["protocol"].iloc[0]) if len(group) else "",
        dataset=str(group["dataset"].iloc[0]) if len(group) else "",
        columns=columns,
        rows=rows,
        cells=all_cells,
        several_eps=any(" @ " in c for c in columns),
    )


def _unit_keys(df: pd.DataFrame) -> set[tuple]:
    return {
        (str(r), str(m), unit_of(str(c)), int(s), str(a))
        for r, m, c, s, a in zip(
            df["run_id"], df["method"], df["cell"], df["seed"], df["attack"], strict=True
        )
    }


def _mark_best(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Mark the best value per column (ties by the shown value all marked): highest AUROC and worst case,
    lowest drop. Nothing is marked with fewer than two values."""
    getters = [(lambda r, c=c: r["values"][c], max) for c in columns]
    getters += [(lambda r: r["worst"], max), (lambda r: r["drop"], min)]
    for get, pick in getters:
        present = [get(r) for r in rows if not get(r).missing]
        if len(present) < 2:
            continue
        best = pick(round(100 * s.mean, 1) for s in present)
        for s in present:
            s.best = round(100 * s.mean, 1) == best


def na_note(rows: pd.DataFrame) -> str:
    """ "n/a on k of n cells: reason; reason" for an entry, or "" when it has no na row."""
    unit_cells = {unit_of(str(c)) for c in _plain(rows)["cell"]}
    na = rows[rows["status"] != "ok"]
    if na.empty:
        return ""
    na_cells = {unit_of(str(c)) for c in na["cell"]}
    reasons = "; ".join(dict.fromkeys(str(r) or "no reason recorded" for r in na["reason"]))
    attacks = list(dict.fromkeys(na["attack"].astype(str)))
    all_attacks = list(dict.fromkeys(rows["attack"].astype(str)))
    which = "" if len(attacks) == len(all_attacks) else f" ({', '.join(attacks)})"
    return f"{NA_TEXT} on {len(na_cells)} of {len(unit_cells)} cells{which}: {reasons}"


# --- threat model and budgets ----------------------------------------------------------------------------


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def budget_summary(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per attack, the eps and the budget per image actually spent, over its ok units only (na rows
    record a zero budget and are excluded). A field whose value varies between units, or is fractional
    (adaptive attacks record an average per image), is marked as an average."""
    out = []
    for attack in _ordered_columns(df["attack"].astype(str).tolist()):
        rows = df[(df["attack"] == attack) & (df["status"] == "ok")]
        na_units = df[(df["attack"] == attack) & (df["status"] != "ok")]
        if rows.empty:
            out.append({"attack": attack, "ran": False, "na_units": len(_unit_keys(na_units))})
            continue
        units = rows.assign(_u=rows["cell"].astype(str).map(unit_of))
        units = units.drop_duplicates(["run_id", "method", "profile", "_u", "seed", "attack"])
        eps_values = [float(e) for e in dict.fromkeys(units["eps"].dropna().tolist())]
        entry: dict[str, Any] = {
            "attack": attack,
            "ran": True,
            "units": len(units),
            "na_units": len(_unit_keys(na_units)),
            "eps": [_eps_entry(e) for e in eps_values],
        }
        for col in ("steps", "restarts", "grad_evals", "queries"):
            values = units[col].dropna().astype(float)
            if values.empty:
                entry[col] = {"text": "—", "average": False}
                continue
            lo, hi, mean = float(values.min()), float(values.max()), float(values.mean())
            average = lo != hi or not float(mean).is_integer()
            text = _fmt_number(mean)
            if lo != hi:
                text += f" (range {_fmt_number(lo)}–{_fmt_number(hi)})"
            entry[col] = {"text": text, "average": average}
        out.append(entry)
    return out


def _eps_entry(eps: float) -> dict[str, str]:
    if eps == 0:
        return {"fraction": "0", "steps": "no perturbation", "text": "0"}
    return {"fraction": f"{eps:.4g}", "steps": eps_steps(eps), "text": format_eps(eps)}


def eps_steps(eps: float) -> str:
    """eps in grey levels of an 8-bit image: 0.0314 -> "8 of 255 grey levels"."""
    levels = eps * 255.0
    shown = str(round(levels)) if abs(levels - round(levels)) < 1e-3 else f"{levels:.2f}"
    return f"{shown} of 255 grey levels"


# --- warnings --------------------------------------------------------------------------------------------


def warning_index(sources: list[Source], df: pd.DataFrame) -> tuple[dict[tuple, list[str]], dict[str, list]]:
    """Validity warnings of the manifests ("<method> <cell> seed <S> <attack>: <message>") by unit
    (run_id, method, cell, seed, attack); lines that name no unit stay with their run."""
    by_unit: dict[tuple, list[str]] = {}
    other: dict[str, list[str]] = {}
    for source in sources:
        lines = [str(w) for w in source.manifest.get("warnings") or []]
        if not lines:
            continue
        run_id = str(source.manifest.get("run_id") or (source.run_ids[0] if source.run_ids else ""))
        units = sorted(_unit_keys(source.df), key=lambda k: -len(k[1]))  # longest method name first
        prefixes = {f"{m} {c} seed {s} {a}: ": (r, m, c, s, a) for r, m, c, s, a in units}
        for line in lines:
            for prefix, key in prefixes.items():
                if line.startswith(prefix):
                    by_unit.setdefault(key, []).append(line[len(prefix) :])
                    break
            else:
                other.setdefault(run_id, []).append(line)
    return by_unit, other


# --- published numbers -----------------------------------------------------------------------------------


def load_published(folder: Path | None) -> pd.DataFrame:
    """Every ``*.csv`` of ``folder`` (columns method, protocol, dataset, cell, attack, metric, value,
    source). Values are percent, as the papers print them (our own files hold fractions)."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype=str) for c in PUBLISHED_COLUMNS})
    if folder is None or not Path(folder).is_dir():
        return empty
    frames = []
    for path in sorted(Path(folder).glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
        if missing:
            raise BadInput(
                f"{path} lacks the columns {', '.join(missing)}; accepted: {', '.join(PUBLISHED_COLUMNS)}"
            )
        frame = frame[list(PUBLISHED_COLUMNS)].copy()
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        frame = frame.dropna(subset=["value"])
        frame["value"] = frame["value"] / 100.0
        frame["file"] = path.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else empty


# Published baselines that are one of our methods under another name, per protocol. EOE (Liznerski et al.,
# TMLR 2022, Sec. 3.3) calls "BCE" the one-vs-rest classifier trained with binary cross-entropy, normal
# samples 0 and OE samples 1: our ``oe`` with one inlier class (docs/design.md, "Methods so far").
PUBLISHED_ALIASES: dict[tuple[str, str], str] = {("bce", "nd"): "oe"}


def published_comparison(df: pd.DataFrame, published: pd.DataFrame) -> list[dict[str, Any]]:
    """Published rows that match ours on (method, protocol, dataset, attack) (case-insensitive; a
    :data:`PUBLISHED_ALIASES` name counts as ours): our value (mean over cells for a paper's mean
    column, else the cell's mean over seeds), the difference ours - published in points, and the profile
    ours ran in."""
    out = []
    if published.empty or df.empty:
        return out
    lower = {c: df[c].astype(str).str.lower() for c in ("method", "protocol", "dataset", "attack")}
    for pub in published.itertuples(index=False):
        name = str(pub.method).lower()
        name = PUBLISHED_ALIASES.get((name, str(pub.protocol).lower()), name)
        mask = (
            (lower["method"] == name)
            & (lower["protocol"] == str(pub.protocol).lower())
            & (lower["dataset"] == str(pub.dataset).lower())
            & (lower["attack"] == str(pub.attack).lower())
        )
        ours = df[mask]
        if ours.empty:
            continue
        metric = str(pub.metric).lower() or "auroc"
        for entry in dict.fromkeys(ours["_entry"].tolist()):
            mine = ours[ours["_entry"] == entry]
            rows = _ok(mine, metric)
            cell = str(pub.cell)
            if cell.lower() in MEAN_CELLS:
                rows = _plain(rows)
                scope = "mean over cells"
            else:
                rows = rows[rows["cell"] == cell]
                scope = f"cell {cell}"
            stat = seed_stat(rows.pivot_table(index="cell", columns="seed", values="value", aggfunc="mean"))
            profile = ", ".join(dict.fromkeys(mine["profile"].astype(str)))
            diff = None if stat.missing else 100.0 * (stat.mean - float(pub.value))
            out.append(
                {
                    "entry": str(entry),
                    "method": str(mine["method"].iloc[0]),
                    "protocol": str(pub.protocol),
                    "dataset": str(pub.dataset),
                    "attack": str(mine["attack"].iloc[0]),
                    "cell": cell or "mean",
                    "scope": scope,
                    "metric": METRIC_NAMES.get(metric, metric),
                    "published": f"{100.0 * float(pub.value):.1f}",
                    "ours": stat,
                    "diff": "—" if diff is None else f"{diff:+.1f}",
                    "diff_value": "" if diff is None else f"{diff:.4f}",
                    "profile": profile,
                    "reproduction": profile == "paper",
                    "source": str(pub.source)
                    + ("" if name == str(pub.method).lower() else f" (published as {pub.method})"),
                    "file": str(pub.file),
                }
            )
    return out


# --- method citations ------------------------------------------------------------------------------------


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def method_sources() -> dict[str, dict[str, Any]]:
    """Per registered method, read from its module's source without importing it (no torch): the paper
    (the module docstring's first paragraph), the summary (the class docstring's first paragraph) and
    the comment beside each field's default (where the papers' values are cited)."""
    import importlib.util

    spec = importlib.util.find_spec("bench.methods")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (OSError, SyntaxError, UnicodeDecodeError):
                continue
            paper = _first_paragraph(ast.get_docstring(tree))
            comments = _line_comments(text)
            classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
            for node in classes.values():
                for deco in node.decorator_list:
                    if (
                        isinstance(deco, ast.Call)
                        and getattr(deco.func, "id", "") == "register_method"
                        and deco.args
                        and isinstance(deco.args[0], ast.Constant)
                    ):
                        found[str(deco.args[0].value)] = {
                            "paper": paper,
                            "summary": _first_paragraph(ast.get_docstring(node)),
                            "module": f"bench.methods.{path.stem}",
                            "fields": _field_comments(node, classes, comments),
                        }
    return found


def _line_comments(text: str) -> dict[int, str]:
    out = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def _field_comments(node: ast.ClassDef, classes: dict[str, ast.ClassDef], comments: dict[int, str]) -> dict:
    """field name -> its comment (the one on its line, after the comment lines right above it); fields
    inherited from classes of the same module included."""
    out: dict[str, str] = {}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes and base.id != node.name:
            out.update(_field_comments(classes[base.id], classes, comments))
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            above = []
            line = stmt.lineno - 1
            while line in comments and line not in {s.end_lineno for s in node.body if s is not stmt}:
                above.insert(0, comments[line])
                line -= 1
            parts = [*above, comments.get(stmt.lineno, "")]
            text = " ".join(p for p in parts if p)
            if text:
                out[stmt.target.id] = text
    return out


# --- plots -----------------------------------------------------------------------------------------------


@dataclass
class Plot:
    src: str
    alt: str
    caption: str
    kind: str = ""
    extra: dict = field(default_factory=dict)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: Any, width: int = 28) -> str:
    """A plot label: mathtext's "$" escaped, wrapped so that long names stay readable."""
    return textwrap.fill(str(text), width, break_long_words=True).replace("$", r"\$")


def _save(fig: Any, root: Path, rel: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    _write(root / rel, buffer.getvalue())
    return rel


STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _roc(scores: np.ndarray, is_outlier: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(set(is_outlier.tolist())) < 2:
        return None, None, float("nan")
    fpr, tpr, _ = roc_curve(is_outlier, scores)
    return fpr, tpr, float(roc_auc_score(is_outlier, scores))


def _same_curve(a: tuple, b: tuple) -> bool:
    import numpy as np

    return a[0].shape == b[0].shape and np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])


def _group_identical(series: list[tuple[str, tuple]]) -> list[tuple[list[str], tuple]]:
    """Merge series with identical data: [(names, data)], first occurrence order."""
    groups: list[tuple[list[str], tuple]] = []
    for name, data in series:
        for names, other in groups:
            if _same_curve(data, other):
                names.append(name)
                break
        else:
            groups.append(([name], data))
    return groups


def load_scores(
    source: Source, method: str, cell: str, seed: int, attack: str
) -> dict[str, np.ndarray] | None:
    """The arrays of ``scores/<method>/<unit cell>/seed<S>-<attack>.npz`` for ``cell`` (its set for a
    multi-set cell ``<cell>:<set>``): {"clean", "attacked", "is_outlier"}; None when absent."""
    import numpy as np

    if source.scores_dir is None:
        return None
    root = source.scores_dir.resolve()
    path = (source.scores_dir / method / unit_of(cell) / f"seed{seed}-{attack}.npz").resolve()
    if root not in path.parents or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        names = [k[: -len("__clean")] for k in data.files if k.endswith("__clean")]
        wanted = cell.split(":", 1)[1] if ":" in cell else (names[0] if len(names) == 1 else None)
        if wanted not in names:
            return None
        return {
            "clean": np.asarray(data[f"{wanted}__clean"], dtype=float),
            "attacked": np.asarray(data[f"{wanted}__attacked"], dtype=float),
            "is_outlier": np.asarray(data[f"{wanted}__is_outlier"]).astype(bool),
        }


def _near(a: tuple, b: tuple, tol: float = 0.02) -> bool:
    """True when two ROC curves lie within ``tol`` TPR of each other everywhere: one would hide the other."""
    import numpy as np

    grid = np.linspace(0.0, 1.0, 201)
    return bool(np.max(np.abs(np.interp(grid, a[0], a[1]) - np.interp(grid, b[0], b[1]))) < tol)


def roc_plot(root: Path, rel: str, entry: str, cell: str, seed: int, arrays: dict[str, dict]) -> Plot | None:
    """ROC curves, clean and under each attack, of one entry on one cell. Identical curves are drawn once
    and labelled with every attack they belong to; curves that nearly coincide are drawn thinner on top of
    thicker ones, in other dash patterns, and labelled as overlapping."""
    first = next(iter(arrays.values()))
    series = [(CLEAN, _roc(first["clean"], first["is_outlier"]))]
    series += [(a, _roc(v["attacked"], v["is_outlier"])) for a, v in arrays.items() if a != CLEAN]
    series = [(name, data) for name, data in series if data[0] is not None]
    if not series:
        return None
    groups = _group_identical(series)
    notes = []
    for i, (names, data) in enumerate(groups):
        hidden_by = [n for other, odata in groups[:i] if _near(data, odata) for n in other]
        identical = " (identical curves)" if len(names) > 1 else ""
        notes.append(identical + (f" (overlaps {' = '.join(hidden_by)})" if hidden_by else ""))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    try:
        for i, ((names, (fpr, tpr, auc)), note) in enumerate(zip(groups, notes, strict=True)):
            label = " = ".join(names) + f" (AUROC {100 * auc:.1f})" + note
            width = max(1.0, 2.6 - 0.5 * i)  # later curves thinner, so coinciding ones stay visible
            ax.plot(fpr, tpr, linestyle=STYLES[i % len(STYLES)], linewidth=width, label=_label(label, 34))
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set_xlabel("false positive rate (inliers flagged)")
        ax.set_ylabel("true positive rate (outliers found)")
        ax.set_title(_label(f"{entry}, {cell}, seed {seed}", 50), fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    aucs = "; ".join(
        " = ".join(names) + f" {100 * auc:.1f}" + note
        for (names, (_, _, auc)), note in zip(groups, notes, strict=True)
    )
    return Plot(
        src=src,
        alt=f"ROC curves of {entry} on {cell}, seed {seed}, clean and attacked; AUROC: {aucs}.",
        caption=f"{entry} on {cell} (seed {seed}): ROC clean and under each attack. AUROC {aucs}.",
        kind="roc",
    )


def histogram_plot(
    root: Path, rel: str, entry: str, cell: str, seed: int, arrays: dict[str, dict]
) -> Plot | None:
    """Score histograms of inliers and outliers, clean and under the strongest attack of the cell."""
    import numpy as np

    first = next(iter(arrays.values()))
    attacked = {a: v for a, v in arrays.items() if a != CLEAN}
    panels = [(CLEAN, first["clean"], first["is_outlier"])]
    if attacked:
        aucs = {a: _roc(v["attacked"], v["is_outlier"])[2] for a, v in attacked.items()}
        strongest = min(aucs, key=lambda a: aucs[a] if not math.isnan(aucs[a]) else 2.0)
        panels.append((strongest, attacked[strongest]["attacked"], attacked[strongest]["is_outlier"]))
    everything = np.concatenate([p[1] for p in panels])
    everything = everything[np.isfinite(everything)]
    if everything.size == 0:
        return None
    lo, hi = float(everything.min()), float(everything.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), sharey=True, squeeze=False)
    try:
        for ax, (name, scores, is_out) in zip(axes[0], panels, strict=True):
            ax.hist(scores[~is_out], bins=bins, alpha=0.55, label=f"inliers ({int((~is_out).sum())})")
            ax.hist(scores[is_out], bins=bins, alpha=0.55, label=f"outliers ({int(is_out.sum())})")
            ax.set_title(_label("clean" if name == CLEAN else f"under {name}", 36), fontsize=9)
            ax.set_xlabel("outlier score")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("images")
        fig.suptitle(_label(f"{entry}, {cell}, seed {seed}", 70), fontsize=10)
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    which = (
        "clean" if len(panels) == 1 else f"clean and under {panels[1][0]}, the strongest attack on this cell"
    )
    return Plot(
        src=src,
        alt=f"Histograms of the outlier scores of {entry} on {cell}, seed {seed}: inliers and outliers, "
        f"{which}.",
        caption=f"{entry} on {cell} (seed {seed}): scores of inliers and outliers, {which}.",
        kind="hist",
    )


def _merge_points(points: list[tuple[str, float, float]]) -> list[tuple[list[str], float, float]]:
    merged: list[tuple[list[str], float, float]] = []
    for name, x, y in points:
        for names, mx, my in merged:
            if abs(mx - x) < 1e-9 and abs(my - y) < 1e-9:
                names.append(name)
                break
        else:
            merged.append(([name], x, y))
    return merged


def scatter_plot(root: Path, rel: str, board: Leaderboard) -> Plot | None:
    """Clean AUROC against worst-case AUROC, a point per entry; coinciding points share one label."""
    points = [
        (r["entry"], 100 * r["values"][CLEAN].mean, 100 * r["worst"].mean)
        for r in board.rows
        if CLEAN in r["values"] and not r["values"][CLEAN].missing and not r["worst"].missing
    ]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 5.0))
    try:
        merged = _merge_points(points)
        for i, (names, x, y) in enumerate(merged):
            label = " = ".join(names) + (" (same point)" if len(names) > 1 else "")
            ax.scatter([x], [y], marker=MARKERS[i % len(MARKERS)], s=46, label=_label(label, 30), zorder=3)
            if len(names) > 1:  # coinciding methods: say so on the plot, not only in the legend
                ax.annotate(
                    _label(" = ".join(n if len(n) <= 24 else n[:23] + "…" for n in names), 26),
                    (x, y), xytext=(6, -12), textcoords="offset points", fontsize=7,
                )  # fmt: skip
        ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=0.8, label="no drop")
        ax.axhline(50, color="grey", linestyle="--", linewidth=0.8, label="chance")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("clean AUROC (%)")
        ax.set_ylabel("worst-case AUROC (%)")
        ax.set_title(_label(f"{board.protocol} / {board.dataset}: clean vs robust", 60), fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    listed = "; ".join(f"{' and '.join(n)} {x:.1f} clean, {y:.1f} worst case" for n, x, y in merged)
    return Plot(
        src=src,
        alt=f"Scatter of clean against worst-case AUROC for {len(points)} methods on {board.protocol} / "
        f"{board.dataset}: {listed}.",
        caption="Clean against worst-case AUROC (mean over cells and seeds), a marker per method; the dotted "
        "diagonal is no drop. Methods at the same point share one marker, labelled with all their names.",
        kind="scatter",
    )


def grad_evals_plot(root: Path, rel: str, group: pd.DataFrame) -> Plot | None:
    """Mean AUROC against the gradient evaluations per image each attack spent (symlog axis; query-only
    attacks sit at 0): a colour per entry, a marker per attack; points where several attacks of an entry
    coincide are labelled with all of them."""
    ok = _plain(_ok(group))
    if ok.empty:
        return None
    plt = _pyplot()
    entries = list(dict.fromkeys(ok["_entry"].tolist()))
    attacks = _ordered_columns(ok["attack"].astype(str).tolist())
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    described = []
    try:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        series = []  # (entry, [(attack, x, y)])
        for entry in entries:
            mine = ok[ok["_entry"] == entry]
            points = []
            for attack in attacks:
                part = mine[mine["attack"] == attack]
                if part.empty:
                    continue
                x = float(part["grad_evals"].astype(float).mean())
                y = 100 * seed_stat(part.pivot_table(index="cell", columns="seed", values="value")).mean
                points.append((attack, x, y))
            series.append((entry, points))
        # Entries with exactly the same points are drawn once and named together.
        groups: list[tuple[list[str], list]] = []
        for entry, points in series:
            for names, other in groups:
                if [(a, round(x, 9), round(y, 9)) for a, x, y in points] == [
                    (a, round(x, 9), round(y, 9)) for a, x, y in other
                ]:
                    names.append(entry)
                    break
            else:
                groups.append(([entry], points))
        for i, (names, points) in enumerate(groups):
            color = colors[i % len(colors)]
            for attack, x, y in points:
                marker = MARKERS[attacks.index(attack) % len(MARKERS)]
                ax.scatter([x], [y], color=color, marker=marker, s=36, zorder=3, alpha=0.85)
            merged = sorted(_merge_points(points), key=lambda p: p[1])
            label = " = ".join(names) + (" (identical)" if len(names) > 1 else "")
            ax.plot([p[1] for p in merged], [p[2] for p in merged], color=color, linewidth=0.9, alpha=0.6,
                    linestyle=STYLES[i % len(STYLES)], label=_label(label))  # fmt: skip
            for attack_names, x, y in merged:
                if len(attack_names) > 1:
                    ax.annotate(_label(" = ".join(attack_names), 18), (x, y), xytext=(5, -11 - 8 * (i % 3)),
                                textcoords="offset points", fontsize=6.5, color=color)  # fmt: skip
            described.append(
                f"{' = '.join(names)}: "
                + ", ".join(f"{' = '.join(n)} {y:.1f} at {x:g}" for n, x, y in merged)
            )
        for j, attack in enumerate(attacks):
            ax.scatter(
                [], [], color="grey", marker=MARKERS[j % len(MARKERS)], label=_label(f"attack {attack}")
            )
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("gradient evaluations per image (mean; symlog scale, query-only attacks at 0)")
        ax.set_ylabel("AUROC (%)")
        ax.set_ylim(0, 100)
        ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title("AUROC against the gradient budget spent", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    return Plot(
        src=src,
        alt="AUROC (%) against gradient evaluations per image, per method and attack. "
        + "; ".join(described),
        caption="Mean AUROC over cells and seeds against the mean gradient evaluations per image each attack "
        "spent: a colour per method, a marker per attack; attacks of a method that land on the same point "
        "are labelled together (joined by =), and methods with identical results share one line.",
        kind="grad",
    )


def eps_plot(root: Path, rel: str, group: pd.DataFrame) -> Plot | None:
    """AUROC against eps (in grey levels) per entry and attack, when the group has several eps values;
    identical curves drawn once, labelled with all their names."""
    import numpy as np

    ok = _plain(_ok(group))
    ok = ok[ok["attack"] != CLEAN]
    if ok["eps"].nunique() < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    described = []
    try:
        curves = []
        for (entry, attack), part in ok.groupby(["_entry", "attack"], sort=False):
            series = []
            for eps, at in part.groupby("eps"):
                stat = seed_stat(at.pivot_table(index="cell", columns="seed", values="value"))
                series.append((eps * 255.0, 100 * stat.mean))
            series.sort()
            xs, ys = np.array([p[0] for p in series]), np.array([p[1] for p in series])
            curves.append((f"{entry} / {attack}", (xs, ys)))
        for i, (names, (xs, ys)) in enumerate(_group_identical(curves)):
            label = " = ".join(names) + (" (identical)" if len(names) > 1 else "")
            ax.plot(
                xs, ys, marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % 4], label=_label(label, 34)
            )
            described.append(
                " = ".join(names)
                + ": "
                + ", ".join(f"{y:.1f} at {x:g}/255" for x, y in zip(xs, ys, strict=True))
            )
        ax.set_xlabel("eps (grey levels of 255)")
        ax.set_ylabel("AUROC (%)")
        ax.set_ylim(0, 100)
        ax.set_title("AUROC against eps", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    return Plot(
        src=src,
        alt="AUROC (%) against eps per method and attack. " + "; ".join(described),
        caption="Mean AUROC over cells and seeds against the attack radius eps; curves that coincide are "
        "drawn once and labelled with all their names.",
        kind="eps",
    )


# --- writing ---------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes | str) -> None:
    """Write a site file, world-readable (0644); folders 0755."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("bench", "templates/site"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["metric_names"] = METRIC_NAMES
    return env


def _prepare_out(out: Path) -> Path:
    """A fresh staging folder beside ``out``; refuses an ``out`` that is a file or a non-empty folder that
    is not a site this command wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; accepted: a folder (new, empty or an earlier site)")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).is_file():
        raise BadInput(f"--out {out} is a non-empty folder that bench report did not write; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(staging, 0o755)
    return staging


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class SiteResult:
    out: Path
    pages: list[str]
    files: int
    bytes: int


def build_site(
    inputs: list[Path], out: Path, published_dir: Path | None = None, plots: bool = True
) -> SiteResult:
    """Build the site from run folders or results CSV files into ``out`` (replaced as a whole)."""
    if not inputs:
        raise BadInput("no run folder given; accepted: one or more run folders or results CSV files")
    sources = [load_source(Path(p), i) for i, p in enumerate(inputs)]
    published = load_published(published_dir)
    staging = _prepare_out(out)
    try:
        pages = _render(sources, published, staging, plots=plots)
        _write(staging / SITE_MARKER, "written by bench report; the folder is replaced on the next build\n")
        _swap_into_place(staging, Path(out))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    return SiteResult(Path(out), pages, len(files), sum(p.stat().st_size for p in files))


def _render(sources: list[Source], published: pd.DataFrame, root: Path, plots: bool) -> list[str]:
    from importlib.resources import files

    df = combine(sources)
    warnings, run_warnings = warning_index(sources, df)
    env = _environment()
    assets = files("bench") / "templates" / "site"
    for name in ASSETS:
        _write(root / "assets" / name, (assets / name).read_bytes())

    # downloads: the inputs' tidy CSVs and manifests, and the merged CSV
    for source in sources:
        folder = root / "data" / source.slug
        _write(folder / source.results_name, _csv_bytes(source.df))
        if source.manifest:
            _write(folder / MANIFEST_FILE, json.dumps(source.manifest, indent=2, default=str))
    _write(root / "results.csv", _csv_bytes(pd_concat([s.df for s in sources])))

    groups = list(dict.fromkeys(zip(df["protocol"].astype(str), df["dataset"].astype(str), strict=True)))
    sources_info = _sources_info(sources, run_warnings)
    cite = method_sources()
    pages: list[str] = []
    boards = []
    for protocol, dataset in groups:
        group = df[(df["protocol"] == protocol) & (df["dataset"] == dataset)].copy()
        board = leaderboard(group, warnings)
        page = f"{slug(protocol)}-{slug(dataset)}.html"
        compare = published_comparison(group, published)
        boards.append({"board": board, "page": page, "published": compare, "group": group})

    method_pages = {m: f"method-{slug(m)}.html" for m in dict.fromkeys(df["method"].astype(str).tolist())}
    common = {
        "version": __version__,
        "sources": sources_info,
        "method_pages": method_pages,
        "group_pages": [(b["board"].protocol, b["board"].dataset, b["page"]) for b in boards],
    }

    for b in boards:
        board, group = b["board"], b["group"]
        plot_dir = f"plots/{b['page'][: -len('.html')]}"
        context = _group_context(board, group, sources, warnings, root, plot_dir, plots)
        html = env.get_template("group.html.j2").render(
            **common,
            title=f"{board.protocol} / {board.dataset}",
            board=board,
            published=b["published"],
            provenance=_provenance(group, sources),
            threat=_threat(group),
            **context,
        )
        _write(root / b["page"], html)
        pages.append(b["page"])

    for method, page in method_pages.items():
        mine = df[df["method"] == method]
        html = env.get_template("method.html.j2").render(
            **common,
            title=f"Method {method}",
            method=method,
            citation=cite.get(method),
            hyper=_hyper_rows(method, mine, sources, cite.get(method)),
            results=_method_results(method, boards),
            provenance=_provenance(mine, sources),
        )
        _write(root / page, html)
        pages.append(page)

    html = env.get_template("index.html.j2").render(
        **common,
        title="Leaderboards",
        boards=boards,
        threat=_threat(df),
        provenance=_provenance(df, sources),
        n_rows=len(df),
    )
    _write(root / "index.html", html)
    pages.insert(0, "index.html")
    return pages


def pd_concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    out = frame[COLUMNS].copy()
    for col in ("value", "eps", "fit_seconds", "attack_seconds"):
        out[col] = [("" if v != v else repr(round(float(v), 10))) for v in out[col]]
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _threat(df: pd.DataFrame) -> dict[str, Any]:
    ok = df[(df["status"] == "ok") & (df["attack"] != CLEAN)]
    eps = [float(e) for e in dict.fromkeys(ok["eps"].dropna().tolist()) if float(e) > 0]
    return {
        "eps": [_eps_entry(e) for e in eps],
        "budgets": budget_summary(df),
    }


def _sources_info(sources: list[Source], run_warnings: dict[str, list]) -> list[dict[str, Any]]:
    info = []
    for source in sources:
        info.append(
            {
                "slug": source.slug,
                "path": str(source.path),
                "run_ids": source.run_ids,
                "csv": f"data/{source.slug}/{source.results_name}",
                "manifest": f"data/{source.slug}/{MANIFEST_FILE}" if source.manifest else "",
                "superseded": source.superseded,
                "warnings": [w for r in source.run_ids for w in run_warnings.get(r, [])],
            }
        )
    return info


def _provenance(rows: pd.DataFrame, sources: list[Source]) -> list[dict[str, Any]]:
    """Per run that produced ``rows``: its input and downloads, bench versions, every git sha (with row
    counts), profiles, devices and dates (the manifest's start and end, else the rows' timestamps)."""
    out = []
    for run_id in dict.fromkeys(rows["run_id"].astype(str).tolist()):
        mine = rows[rows["run_id"] == run_id]
        source = sources[int(mine["_source"].iloc[0])]
        manifest = source.manifest if str(source.manifest.get("run_id", run_id)) == run_id else {}
        stamps = sorted(t for t in mine["timestamp"].astype(str) if t)
        out.append(
            {
                "run_id": run_id,
                "source": source.slug,
                "csv": f"data/{source.slug}/{source.results_name}",
                "manifest": f"data/{source.slug}/{MANIFEST_FILE}" if source.manifest else "",
                "bench_version": ", ".join(dict.fromkeys(mine["bench_version"].astype(str))) or "—",
                "shas": sha_counts(mine),
                "profile": ", ".join(dict.fromkeys(mine["profile"].astype(str))) or "—",
                "device": ", ".join(dict.fromkeys(mine["device"].astype(str))) or "—",
                "started": str(manifest.get("started") or (stamps[0] if stamps else "—")),
                "finished": str(manifest.get("finished") or (stamps[-1] if stamps else "—")),
                "rows": len(mine),
                "command": str(manifest.get("command") or ""),
            }
        )
    return out


def _cap_of(source: Source, profile: str) -> int | None:
    prof = source.manifest.get("profile")
    if isinstance(prof, dict) and "max_eval_per_side" in prof:
        return prof["max_eval_per_side"]
    from bench.config import PROFILES

    known = PROFILES.get(profile)
    return known.max_eval_per_side if known is not None else None


def _subsampled(cap: int | None, n_in: Any, n_out: Any, aggregate: bool) -> str:
    if aggregate:
        return "see its sets"
    if cap is None:
        return "no: every test image"
    sizes = [int(v) for v in (n_in, n_out) if v is not None and v == v]
    if any(v >= cap for v in sizes):
        return f"yes: at most {cap} per side"
    return f"no: under the cap of {cap}"


def _fmt_metric(values: pd.Series) -> tuple[str, str]:
    import numpy as np

    present = values.dropna().to_numpy(dtype=float)
    if present.size == 0:
        return "—", ""
    mean = float(np.mean(present))
    text = f"{100 * mean:.1f}"
    if present.size > 1:
        text += f" ± {100 * float(np.std(present, ddof=1)):.1f}"
    return text, f"{mean:.6f}"


def _group_context(
    board: Leaderboard,
    group: pd.DataFrame,
    sources: list[Source],
    warnings: dict,
    root: Path,
    plot_dir: str,
    plots: bool,
) -> dict[str, Any]:
    group = group.copy()
    group["_col"] = attack_columns(group)
    attacks = [c for c in board.columns if c != CLEAN]
    ok = _ok(group)

    def unit_warnings(part: pd.DataFrame) -> list[str]:
        lines = []
        for key in sorted(_unit_keys(part), key=str):
            for message in warnings.get(key, []):
                lines.append(f"seed {key[3]} {key[4]}: {message}")
        return list(dict.fromkeys(lines))

    # per-cell breakdown
    breakdown = []
    for entry in dict.fromkeys(group["_entry"].tolist()):
        mine = group[group["_entry"] == entry]
        for cell in dict.fromkeys(mine["cell"].tolist()):
            here = mine[mine["cell"] == cell]
            if (here["status"] != "ok").all():
                continue  # na cells: the reason is given once per method below the table
            here_ok = ok[(ok["_entry"] == entry) & (ok["cell"] == cell)]
            values = {}
            for col in board.columns:
                part = here_ok[here_ok["_col"] == col]
                stat = seed_stat(part.groupby("seed")["value"].mean()) if len(part) else Stat(float("nan"))
                values[col] = {"stat": stat, "warnings": unit_warnings(here[here["_col"] == col])}
            worst_cells, _ = worst_case_table(here_ok, attacks)
            worst = seed_stat(worst_cells.iloc[0]) if not worst_cells.empty else Stat(float("nan"))
            breakdown.append(
                {
                    "entry": entry,
                    "cell": str(cell),
                    "aggregate": str(cell).endswith(AGGREGATE_SUFFIX),
                    "values": values,
                    "worst": worst,
                }
            )

    # every metric per (entry, cell, attack)
    details = []
    for (entry, cell, col), part in group.groupby(["_entry", "cell", "_col"], sort=False):
        okp = part[part["status"] == "ok"]
        if okp.empty:
            continue
        metrics = {}
        for metric in DETAIL_METRICS:
            text, sort = _fmt_metric(okp.loc[okp["metric"] == metric].groupby("seed")["value"].mean())
            metrics[metric] = {"text": text, "sort": sort}
        source = sources[int(okp["_source"].iloc[0])]
        n_in = okp["n_in"].dropna()
        n_out = okp["n_out"].dropna()
        aggregate = str(cell).endswith(AGGREGATE_SUFFIX)
        cap = _cap_of(source, str(okp["profile"].iloc[0]))
        details.append(
            {
                "entry": entry,
                "cell": str(cell),
                "attack": str(col),
                "aggregate": aggregate,
                "metrics": metrics,
                "n_in": ", ".join(dict.fromkeys(str(int(v)) for v in n_in)) or "—",
                "n_out": ", ".join(dict.fromkeys(str(int(v)) for v in n_out)) or "—",
                "subsampled": _subsampled(
                    cap, n_in.max() if len(n_in) else None, n_out.max() if len(n_out) else None, aggregate
                ),
                "seeds": ", ".join(str(s) for s in dict.fromkeys(okp["seed"].tolist())),
                "warnings": unit_warnings(part),
            }
        )

    all_warnings = []
    for entry in dict.fromkeys(group["_entry"].tolist()):
        mine = group[group["_entry"] == entry]
        for key in sorted(_unit_keys(mine), key=str):
            for message in warnings.get(key, []):
                all_warnings.append(
                    {"entry": entry, "cell": key[2], "seed": key[3], "attack": key[4], "message": message}
                )

    figures: list[Plot] = []
    cell_figures: list[Plot] = []
    if plots:
        stem = plot_dir
        for maker, name in ((lambda rel: scatter_plot(root, rel, board), "scatter"),):
            plot = maker(f"{stem}/{name}.png")
            if plot:
                figures.append(plot)
        plot = grad_evals_plot(root, f"{stem}/auroc-vs-grad-evals.png", group)
        if plot:
            figures.append(plot)
        plot = eps_plot(root, f"{stem}/auroc-vs-eps.png", group)
        if plot:
            figures.append(plot)
        cell_figures = _cell_plots(root, stem, group, sources)
    return {
        "breakdown": breakdown,
        "details": details,
        "unit_warnings": all_warnings,
        "figures": figures,
        "cell_figures": cell_figures,
        "na_notes": [(r["entry"], r["na"]) for r in board.rows if r["na"]],
        "has_scores": any(s.scores_dir is not None for s in sources),
    }


def _cell_plots(root: Path, stem: str, group: pd.DataFrame, sources: list[Source]) -> list[Plot]:
    """ROC curves and score histograms per (entry, cell), from the raw scores of the lowest seed."""
    out = []
    ok = _plain(_ok(group))
    for (entry, cell), part in ok.groupby(["_entry", "cell"], sort=False):
        seed = int(min(part["seed"]))
        at_seed = part[part["seed"] == seed]
        source = sources[int(at_seed["_source"].iloc[0])]
        method = str(at_seed["method"].iloc[0])
        arrays = {}
        for attack in _ordered_columns(at_seed["attack"].astype(str).tolist()):
            loaded = load_scores(source, method, str(cell), seed, attack)
            if loaded is not None:
                arrays[attack] = loaded
        if not arrays:
            continue
        base = f"{stem}/{slug(str(entry))}-{slug(str(cell))}-seed{seed}"
        for maker, suffix in ((roc_plot, "roc"), (histogram_plot, "hist")):
            plot = maker(root, f"{base}-{suffix}.png", str(entry), str(cell), seed, arrays)
            if plot:
                plot.extra = {"entry": str(entry), "cell": str(cell)}
                out.append(plot)
        if source.scores_dir is not None:  # a run folder: its method's artifacts of this cell and seed
            artifacts = source.path / "artifacts" / method / f"{cell}-seed{seed}"
            for plot in artifact_pictures(root, base, artifacts, str(entry), str(cell)):
                plot.extra = {"entry": str(entry), "cell": str(cell)}
                out.append(plot)
    return out


def artifact_pictures(root: Path, base: str, folder: Path, entry: str, cell: str) -> list[Plot]:
    """A method's pictures of one cell and seed (RODEO's generated outliers): each ``NAME.npz`` holding an
    ``image`` array (height x width [x channels], uint8) drawn as ``NAME.png``, or a ``NAME.png`` as it is
    (a run folder of one's own: committed results hold pixels, never pictures)."""
    import numpy as np
    from PIL import Image

    plots = []
    for path in sorted(folder.glob("*.npz")) + sorted(folder.glob("*.png")):
        rel = f"{base}-{slug(path.stem)}.png"
        if path.suffix == ".npz":
            with np.load(path) as data:
                if "image" not in data.files:
                    continue
                image = data["image"]
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="png")
            _write(root / rel, buffer.getvalue())
        elif path.with_suffix(".npz").is_file():
            continue  # drawn from its pixels above
        else:
            _write(root / rel, path.read_bytes())
        alt = f"{entry} on {cell}: {path.stem}, a picture the method wrote of its training (artifacts/)"
        plots.append(Plot(rel, alt, f"{entry}, {cell}: {path.stem}", "artifact"))
    return plots


def _hyper_rows(method: str, rows: pd.DataFrame, sources: list[Source], cite: dict | None) -> list[dict]:
    """The method's hyperparameters as run, per input with a manifest, with the comment beside each field
    in the method's code (the paper's section they come from)."""
    out = []
    comments = (cite or {}).get("fields", {})
    for i in dict.fromkeys(rows["_source"].astype(int).tolist()):
        source = sources[i]
        config = source.manifest.get("config") if isinstance(source.manifest.get("config"), dict) else {}
        methods = config.get("methods") if isinstance(config.get("methods"), dict) else {}
        values = methods.get(method)
        out.append(
            {
                "run_ids": ", ".join(dict.fromkeys(rows.loc[rows["_source"] == i, "run_id"].astype(str))),
                "profile": ", ".join(dict.fromkeys(rows.loc[rows["_source"] == i, "profile"].astype(str))),
                "settings": ", ".join(str(s) for s in config.get("settings") or []) or "none",
                "fields": None
                if not isinstance(values, dict)
                else [
                    (str(k), json.dumps(v, default=str), comments.get(str(k), "")) for k, v in values.items()
                ],
            }
        )
    return out


def _method_results(method: str, boards: list[dict]) -> list[dict]:
    out = []
    for b in boards:
        for row in b["board"].rows:
            if row["method"] == method:
                out.append({"board": b["board"], "page": b["page"], "row": row})
    return out
