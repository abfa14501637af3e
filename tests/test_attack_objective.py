"""Attack objectives do not saturate (issue 28, item 3).

Every registered method's detector is given inputs where its score is saturated in float32 (a softmax that
is exactly one-hot, a CLIP "something" probability of exactly 0 or 1) and the attack objective that every
attack evaluates (``ScoreObjective.value_and_grad``) must still have a finite, non-zero input gradient
for every image, and rank the images as the score does.
"""

from __future__ import annotations

import pytest
import torch

from bench.attacks.base import ScoreObjective
from bench.backbones import EMBEDDED_CLIP, load_clip
from bench.methods.classifier import ClassifierDetector, extra_class_log_odds, msp_log_odds
from bench.methods.clip_common import ClipDetector
from bench.registry import list_methods

SATURATING_LOGIT = 300.0  # exp(-300) underflows to 0 in float32: the softmax is exactly one-hot
K = 3


def classifier(score: str, outputs: int, hot: int) -> ClassifierDetector:
    """A tiny CNN whose head bias makes output ``hot`` win by SATURATING_LOGIT (weights stay random, so
    the logits depend on the input)."""
    torch.manual_seed(0)
    config = {"name": "tiny_cnn", "in_channels": 1, "num_outputs": outputs, "mean": (0.5,), "std": (0.5,)}
    detector = ClassifierDetector(config, score=score, num_inlier_classes=K)
    with torch.no_grad():
        detector.network.head.bias.zero_()
        detector.network.head.bias[hot] = SATURATING_LOGIT
    return detector.eval()


def clip(score: str) -> ClipDetector:
    """glyph-clip with a logit scale of 1e5: every cosine gap becomes a logit gap far beyond 104, so the
    "something" probability is exactly 0 or 1 in float32."""
    backbone = load_clip(EMBEDDED_CLIP, device="cpu")
    prompts = ["a photo of the digit zero", "a photo of the digit one", "a photo of something"]
    return ClipDetector(backbone, prompts, logit_scale=1e5, score=score).eval()


def softmax_one_hot(detector: ClassifierDetector, x: torch.Tensor) -> bool:
    with torch.no_grad():
        probabilities = torch.softmax(detector.network(x), dim=1)
    return bool(((probabilities == 0) | (probabilities == 1)).all())


# method -> the detectors it can produce (score form, outputs), each saturated toward every output
SCORE_FORMS = {
    "msp": [("msp", K)],
    "energy": [("energy", K)],
    "oe": [("msp", K), ("outlier_logit", 1)],
    "aloe": [("msp", K), ("energy", K), ("outlier_logit", 1)],
    "aoe": [("energy", K), ("outlier_logit", 1)],
    "atom": [("extra_class", K + 1)],
    "ntom": [("extra_class", K + 1)],
    "rodeo": [("extra_class", K + 1)],
    "greg": [("energy", K), ("energy", 1)],
    "greg+": [("energy", K), ("energy", 1)],
    "hsc": [("hsc", 8)],
    "clip": "clip",
    "bce-clip": "clip",
}


def test_every_registered_method_is_covered():
    assert set(SCORE_FORMS) == set(list_methods())


def _images() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _check_gradient(detector, x: torch.Tensor) -> None:
    is_outlier = torch.tensor([0, 1] * (len(x) // 2), dtype=torch.bool)
    objective = ScoreObjective(detector, is_outlier, torch.device("cpu"))
    values, gradient = objective.value_and_grad(x)
    per_image = gradient.flatten(1).abs().amax(1)
    assert bool(torch.isfinite(gradient).all()) and bool(torch.isfinite(values).all())
    assert bool((per_image > 0).all()), f"zero input gradient at {int((per_image == 0).sum())} images"
    assert objective.zero_gradients == 0


@pytest.mark.parametrize("method", sorted(SCORE_FORMS))
def test_attack_objective_keeps_a_gradient_where_the_score_saturates(method):
    x = _images()
    forms = SCORE_FORMS[method]
    if forms == "clip":
        for score in ("probability", "log_odds"):
            detector = clip(score)
            with torch.no_grad():
                probability = torch.softmax(detector.logits(x), dim=1)[:, -1]
            assert bool(((probability == 0) | (probability == 1)).all())  # saturated
            _check_gradient(detector, x)
        return
    for score, outputs in forms:
        for hot in range(outputs):
            detector = classifier(score, outputs, hot)
            if outputs > 1:
                assert softmax_one_hot(detector, x)  # saturated in float32
            _check_gradient(detector, x)


def test_log_odds_objectives_rank_like_the_probability_scores():
    """Strictly increasing in the score: where the probabilities are not saturated, the objective orders
    the images exactly as the score does (so the worst case an attack keeps is the same)."""
    logits = torch.randn(200, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    msp = -torch.softmax(logits, dim=1).amax(dim=1)
    extra = torch.softmax(logits, dim=1)[:, -1]
    for score, objective in ((msp, msp_log_odds(logits)), (extra, extra_class_log_odds(logits))):
        assert torch.equal(torch.argsort(score), torch.argsort(objective))
    # known values: p = 0.5 gives log-odds 0
    two = torch.tensor([[0.0, 0.0]])
    assert float(extra_class_log_odds(two)) == 0.0 and float(msp_log_odds(two)) == 0.0


def test_probability_score_itself_is_flat_there():
    """The premise: differentiating the probability (the pre-issue-28 objective) gives no gradient."""
    x = _images().requires_grad_(True)
    detector = clip("probability")
    (gradient,) = torch.autograd.grad(detector(x).sum(), x)
    assert float(gradient.abs().max()) == 0.0
