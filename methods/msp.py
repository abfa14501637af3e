"""MSP: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

A K-way classifier trained with cross-entropy on the inliers; score = -max_k softmax(f(x))_k
(Sec. 2). Needs K >= 2 inlier classes, so it does not apply to one-class novelty detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from bench.contracts import Method, RunContext, TrainTask
from bench.errors import NotApplicable
from bench.methods.classifier import ClassifierDetector
from bench.methods.training import cached_network
from bench.registry import register_method


def cross_entropy_loss(network, x_in, y_in, x_oe):
    """Plain supervised cross-entropy on the inliers."""
    return F.cross_entropy(network(x_in), y_in)


def fit_scored_classifier(task: TrainTask, ctx: RunContext, score: str, method: str) -> ClassifierDetector:
    """The cross-entropy classifier shared by the post-hoc scores (trained once, cached)."""
    if task.num_classes < 2:
        raise NotApplicable(f"{method} needs >= 2 inlier classes (this cell has {task.num_classes})")
    network, config, summary = cached_network(
        ctx, {"name": "cross_entropy_classifier"}, task, task.num_classes, cross_entropy_loss, uses_oe=False
    )
    detector = ClassifierDetector(config, score=score, num_inlier_classes=task.num_classes)
    detector.network.load_state_dict(network.state_dict())
    detector.meta["training"] = summary
    return detector


@register_method("msp")
@dataclass
class MSP(Method):
    """Baseline score of a plain classifier; no hyperparameters of its own."""

    clean_floor = {"osr": 0.75}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.training",)

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        return fit_scored_classifier(task, ctx, score="msp", method="MSP")
