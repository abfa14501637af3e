"""Our numbers beside the papers': a Markdown table for the README (issue 12, Sec. 5).

``bench paper-table results/reference/* [--published results/published] [--papers rodeo]
[--compact]``
``bench paper-table --grid results/reference/*-reference``

For every published row that matches ours on (method, protocol, dataset, attack) and is a mean over cells
(the papers' Table 1 columns): our mean over the cells we ran
(``bench.results.published.published_comparison``), the published value, ours - published in points, the
profile ours ran in, and how many cells ours covers of the protocol's. A row over fewer cells than the
protocol has is marked *partial*: a reference grid still running is not a comparison yet. Rows whose
|difference| exceeds ``--gap`` (5 points) are marked, since each needs a diagnosis.

``--compact`` (the README's form) folds a method's attacks into one row, "clean / PGD / AA / A3" in each
of ours, published and difference, and the tables that print the same numbers (or some of them) into
one source ("RODEO Tables 1a, 3c, 5"); a table that prints another number for the same attack gets a row
of its own.

``--grid`` prints instead where the grids stand, per cell: one row per (data set, cell) that has rows, one
column per method, each entry the AUROC % for each attack that ran (clean / PGD / AA / A3); "(pending)"
for a method not run yet on a cell that others have reached.

Only finished groups count, in both tables: a (method, cell, seed) of a run folder whose rows lack one of
the attacks its manifest plans (a group still running, or one that failed) is left out, so a mean never
mixes cells that different attacks have reached, and a grid's folder prints the same tables while a group
is in flight as when it was last committed.

``--cells`` sets each cell of ours beside the papers' per-cell rows where a paper prints them (RODEO
Tables 3c-3d for its nd classes, EOE Tables 10-11 for BCE), in the compact form with the cell in a
column of its own; a cell without a finished group of ours has no row.

``--readme README.md`` rewrites, instead of printing, every block of that file fenced by
``<!-- paper_table ARGS -->`` and ``<!-- /paper_table -->`` with this module's output for ARGS (for
example ``--grid results/reference/*-reference``, globs expanded from the nearest folder above the file
that holds ``results/``), so the tables of README.md and docs/findings.md are generated from the committed
results; ``tests/test_readme_tables.py`` checks that they are.
"""

from __future__ import annotations

import argparse
import glob
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd

HEADER = (
    "| dataset | protocol | method | attack | ours | published | ours - published | profile | cells "
    "| source |"
)


def planned_cells(manifest: dict) -> tuple[tuple[str, str] | None, int]:
    """((dataset, protocol), number of cells) a run folder plans, from its manifest alone (no data files:
    a clone of the results can print the table): the last invocation's units over methods x seeds x
    attacks; (None, 0) when the manifest does not say."""
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    invocations = manifest.get("invocations") or [{}]
    try:
        per_cell = len(config["methods"]) * len(config["seeds"]) * len(config["attacks"])
        return (config["dataset"], config["protocol"]), int(invocations[-1]["units_total"]) // per_cell
    except (KeyError, TypeError, ZeroDivisionError):
        return None, 0


def finished_rows(sources: list) -> pd.DataFrame:
    """``combine(sources)`` without the rows of unfinished groups: a (source, method, cell unit, seed) whose
    non-error rows lack an attack that its source's manifest plans. Sources without planned attacks (a
    bare CSV) keep every row."""
    from bench.results.rows import combine
    from bench.store import unit_of

    df = combine(sources)
    if df.empty:
        return df
    planned = {}
    for i, source in enumerate(sources):
        config = source.manifest.get("config") if isinstance(source.manifest.get("config"), dict) else {}
        planned[i] = set(config.get("attacks") or ())
    group = list(zip(df["_source"], df["method"], [unit_of(c) for c in df["cell"]], df["seed"], strict=True))
    done = finished_groups(zip(group, df["attack"], df["status"], strict=True), lambda key: planned[key[0]])
    return df[[key in done for key in group]]


def finished_groups(rows, planned) -> set:
    """The group keys among ``rows`` ((key, attack, status) triples) whose non-error attacks cover
    ``planned(key)``: the one rule of a finished group (paper_table, bench study commit-finished)."""
    reached: dict = {}
    for key, attack, status in rows:
        attacks = reached.setdefault(key, set())
        if status != "error":
            attacks.add(attack)
    return {key for key, attacks in reached.items() if planned(key) <= attacks}


