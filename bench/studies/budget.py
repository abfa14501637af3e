"""Check a profile's attack budgets against PGD-1000 x 10 on the same test images (issue 12, Sec. 3).

``bench study budget --dataset mnist --protocol nd --profile reference --methods oe atom
--cells class0 class1 --per-side 200 --out results/budget_check/mnist-nd.csv``

For every (method, cell): the detector is the one ``bench run`` with the same profile would train (the
same cache key: the evaluation cap does not enter it). The test sample is the first ``--per-side``
inliers and outliers of the profile's own fixed sample of the cell (the sample a run scores, cut down so
that the yardstick stays affordable). On it run the yardstick, PGD with ``--yardstick-steps`` x
``--yardstick-restarts`` (1000 x 10, RODEO Sec. 5), and every ``--attacks`` at the profile's budget. A
budget passes when its AUROC is at most ``--tolerance`` (0.01) above the yardstick's: an attack whose
AUROC is lower is stronger, which passes too.

The yardstick runs one restart at a time (restart r is PGD-``steps`` x 1 from its own seed,
:func:`restart_seed`) and keeps the per-image worst case over the restarts, the rule PGD applies within
one call. Each finished restart is written to ``--checkpoints`` (default: ``<out>.restarts/`` beside
``--out``) as a small npz of its scores, keyed by the detector's weights and the test images, so a killed
check resumes at the restart it was in; a checkpoint made for other weights or images is recomputed.
A restart being run is claimed (a ``.claim`` file), so two checks started side by side with the same
arguments split the restarts between them (one per core) and both write the same rows.

Prints one table and with ``--out`` writes a CSV: one row per (method, cell, attack) with the AUROC, the
spent gradient evaluations and queries per image, the attack's seconds, the difference from the
yardstick and ``within``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.attacks.base import objective_sign
from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.contracts import EvalSet
from bench.digests import detector_digest, tensor_digest
from bench.errors import BadInput
from bench.execute import load_or_fit
from bench.files import atomic_write, atomic_write_bytes
from bench.metrics import auroc
from bench.registry import ATTACKS, DATASETS, METHODS, PROTOCOLS
from bench.store import pid_alive
from bench.studies.validation import build_method

YARDSTICK = "pgd-1000x10"
WAIT_SECONDS = 10.0  # how often a check polls for restarts that another process is running
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


def restart_seed(seed: int, restart: int) -> int:
    """The seed of yardstick restart ``restart`` (distinct from the profile attacks' ``seed``)."""
    return 1000 * (seed + 1) + restart


class RestartStore:
    """Finished yardstick restarts, one npz each: scores of the restart's worst case per image, its
    gradient evaluations and queries per image, its seconds and the key it was made under."""

    def __init__(self, directory: Path | None, log=None):
        self.directory = directory
        self.log = log

    def _path(self, method: str, cell: str, restart: int) -> Path:
        return self.directory / f"{method}-{cell}-restart{restart}.npz"

    def load(self, method: str, cell: str, restart: int, key: dict) -> dict | None:
        if self.directory is None or not self._path(method, cell, restart).exists():
            return None
        path = self._path(method, cell, restart)
        with np.load(path, allow_pickle=False) as data:
            saved_key = json.loads(str(data["key"]))
            if saved_key != key:
                if self.log is not None:
                    self.log(f"{path.name} was made for {saved_key}, not {key}: recomputing it")
                return None
            return {name: data[name] for name in ("scores", "grad_evals", "queries", "seconds")}

    def claim(self, method: str, cell: str, restart: int) -> bool:
        """Claim a restart for this process (a ``.claim`` file naming host and pid), so that checks
        started side by side on one machine split the restarts. A claim whose process has died on this
        host is taken over."""
        if self.directory is None:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(method, cell, restart).with_suffix(".claim")
        for _attempt in range(2):
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                host, _, pid = path.read_text(encoding="utf-8").partition(" ")
                if host != socket.gethostname() or not pid.strip().isdigit() or pid_alive(int(pid)):
                    return False
                path.unlink(missing_ok=True)  # its process died: take it over
                continue
            os.write(handle, f"{socket.gethostname()} {os.getpid()}".encode())
            os.close(handle)
            return True
        return False

    def release(self, method: str, cell: str, restart: int) -> None:
        if self.directory is not None:
            self._path(method, cell, restart).with_suffix(".claim").unlink(missing_ok=True)

    def save(self, method: str, cell: str, restart: int, key: dict, **values) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(method, cell, restart)
        atomic_write(
            path, lambda handle: np.savez(handle, key=np.array(json.dumps(key, sort_keys=True)), **values)
        )


def _one_restart(detector, evalset: EvalSet, eps: float, steps: int, seed: int, batch_size: int) -> dict:
    attack = ATTACKS.get("pgd")(seed=seed, steps=steps, restarts=1, batch_size=batch_size)
    started = time.perf_counter()
    x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, eps)
    with torch.inference_mode():
        scores = detector.score(x_adv).double().numpy()
    spent = attack.spent_budget()
    return {
        "scores": scores,
        "grad_evals": np.float64(spent.grad_evals),
        "queries": np.float64(spent.queries),
        "seconds": np.float64(time.perf_counter() - started),
    }


