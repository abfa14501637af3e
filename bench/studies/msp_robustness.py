"""Why an undefended classifier keeps much of its AUROC under PGD on MNIST osr (issue 12, Sec. 5).

``BENCH_DATA=... BENCH_CACHE=... bench study msp-robustness [--datasets mnist fmnist]
[--cell split0] [--eps 8 16 32 64] [--methods msp atom aloe]``

The papers' undefended or barely defended detectors fall to a few AUROC points under PGD at 8/255 on
MNIST open-set recognition (RODEO Table 1b: ViT-MSP 2.9, ATOM 4.1, PLP 0.4), while the reference grid's
msp and energy keep 86-89. This tells an attack that is too weak from a network that is harder to move.
On the osr cell's fixed test sample (the grid's images), with the reference profile's msp classifier
(trained as ``bench run`` trains it; from the cache when one is there), it prints the AUROC:

- clean, and under the reference profile's PGD (100 steps) at each ``--eps`` (in 1/255);
- at 8/255 under the same PGD on a surrogate with the same ranking, ``-max_k log_softmax_k``: if the
  softmax saturated and starved the attack of gradient, the surrogate would score far lower;
- the inliers' median logit margin (top-1 minus top-2 of the known classes) and the share of images whose
  max softmax is exactly 1.0 in float32.

``--methods`` runs the same for other classifier-based detectors of the grid (atom, aloe, oe, energy: each
scored its own way; the surrogate is msp's only). Run it with the grid's code and cache
(``results/reference/README.md``) to attack the grid's own networks rather than retrain them.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.execute import load_or_fit
from bench.metrics import auroc
from bench.registry import ATTACKS, DATASETS, PROTOCOLS
from bench.studies.validation import build_method


class LogMSP(nn.Module):
    """The msp detector's score through a log: -max_k log_softmax(logits)_k, the same ranking as
    -max_k softmax(logits)_k, without the saturation of softmax near 1."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.log_softmax(self.detector.network(x), dim=1).amax(dim=1)


def attacked_auroc(detector, images, is_outlier, eps, profile) -> float:
    attack = ATTACKS.get("pgd").from_profile(profile, seed=0)
    x_adv = attack.perturb(detector, images, is_outlier, eps)
    with torch.inference_mode():
        scores = detector(x_adv).numpy()
    return auroc(scores, is_outlier.numpy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench study msp-robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fmnist"])
    parser.add_argument("--cell", default="split0")
    parser.add_argument("--eps", nargs="+", type=float, default=[8, 16, 32, 64])
    parser.add_argument("--methods", nargs="+", default=["msp"])
    args = parser.parse_args(argv)
    cache = DetectorCache()
    print("method,dataset,cell,objective,eps,auroc,seconds")
    for name, method in ((n, m) for n in args.datasets for m in args.methods):
        builder = DATASETS.get(name)
        dataset = builder()
        profile = for_dataset(get_profile("reference"), builder)
        cells = PROTOCOLS.get("osr")().cells(dataset, profile, 0, "cpu")
        cell = next(c for c in cells if c.cell_id == args.cell)
        detector = load_or_fit(method, build_method(method, {}), cell.task, cache, "cpu")
        evalset = cell.evalsets[0]
        images, is_outlier = evalset.images, evalset.is_outlier
        with torch.inference_mode():
            logits = detector.network(images[~is_outlier])[:, : cell.task.num_classes]
            clean = detector(images).numpy()
        top2 = logits.topk(2, dim=1).values
        margin = float((top2[:, 0] - top2[:, 1]).median())
        saturated = float((torch.softmax(logits, dim=1).amax(dim=1) == 1.0).float().mean())
        print(
            f"# {method} {name} {args.cell}: inlier median logit margin {margin:.1f}, max softmax == 1.0 "
            f"on {saturated:.1%} of the inliers; {len(images)} test images"
        )
        print(f"{method},{name},{args.cell},score,0,{auroc(clean, is_outlier.numpy()):.4f},0")
        for eps in args.eps:
            started = time.perf_counter()
            value = attacked_auroc(detector, images, is_outlier, eps / 255, profile)
            print(
                f"{method},{name},{args.cell},score,{eps:g},{value:.4f},{time.perf_counter() - started:.0f}"
            )
        if method != "msp":
            continue
        started = time.perf_counter()
        surrogate = LogMSP(detector).eval()
        x_adv = (
            ATTACKS.get("pgd")
            .from_profile(profile, seed=0)
            .perturb(surrogate, images, is_outlier, args.eps[0] / 255)
        )
        with torch.inference_mode():
            value = auroc(detector(x_adv).numpy(), is_outlier.numpy())
        seconds = time.perf_counter() - started
        print(
            f"{method},{name},{args.cell},log-surrogate,{args.eps[0]:g},{value:.4f},{seconds:.0f}", flush=True
        )
