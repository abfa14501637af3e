"""Paper-profile smoke test for a GPU machine (issue 14): per-step costs, set beside the dry run's estimate.

``bench study paper-smoke --device cuda --out smoke.csv`` builds one nd cell of a CIFAR-10
stand-in at full resolution (random 3 x 32 x 32 images written through ``bench.datasets.torchvision_sets``'
converter into a temporary ``$BENCH_DATA``, with a small 300K-Random-Images stand-in for OE), trains each
method with its paper recipe for ``--steps`` optimiser steps, and runs the attacks at the paper profile's
budgets (PGD-1000 x 10, AA, A3-1000) on ``--images`` test images (half inliers, half outliers). It prints and
writes, per method: seconds per training step, and per attack the seconds per gradient evaluation per
image, beside the seconds per image pass that ``bench.estimate`` measures for the dry run (their ratio says
how far the estimate's floor is from a real step). The fit's seconds include its per-epoch extras (ATOM
mines the 4,000 OE candidates, RODEO generates its exposure), so seconds per training step is an upper
figure. ``--quick`` cuts the attack budgets (a CPU check that the
script runs; its figures are not the paper budget's).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUICK_SETTINGS = [
    "pgd.steps=3",
    "pgd.restarts=1",
    "a3.budget_per_sample=6",
    "aa.apgd_steps=3",
    "aa.square_queries=5",
]


def write_standin(root: Path, per_class: int, seed: int = 0) -> None:
    """A converted ``cifar10`` of random images (``per_class`` train, 20 test per class) and a 4,000-row
    ``300K_random_images.npy``, under ``root``."""
    from bench.datasets import torchvision_sets

    rng = np.random.default_rng(seed)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n)
        return rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8), labels.astype(np.int64)

    spec = torchvision_sets.get_spec("cifar10")
    torchvision_sets.convert(spec, root, {"train": part(per_class), "test": part(20)}, time.perf_counter())
    np.save(root / "300K_random_images.npy", rng.integers(0, 256, size=(4000, 32, 32, 3), dtype=np.uint8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench study paper-smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["rodeo", "atom"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per method")
    parser.add_argument("--images", type=int, default=64, help="test images per cell (half per side)")
    parser.add_argument("--quick", action="store_true", help="tiny attack budgets (CPU check)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as folder:
        root = Path(folder)
        os.environ["BENCH_DATA"] = str(root / "data")
        os.environ["BENCH_CACHE"] = str(root / "cache")
        rows = run(args, root)
    print_rows(rows)
    if args.out is not None:
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def run(args, root: Path) -> list[dict]:
    from bench.cache import DetectorCache
    from bench.estimate import measure_step
    from bench.execute import execute_group
    from bench.plan import RunSpec, UnitGroup, plan_run

    attacks = ["clean", "pgd", "aa", "a3"]
    settings = QUICK_SETTINGS if args.quick else []
    probe = plan_run(
        RunSpec(methods=args.methods, protocol="nd", dataset="cifar10", profile="paper", dry_run=True)
    )
    batch = max(probe.profile_for(m).batch_size for m in args.methods)
    write_standin(root / "data", per_class=args.steps * batch)
    spec = RunSpec(
        methods=args.methods,
        protocol="nd",
        dataset="cifar10",
        profile="paper",
        attacks=attacks,
        settings=settings,
        device=args.device,
        out=root / "run",
    )
    plan = plan_run(spec)
    # the cell: class 0's train images (steps x batch), 4,000 OE images, --images test images
    plan.profile = dataclasses.replace(plan.profile, oe_pool_size=4000, max_eval_per_side=args.images // 2)
    plan.method_profiles = {
        name: dataclasses.replace(
            p, epochs=1, min_steps=0, oe_pool_size=4000, max_eval_per_side=args.images // 2
        )
        for name, p in plan.method_profiles.items()
    }
    cache = DetectorCache(root / "cache")
    rows = []
    for name in args.methods:
        profile = plan.profile_for(name)
        step = measure_step(profile.network, (3, 32, 32), 2, "cuda" if plan.device == "cuda" else "cpu")
        group = UnitGroup(name, "class0", 0, tuple(attacks))
        for result in execute_group(plan, group, cache, log=lambda line: print(line, file=sys.stderr)):
            auroc = next(r for r in result.rows if r["metric"] == "auroc")
            images = int(auroc["n_in"] or 0) + int(auroc["n_out"] or 0)
            grad_evals = int(auroc["grad_evals"] or 0)
            attack_seconds = float(auroc["attack_seconds"] or 0)
            train_steps = args.steps  # one epoch of steps x batch inliers
            rows.append(
                {
                    "method": name,
                    "network": profile.network,
                    "attack": result.unit.attack,
                    "status": auroc["status"],
                    "device": plan.device,
                    "fit_seconds": auroc["fit_seconds"],
                    "seconds_per_train_step": round(float(auroc["fit_seconds"] or 0) / train_steps, 5),
                    "images": images,
                    "grad_evals_per_image": grad_evals,
                    "attack_seconds": attack_seconds,
                    "seconds_per_grad_eval_per_image": (
                        round(attack_seconds / (grad_evals * images), 8) if grad_evals and images else ""
                    ),
                    "estimate_seconds_per_image_pass": round(step.seconds_per_image, 8),
                    "estimate_device": step.device,
                }
            )
    return rows


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        measured = row["seconds_per_grad_eval_per_image"]
        ratio = f"{measured / row['estimate_seconds_per_image_pass']:.2f}x the estimate" if measured else ""
        print(
            f"{row['method']} ({row['network']}) {row['attack']}: {row['status']}; train step "
            f"{row['seconds_per_train_step']} s; {row['grad_evals_per_image']} grad evals/image on "
            f"{row['images']} images in {row['attack_seconds']} s {ratio}"
        )
