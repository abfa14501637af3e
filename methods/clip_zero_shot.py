"""Zero-shot CLIP (Liznerski et al., "Exposing Outlier Exposure", TMLR 2022, Sec. 3.3; App. I.3 for
K > 1 inlier classes).

No training: the text pair ("a photo of the {class}", "a photo of something") for one inlier class, or
the K class prompts and "something" for K classes, and the anomaly score s(x) = softmax(100 * cos(f_u(x),
f_v(v_k)))_{K+1} (Eq. 4 / Eq. 5). Prompts, score forms and the detector: :mod:`bench.methods.clip_common`.

Backbones: ``"glyph-clip"`` (the embedded tiny CLIP trained on the glyph corpus; the paper uses the
pre-trained OpenAI ViT-B/32) or ``"hub-clip:<open_clip model>@<local checkpoint file>"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.backbones.files import EMBEDDED_CLIP, switch_backbones
from bench.backbones.paper import PAPER_CLIP
from bench.contracts import Method, RunContext, TrainTask
from bench.methods.clip_common import (
    CLASS_TEMPLATE,
    OUTLIER_PROMPT,
    PAPER_LOGIT_SCALE,
    ClipDetector,
    build_detector,
    check_backbone_name,
    check_settings,
)
from bench.registry import register_method


@register_method("clip")
@dataclass
class ClipZeroShot(Method):
    clean_floor = {}  # tests/test_detection_floor.py: zero-shot: trains nothing
    shared_code = ("bench.backbones.tiny_ddpm", "bench.datasets.glyph_corpus")

    backbone: str = "glyph-clip"  # the embedded CLIP (the paper: OpenAI's pre-trained ViT-B/32, App. G.2)
    # "embedded": glyph-clip; "paper" (``--profile paper``): OpenAI's ViT-B/32 (EOE Sec. 3.3, App. G.2).
    # Switches only a backbone of the other family (a hub-clip:... form stays).
    backbones: str = "embedded"
    logit_scale: float = PAPER_LOGIT_SCALE  # Sec. 3.3 Eq. 4: cosine similarity * 100
    outlier_prompt: str = OUTLIER_PROMPT  # Sec. 3.3: "a photo of something"
    class_template: str = CLASS_TEMPLATE  # glyph corpus captions; the paper: "a photo of a {}" (Sec. 3.3)
    score: str = "probability"  # Eq. 4/5; "log_odds" = the same ranking without saturation

    protocols = ("nd", "osr", "ood")
    requires = frozenset()

    def __post_init__(self) -> None:
        check_settings("clip", self.logit_scale, self.outlier_prompt, self.class_template, self.score)
        self.backbone = switch_backbones(
            self.backbones,
            {"backbone": self.backbone},
            {"embedded": {"backbone": EMBEDDED_CLIP}, "paper": {"backbone": PAPER_CLIP}},
        )["backbone"]
        check_backbone_name(self.backbone)

    def fit(self, task: TrainTask, ctx: RunContext) -> ClipDetector:
        started = time.perf_counter()
        detector = build_detector(
            self.backbone,
            task.class_prompts,
            task.device,
            self.class_template,
            self.outlier_prompt,
            self.logit_scale,
            self.score,
        )
        if detector.meta.get("unknown_prompt_words"):
            ctx.say(f"clip: prompt words unknown to {self.backbone}: {detector.meta['unknown_prompt_words']}")
        detector.meta["training"] = {
            "zero_shot": True,
            "prompts": detector.prompts,
            "train_seconds": round(time.perf_counter() - started, 3),
        }
        return detector