def comparison_rows(
    runs: list[Path], published_dir: Path, papers: list[str] | None = None, cells: bool = False
) -> list[dict]:
    """One dict per matched published mean-over-cells row, sorted by dataset, protocol, method, attack;
    with ``cells``, one per published per-cell row (RODEO Tables 3c-3d, EOE Tables 10-11) whose cell has a
    finished group of ours, sorted by dataset, protocol, method, cell, attack."""
    from bench.config import get_profile
    from bench.registry import DATASETS, PROTOCOLS
    from bench.results.published import load_published, published_comparison
    from bench.results.rows import load_source

    sources = [load_source(path, i) for i, path in enumerate(runs)]
    planned = {key: cells for source in sources for key, cells in [planned_cells(source.manifest)] if key}
    df = finished_rows(sources)
    published = load_published(published_dir)
    if papers:
        published = published[published["source"].str.split().str[0].str.lower().isin(papers)]
    is_mean = published["cell"].str.lower().isin(["mean", ""])
    published = published[~is_mean] if cells else published[is_mean]
    rows = []
    for match in published_comparison(df, published):
        if cells and match["ours"].missing:  # a cell the grid has not reached
            continue
        mine = df[
            (df["method"] == match["method"])
            & (df["protocol"] == match["protocol"])
            & (df["dataset"] == match["dataset"])
            & (df["attack"] == match["attack"])
            & (df["status"] == "ok")
            & (df["metric"] == "auroc")
        ]
        ran = len(set(mine["cell"]))
        total = planned.get((match["dataset"], match["protocol"]))
        if total is None:  # a bare results CSV: count the protocol's cells on the data set (needs its files)
            protocol = PROTOCOLS.get(match["protocol"])()
            dataset = DATASETS.get(match["dataset"])()
            profile_name = match["profile"].split(",")[0].strip()
            total = len(protocol.cell_ids(dataset, get_profile(profile_name), 0))
        rows.append({**match, "cells_ran": ran, "cells_total": total})
    rows.sort(
        key=lambda r: (
            r["dataset"],
            r["protocol"],
            r["method"],
            _cell_order(r["cell"]) if cells else ("", 0),
            ATTACK_ORDER.get(r["attack"], 9),
        )
    )
    return rows


def markdown(rows: list[dict], gap: float = 5.0) -> str:
    lines = [HEADER, "|" + " --- |" * (HEADER.count("|") - 1)]
    for r in rows:
        diff = r["diff"]
        flag = ""
        if r["diff_value"] != "" and abs(float(r["diff_value"])) > gap:
            flag = " (gap)"
        cells = f"{r['cells_ran']} of {r['cells_total']}"
        if r["cells_ran"] < r["cells_total"]:
            cells += " (partial)"
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['method']} | {r['attack']} | {r['ours'].text()} | "
            f"{r['published']} | {diff}{flag} | {r['profile']} | {cells} | {r['source']} |"
        )
    return "\n".join(lines)


ATTACK_ORDER = {"clean": 0, "pgd": 1, "aa": 2, "a3": 3, "blackbox": 4}

COMPACT_HEADER = (
    "| data | protocol | method | attack | ours | published | ours - published | cells | source |"
)


def _table_of(source: str) -> tuple[str, str, str]:
    """("RODEO", "1a", rest) from "RODEO Table 1a, row ..., column ... (published as bce)"."""
    head, _, rest = source.partition(", ")
    paper, _, table = head.partition(" Table ")
    alias = rest[rest.find(" (published as ") :] if " (published as " in rest else ""
    return paper, table, alias


