"""The leaderboard site: ``bench report RUN_DIR... --out SITE_DIR``.

A static site built from one or more run folders (or tidy results CSV files): an index with one
leaderboard per (protocol, dataset), laid out like RODEO's Table 1, a page per (protocol, dataset) with the
per-cell breakdown and every metric, a page per method with its hyperparameters as run and its paper,
the threat model and the budgets actually spent, plots from the raw scores, the published numbers beside
ours, and the provenance of every number. Jinja2 templates (autoescaped) under ``bench/templates/site/``;
no server and no external asset, so the pages work when opened from disk.

Numbers (computed by :mod:`bench.results.stats`, the pages only lay them out):
- a leaderboard value is the mean over the (non-aggregate) cells of a seed, then the mean over seeds,
  with the sample standard deviation (ddof 1) over seeds where there are several;
- the worst case is the minimum over the attacks (clean excluded) per cell and seed, then averaged the
  same way (RobustBench's headline: a detector is as robust as its weakest point per cell);
- the drop is clean minus worst case per cell and seed, averaged the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.errors import BadInput
from bench.files import write_public
from bench.plots import Plot, cell_plots, eps_plot, grad_evals_plot, scatter_plot
from bench.results.methods import method_sources
from bench.results.published import load_published, published_comparison
from bench.results.rows import (
    CLEAN,
    MANIFEST_FILE,
    METRIC_NAMES,
    STAND_IN_NOTE,
    Source,
    combine,
    load_source,
    slug,
    stand_in,
)
from bench.results.stats import (
    Leaderboard,
    Stat,
    attack_columns,
    budget_summary,
    eps_entry,
    leaderboard,
    ok_rows,
    seed_stat,
    sha_counts,
    unit_keys,
    warning_index,
    worst_case_table,
)
from bench.store import AGGREGATE_SUFFIX, COLUMNS

if TYPE_CHECKING:
    import pandas as pd

SITE_MARKER = ".bench-site"
DETAIL_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "id_acc")
ASSETS = ("site.css", "sort.js")


# --- input -----------------------------------------------------------------------------------------------


# --- statistics ------------------------------------------------------------------------------------------


# --- threat model and budgets ----------------------------------------------------------------------------


# --- warnings --------------------------------------------------------------------------------------------


# --- published numbers -----------------------------------------------------------------------------------


# --- method citations ------------------------------------------------------------------------------------


# --- plots -----------------------------------------------------------------------------------------------


# --- writing ---------------------------------------------------------------------------------------------


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
    env.globals["stand_in_note"] = STAND_IN_NOTE
    return env


def _prepare_out(out: Path) -> Path:
    """A fresh staging folder beside ``out``; refuses an ``out`` that is a file or a non-empty folder that
    is not a site this command wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; accepted: a folder (new, empty or an earlier site)")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise BadInput(f"--out {out} holds the current folder; accepted: a folder below it or elsewhere")
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
    inputs: list[Path],
    out: Path,
    published_dir: Path | None = None,
    plots: bool = True,
    include_host: bool = False,
) -> SiteResult:
    """Build the site from run folders or results CSV files into ``out`` (replaced as a whole). The inputs
    are shown by their paths relative to their common folder; hosts, platforms, command lines and
    absolute paths of the manifests are left out unless ``include_host``."""
    if not inputs:
        raise BadInput("no run folder given; accepted: one or more run folders or results CSV files")
    sources = [load_source(Path(p), i) for i, p in enumerate(inputs)]
    shown = relative_paths([source.path for source in sources])
    for source, path in zip(sources, shown, strict=True):
        source.shown_path = str(source.path) if include_host else path
        source.manifest = source.manifest if include_host else public_manifest(source.manifest)
    published = load_published(published_dir)
    staging = _prepare_out(out)
    try:
        pages = _render(sources, published, staging, plots=plots)
        write_public(
            staging / SITE_MARKER, "written by bench report; the folder is replaced on the next build\n"
        )
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
        write_public(root / "assets" / name, (assets / name).read_bytes())

    # downloads: the inputs' tidy CSVs and manifests, and the merged CSV
    for source in sources:
        folder = root / "data" / source.slug
        write_public(folder / source.results_name, _csv_bytes(source.df))
        if source.manifest:
            write_public(folder / MANIFEST_FILE, json.dumps(source.manifest, indent=2, default=str))
    write_public(root / "results.csv", _csv_bytes(pd_concat([s.df for s in sources])))

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
        write_public(root / b["page"], html)
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
            check_summary=method_warning_summary(method, df, sources),
            provenance=_provenance(mine, sources),
        )
        write_public(root / page, html)
        pages.append(page)

    html = env.get_template("index.html.j2").render(
        **common,
        title="Leaderboards",
        boards=boards,
        threat=_threat(df),
        provenance=_provenance(df, sources),
        n_rows=len(df),
    )
    write_public(root / "index.html", html)
    pages.insert(0, "index.html")
    return pages


