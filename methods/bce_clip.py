"""BCE-CLIP, "BCE with CLIP" (Liznerski et al., "Exposing Outlier Exposure", TMLR 2022, Sec. 3.3, App. G.2).

Fine-tunes the image tower of a CLIP with outlier exposure on the zero-shot score of Sec. 3.3: with s(x)
the softmax probability of "a photo of something" among the K class prompts and it (Eq. 4/5,
:mod:`bench.methods.clip_common`), minimise s on inliers and maximise it on auxiliary outliers,

    L = 1/2 [ mean_inliers -log(1 - s(x)) + mean_OE -log s(x) ],

binary cross-entropy with inliers labelled 0 and OE samples 1 ("Since this corresponds to a binary
cross-entropy loss, ...", Sec. 3.3). The two sides are averaged separately: the paper's batches hold 128
normal and 128 OE samples (App. G.1, kept in G.2), so its batch mean is this average; our profile's
batches are 64 ID / 128 OE. The text tower is frozen and the K + 1 text embeddings are computed once
(the authors' code, ``eoe/training/clip.py``, encodes the texts under ``no_grad`` and trains
``model.encode_image``); ``logit_scale`` stays 100.

Optimisation (App. G.2): SGD with Nesterov momentum; lr 2e-5 for the low-resolution datasets (CIFAR-10,
Fashion-MNIST, MNIST; 1e-4 for ImageNet and MVTec-AD), decayed x0.1 at epochs 50, 60, 70 and 75 of 80.
G.2 does not give momentum, weight decay or batch size; the authors' code does: momentum 0.9
(``eoe/training/ad_trainer.py``: ``SGD(..., momentum=0.9, nesterov=True)``), weight decay 1e-3 and batch
size 128 (``eoe/main/train_clip_mnist.py``, as for CIFAR-10).

What the harness changes: the number of steps, the batch sizes and the gradient-norm clip come from the
profile through the shared loop (:func:`bench.methods.training.train_network`: ``epochs``, raised to
``min_steps`` for tiny one-class training sets; ``batch_size`` / ``oe_batch_size``), with lr, momentum and
weight decay from this method's fields and the paper's milestones as fractions of the steps (50/80,
60/80, 70/80, 75/80). The paper augments its training images (App. G.1); no method here does. For K > 1
the authors' code scores inliers with max_k log softmax_k instead of log(1 - s); this is the BCE of Sec. 3.3.

With the embedded tiny CLIP (trained from scratch on glyphs) lr 2e-5 barely moves the image tower in a
CPU-sized number of steps; ``lr`` is a field (``--set bce-clip.lr=...``), the default stays the paper's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from bench.backbones.files import EMBEDDED_CLIP, switch_backbones
from bench.backbones.paper import PAPER_CLIP
from bench.contracts import Method, RunContext, TrainTask
from bench.errors import BadInput
from bench.methods.clip_common import (
    CLASS_TEMPLATE,
    OUTLIER_PROMPT,
    PAPER_LOGIT_SCALE,
    ClipDetector,
    build_detector,
    check_backbone_name,
    check_settings,
)
from bench.methods.training import train_network
from bench.registry import register_method

# App. G.2: milestones at epochs 50, 60, 70, 75 of 80, as fractions of training.
PAPER_MILESTONES = (50 / 80, 60 / 80, 70 / 80, 75 / 80)


def bce_clip_loss(logits_in: torch.Tensor, logits_oe: torch.Tensor) -> torch.Tensor:
    """1/2 [mean -log(1 - s) over inliers + mean -log s over OE], s = softmax(logits)_{K+1}, in log space."""
    log_in = F.log_softmax(logits_in, dim=1)
    log_not_something = torch.logsumexp(log_in[:, :-1], dim=1)  # log(1 - s)
    log_something = F.log_softmax(logits_oe, dim=1)[:, -1]  # log s
    return 0.5 * (-log_not_something.mean() - log_something.mean())


@register_method("bce-clip")
@dataclass
class BCEClip(Method):
    clean_floor = {}  # tests/test_detection_floor.py: not run there: a fit costs 4-10 OE fits
    shared_code = ("bench.backbones.tiny_ddpm", "bench.datasets.glyph_corpus", "bench.methods.training")

    backbone: str = "glyph-clip"  # the embedded CLIP (the paper: OpenAI's pre-trained ViT-B/32, App. G.2)
    # "embedded": glyph-clip; "paper" (``--profile paper``): OpenAI's ViT-B/32 (EOE Sec. 3.3, App. G.2).
    # Switches only a backbone of the other family (a hub-clip:... form stays).
    backbones: str = "embedded"
    lr: float = 2e-5  # App. G.2: eta = 0.00002 for CIFAR-10, Fashion-MNIST, MNIST (low resolution)
    momentum: float = 0.9  # App. G.2: SGD with Nesterov momentum; 0.9 in the authors' ad_trainer.py
    weight_decay: float = 1e-3  # not in the paper; the authors' train_clip_mnist.py / _cifar.py
    logit_scale: float = PAPER_LOGIT_SCALE  # Sec. 3.3 Eq. 4: cosine similarity * 100
    outlier_prompt: str = OUTLIER_PROMPT  # Sec. 3.3: "a photo of something"
    class_template: str = CLASS_TEMPLATE  # glyph corpus captions; the paper: "a photo of a {}" (Sec. 3.3)
    score: str = "probability"  # Eq. 4/5; "log_odds" = the same ranking without saturation

    protocols = ("nd", "osr", "ood")
    requires = frozenset({"oe"})

    def __post_init__(self) -> None:
        check_settings("bce-clip", self.logit_scale, self.outlier_prompt, self.class_template, self.score)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"bce-clip lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise BadInput(f"bce-clip momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInput(f"bce-clip weight_decay must be >= 0, got {self.weight_decay}")
        self.backbone = switch_backbones(
            self.backbones,
            {"backbone": self.backbone},
            {"embedded": {"backbone": EMBEDDED_CLIP}, "paper": {"backbone": PAPER_CLIP}},
        )["backbone"]
        check_backbone_name(self.backbone)

    def training_profile(self, profile):
        """The profile as the fine-tuning runs it: this method's SGD settings and App. G.2's milestones."""
        return fine_tuning_profile(profile, self.lr, self.momentum, self.weight_decay)

    def fit(self, task: TrainTask, ctx: RunContext) -> ClipDetector:
        if task.oe is None:
            raise ValueError("bce-clip needs an auxiliary outlier source (task.oe is None)")
        detector = build_detector(
            self.backbone,
            task.class_prompts,
            task.device,
            self.class_template,
            self.outlier_prompt,
            self.logit_scale,
            self.score,
        )
        summary = fine_tune(detector, task, self.lr, self.momentum, self.weight_decay)
        detector.meta["training"] = {**summary, "prompts": detector.prompts}
        return detector


def fine_tuning_profile(profile, lr: float, momentum: float, weight_decay: float):
    """The profile's steps and batches with this method's SGD settings and App. G.2's milestones."""
    return replace(
        profile, lr=lr, momentum=momentum, weight_decay=weight_decay, lr_milestones=PAPER_MILESTONES
    )


def fine_tune(
    detector: ClipDetector, task: TrainTask, lr: float, momentum: float, weight_decay: float
) -> dict:
    """Train ``detector.backbone.model.visual`` in place with :func:`bce_clip_loss` through the shared loop
    (the profile's steps and batches; lr, momentum, weight decay and the paper's milestones from here)."""
    visual = detector.backbone.model.visual
    profile = fine_tuning_profile(task.profile, lr, momentum, weight_decay)
    torch.manual_seed(task.seed)

    def loss_fn(network, x_in, y_in, x_oe):
        logits = detector.logits(torch.cat([x_in, x_oe]))  # one pass, as the authors' code
        return bce_clip_loss(logits[: len(x_in)], logits[len(x_in) :])

    started = time.perf_counter()
    detector.to(task.device)
    visual.requires_grad_(True)
    try:
        summary = train_network(visual, replace(task, profile=profile), loss_fn, uses_oe=True)
    finally:
        visual.requires_grad_(False)
    detector.fine_tuned = True
    detector.eval()
    return {
        **summary,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "milestones": list(PAPER_MILESTONES),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
