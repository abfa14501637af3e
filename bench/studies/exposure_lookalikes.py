"""How much of RODEO's kept exposure looks like a known class, per osr split (issue 12, Sec. 5).

``BENCH_DATA=... BENCH_CACHE=... bench study exposure-lookalikes --dataset mnist
[--cells split0 split3] [--confidence 0.9]``

RODEO trains class K+1 on the generated images its CLIP filter kept and scores a test image by the
probability of that class. A kept image that a plain classifier of the same known classes reads as a
confident member of known class c teaches the detector that images like c's are outliers, and c's real
test images then score high. For every chosen osr cell this takes the grid's own exposure (from the
cache, with the grid's code: ``results/reference/README.md``; a cell whose exposure is not cached is
skipped with a line on standard error, not regenerated) and the reference profile's msp classifier of
the same split (from the cache, or trained as ``bench run`` trains it) and prints, per known class c:

- ``generated_from``: kept images generated from c's training images (RODEO edits each inlier);
- ``read_as``: kept images the classifier assigns to c with max softmax >= ``--confidence``;
- ``read_as_share``: that count over all kept images.

``--correlate PER_CLASS_CSV --from LOOKALIKES_CSV`` prints, from rows written before, the Spearman
correlation between a known class's ``read_as_share`` and RODEO's clean AUROC of that class against the
unknowns (``bench study osr-per-class``'s ``known`` rows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.execute import load_or_fit
from bench.registry import DATASETS, PROTOCOLS
from bench.studies.validation import build_method


def correlation(lookalikes: pd.DataFrame, per_class: pd.DataFrame) -> tuple[float, int]:
    """Spearman rho between a known class's look-alike share and RODEO's clean AUROC for it; pairs."""
    known = per_class[
        (per_class.method == "rodeo") & (per_class.attack == "clean") & (per_class.side == "known")
    ]
    merged = lookalikes.astype({"class_name": str}).merge(
        known.astype({"class_name": str})[["cell", "class_name", "auroc"]], on=["cell", "class_name"]
    )
    return float(merged.read_as_share.corr(merged.auroc, method="spearman")), len(merged)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench study exposure-lookalikes", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--cells", nargs="+", default=["split0", "split1", "split2", "split3", "split4"])
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--correlate", type=Path, metavar="PER_CLASS_CSV")
    parser.add_argument("--from", dest="source", type=Path, metavar="LOOKALIKES_CSV")
    args = parser.parse_args(argv)
    if args.correlate:
        if args.source is None:
            parser.error("--correlate needs --from LOOKALIKES_CSV")
        rho, pairs = correlation(pd.read_csv(args.source), pd.read_csv(args.correlate))
        print(f"Spearman rho {rho:.2f} over {pairs} (split, known class) pairs")
        return
    builder = DATASETS.get(args.dataset)
    dataset = builder()
    profile = for_dataset(get_profile("reference"), builder)
    cache = DetectorCache()
    rodeo = build_method("rodeo", {})
    print("dataset,cell,known_class,class_name,generated_from,read_as,read_as_share,kept")
    for cell in PROTOCOLS.get("osr")().cells(dataset, profile, 0, "cpu"):
        if cell.cell_id not in args.cells:
            continue
        task = cell.task
        hit = cache.load_tensors("exposures", rodeo.exposure_payload(task))
        if hit is None:
            print(
                f"{cell.cell_id}: RODEO's exposure is not in {cache.root}; skipped (not regenerated)",
                file=sys.stderr,
            )
            continue
        tensors, _ = hit
        kept = tensors["kept"]
        images = tensors["images"][kept]
        origin = task.labels[tensors["source_index"][kept]]
        classifier = load_or_fit("msp", build_method("msp", {}), task, cache, "cpu")
        with torch.inference_mode():
            probs = torch.softmax(classifier.network(images)[:, : task.num_classes], dim=1)
        confidence, predicted = probs.max(dim=1)
        confident = confidence >= args.confidence
        for k, name in enumerate(task.class_names):
            read_as = int((confident & (predicted == k)).sum())
            print(
                f"{args.dataset},{cell.cell_id},{k},{name},{int((origin == k).sum())},{read_as},"
                f"{read_as / max(len(images), 1):.4f},{len(images)}",
                flush=True,
            )
