"""Our numbers beside the papers': a Markdown table for the README (issue 12, Sec. 5).

``python -m bench.paper_table results/reference/* [--published results/published] [--papers rodeo]``

For every published row that matches ours on (method, protocol, dataset, attack) and is a mean over cells
(the papers' Table 1 columns): our mean over the cells we ran (``bench.site.published_comparison``), the
published value, ours - published in points, the profile ours ran in, and how many cells ours covers of
the protocol's. A row over fewer cells than the protocol has is marked *partial*: a reference grid still
running is not a comparison yet. Rows whose |difference| exceeds ``--gap`` (5 points) are marked, since
each needs a diagnosis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BadInput

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


def comparison_rows(runs: list[Path], published_dir: Path, papers: list[str] | None = None) -> list[dict]:
    """One dict per matched published mean-over-cells row, sorted by dataset, protocol, method, attack."""
    from bench.config import get_profile
    from bench.registry import DATASETS, PROTOCOLS
    from bench.site import combine, load_published, load_source, published_comparison

    sources = [load_source(path, i) for i, path in enumerate(runs)]
    planned = {key: cells for source in sources for key, cells in [planned_cells(source.manifest)] if key}
    df = combine(sources)
    published = load_published(published_dir)
    if papers:
        published = published[published["source"].str.split().str[0].str.lower().isin(papers)]
    published = published[published["cell"].str.lower().isin(["mean", ""])]
    attack_order = {"clean": 0, "pgd": 1, "aa": 2, "a3": 3, "blackbox": 4}
    rows = []
    for match in published_comparison(df, published):
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
    rows.sort(key=lambda r: (r["dataset"], r["protocol"], r["method"], attack_order.get(r["attack"], 9)))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paper_table", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--published", type=Path, default=Path("results/published"))
    parser.add_argument("--papers", nargs="+", default=None, help="e.g. rodeo atom (default: all)")
    parser.add_argument("--gap", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        if not args.published.is_dir():
            raise BadInput(f"--published {args.published} is not a folder; accepted: a folder of CSV files")
        rows = comparison_rows(args.runs, args.published, args.papers)
    except BadInput as error:
        print(f"paper_table: error: {error}", file=sys.stderr)
        return 2
    print(markdown(rows, args.gap))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
