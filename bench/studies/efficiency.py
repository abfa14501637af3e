"""Attack efficiency: attacked AUROC against gradient evaluations per image (issue 3).

    bench study efficiency --methods msp oe atom --out results/efficiency --max-per-side 100

Trains (or loads from the detector cache) the digits quick-profile detectors of the given methods on
the first open-set split, then runs pgd (1, 10, 100, 1000 steps x 1 and 10 restarts), aa and a3
(several budgets) on the same test images, and writes ``efficiency.csv`` and ``efficiency.png``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from bench.attacks.a3 import AdaptiveAutoAttack
from bench.attacks.autoattack import AutoAttackScore
from bench.attacks.pgd import PGD
from bench.cache import DetectorCache
from bench.config import get_profile
from bench.datasets import load_dataset
from bench.execute import load_or_fit
from bench.metrics import auroc
from bench.protocols import get_protocol
from bench.registry import METHODS

PGD_GRID = [(steps, restarts) for restarts in (1, 10) for steps in (1, 10, 100, 1000)]
A3_BUDGETS = (10, 30, 100, 300, 1000)
COLUMNS = [
    "method",
    "attack",
    "steps",
    "restarts",
    "grad_evals",
    "queries",
    "auroc",
    "clean_auroc",
    "seconds",
]


def attacks():
    for steps, restarts in PGD_GRID:
        yield f"pgd-{steps}x{restarts}", PGD(steps=steps, restarts=restarts)
    yield "aa-standard", AutoAttackScore()
    for budget in A3_BUDGETS:
        yield f"a3-{budget}", AdaptiveAutoAttack(budget_per_sample=budget)


def run(methods: list[str], out: Path, max_per_side: int, seed: int = 0) -> Path:
    profile = get_profile("quick")
    dataset = load_dataset("digits")
    cell = next(get_protocol("osr").cells(dataset, profile, seed))
    evalset = cell.evalsets[0]
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for side in (False, True):
        rows = torch.nonzero(evalset.is_outlier == side).squeeze(1)
        keep.append(rows[torch.randperm(len(rows), generator=generator)[:max_per_side]])
    index = torch.cat(keep)
    x, is_outlier = evalset.images[index], evalset.is_outlier[index]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "efficiency.csv"
    cache = DetectorCache()
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for method_name in methods:
            detector = load_or_fit(method_name, METHODS.get(method_name)(), cell.task, cache, "cpu")
            clean = auroc(detector.score(x).numpy(), is_outlier.numpy())
            for name, attack in attacks():
                attack.reset_spent()
                started = time.perf_counter()
                x_adv = attack.perturb(detector, x, is_outlier, dataset.eps)
                seconds = time.perf_counter() - started
                spent = attack.spent_budget()
                row = {
                    "method": method_name,
                    "attack": name,
                    "steps": spent.steps,
                    "restarts": spent.restarts,
                    "grad_evals": spent.grad_evals,
                    "queries": spent.queries,
                    "auroc": round(auroc(detector.score(x_adv).numpy(), is_outlier.numpy()), 4),
                    "clean_auroc": round(clean, 4),
                    "seconds": round(seconds, 2),
                }
                writer.writerow(row)
                handle.flush()
                print(row, flush=True)
    plot(path, out / "efficiency.png")
    return path


def plot(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(csv_path)
    methods = list(dict.fromkeys(frame["method"]))
    figure, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for axis, method in zip(axes[0], methods, strict=True):
        rows = frame[frame["method"] == method]
        for family, marker in (("pgd-", "o"), ("aa", "s"), ("a3", "^")):
            part = rows[rows["attack"].str.startswith(family)]
            if family == "pgd-":
                for restarts, group in part.groupby("restarts"):
                    axis.plot(
                        group["grad_evals"], 100 * group["auroc"], marker=marker, label=f"pgd x{restarts}"
                    )
            else:
                axis.plot(part["grad_evals"], 100 * part["auroc"], marker=marker, label=family)
        axis.set_xscale("log")
        axis.set_xlabel("gradient evaluations per image")
        axis.set_ylabel("attacked AUROC (%)")
        axis.set_title(f"{method} (digits quick, osr split0)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench study efficiency", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["msp", "oe"])
    parser.add_argument("--out", type=Path, default=Path("results/efficiency"))
    parser.add_argument("--max-per-side", type=int, default=100)
    args = parser.parse_args(argv)
    print(run(args.methods, args.out, args.max_per_side))