def compact_markdown(rows: list[dict], gap: float = 5.0, per_cell: bool = False) -> str:
    """One row per (data set, protocol, method, published numbers): the attacks joined in attack order,
    the tables that print those numbers (or a subset of them) joined ("RODEO Tables 1a, 3c, 5"). A (gap)
    mark follows any attack whose |ours - published| exceeds ``gap`` points. ``per_cell`` (rows from
    ``comparison_rows(..., cells=True)``): one row per cell as well, the cell in the fourth column."""
    by_method: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        key = (r["dataset"], r["protocol"], r["method"]) + ((r["cell"],) if per_cell else ())
        by_method.setdefault(key, {}).setdefault(r["source"].partition(", ")[0], []).append(r)
    header = CELLS_HEADER if per_cell else COMPACT_HEADER
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for key, tables in by_method.items():
        # tables that print the same (attack, value) pairs fold together, in first-seen order
        folded: dict[tuple, list[str]] = {}
        members: dict[tuple, list[dict]] = {}
        for table_rows in tables.values():
            ordered = sorted(table_rows, key=lambda r: ATTACK_ORDER.get(r["attack"], 9))
            numbers = tuple((r["attack"], r["published"]) for r in ordered)
            folded.setdefault(numbers, []).append(ordered[0]["source"])
            members.setdefault(numbers, ordered)
        kept: dict[tuple, list[str]] = {}
        for numbers in sorted(folded, key=len, reverse=True):  # a table printing a subset folds in too
            home = next((k for k in kept if set(numbers) <= set(k)), None)
            kept.setdefault(home or numbers, []).extend(folded[numbers])
        for numbers, sources in kept.items():
            mine = members[numbers]
            paper, _, alias = _table_of(sources[0])
            names = sorted((_table_of(s)[1] for s in sources), key=_table_order)
            source = f"{paper} Table{'s' if len(names) > 1 else ''} {', '.join(names)}{alias}"
            diffs = [
                r["diff"] + (" (gap)" if r["diff_value"] != "" and abs(float(r["diff_value"])) > gap else "")
                for r in mine
            ]
            cells = f"{mine[0]['cells_ran']} of {mine[0]['cells_total']}"
            if mine[0]["cells_ran"] < mine[0]["cells_total"]:
                cells += " (partial)"
            attacks = " / ".join(ATTACK_NAMES.get(r["attack"], r["attack"]) for r in mine)
            ours = " / ".join(r["ours"].text() for r in mine)
            published = " / ".join(r["published"] for r in mine)
            differences = " / ".join(diffs)
            if per_cell:
                lines.append(
                    f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {attacks} | {ours} | {published} "
                    f"| {differences} | {source} |"
                )
            else:
                lines.append(
                    f"| {key[0]} | {key[1]} | {key[2]} | {attacks} | {ours} | {published} | {differences} "
                    f"| {cells} | {source} |"
                )
    return "\n".join(lines)


CELLS_HEADER = "| data | protocol | method | cell | attack | ours | published | ours - published | source |"

ATTACK_NAMES = {"clean": "clean", "pgd": "PGD", "aa": "AA", "a3": "A3"}


def _table_order(name: str) -> tuple[int, str]:
    """Table names in reading order: "1a" < "3c" < "5" < "10"."""
    digits = name[: len(name) - len(name.lstrip("0123456789"))]
    return int(digits or 0), name[len(digits) :]


def _cell_order(cell: str) -> tuple[str, int]:
    """class2 < class10; split0 < split1 (the protocols' cell names end in their index)."""
    stem = cell.rstrip("0123456789")
    return stem, int(cell[len(stem) :] or -1)


