"""Outlier Exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019).

Multi-class form (Sec. 3, Eq. 1 with the classification objective of Sec. 4.2):
    L = CE(f(x_in), y_in) + lam * E_{x_oe}[ CE(f(x_oe), U) ],
where U is the uniform distribution over the K classes: CE(f(x), U) = -mean_k log softmax(f(x))_k.
lam = 0.5 (Sec. 4.2, "lambda = 0.5 for vision experiments"); score = -max softmax (MSP).

With one inlier class (novelty detection) the uniform target is degenerate, so OE takes its binary
form: a one-output network trained with binary cross-entropy, inliers 0 and OE samples 1, weighted
by lam on the OE term; the score is the outlier logit (monotone in the outlier probability, so the
same ranking, without the saturating sigmoid that would starve an attack of gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.contracts import Method, RunContext, TrainTask
from bench.methods.classifier import ClassifierDetector
from bench.methods.training import cached_network
from bench.registry import register_method


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of CE(softmax(logits), uniform) = -mean_k log_softmax(logits)_k."""
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def binary_oe_loss(logit_in: torch.Tensor, logit_oe: torch.Tensor, lam: float) -> torch.Tensor:
    """BCE with inliers as 0 and auxiliary outliers as 1; the outlier term weighted by lam."""
    loss_in = F.binary_cross_entropy_with_logits(logit_in, torch.zeros_like(logit_in))
    loss_oe = F.binary_cross_entropy_with_logits(logit_oe, torch.ones_like(logit_oe))
    return loss_in + lam * loss_oe


@register_method("oe")
@dataclass
class OutlierExposure(Method):
    clean_floor = {"nd": 0.80}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.oe", "bench.methods.training")

    lam: float = 0.5  # Sec. 4.2: lambda = 0.5 for vision experiments

    requires = frozenset({"oe"})

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        lam = self.lam
        if task.num_classes >= 2:

            def loss_fn(network, x_in, y_in, x_oe):
                logits = network(torch.cat([x_in, x_oe]))  # one pass, as the OE code does (BatchNorm)
                n_in = len(x_in)
                return F.cross_entropy(logits[:n_in], y_in) + lam * uniform_cross_entropy(logits[n_in:])

            outputs, score, recipe = task.num_classes, "msp", "oe_multiclass"
        else:

            def loss_fn(network, x_in, y_in, x_oe):
                logits = network(torch.cat([x_in, x_oe]))[:, 0]
                return binary_oe_loss(logits[: len(x_in)], logits[len(x_in) :], lam)

            outputs, score, recipe = 1, "outlier_logit", "oe_binary"
        network, config, summary = cached_network(
            ctx, {"name": recipe, "lam": lam}, task, outputs, loss_fn, uses_oe=True
        )
        detector = ClassifierDetector(config, score=score, num_inlier_classes=task.num_classes)
        detector.network.load_state_dict(network.state_dict())
        detector.meta["training"] = summary
        return detector
