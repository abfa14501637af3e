"""Hypersphere classifier, HSC (Liznerski et al., "Exposing Outlier Exposure", TMLR 2022, Sec. 3.2).

A network phi maps an image to a vector f = phi(x) in R^r; normal samples are pulled to the centre 0,
auxiliary outliers (OE) pushed away. With the pseudo-Huber distance (App. E, Table 6: the best radial
function)
    h(f) = sqrt(||f||^2 + 1) - 1,
the probability of being anomalous is l(f) = 1 - exp(-h(f)), and the binary cross-entropy of Sec. 3.2
Eq. 1 with the radial function exp(-h) becomes
    L = mean_normal h(f(x)) + mean_OE [ -log(1 - exp(-h(f(x)))) ].
(The authors' code ``eoe/training/hsc.py`` averages the per-sample terms over a batch of 128 normal and
128 OE samples, i.e. half this sum; our batches are 64 ID / 128 OE, so the two sides are averaged
separately and added. The log is stabilised as in that code, with +1e-9 inside it.)

Score: the paper's anomaly score is l = 1 - exp(-h) (code: ``compute_anomaly_score``). The detector
uses h itself (``hsc`` in :data:`bench.methods.classifier.SCORES`): l is a strictly increasing
function of h, so every ranking metric (AUROC, FPR95, AUPR) is identical, but l saturates to 1 far
from the centre and would starve gradient attacks of signal. :func:`hsc_paper_score` keeps the
paper's form.

HSC is one-class: on ``osr`` and ``ood`` all known classes are pooled as "normal" and the labels are
ignored, so the detector does not classify (``num_inlier_classes = 0``).

Our choices where the paper is silent or the harness differs:
- phi is the profile's network with its linear head widened to ``rep_dim`` outputs (the head is the
  "last layer, just a linear transformation" of App. G.1). The head keeps its bias (the authors'
  networks have none, a Deep SVDD habit against collapse to a constant; the OE term rules out that
  collapse, and a bias only moves the effective centre).
- Optimiser, lr, epochs and batch sizes come from the profile; ``--profile paper`` gives App. G.1's
  (Adam, lr 1e-3, EOE's LeNet-BN networks at low resolution: ``bench.paper_settings``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.contracts import Method, RunContext, TrainTask
from bench.methods.classifier import ClassifierDetector, hsc_score
from bench.methods.training import cached_network
from bench.registry import register_method

LOG_EPS = 1e-9  # authors' code: -log(scores + 1e-9)


def pseudo_huber(features: torch.Tensor) -> torch.Tensor:
    """h(f) = sqrt(||f||^2 + 1) - 1 per row (App. E); the detector's score."""
    return hsc_score(features)


def hsc_paper_score(features: torch.Tensor) -> torch.Tensor:
    """The paper's anomaly probability l(f) = 1 - exp(-h(f)) in [0, 1)."""
    return -torch.expm1(-pseudo_huber(features))


def hsc_loss(f_normal: torch.Tensor, f_oe: torch.Tensor) -> torch.Tensor:
    """mean_normal h(f) + mean_OE -log(1 - exp(-h(f)) + 1e-9) (Sec. 3.2 Eq. 1 with l = exp(-h))."""
    normal = pseudo_huber(f_normal).mean()
    anomalous = -torch.log(hsc_paper_score(f_oe) + LOG_EPS).mean()
    return normal + anomalous


@register_method("hsc")
@dataclass
class HSC(Method):
    """Hypersphere classifier with outlier exposure; score = pseudo-Huber distance from the centre."""

    clean_floor = {"nd": 0.85}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.training",)

    # App. G.1, CIFAR-10: fully connected layers of 512-256 units, the last a linear map, so r = 256
    # (authors' code: CNN32(rep_dim=256)).
    rep_dim: int = 256

    requires = frozenset({"oe"})

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        def loss_fn(network, x_in, y_in, x_oe):
            features = network(torch.cat([x_in, x_oe]))  # one pass, as the authors' balanced batches
            return hsc_loss(features[: len(x_in)], features[len(x_in) :])

        network, config, summary = cached_network(
            ctx, {"name": "hsc", "rep_dim": self.rep_dim}, task, self.rep_dim, loss_fn, uses_oe=True
        )
        detector = ClassifierDetector(config, score="hsc", num_inlier_classes=0)
        detector.network.load_state_dict(network.state_dict())
        detector.meta["training"] = summary
        return detector
