"""The CI regression baseline: ``results/baseline/ci.csv`` (README "Regression baseline").

``python -m bench.baseline`` runs the real CLI, ``bench run --methods <every registered method>
--protocol P --dataset digits --profile ci`` with every registered attack, once per protocol, each into
``<work>/<P>/``, then merges their results.csv files into one CSV (the columns of a run's results.csv,
rows sorted on bench compare's key). The protocols are ``CI_PROTOCOLS`` unless ``--protocols`` says
otherwise; per protocol the methods of ``BASELINE_SKIP`` are left out (cost). ``.ci/run`` calls it with a
fresh cache and compares the merged file against the committed baseline with ``bench compare``.

    python -m bench.baseline                       # regenerate results/baseline/ci.csv
    python -m bench.baseline --out NEW.csv         # the same grid, written elsewhere (what CI does)
    python -m bench.baseline merge A.csv B.csv ... --out MERGED.csv   # merge only
    python -m bench.baseline merge results/baseline/ci.csv --protocols osr --out PART.csv  # a part

The runs' folders stay under ``--work`` (default: a temporary folder, deleted afterwards), so a killed
grid resumes when given the same ``--work``. Use a fresh ``BENCH_CACHE`` for a baseline: a cached
detector from older code would otherwise be reused (its key covers the method's code, not the
runner's).
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.compare import KEY
from bench.store import atomic_write_bytes

PROTOCOLS = ("nd", "osr", "ood")
# What results/baseline/ci.csv holds and .ci/run reruns: every protocol. On a quiet 2-core machine the
# ten methods (all but CI_SKIP_METHODS) took 78 s (ood), 327-333 s (nd) and 66 s (osr) from an empty cache.
CI_PROTOCOLS = ("nd", "osr", "ood")
# Left out of .ci/run's rerun: the two CLIP detectors took 15 of the ood grid's 52 minutes under load
# here (bce-clip's fine-tuning, the attacks through the CLIP image tower) and rodeo 13 (its guided
# generation). Their ood rows are in the baseline; their nd and osr rows are not (BASELINE_SKIP): bce-clip
# alone took 2.5 minutes per nd cell here, 10 cells x 3 methods would be far beyond CI's budget.
CI_SKIP_METHODS = ("bce-clip", "clip", "rodeo")
BASELINE_SKIP = {"nd": CI_SKIP_METHODS, "osr": CI_SKIP_METHODS, "ood": ()}
DATASET = "digits"
PROFILE = "ci"
DEFAULT_OUT = Path("results/baseline/ci.csv")


class MergeError(ValueError):
    pass


def _sort_key(row: dict[str, str]) -> tuple:
    return tuple(int(row[k]) if k == "seed" else row[k] for k in KEY)


def merge(
    inputs: Sequence[Path],
    out: Path,
    protocols: Sequence[str] | None = None,
    skip_methods: Sequence[str] = (),
) -> int:
    """Merge tidy results CSVs into ``out``; return the number of rows.

    ``protocols`` keeps only those protocols' rows and ``skip_methods`` drops those methods' rows (CI
    compares the part of the baseline it reruns).

    Every input must have the same header, which must contain bench compare's key columns; a key
    (method, protocol, dataset, cell, seed, attack, metric) found twice is an error, since compare could
    not tell which row counts. Rows are sorted on that key so that a regenerated baseline diffs cleanly.
    """
    if not inputs:
        raise MergeError("nothing to merge: give one or more results CSV files")
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for path in inputs:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            if header is None:
                missing = [k for k in KEY if k not in fields]
                if missing:
                    raise MergeError(f"{path} lacks the key columns {', '.join(missing)}")
                header = fields
            elif fields != header:
                raise MergeError(f"{path} has columns {fields}, unlike {inputs[0]}: {header}")
            rows.extend(
                row
                for row in reader
                if (protocols is None or row["protocol"] in protocols) and row["method"] not in skip_methods
            )
    seen: dict[tuple, int] = {}
    for row in rows:
        key = _sort_key(row)
        if key in seen:
            raise MergeError(f"row {dict(zip(KEY, key, strict=True))} appears twice in the inputs")
        seen[key] = 1
    rows.sort(key=_sort_key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue().encode())
    return len(rows)


def registered_methods() -> list[str]:
    from bench.registry import METHODS

    return METHODS.names()


def run_command(protocol: str, methods: Sequence[str], out_dir: Path) -> list[str]:
    """The ``bench run`` command line of one protocol of the grid (every attack is the default)."""
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--methods",
        *methods,
        "--protocol",
        protocol,
        "--dataset",
        DATASET,
        "--profile",
        PROFILE,
        "--device",
        "cpu",
        "--out",
        str(out_dir),
    ]


def run_grid(
    out: Path, work: Path, protocols: Sequence[str] = CI_PROTOCOLS, skip_methods: Sequence[str] = ()
) -> int:
    inputs = []
    for protocol in protocols:
        skipped = set(skip_methods) | set(BASELINE_SKIP.get(protocol, ()))
        methods = [m for m in registered_methods() if m not in skipped]
        command = run_command(protocol, methods, work / protocol)
        print("$", " ".join(command[2:] if command[1] == "-m" else command), flush=True)
        started = time.monotonic()
        subprocess.run(command, check=True)
        print(f"{protocol}: {time.monotonic() - started:.0f} s", flush=True)
        inputs.append(work / protocol / "results.csv")
    n = merge(inputs, out)
    print(f"{out}: {n} rows from {', '.join(protocols)}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        parser = argparse.ArgumentParser(
            prog="python -m bench.baseline merge", description="merge results CSVs"
        )
        parser.add_argument("inputs", nargs="+", type=Path)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--protocols", nargs="+", help="keep only these protocols' rows")
        parser.add_argument("--skip-methods", nargs="+", default=[], help="drop these methods' rows")
        args = parser.parse_args(argv[1:])
        try:
            n = merge(args.inputs, args.out, args.protocols, args.skip_methods)
        except (MergeError, OSError) as error:
            print(f"bench.baseline: error: {error}", file=sys.stderr)
            return 2
        print(f"{args.out}: {n} rows")
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"merged CSV (default {DEFAULT_OUT})")
    parser.add_argument("--work", type=Path, help="folder for the run folders (default: temporary)")
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=PROTOCOLS,
        default=list(CI_PROTOCOLS),
        help=f"default: {' '.join(CI_PROTOCOLS)} (methods per protocol: BASELINE_SKIP)",
    )
    parser.add_argument(
        "--skip-methods",
        nargs="+",
        default=[],
        help=f"registered methods to leave out (.ci/run: {' '.join(CI_SKIP_METHODS)})",
    )
    args = parser.parse_args(argv)
    if args.work is not None:
        run_grid(args.out, args.work, args.protocols, args.skip_methods)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as work:
        run_grid(args.out, Path(work), args.protocols, args.skip_methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
