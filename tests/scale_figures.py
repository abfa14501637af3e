"""The figures of the scale-out issue, measured on this machine (not collected by pytest):

    python tests/scale_figures.py [--trials 10] [--executor local|ray] [--skip-timing] [--skip-kill]
                                  [--json FILE]

1. Wall time of the same small grid (digits osr, ci profile, oe and energy, clean and pgd: 8 units)
   with ``--executor local`` and ``--executor ray`` (a Ray of 2 CPUs started by the command), each as
   ``bench run`` from a cold detector cache, and the rows compared apart from the timing columns.
2. ``kill -9`` at a random moment: ``bench run`` on digits nd (ci, oe, clean and pgd: 20 units) is
   killed after a uniformly random delay (2 to ``--max-delay`` s); every unit that was in results.csv
   before the kill must still be there, whole, and the same command must complete the run. Repeated
   ``--trials`` times; the detector cache is shared between trials, so later trials reach the attacks
   sooner. ``--executor ray`` kills a driver that runs the units as Ray tasks (what it started is
   killed with it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"fit_seconds", "attack_seconds", "timestamp", "run_id"}


def bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def rows(run_dir: Path) -> list[dict[str, str]]:
    try:
        with (run_dir / "results.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def units(found: list[dict[str, str]]) -> set[tuple[str, ...]]:
    return {(r["method"], r["cell"].split(":")[0], r["seed"], r["attack"]) for r in found}


def comparable(found: list[dict[str, str]]) -> list[tuple]:
    return sorted(tuple(v for k, v in r.items() if k not in TIMING) for r in found)


def timing(base: Path) -> dict:
    grid = ["run", "--methods", "oe", "energy", "--protocol", "osr", "--profile", "ci", "--device", "cpu"]
    grid += ["--attacks", "clean", "pgd"]
    seconds = {}
    for executor in ("local", "ray"):
        extra = ["--executor", "ray", "--set", "executor.local_cpus=2"] if executor == "ray" else []
        started = time.perf_counter()
        done = subprocess.run(
            bench(*grid, "--out", str(base / executor), *extra),
            env=env(base / f"cache-{executor}"),
            cwd=base,
            capture_output=True,
            text=True,
        )
        seconds[executor] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            raise SystemExit(f"{executor} run failed: {done.stderr[-2000:]}")
    same = comparable(rows(base / "local")) == comparable(rows(base / "ray"))
    return {"local_seconds": seconds["local"], "ray_seconds": seconds["ray"], "same_rows": same}


def kill_trials(
    base: Path, trials: int, seed: int = 0, executor: str = "local", max_delay: float = 25.0
) -> dict:
    rng = random.Random(seed)
    args = ["run", "--methods", "oe", "--protocol", "nd", "--profile", "ci", "--device", "cpu"]
    args += ["--attacks", "clean", "pgd", "--executor", executor]
    if executor == "ray":
        args += ["--set", "executor.local_cpus=2"]
    cache = base / f"cache-kill-{executor}"
    results = []
    for trial in range(trials):
        run_dir = base / f"kill-{executor}-{trial}"
        delay = rng.uniform(2.0, max_delay)
        process = subprocess.Popen(
            bench(*args, "--out", str(run_dir)),
            env=env(cache),
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        seen: set[tuple[str, ...]] = set()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and process.poll() is None:
            seen |= units(rows(run_dir))
            time.sleep(0.05)
        killed = process.poll() is None
        before = rows(run_dir)  # the last complete results.csv before the kill
        seen |= units(before)
        if killed:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        with contextlib.suppress(ProcessLookupError):  # what it started (a Ray instance) goes with it
            os.killpg(process.pid, signal.SIGKILL)
        after = rows(run_dir)
        kept = units(after)
        whole = all(r["status"] and r["timestamp"] for r in after)
        resumed = subprocess.run(
            bench(*args, "--out", str(run_dir)), env=env(cache), cwd=base, capture_output=True
        )
        final = rows(run_dir)
        old_rows_kept = all(r in final for r in after)
        results.append(
            {
                "delay_s": round(delay, 1),
                "killed": killed,
                "finished_before_kill": len(seen),
                "kept_after_kill": len(seen & kept),
                "csv_whole": whole,
                "resume_exit": resumed.returncode,
                "units_after_resume": len(units(final)),
                "rows_before_resume_kept": old_rows_kept,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return {
        "trials": trials,
        "killed": sum(r["killed"] for r in results),
        "finished_before_kill": sum(r["finished_before_kill"] for r in results),
        "kept_after_kill": sum(r["kept_after_kill"] for r in results),
        "all_resumed_to_20_units": all(
            r["units_after_resume"] == 20 and r["resume_exit"] == 0 for r in results
        ),
        "per_trial": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--executor", default="local", choices=["local", "ray"], help="for the kill trials")
    parser.add_argument("--max-delay", type=float, default=25.0, help="kill after U(2, this) seconds")
    options = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        base = Path(folder)
        if not options.skip_timing:
            figures["timing"] = timing(base)
            print(json.dumps(figures["timing"]), flush=True)
        if not options.skip_kill:
            figures["kill_9"] = kill_trials(
                base, options.trials, executor=options.executor, max_delay=options.max_delay
            )
    summary = {k: v for k, v in figures.get("kill_9", {}).items() if k != "per_trial"}
    print(json.dumps({"timing": figures.get("timing"), "kill_9": summary}, indent=2))
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