def run_yardstick(
    detector,
    evalset: EvalSet,
    eps: float,
    steps: int,
    restarts: int,
    seed: int,
    batch_size: int,
    store: RestartStore,
    key: dict,
    log=None,
) -> tuple[torch.Tensor, float, float, float]:
    """PGD-``steps`` x ``restarts`` one restart at a time, resuming finished restarts from ``store``.

    Returns the scores of the per-image worst case over all restarts (highest ``sign * score``; every
    restart keeps the clean point too), and the gradient evaluations, queries (per image) and seconds
    summed over the restarts, including those computed by an earlier, interrupted call."""
    sign = objective_sign(evalset.is_outlier).double()
    worst = None
    grad_evals = queries = seconds = 0.0
    method, cell = key["method"], key["cell"]
    pending, finished = list(range(restarts)), {}
    while pending:
        progressed = False
        for restart in list(pending):
            restart_key = {**key, "restart": restart, "steps": steps, "seed": restart_seed(seed, restart)}
            saved = store.load(method, cell, restart, restart_key)
            origin = "resumed from its checkpoint"
            if saved is None:
                if not store.claim(method, cell, restart):
                    continue  # another process on this machine is running it
                try:
                    saved = _one_restart(
                        detector, evalset, eps, steps, restart_seed(seed, restart), batch_size
                    )
                    store.save(method, cell, restart, restart_key, **saved)
                finally:
                    store.release(method, cell, restart)
                origin = "ran"
            finished[restart] = saved
            pending.remove(restart)
            progressed = True
            if log is not None:
                took = float(saved["seconds"])
                log(f"{method} {cell} {YARDSTICK} restart {restart + 1}/{restarts}: {origin} ({took:.0f} s)")
        if pending and not progressed:
            time.sleep(WAIT_SECONDS)  # every pending restart is claimed by another process
    for restart in range(restarts):
        saved = finished[restart]
        objective = sign * torch.from_numpy(np.asarray(saved["scores"], dtype=np.float64))
        worst = objective if worst is None else torch.maximum(worst, objective)
        grad_evals += float(saved["grad_evals"])
        queries += float(saved["queries"])
        seconds += float(saved["seconds"])
    return sign * worst, grad_evals, queries, seconds


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
    checkpoints: Path | None = None,
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
    store = RestartStore(checkpoints, log)
    rows: list[dict] = []
    for cell in protocol.cells(dataset, profile, seed, device):
        if cell.cell_id not in cells:
            continue
        evalset = first_per_side(cell.evalsets[0], per_side)
        labels = evalset.is_outlier.numpy()
        for method_name in methods:
            method = build_method(method_name, {})
            detector = load_or_fit(method_name, method, cell.task, cache, device)
            key = {
                "dataset": dataset_name,
                "protocol": protocol_name,
                "profile": profile_name,
                "method": method_name,
                "cell": cell.cell_id,
                "detector": detector_digest(detector),
                "images": tensor_digest(evalset.images, evalset.is_outlier),
                "eps": float(dataset.eps),
            }
            scores, grad_evals, queries, seconds = run_yardstick(
                detector,
                evalset,
                dataset.eps,
                yardstick_steps,
                yardstick_restarts,
                seed,
                profile.attack_batch_size,
                store,
                key,
                log,
            )
            results = {YARDSTICK: (yardstick, auroc(scores.numpy(), labels), (grad_evals, queries), seconds)}
            for name, attack in chosen.items():
                attack.reset_spent()
                started = time.perf_counter()
                x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, dataset.eps)
                with torch.inference_mode():
                    value = auroc(detector.score(x_adv).numpy(), labels)
                spent = attack.spent_budget()
                results[name] = (
                    attack,
                    value,
                    (spent.grad_evals, spent.queries),
                    time.perf_counter() - started,
                )
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
                        "grad_evals": spent[0],
                        "queries": spent[1],
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
    parser = argparse.ArgumentParser(prog="bench study budget", description=__doc__.split("\n")[0])
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
    parser.add_argument(
        "--checkpoints",
        type=Path,
        help="folder for the finished yardstick restarts (default: <out>.restarts/ beside --out)",
    )
    args = parser.parse_args(argv)
    checkpoints = args.checkpoints
    if checkpoints is None and args.out is not None:
        checkpoints = args.out.with_name(args.out.stem + ".restarts")
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
            checkpoints=checkpoints,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except BadInput as error:
        print(f"bench study budget: error: {error}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.out is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(args.out, text.getvalue().encode("utf-8"))
    return 0
