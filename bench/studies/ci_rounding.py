"""How far the ci grid's AUROCs move when only the floating-point rounding of training changes.

The ci profile is bit-for-bit repeatable on one machine (bench/determinism.py), but two hosts of the same
CPU kind can still round differently (CI on a fresh x86_64-intel-avx512-amx host, stop 25: ntom's and atom's
nd class1 detectors came out with another digest and moved by up to 0.0105; README "Regression baseline").
This script measures that sensitivity here by changing the summation order and nothing else: it reruns the
part of the ci grid that ``.ci/run`` reruns (``python -m bench.baseline --ci-part``) in this process with
``bench.determinism.THREADS`` set to ``--threads`` instead of 2, from a fresh cache, merges the rows and
prints, per method, the largest AUROC gap from the committed baseline of this CPU kind over the rows whose
detector changed. ``bench.baseline.TRAINING_TOLERANCE`` is chosen from it.

    BENCH_CACHE=$(mktemp -d) bench study ci-rounding --threads 1 \\
        --out results/baseline/rounding/x86_64-intel-avx512-amx-threads1.csv
    BENCH_CACHE=$(mktemp -d) bench study ci-rounding --threads 4 \\
        --methods atom ntom --out results/baseline/rounding/x86_64-intel-avx512-amx-threads4.csv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

import bench.determinism
from bench import baseline
from bench.cli import main as bench_main
from bench.provenance import cpu_kind
from bench.results.rows import read_results_file


def run_part(out: Path, work: Path, only: list[str] | None = None) -> None:
    inputs = []
    for protocol in baseline.CI_PROTOCOLS:
        methods = [m for m in baseline.registered_methods() if m not in baseline.CI_SKIP_METHODS]
        methods = [m for m in methods if only is None or m in only]
        command = baseline.run_command(
            protocol, methods, work / protocol, baseline.CI_CELLS.get(protocol, ())
        )
        try:
            bench_main(command[3:])  # drop "python -m bench"
        except SystemExit as done:
            if done.code not in (0, None):
                raise
        inputs.append(work / protocol / "results.csv")
    baseline.merge(inputs, out)


def gaps(reference: Path, candidate: Path) -> pd.DataFrame:
    """Per method: rows compared, rows with another detector, largest |AUROC gap| among those and among
    the rows with the same detector."""
    key = list(baseline.KEY)
    a, b = read_results_file(reference), read_results_file(candidate)
    both = a.merge(b, on=key, suffixes=("_ref", "_new"))
    both = both[(both.metric == "auroc") & (both.status_ref == "ok") & (both.status_new == "ok")]
    both = both.assign(
        gap=(both.value_new - both.value_ref).abs(),
        other=both.detector_digest_ref != both.detector_digest_new,
    )
    return pd.DataFrame(
        {
            method: {
                "rows": len(g),
                "other_detector_rows": int(g.other.sum()),
                "max_gap_other": float(g.gap[g.other].max()) if g.other.any() else 0.0,
                "max_gap_same": float(g.gap[~g.other].max()) if (~g.other).any() else 0.0,
            }
            for method, g in both.groupby("method")
        }
    ).T.astype({"rows": int, "other_detector_rows": int})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench study ci-rounding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads instead of 2 (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="merged CSV of the perturbed run")
    parser.add_argument("--work", type=Path, help="run folders (default: temporary; give one to resume)")
    parser.add_argument("--methods", nargs="+", help="only these of the CI part's methods (default: all)")
    args = parser.parse_args(argv)
    bench.determinism.THREADS = args.threads
    if not args.out.exists():
        if args.work is not None:
            run_part(args.out, args.work, args.methods)
        else:
            with tempfile.TemporaryDirectory(prefix="ci-rounding-") as work:
                run_part(args.out, Path(work), args.methods)
    reference, _, why = baseline.baseline_for_cpu(cpu_kind())
    merged = args.out.with_suffix(".reference.csv")
    baseline.merge([reference], merged, baseline.CI_PROTOCOLS, baseline.CI_SKIP_METHODS, baseline.CI_CELLS)
    print(why)
    table = gaps(merged, args.out)
    merged.unlink()
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    other, same = table.max_gap_other.max(), table.max_gap_same.max()
    print(f"largest gap, another detector: {other:.4f}; same detector: {same:.4f}")
