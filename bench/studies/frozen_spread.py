"""How far the frozen detectors' rows move when only the math libraries' code path changes: CI's frozen
tolerance (bench.baseline.FROZEN_TOLERANCE, docs/ci.md "How the tolerances were set").

``bench study frozen-spread --work W [--env NAME=VALUE ...]`` reruns the frozen grid of
``results/baseline/`` (every attack on the committed detectors) with the given variables in place of the
pinned ones (default: the CPU's own code paths, MKL_CBWR=AUTO ONEDNN_MAX_CPU_ISA=ALL and
ATEN_CPU_CAPABILITY at the CPU's highest level) and prints the largest AUROC difference per method and
attack from the baseline's frozen.csv, and how many rows are identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from bench.baseline import (
    CI_PROTOCOLS,
    DEFAULT_BASELINE,
    DETECTORS,
    FROZEN_CSV,
    FROZEN_SEED,
    merge,
    read_rows,
    run_command,
    unpack_detectors,
)


def native_code_path() -> dict[str, str]:
    from bench.provenance import isa_level

    level = isa_level()
    return {"MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": level}


def spread(baseline_csv: Path, rerun_csv: Path):
    """Per (method, attack): rows compared, rows identical, largest |AUROC difference|."""
    base, rerun = read_rows(baseline_csv), read_rows(rerun_csv)
    both = base.merge(rerun, left_index=True, right_index=True, suffixes=("_b", "_c"))
    both = both[(both.index.get_level_values("metric") == "auroc") & (both["status_b"] == "ok")]
    gap = (both["value_c"] - both["value_b"]).abs()
    table = gap.groupby(level=["method", "attack"]).agg(["count", lambda g: int((g == 0).sum()), "max"])
    table.columns = ["rows", "identical", "largest"]
    return table, float(gap.max()) if len(gap) else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench study frozen-spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the run folders")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    parser.add_argument("--env", nargs="*", default=None, help="NAME=VALUE code-path variables")
    args = parser.parse_args(argv)
    variables = dict(v.split("=", 1) for v in args.env) if args.env is not None else native_code_path()
    env = {**os.environ, **variables}
    inputs = []
    started = time.monotonic()
    folder = unpack_detectors(args.baseline / DETECTORS, args.work / "detectors")
    for protocol in CI_PROTOCOLS:
        out = args.work / protocol
        extra = ("--frozen-detectors", str(folder))
        command = run_command(protocol, out, (FROZEN_SEED,), (), extra, grid="frozen")
        subprocess.run(command, check=True, env=env)
        inputs.append(out / "results.csv")
    merge(inputs, args.work / FROZEN_CSV)
    table, largest = spread(args.baseline / FROZEN_CSV, args.work / FROZEN_CSV)
    print(
        f"code path: {' '.join(f'{k}={v}' for k, v in variables.items())}; {time.monotonic() - started:.0f} s"
    )
    print(table.to_string(float_format=lambda v: f"{v:.6f}"))
    print(f"largest AUROC difference: {largest:.6f} over {int(table['rows'].sum())} rows, "
          f"{int(table['identical'].sum())} identical")  # fmt: skip
    return 0