PRIVATE_KEYS = ("host", "platform", "command", "user")  # manifest entries kept off a site (--include-host)
# an absolute or home path of two or more parts, at the start of a string or after a space, quote or "("
_ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[\s'\"(=]))[~/][^\s'\"()]*/[^\s'\"()]+")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


def relative_paths(paths: list[Path]) -> list[str]:
    """Each path relative to the folder that holds them all (a single input: its own name)."""
    resolved = [Path(p).resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return [str(p.relative_to(common)) for p in resolved]


def public_manifest(value: Any) -> Any:
    """A manifest as a site publishes it: without the host, platform, user and command lines, and with
    every absolute path cut to ``.../<its last part>``."""
    if isinstance(value, dict):
        return {k: public_manifest(v) for k, v in value.items() if k not in PRIVATE_KEYS}
    if isinstance(value, list):
        return [public_manifest(v) for v in value]
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], value)
    return value


def neutralise_formula(value: Any) -> Any:
    """A text field that a spreadsheet would run as a formula (leading ``= + - @``, tab, CR), prefixed
    with ``'`` (the usual CSV-injection guard); anything else unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def pd_concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    out = frame[COLUMNS].copy()
    for col in out.columns:
        out[col] = [neutralise_formula(v) for v in out[col]]  # numbers are not strings: unchanged
    for col in ("value", "eps", "fit_seconds", "attack_seconds"):
        out[col] = [("" if v != v else repr(round(float(v), 10))) for v in out[col]]
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _threat(df: pd.DataFrame) -> dict[str, Any]:
    ok = df[(df["status"] == "ok") & (df["attack"] != CLEAN)]
    eps = [float(e) for e in dict.fromkeys(ok["eps"].dropna().tolist()) if float(e) > 0]
    return {
        "eps": [eps_entry(e) for e in eps],
        "budgets": budget_summary(df),
    }


def _sources_info(sources: list[Source], run_warnings: dict[str, list]) -> list[dict[str, Any]]:
    info = []
    for source in sources:
        info.append(
            {
                "slug": source.slug,
                "path": source.shown_path,
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
    ok = ok_rows(group)

    def unit_warnings(part: pd.DataFrame) -> list[str]:
        lines = []
        for key in sorted(unit_keys(part), key=str):
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
                    "stand_in": stand_in(here),
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
        for key in sorted(unit_keys(mine), key=str):
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
        cell_figures = cell_plots(root, stem, group, sources)
    return {
        "breakdown": breakdown,
        "details": details,
        "checks": group_checks(group, sources),
        "unit_warnings": all_warnings,
        "figures": figures,
        "cell_figures": cell_figures,
        "na_notes": [(r["entry"], r["na"]) for r in board.rows if r["na"]],
        "has_scores": any(s.scores_dir is not None for s in sources),
    }


def group_checks(group: pd.DataFrame, sources: list[Source]) -> list[dict]:
    """Every validity check (``checks.csv``, bench.checks) of the group's units, tripped or not."""
    from bench.checks import read_checks

    units = set(unit_keys(group))
    found = []
    for index in dict.fromkeys(group["_source"].tolist()):
        source = sources[int(index)]
        if not source.path.is_dir():
            continue
        for record in read_checks(source.path):
            key = (record["run_id"], record["method"], record["cell"], int(record["seed"]), record["attack"])
            if key in units:
                found.append({**record, "tripped": record["tripped"] == "1"})
    return found


def method_warning_summary(method: str, df: pd.DataFrame, sources: list[Source]) -> list[dict]:
    """Per (protocol, dataset, check): how many of the method's units tripped it, of how many checked."""
    from bench.checks import read_checks

    counts: dict[tuple, list[int]] = {}
    places = {
        (str(r), str(p), str(d))
        for r, p, d in df.loc[df["method"] == method, ["run_id", "protocol", "dataset"]].itertuples(
            index=False
        )
    }
    for source in sources:
        if not source.path.is_dir():
            continue
        where = {r: (p, d) for r, p, d in places}
        for record in read_checks(source.path):
            if record["method"] != method or record["run_id"] not in where:
                continue
            entry = counts.setdefault((*where[record["run_id"]], record["check"]), [0, 0])
            entry[0] += record["tripped"] == "1"
            entry[1] += 1
    return [
        {"protocol": p, "dataset": d, "check": c, "tripped": n, "checked": total}
        for (p, d, c), (n, total) in sorted(counts.items())
    ]


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
