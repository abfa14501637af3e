"""Which classes an osr split's AUROC is lost on: per unknown class and per known class (issue 12, Sec. 5).

``BENCH_DATA=... bench study osr-per-class results/reference/mnist-osr-reference
[--methods rodeo atom] [--cells split3] [--out results/osr_per_class/mnist.csv]``

A split's AUROC pools four unknown classes against six known ones. From the scores a grid stored
(``scores/<method>/<cell>/seed0-<attack>.npz``; nothing is retrained or attacked here) and the cell's
fixed test sample, rebuilt with the protocol's own seed and cap, it computes for every method, cell and
attack (clean, and each attack's attacked scores):

- ``unknown``: the AUROC of all the known-class test images against the images of one unknown class;
- ``known``: the AUROC of the images of one known class against all the unknown-class images.

Outliers are the positives, as in every AUROC of the harness. ``--markdown METHOD --from CSV`` prints,
from rows written before, METHOD's clean AUROC per class and cell with the other methods' range beside
it (the tables of ``results/osr_per_class/README.md``).

The rebuilt sample is checked against the stored outlier flags, so a sample drawn differently is refused
rather than mislabelled. Prints one CSV row per (method, cell, attack, side, class).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import for_dataset, get_profile
from bench.metrics import auroc
from bench.protocols import _cap
from bench.registry import DATASETS, PROTOCOLS


def test_labels(dataset, profile, protocol, cell_id: str) -> np.ndarray:
    """Original class labels of a cell's test sample, in the order of its stored scores."""
    split = int(cell_id.removeprefix("split"))
    known = protocol.known_classes(dataset.num_classes, split)
    rng = np.random.default_rng(protocol.sample_seed(dataset, cell_id))
    labels = dataset.test_labels.numpy()
    is_in = np.isin(labels, known)
    idx_in = _cap(np.flatnonzero(is_in), profile.max_eval_per_side, rng)
    idx_out = _cap(np.flatnonzero(~is_in), profile.max_eval_per_side, rng)
    return labels[np.concatenate([idx_in, idx_out])]


def markdown_table(rows: pd.DataFrame, method: str) -> str:
    """``method``'s clean AUROC (%) per (side, class) and cell, the other methods' min-max beside it."""
    clean = rows[rows.attack == "clean"]
    if method not in set(clean.method):
        raise ValueError(f"no clean rows of {method!r}; methods here: {', '.join(sorted(set(clean.method)))}")
    ours = clean[clean.method == method].pivot_table(
        index=["side", "class_name"], columns="cell", values="auroc"
    )
    others = clean[clean.method != method].groupby(["side", "class_name", "cell"]).auroc.agg(["min", "max"])
    cells = sorted(clean.cell.unique())
    lines = ["| side | class | " + " | ".join(cells) + " |", "| --- | --- |" + " --- |" * len(cells)]
    for side, name in ours.index:
        entries = []
        for cell in cells:
            value = ours.loc[(side, name)].get(cell, float("nan"))
            if pd.isna(value):
                entries.append("")
                continue
            if (side, name, cell) not in others.index:
                entries.append(f"{value * 100:.1f}")
                continue
            low, high = others.loc[(side, name, cell)] * 100
            entries.append(f"{value * 100:.1f} ({low:.0f}-{high:.0f})")
        lines.append(f"| {side} | {name} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench study osr-per-class", description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path, nargs="?", help="a results folder of an osr grid")
    parser.add_argument("--methods", nargs="+", help="default: every method with stored scores")
    parser.add_argument("--cells", nargs="+", help="default: every cell with stored scores")
    parser.add_argument("--out", type=Path, help="also write the rows to this CSV")
    parser.add_argument("--markdown", metavar="METHOD", help="print METHOD's table from --from instead")
    parser.add_argument("--from", dest="source", type=Path, help="a CSV this script wrote")
    args = parser.parse_args(argv)
    if args.markdown:
        if args.source is None:
            parser.error("--markdown needs --from CSV")
        try:
            print(markdown_table(pd.read_csv(args.source), args.markdown))
        except ValueError as error:
            parser.error(str(error))
        return
    if args.grid is None:
        parser.error("name an osr grid's results folder (or --markdown METHOD --from CSV)")
    manifest = json.loads((args.grid / "manifest.json").read_text())["config"]
    name, profile_name = manifest["dataset"], manifest["profile"]
    if manifest["protocol"] != "osr":
        parser.error(f"{args.grid} holds protocol {manifest['protocol']!r}; this measures osr only")
    builder = DATASETS.get(name)
    dataset = builder()
    profile = for_dataset(get_profile(profile_name), builder)
    protocol = PROTOCOLS.get("osr")()
    rows = ["method,dataset,cell,attack,side,class,class_name,n,auroc"]
    methods = args.methods or sorted(p.name for p in (args.grid / "scores").iterdir())
    for method in methods:
        cells = args.cells or sorted(p.name for p in (args.grid / "scores" / method).iterdir())
        for cell_id in cells:
            labels = test_labels(dataset, profile, protocol, cell_id)
            known = protocol.known_classes(dataset.num_classes, int(cell_id.removeprefix("split")))
            for path in sorted((args.grid / "scores" / method / cell_id).glob("seed0-*.npz")):
                stored = np.load(path, allow_pickle=False)
                is_outlier = stored["test__is_outlier"]
                if not np.array_equal(is_outlier, ~np.isin(labels, known)):
                    sys.exit(f"error: {path}: the rebuilt test sample does not match its outlier flags")
                attack = path.stem.removeprefix("seed0-")
                scores = stored["test__clean" if attack == "clean" else "test__attacked"]
                for c in range(dataset.num_classes):
                    side = "known" if c in known else "unknown"
                    pick = (labels == c) | (is_outlier if side == "known" else ~is_outlier)
                    value = auroc(scores[pick], is_outlier[pick])
                    n = int((labels == c).sum())
                    rows.append(
                        f"{method},{name},{cell_id},{attack},{side},{c},{dataset.class_names[c]},{n},{value:.4f}"
                    )
    text = "\n".join(rows) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
