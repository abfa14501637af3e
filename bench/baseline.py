"""The CI regression baseline: ``results/baseline/ci.csv`` (docs/ci.md).

``python -m bench.baseline`` runs the real CLI, ``bench run --methods <every registered method>
--protocol P --dataset digits --profile ci`` with every registered attack, once per protocol, each into
``<work>/<P>/``, then merges their results.csv files into one CSV (the columns of a run's results.csv,
rows sorted on bench compare's key). The protocols are ``CI_PROTOCOLS`` unless ``--protocols`` says
otherwise; per protocol the methods of ``BASELINE_SKIP`` are left out (cost). ``.ci/run`` calls it with a
fresh cache and compares the merged file against the committed baseline with ``bench compare``.

    python -m bench.baseline                       # regenerate results/baseline/ci.csv
    python -m bench.baseline --out NEW.csv         # the same grid, written elsewhere
    python -m bench.baseline --ci-part --out NEW.csv   # the part .ci/run reruns
    python -m bench.baseline merge A.csv B.csv ... --out MERGED.csv   # merge only
    python -m bench.baseline merge results/baseline/ci.csv --protocols osr --out PART.csv  # a part
    python -m bench.baseline cpu-kind              # this machine's CPU kind, e.g. x86_64-amd-avx2
    python -m bench.baseline for-cpu               # the baseline and tolerance CI uses on this machine
    python -m bench.baseline training-tolerance --out T.json   # ... and, per method, where a detector changed

The ci profile is bit-for-bit repeatable on one kind of CPU, not across kinds (MKL and PyTorch pick
their kernels by vendor and instruction set, and atom's adversarial training amplifies the rounding).
So each kind CI has met has a baseline of its own: ``results/baseline/ci.csv`` for the kind it was made
on (``CI_CSV_CPU_KIND``) and ``results/baseline/cpu/<kind>.csv`` for every other, holding the part of
the grid that ``.ci/run`` reruns (``--ci-part``: CI_PROTOCOLS without CI_SKIP_METHODS, the cells of
CI_CELLS); both are compared with ``TOLERANCE``. A kind with no baseline of its own is compared against
``ci.csv`` with ``UNKNOWN_CPU_TOLERANCE``, the widest gap measured between two kinds, and told how to
add its own.

The runs' folders stay under ``--work`` (default: a temporary folder, deleted afterwards), so a killed
grid resumes when given the same ``--work``. Use a fresh ``BENCH_CACHE`` for a baseline: a cached
detector from older code would otherwise be reused (its key covers the method's code, not the
runner's).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.compare import KEY, load_rows
from bench.files import atomic_write_bytes
from bench.store import unit_of

PROTOCOLS = ("nd", "osr", "ood")
# What results/baseline/ci.csv holds and .ci/run reruns: every protocol. On a quiet 2-core machine the
# ten methods (all but CI_SKIP_METHODS) took 78 s (ood), 327-333 s (nd) and 66 s (osr) from an empty cache.
CI_PROTOCOLS = ("nd", "osr", "ood")
# Left out of .ci/run's rerun: the two CLIP detectors took 15 of the ood grid's 52 minutes under load
# here (bce-clip's fine-tuning, the attacks through the CLIP image tower) and rodeo 13 (its guided
# generation). Their ood rows are in the baseline; their nd and osr rows are not (BASELINE_SKIP): bce-clip
# alone took 2.5 minutes per nd cell here, 10 cells x 3 methods would be far beyond CI's budget.
CI_SKIP_METHODS = ("bce-clip", "clip", "rodeo")
# The cells .ci/run reruns per protocol (bench run --cells; a protocol not named: all its cells). The ten
# nd cells, two osr splits and ood took 327 + 66 + 78 s on a quiet AVX-512 machine but 1,272 + 218 + 235 s
# on an AMD AVX2 one (x86_64-amd-avx2), where pytest took 758 s and the whole .ci/run 2,321 s, past CI's
# 30 minutes. Two nd cells (every one-class code path) and one osr split bring the grid to about 600 s.
CI_CELLS = {"nd": ("class0", "class1"), "osr": ("split0",)}
BASELINE_SKIP = {"nd": CI_SKIP_METHODS, "osr": CI_SKIP_METHODS, "ood": ()}
DATASET = "digits"
PROFILE = "ci"
DEFAULT_OUT = Path("results/baseline/ci.csv")
# The CPU kind that results/baseline/ci.csv was made on: an x86_64 machine with AVX-512 (CI passed
# against it at 0.001 twice, stops 18 and 19) whose vendor and AVX-512 rung were not recorded. An Intel
# AVX-512 machine with AMX (x86_64-intel-avx512-amx) differs from it on 76 rows by up to 0.150, so the rung
# matters and no machine is known to be of ci.csv's kind: it is the cross-kind reference only.
CI_CSV_CPU_KIND = "x86_64-avx512-unrecorded"
CPU_BASELINES = Path("results/baseline/cpu")
# Within a kind two fresh-cache runs agreed exactly, so this only leaves room for a library update.
TOLERANCE = 0.001
# For a kind with no baseline of its own: the largest AUROC gap between the baselines of two kinds (over
# the rows CI reruns: 0.150, atom osr, between ci.csv and x86_64-intel-avx512-amx; 0.118, atom ood, between
# ci.csv and x86_64-amd-avx2; tests/test_baseline.py checks it against the committed files), with room.
UNKNOWN_CPU_TOLERANCE = 0.2
# Two hosts of one kind can still train a detector to other bits (CI, 2026-12-03: ntom and atom on nd
# class1 came out with other digests, ntom 0.0105 lower; the same kind's host model 167 reproduces the
# baseline exactly). Rows whose detector changed are judged per method and protocol against
# TRAINING_MARGIN times the largest gap measured when only the rounding of training changes: the kind's
# committed reruns at other thread counts (ROUNDING_RUNS/<kind>-threads<N>.csv,
# bench study ci-rounding), never less than TOLERANCE. The margin is room for a host that rounds
# further than the reruns did.
ROUNDING_RUNS = Path("results/baseline/rounding")
TRAINING_MARGIN = 2.0


CI_PART_HELP = (
    "only the part .ci/run reruns: protocols CI_PROTOCOLS, without CI_SKIP_METHODS, the cells of CI_CELLS"
)


class MergeError(ValueError):
    pass


def _sort_key(row: dict[str, str]) -> tuple:
    return tuple(int(row[k]) if k == "seed" else row[k] for k in KEY)


def merge(
    inputs: Sequence[Path],
    out: Path,
    protocols: Sequence[str] | None = None,
    skip_methods: Sequence[str] = (),
    cells: Mapping[str, Sequence[str]] | None = None,
) -> int:
    """Merge tidy results CSVs into ``out``; return the number of rows.

    ``protocols`` keeps only those protocols' rows, ``skip_methods`` drops those methods' rows and
    ``cells`` keeps, for each protocol it names, the rows of those cells (CI compares the part of the
    baseline it reruns: ``CI_CELLS``).

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
                if (protocols is None or row["protocol"] in protocols)
                and row["method"] not in skip_methods
                and (
                    not cells
                    or row["protocol"] not in cells
                    or unit_of(row["cell"]) in cells[row["protocol"]]
                )
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


