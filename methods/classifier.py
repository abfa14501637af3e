"""Detectors built on a classifier network, with their scores as pure functions of the logits
(the pytorch-ood pattern: a test can check each score on hand-made tensors)."""

from __future__ import annotations

from typing import Any

import torch

from bench.detector import Detector, detector_class
from bench.methods.networks import build_network


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Hendrycks & Gimpel 2017, Sec. 2: score = -max_k softmax(logits)_k."""
    return -torch.softmax(logits, dim=1).amax(dim=1)


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Liu et al. 2020, Eq. 1 and 4: score = E(x) = -T * logsumexp(logits / T) (T = 1)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def outlier_logit_score(logits: torch.Tensor) -> torch.Tensor:
    """Binary inlier-vs-outlier network with one output: score = the outlier logit."""
    return logits[:, 0]


def extra_class_score(logits: torch.Tensor) -> torch.Tensor:
    """(K+1)-way classifier (ATOM Sec. 3.1, RODEO Sec. 4): score = softmax probability of class K+1."""
    return torch.softmax(logits, dim=1)[:, -1]


def hsc_score(features: torch.Tensor) -> torch.Tensor:
    """Hypersphere classifier (Liznerski et al. 2022, Sec. 3.2, App. E): the pseudo-Huber distance
    h(f) = sqrt(||f||^2 + 1) - 1 of the output vector from the centre 0. The paper's anomaly score
    1 - exp(-h) is a monotone function of h (same ranking, same AUROC) that saturates at 1 far from
    the centre, which would starve gradient attacks; h does not."""
    return torch.sqrt(features.pow(2).sum(dim=1) + 1) - 1


def msp_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The attack objective of ``msp``: -log(p / (1 - p)) with p = max_k softmax_k, i.e.
    -(z_max - logsumexp_{k != max} z_k). Strictly increasing in ``msp_score`` (p -> -log(p / (1 - p)) is
    decreasing, and the score is -p), so the same ranking; its gradient e_max - softmax(z_others) is
    never zero, where -max softmax (and its log, ATOM App. B.4 Eq. 68's log F) is exactly flat once
    softmax is one-hot in float32 (a logit gap above ~104)."""
    top = logits.argmax(dim=1, keepdim=True)
    others = logits.scatter(1, top, float("-inf"))
    return torch.logsumexp(others, dim=1) - logits.gather(1, top).squeeze(1)


def extra_class_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The attack objective of ``extra_class``: log(p / (1 - p)) of p = softmax_{K+1}, i.e.
    z_{K+1} - logsumexp_{k <= K} z_k: log p_{K+1} (ATOM App. B.4 Eq. 71, RODEO's cross-entropy toward
    class K+1) minus log(1 - p_{K+1}). Strictly increasing in the score; its gradient
    e_{K+1} - softmax(z_1..K) is never zero, where that of p (and of log p alone) vanishes once the
    softmax is one-hot in float32."""
    return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=1)


SCORES = {
    "msp": msp_score,
    "energy": energy_score,
    "outlier_logit": outlier_logit_score,
    "extra_class": extra_class_score,
    "hsc": hsc_score,
}

# Attack objectives (``Detector.attack_objective``) of the scores that are probabilities; the others (energy,
# outlier logit, the pseudo-Huber distance h) are log-space quantities already and are attacked as they are.
ATTACK_OBJECTIVES = {"msp": msp_log_odds, "extra_class": extra_class_log_odds}


@detector_class
class ClassifierDetector(Detector):
    """A classifier network followed by a score function of its logits.

    ``num_inlier_classes`` > 0 means the first that many logits classify inliers (ID accuracy).
    """

    def __init__(self, network_config: dict[str, Any], score: str, num_inlier_classes: int):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; accepted: {', '.join(SCORES)}")
        self.network_config = dict(network_config)
        self.score_name = score
        self.num_inlier_classes = num_inlier_classes
        self.network = build_network(**self.network_config)

    @property
    def classifies(self) -> bool:  # type: ignore[override]
        return self.num_inlier_classes >= 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCORES[self.score_name](self.network(x))

    def attack_objective(self, x: torch.Tensor) -> torch.Tensor:
        return ATTACK_OBJECTIVES.get(self.score_name, SCORES[self.score_name])(self.network(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if not self.classifies:
            raise TypeError("this detector does not classify inliers")
        return self.network(x)[:, : self.num_inlier_classes]

    def config(self) -> dict[str, Any]:
        return {
            "network_config": self.network_config,
            "score": self.score_name,
            "num_inlier_classes": self.num_inlier_classes,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassifierDetector:
        return cls(**config)
