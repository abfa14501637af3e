"""Resume a reference grid with the code it is computed with: the commit in results/reference/GRID_CODE.

    bench study resume mnist-nd            # one grid per call; two calls side by side on 2 cores
    BENCH_GRID_EXECUTOR=ray bench study resume fmnist-osr   # both cores on one grid

A grid takes several sessions on 2 CPU cores, and every finished unit's method_hash covers its method's
code, so a grid run from main would go stale at each change to that code. This keeps a clone of the
repository at GRID_CODE (its own .venv, ``make setup``) and runs ``bench run`` there, writing into this
checkout's results/reference/<grid>-reference/; ``bench study commit-finished`` commits what finished.

Grids: mnist-nd fmnist-nd (oe atom aloe rodeo), mnist-osr fmnist-osr (msp energy oe atom aloe rodeo).
BENCH_DATA / BENCH_CACHE as for bench run (``bench data fetch mnist fmnist`` runs first; a no-op when the
converted files are there). BENCH_GRID_DIR: where the clone lives (default under the temporary folder);
BENCH_GRID_NICE: the run's niceness (default 10; 19 lets it take only what other work leaves).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GRIDS = {
    "mnist-nd": ["oe", "atom", "aloe", "rodeo"],
    "fmnist-nd": ["oe", "atom", "aloe", "rodeo"],
    "mnist-osr": ["msp", "energy", "oe", "atom", "aloe", "rodeo"],
    "fmnist-osr": ["msp", "energy", "oe", "atom", "aloe", "rodeo"],
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench study resume", description=__doc__.split("\n")[0])
    parser.add_argument("grid", choices=sorted(GRIDS))
    args = parser.parse_args(argv)
    here = Path(_git("rev-parse", "--show-toplevel"))
    code = (here / "results" / "reference" / "GRID_CODE").read_text(encoding="utf-8").strip()
    clone = Path(os.environ.get("BENCH_GRID_DIR") or Path(tempfile.gettempdir()) / f"bench-grid-{code[:12]}")
    with open(f"{clone}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two calls side by side set the clone up once
        if not (clone / ".git").is_dir():
            _git("clone", "-q", "--no-checkout", str(here), str(clone))
            _git("-C", str(clone), "checkout", "-q", "--detach", code)
        if _git("-C", str(clone), "rev-parse", "HEAD") != _git("-C", str(here), "rev-parse", code):
            print(
                f"bench study resume: error: {clone} is not at {code}; remove it and rerun", file=sys.stderr
            )
            return 2
        subprocess.run(["make", "-C", str(clone), "--no-print-directory", "setup"], check=True)
        subprocess.run(
            [str(clone / ".venv" / "bin" / "bench"), "data", "fetch", "mnist", "fmnist"], check=True
        )
    dataset, protocol = args.grid.split("-")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
    }
    command = ["nice", "-n", os.environ.get("BENCH_GRID_NICE", "10"), ".venv/bin/bench", "run"]
    command += ["--methods", *GRIDS[args.grid], "--protocol", protocol, "--dataset", dataset]
    command += ["--profile", "reference", "--attacks", "clean", "pgd", "aa", "a3", "--rerun-stale"]
    command += ["--out", str(here / "results" / "reference" / f"{args.grid}-reference")]
    command += ["--executor", os.environ.get("BENCH_GRID_EXECUTOR", "local")]
    os.chdir(clone)
    os.execvpe(command[0], command, env)