def cpu_baseline_path(kind: str, root: Path = Path(".")) -> Path:
    """Where the baseline of CPU kind ``kind`` lives (``ci.csv`` for ``CI_CSV_CPU_KIND``)."""
    return root / (DEFAULT_OUT if kind == CI_CSV_CPU_KIND else CPU_BASELINES / f"{kind}.csv")


def baseline_for_cpu(kind: str, root: Path = Path(".")) -> tuple[Path, float, str]:
    """The baseline CI compares against on CPU kind ``kind``, the tolerance, and a line saying why."""
    own = cpu_baseline_path(kind, root)
    if own.is_file():
        return own, TOLERANCE, f"CPU kind {kind}: its own baseline {own.relative_to(root)}"
    known = [CI_CSV_CPU_KIND, *sorted(p.stem for p in (root / CPU_BASELINES).glob("*.csv"))]
    return (
        root / DEFAULT_OUT,
        UNKNOWN_CPU_TOLERANCE,
        f"CPU kind {kind} has no baseline of its own (known: {', '.join(known)}): comparing against "
        f"{DEFAULT_OUT} with the cross-kind tolerance {UNKNOWN_CPU_TOLERANCE}; make one with "
        f"`python -m bench.baseline --ci-part --out {CPU_BASELINES}/{kind}.csv` and commit it",
    )


def _auroc_rows(path: Path) -> dict[tuple, tuple[float, str]]:
    """key -> (AUROC, detector digest) of a results CSV's ok AUROC rows (bench compare's reader)."""
    return {
        key: (value, digest)
        for key, (status, value, digest) in load_rows(path).items()
        if key[-1] == "auroc" and status == "ok" and value is not None
    }


