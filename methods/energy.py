"""Energy score (Liu et al., NeurIPS 2020), post-hoc on the cross-entropy classifier that MSP uses.

score = E(x; f) = -T * logsumexp_k(f_k(x) / T), with T = 1 (Sec. 2, Eq. 4: "we use T = 1").
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.contracts import Method, RunContext, TrainTask
from bench.methods.classifier import ClassifierDetector
from bench.methods.msp import fit_scored_classifier
from bench.registry import register_method


@register_method("energy")
@dataclass
class Energy(Method):
    """Energy of the inlier classifier's logits (higher energy = more anomalous)."""

    clean_floor = {"osr": 0.70}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.training",)

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        return fit_scored_classifier(task, ctx, score="energy", method="energy")
