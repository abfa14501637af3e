"""``bench study grid-checks RUN_DIR ...``: which validity checks (``bench.checks``) trip on finished runs,
from what the run folders hold, without rerunning anything.

Measurable from a folder: ``saturation`` (the stored attacked scores, ``scores/``), ``above_clean`` and
``masking`` (the AUROC rows; masking needs a black-box attack, ``blackbox`` or ``simba``, beside a gradient
one) and ``budget`` (the spent budget of the rows against the plan of the attack under the row's profile
and the manifest's settings). ``zero_gradient`` and RODEO's ``shortcut`` need the detectors, which a
committed grid does not hold: the folder's ``checks.csv`` gives them where the run wrote one; otherwise they
are reported as not measurable. Prints one line per (method, cell, seed, attack) that trips a check, then
the count per (method, check).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from bench import checks
from bench.config import get_profile
from bench.errors import BadInput
from bench.registry import ATTACKS
from bench.results.rows import load_results, read_results_file


def planned(attack: str, profile: str, settings: dict) -> tuple[float, float] | None:
    try:
        budget = ATTACKS.get(attack).from_profile(get_profile(profile), seed=0, **settings).budget()
    except Exception:  # noqa: BLE001 - an attack or profile this code no longer knows: not measurable
        return None
    return float(budget.grad_evals), float(budget.queries)


def folder_checks(run_dir: Path) -> list[tuple[tuple, checks.Check]]:
    """((method, cell, seed, attack), Check) for every check measurable from ``run_dir``."""
    df = read_results_file(run_dir) if run_dir.is_file() else load_results(run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    settings = manifest.get("attacks") or {}
    ok = df[(df["status"] == "ok") & (df["metric"] == "auroc") & ~df["cell"].str.endswith(":mean")]
    found = []
    for (method, cell, seed), group in ok.groupby(["method", "cell", "seed"], sort=True):
        aurocs = dict(zip(group["attack"], group["value"], strict=True))
        for row in group.itertuples(index=False):
            key = (method, cell, int(seed), row.attack)
            scores = run_dir / "scores" / method / cell.split(":")[0] / f"seed{seed}-{row.attack}.npz"
            if scores.is_file():
                with np.load(scores, allow_pickle=False) as arrays:
                    shares = [
                        checks.saturation_share(arrays[k]) for k in arrays.files if k.endswith("__attacked")
                    ]
                found.append((key, checks.saturation(max(shares, default=0.0))))
            if row.attack != "clean" and "clean" in aurocs:
                found.append((key, checks.above_clean(row.value - aurocs["clean"])))
            plan = planned(row.attack, row.profile, settings.get(row.attack) or {})
            if plan is not None and row.attack != "clean":
                ratio = checks.budget_ratio((float(row.grad_evals), float(row.queries)), plan)
                found.append((key, checks.budget(ratio, row.attack)))
            if row.attack in checks.BLACK_BOX_ATTACKS:
                masking = checks.masking(aurocs)
                if masking is not None:
                    found.append((key, masking))
    for record in checks.read_checks(run_dir):
        if record["check"] in ("zero_gradient", "shortcut", "keep_rate"):
            value = float(record["value"]) if record["value"] else None
            key = (record["method"], record["cell"], int(record["seed"]), record["attack"])
            found.append(
                (key, checks.Check(record["check"], value, float(record["threshold"]), record["rule"]))
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench study grid-checks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run folders (results.csv, scores/) or results CSVs"
    )
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        if not (run_dir / "results.csv").is_file() and not (run_dir.is_file() and run_dir.suffix == ".csv"):
            raise BadInput(f"{run_dir} is neither a results CSV nor a folder with results.csv")
    for run_dir in args.runs:
        found = folder_checks(run_dir)
        measured = sorted({c.name for _, c in found})
        missing = [
            n
            for n in ("zero_gradient", "saturation", "masking", "above_clean", "budget")
            if n not in measured
        ]
        shown = ", ".join(measured) or "nothing"
        print(f"{run_dir}: measured {shown}; not measurable here: {', '.join(missing)}")
        counts: Counter = Counter()
        units: Counter = Counter()
        for (method, cell, seed, attack), check in found:
            units[(method, check.name)] += 1
            if check.tripped:
                counts[(method, check.name)] += 1
                print(f"  {method} {cell} seed {seed} {attack}: {check.describe()}")
        for (method, name), total in sorted(units.items()):
            print(f"  {method:8s} {name:13s} tripped {counts[(method, name)]} of {total}")
    return 0