def training_tolerances(kind: str, root: Path = Path(".")) -> dict[str, float]:
    """Per ``"method/protocol"``, the AUROC drop CI allows where a row's detector differs from the
    baseline's: ``TRAINING_MARGIN`` x the largest gap between the kind's baseline and its rounding reruns
    over the rows whose detector changed, at least ``TOLERANCE`` (bench compare's
    ``--other-detector-tolerance`` file). Empty (every row at the kind's tolerance) for a kind with no
    rounding rerun or no baseline of its own."""
    own = cpu_baseline_path(kind, root)
    reruns = sorted((root / ROUNDING_RUNS).glob(f"{kind}-threads*.csv"))
    if not own.is_file() or not reruns:
        return {}
    reference = _auroc_rows(own)
    widest: dict[str, float] = {}
    for path in reruns:
        for key, (value, digest) in _auroc_rows(path).items():
            if key not in reference:
                continue
            base_value, base_digest = reference[key]
            name = f"{key[0]}/{key[1]}"
            gap = abs(value - base_value) if digest != base_digest else 0.0
            widest[name] = max(widest.get(name, 0.0), gap)
    return {m: round(max(TOLERANCE, TRAINING_MARGIN * gap), 4) for m, gap in sorted(widest.items())}


def registered_methods() -> list[str]:
    from bench.registry import METHODS

    return METHODS.names()


def run_command(protocol: str, methods: Sequence[str], out_dir: Path, cells: Sequence[str] = ()) -> list[str]:
    """The ``bench run`` command line of one protocol of the grid (every attack is the default; every
    cell unless ``cells`` names some)."""
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
        *(["--cells", *cells] if cells else []),
    ]


def run_grid(
    out: Path,
    work: Path,
    protocols: Sequence[str] = CI_PROTOCOLS,
    skip_methods: Sequence[str] = (),
    cells: Mapping[str, Sequence[str]] | None = None,
) -> int:
    inputs = []
    for protocol in protocols:
        skipped = set(skip_methods) | set(BASELINE_SKIP.get(protocol, ()))
        methods = [m for m in registered_methods() if m not in skipped]
        command = run_command(protocol, methods, work / protocol, (cells or {}).get(protocol, ()))
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
        parser.add_argument("--ci-part", action="store_true", help=CI_PART_HELP)
        args = parser.parse_args(argv[1:])
        if args.ci_part:
            args.protocols, args.skip_methods = list(CI_PROTOCOLS), list(CI_SKIP_METHODS)
        try:
            n = merge(
                args.inputs, args.out, args.protocols, args.skip_methods, CI_CELLS if args.ci_part else None
            )
        except (MergeError, OSError) as error:
            print(f"bench.baseline: error: {error}", file=sys.stderr)
            return 2
        print(f"{args.out}: {n} rows")
        return 0
    if argv[:1] == ["cpu-kind"]:
        from bench.provenance import cpu_kind

        print(cpu_kind())
        return 0
    if argv[:1] == ["for-cpu"]:
        parser = argparse.ArgumentParser(
            prog="python -m bench.baseline for-cpu",
            description="print the baseline CSV and the tolerance CI uses on a CPU kind",
        )
        parser.add_argument("--kind", help="a CPU kind (default: this machine's)")
        args = parser.parse_args(argv[1:])
        if args.kind is None:
            from bench.provenance import cpu_kind

            args.kind = cpu_kind()
        path, tolerance, why = baseline_for_cpu(args.kind)
        print(why, file=sys.stderr)
        print(path, tolerance)
        return 0
    if argv[:1] == ["training-tolerance"]:
        parser = argparse.ArgumentParser(
            prog="python -m bench.baseline training-tolerance",
            description="write the per-method tolerance CI uses where a detector changed (JSON)",
        )
        parser.add_argument("--kind", help="a CPU kind (default: this machine's)")
        parser.add_argument("--out", type=Path, required=True, help="JSON file for bench compare")
        args = parser.parse_args(argv[1:])
        if args.kind is None:
            from bench.provenance import cpu_kind

            args.kind = cpu_kind()
        tolerances = training_tolerances(args.kind)
        atomic_write_bytes(args.out, (json.dumps(tolerances, indent=1) + "\n").encode())
        shown = (
            ", ".join(f"{m} {t:g}" for m, t in tolerances.items()) or "none measured, the kind's tolerance"
        )
        print(f"training tolerance of CPU kind {args.kind}: {shown}", file=sys.stderr)
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
    parser.add_argument("--ci-part", action="store_true", help=CI_PART_HELP)
    args = parser.parse_args(argv)
    cells = None
    if args.ci_part:
        args.protocols, args.skip_methods, cells = list(CI_PROTOCOLS), list(CI_SKIP_METHODS), CI_CELLS
    if args.work is not None:
        run_grid(args.out, args.work, args.protocols, args.skip_methods, cells)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as work:
        run_grid(args.out, Path(work), args.protocols, args.skip_methods, cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