def grid_markdown(runs: list[Path]) -> str:
    """Per-cell AUROC % of the run folders, one table per protocol: | data, cell | method ... |, each
    entry the attacks of a finished group joined by " / " in attack order;
    multi-set cells give their ``<cell>:mean`` rows. Columns: the methods the folders plan (manifest)."""
    from bench.results.rows import load_source
    from bench.store import AGGREGATE_SUFFIX, unit_of

    sources = [load_source(path, i) for i, path in enumerate(runs)]
    df = finished_rows(sources)
    ok = df[(df["status"] == "ok") & (df["metric"] == "auroc")]
    ok = ok[~ok["cell"].str.contains(":") | ok["cell"].str.endswith(AGGREGATE_SUFFIX)]
    ok = ok.assign(unit=[unit_of(c) for c in ok["cell"]])
    planned: dict[str, list[str]] = {}
    for source in sources:
        config = source.manifest.get("config") if isinstance(source.manifest.get("config"), dict) else {}
        for protocol in [config.get("protocol")] if config.get("protocol") else []:
            methods = planned.setdefault(protocol, [])
            methods += [m for m in config.get("methods") or {} if m not in methods]
    tables = []
    for protocol in sorted(set(ok["protocol"]) | set(planned)):
        rows = ok[ok["protocol"] == protocol]
        methods = planned.get(protocol, [])
        methods = methods + [m for m in dict.fromkeys(rows["method"]) if m not in methods]
        lines = [
            f"| data, {protocol} cell | " + " | ".join(methods) + " |",
            "|" + " --- |" * (len(methods) + 1),
        ]
        keys = sorted(
            set(zip(rows["dataset"], rows["unit"], strict=True)), key=lambda k: (k[0], _cell_order(k[1]))
        )
        for dataset, cell in keys:
            here = rows[(rows["dataset"] == dataset) & (rows["unit"] == cell)]
            entries = []
            for method in methods:
                mine = here[here["method"] == method]
                values = sorted(
                    (ATTACK_ORDER.get(a, 9), float(v))
                    for a, v in zip(mine["attack"], mine["value"], strict=True)
                )
                entries.append(" / ".join(f"{100 * v:.1f}" for _, v in values) if values else "(pending)")
            lines.append(f"| {dataset} {cell} | " + " | ".join(entries) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


BLOCK = re.compile(r"(<!-- paper_table (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /paper_table -->)", re.S)


def render(argv: list[str]) -> str:
    """This module's output for a command line (``--grid``/``--compact``/plain), as text."""
    args = parse_args(argv)
    if args.grid:
        return grid_markdown(args.runs)
    if not args.published.is_dir():
        raise BadInput(f"--published {args.published} is not a folder; accepted: a folder of CSV files")
    rows = comparison_rows(args.runs, args.published, args.papers, cells=args.cells)
    if args.cells:
        return compact_markdown(rows, args.gap, per_cell=True)
    return compact_markdown(rows, args.gap) if args.compact else markdown(rows, args.gap)


def refresh_readme(text: str, folder: Path) -> str:
    """``text`` with every ``<!-- paper_table ARGS -->`` block's body replaced by the output for ARGS
    (paths and globs relative to ``folder``, the README's)."""

    def one(match: re.Match) -> str:
        argv = []
        for word in shlex.split(match["args"]):
            hits = sorted(glob.glob(word, root_dir=folder)) if any(c in word for c in "*?[") else []
            argv += hits or [word]
        argv = [str(folder / a) if (folder / a).exists() and not a.startswith("-") else a for a in argv]
        if "--published" not in argv:
            argv += ["--published", str(folder / "results" / "published")]
        return f"{match[1]}\n{render(argv)}\n\n{match[4]}"

    return BLOCK.sub(one, text)


def document_root(path: Path) -> Path:
    """The folder a document's block paths are relative to: the nearest one above ``path`` that holds
    ``results/`` (the repository's root for README.md and docs/findings.md), else the document's own."""
    for folder in path.resolve().parents:
        if (folder / "results").is_dir():
            return folder
    return path.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench paper-table", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--published", type=Path, default=Path("results/published"))
    parser.add_argument("--papers", nargs="+", default=None, help="e.g. rodeo atom (default: all)")
    parser.add_argument("--gap", type=float, default=5.0)
    parser.add_argument("--grid", action="store_true", help="per-cell AUROC of each run instead")
    parser.add_argument("--compact", action="store_true", help="a method's attacks in one row (README)")
    parser.add_argument(
        "--cells", action="store_true", help="per cell, beside the papers' per-cell tables (compact form)"
    )
    parser.add_argument("--readme", type=Path, default=None, help="rewrite this file's paper_table blocks")
    args = parser.parse_args(argv)
    if not args.runs and args.readme is None:
        parser.error("the following arguments are required: runs (or --readme FILE)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.readme is not None:
            if not args.readme.is_file():
                raise BadInput(f"--readme {args.readme} is not a file; accepted: a Markdown file")
            text = args.readme.read_text(encoding="utf-8")
            blocks = len(BLOCK.findall(text))
            if not blocks:
                raise BadInput(f"--readme {args.readme} has no <!-- paper_table ARGS --> block")
            new = refresh_readme(text, document_root(args.readme))
            if new != text:
                args.readme.write_text(new, encoding="utf-8")
            print(f"{args.readme}: {blocks} blocks, {'rewritten' if new != text else 'unchanged'}")
            return 0
        print(render(argv if argv is not None else sys.argv[1:]))
    except BadInput as error:
        print(f"bench paper-table: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
