"""Check a profile's attack budgets against PGD-1000 x 10 on the same test images (issue 12, Sec. 3).

``python -m bench.budget_check --dataset mnist --protocol nd --profile reference --methods oe atom
--cells class0 class1 --per-side 200 --out results/budget_check/mnist-nd.csv``

For every (method, cell): the detector is the one ``bench run`` with the same profile would train (the
same cache key: the evaluation cap does not enter it). The test sample is the first ``--per-side``
inliers and outliers of the profile's own fixed sample of the cell (the sample a run scores, cut down so
that the yardstick stays affordable). On it run the yardstick, PGD with ``--yardstick-steps`` x
``--yardstick-restarts`` (1000 x 10, RODEO Sec. 5), and every ``--attacks`` at the profile's budget. A
budget passes when its AUROC is at most ``--tolerance`` (0.01) above the yardstick's: an attack whose
AUROC is lower is stronger, which passes too.

Prints one table and with ``--out`` writes a CSV: one row per (method, cell, attack) with the AUROC, the
spent gradient evaluations and queries per image, the attack's seconds, the difference from the
yardstick and ``within``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.contracts import EvalSet
from bench.errors import BadInput
from bench.metrics import auroc
from bench.registry import ATTACKS, DATASETS, METHODS, PROTOCOLS
from bench.validation import build_method, fit_cached

YARDSTICK = "pgd-1000x10"
CSV_COLUMNS = (
    "dataset",
    "protocol",
    "profile",
    "method",
    "cell",
    "seed",
    "attack",
    "budget",
    "auroc",
    "yardstick_auroc",
    "difference",
    "within",
    "grad_evals",
    "queries",
    "seconds",
    "n_in",
    "n_out",
)


def first_per_side(evalset: EvalSet, per_side: int) -> EvalSet:
    """The first ``per_side`` inliers and outliers of ``evalset`` (its order is the fixed sample's)."""
    outlier = evalset.is_outlier
    keep = torch.cat(
        [torch.nonzero(~outlier).flatten()[:per_side], torch.nonzero(outlier).flatten()[:per_side]]
    )
    keep = keep.sort().values
    labels = evalset.labels[keep] if evalset.labels is not None else None
    return EvalSet(evalset.name, evalset.images[keep], outlier[keep], labels)


def _budget_text(attack) -> str:
    budget = attack.budget()
    return f"{budget.steps} steps x {budget.restarts} restarts, {budget.grad_evals} grad evals"


def check_budgets(
    dataset_name: str,
    protocol_name: str,
    profile_name: str,
    methods: list[str],
    cells: list[str],
    attacks: list[str],
    per_side: int = 200,
    seed: int = 0,
    yardstick_steps: int = 1000,
    yardstick_restarts: int = 10,
    tolerance: float = 0.01,
    device: str = "cpu",
    cache: DetectorCache | None = None,
    log=None,
) -> list[dict]:
    if per_side < 1:
        raise BadInput(f"--per-side must be at least 1, got {per_side}")
    dataset = DATASETS.get(dataset_name)()
    protocol = PROTOCOLS.get(protocol_name)()
    profile = for_dataset(get_profile(profile_name), DATASETS.get(dataset_name))
    known = protocol.cell_ids(dataset, profile, seed)
    for cell_id in cells:
        if cell_id not in known:
            raise BadInput(f"unknown cell {cell_id!r} for {protocol_name}; accepted: {', '.join(known)}")
    for name in methods:
        METHODS.get(name)
    chosen = {name: ATTACKS.get(name).from_profile(profile, seed=seed) for name in attacks}
    yardstick = ATTACKS.get("pgd")(
        seed=seed, steps=yardstick_steps, restarts=yardstick_restarts, batch_size=profile.attack_batch_size
    )
    cache = cache if cache is not None else DetectorCache()
    rows: list[dict] = []
    for cell in protocol.cells(dataset, profile, seed, device):
        if cell.cell_id not in cells:
            continue
        evalset = first_per_side(cell.evalsets[0], per_side)
        labels = evalset.is_outlier.numpy()
        for method_name in methods:
            method = build_method(method_name, {})
            detector = fit_cached(method_name, method, cell.task, cache, device)
            results = {}
            for name, attack in [(YARDSTICK, yardstick), *chosen.items()]:
                attack.reset_spent()
                started = time.perf_counter()
                x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, dataset.eps)
                with torch.inference_mode():
                    value = auroc(detector.score(x_adv).numpy(), labels)
                spent = attack.spent_budget()
                results[name] = (attack, value, spent, time.perf_counter() - started)
                if log is not None:
                    log(f"{method_name} {cell.cell_id} {name}: AUROC {value:.4f} ({results[name][3]:.0f} s)")
            reference = results[YARDSTICK][1]
            for name, (attack, value, spent, seconds) in results.items():
                rows.append(
                    {
                        "dataset": dataset_name,
                        "protocol": protocol_name,
                        "profile": profile_name,
                        "method": method_name,
                        "cell": cell.cell_id,
                        "seed": seed,
                        "attack": name,
                        "budget": _budget_text(attack),
                        "auroc": round(value, 6),
                        "yardstick_auroc": round(reference, 6),
                        "difference": round(value - reference, 6),
                        "within": value - reference <= tolerance,
                        "grad_evals": spent.grad_evals,
                        "queries": spent.queries,
                        "seconds": round(seconds, 1),
                        "n_in": evalset.n_in,
                        "n_out": evalset.n_out,
                    }
                )
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["method", "cell", "attack", "AUROC %", "vs PGD-1000x10", "within", "grad evals", "s"]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["method"],
                r["cell"],
                r["attack"],
                f"{100 * r['auroc']:.2f}",
                f"{100 * r['difference']:+.2f}",
                "yes" if r["within"] else "NO",
                str(r["grad_evals"]),
                str(r["seconds"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budget_check", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--protocol", default="nd")
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--cells", nargs="+", required=True)
    parser.add_argument("--attacks", nargs="+", default=["pgd", "aa", "a3"])
    parser.add_argument("--per-side", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yardstick-steps", type=int, default=1000)
    parser.add_argument("--yardstick-restarts", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        rows = check_budgets(
            args.dataset,
            args.protocol,
            args.profile,
            args.methods,
            args.cells,
            args.attacks,
            per_side=args.per_side,
            seed=args.seed,
            yardstick_steps=args.yardstick_steps,
            yardstick_restarts=args.yardstick_restarts,
            tolerance=args.tolerance,
            device=args.device,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except BadInput as error:
        print(f"budget_check: error: {error}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
