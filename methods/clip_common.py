"""What the CLIP methods share (``clip`` and ``bce-clip``; Liznerski et al., "Exposing Outlier Exposure",
TMLR 2022, Sec. 3.3 and App. I.3): the prompts, the score and the detector.

For a task with K inlier classes the text candidates are (Sec. 3.3 for K = 1, App. I.3 Eq. 5 for K > 1)

    v_1 .. v_K = "a photo of the {class}"   (one per inlier class, ``TrainTask.class_prompts``)
    v_{K+1}    = "a photo of something"     (the outlier prompt)

and, with u = f_u(x) the image embedding and <.,.> the cosine similarity,

    logits_k = 100 * <u, f_v(v_k)>,         s(x) = softmax(logits)_{K+1}          (Eq. 4 / Eq. 5)

i.e. the softmax probability of "something". The scale 100 is the paper's (Eq. 4 and 5; the authors'
code ``eoe/training/clip.py`` multiplies by ``100.0``), not the backbone's trained temperature.

Prompt phrasing: the paper writes "a photo of a {NORMAL_CLASS}". The embedded ``glyph-clip`` was trained on
captions "a photo of the digit seven" (``bench.datasets.glyph_corpus.CAPTION_PREFIX`` = "a photo of the "),
so the default template is "a photo of the {}", the phrasing that model has seen; ``class_template`` takes
the paper's "a photo of a {}" for a hub CLIP.

Score forms (``score``): ``"probability"`` is Eq. 4/5. In float32 it saturates at exactly 1.0 for images
that match "something" much better than every class (on digits nd with glyph-clip, hundreds of test
outliers per cell), where its gradient is zero and gradient attacks get no signal. ``"log_odds"`` is
log(s / (1 - s)) = logits_{K+1} - logsumexp(logits_1..K), a strictly increasing function of s (the same
ranking, so the same AUROC, FPR95 and AUPR up to float ties) that does not saturate: the analogue of what
``oe`` (outlier logit) and ``hsc`` (h instead of 1 - exp(-h)) do in this harness. Whatever the score form,
attacks differentiate the log-odds (``ClipDetector.attack_objective``), so the rows keep Eq. 4/5's
probability and the attacks keep their gradient.

Detector (:class:`ClipDetector`): the backbone (resizing, channel matching and normalisation happen inside
``ClipBackbone.preprocess``, differentiably, so images stay in [0, 1] at the dataset's size) and the K + 1
text embeddings as a buffer (computed once; the text tower is never run again). Saved with
``Detector.save``: the JSON config names the backbone (``load_clip`` rebuilds it) and its weights'
fingerprint; the safetensors hold the text embeddings and, for a fine-tuned detector, the image tower's
weights (the text tower never changes, so it is not stored).
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from bench.backbones import (
    EMBEDDED_CLIP,
    HUB_CLIP_PREFIX,
    PAPER_BACKBONES,
    WEIGHTS_DIR,
    ClipBackbone,
    load_clip,
)
from bench.detector import Detector, detector_class
from bench.errors import BadInput

# Sec. 3.3: "a photo of something"; the authors' code: ``anom_tkn_ptn='a photo of something'``.
OUTLIER_PROMPT = "a photo of something"
# glyph corpus captions: "a photo of the digit seven" (the paper: "a photo of a {NORMAL_CLASS}").
CLASS_TEMPLATE = "a photo of the {}"
PAPER_LOGIT_SCALE = 100.0  # Sec. 3.3 Eq. 4, App. I.3 Eq. 5: "<f_u(x), f_v(v_k)> * 100"
SCORES = ("probability", "log_odds")


# ---- prompts, scores --------------------------------------------------------------------------------------


def class_prompts(task_prompts: list[str], template: str = CLASS_TEMPLATE) -> list[str]:
    """One text per inlier class: ``template`` filled with ``TrainTask.class_prompts`` ("digit seven")."""
    return [template.format(name) for name in task_prompts]


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, K+1) ``scale`` * cosine similarity of unit image and text embeddings (Eq. 4/5)."""
    return scale * image_features @ text_features.T


def something_probability(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4/5: softmax over the K+1 prompts, probability of the last ("something")."""
    return torch.softmax(logits, dim=1)[:, -1]


def something_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log(s / (1 - s)) of the same s: logits_{K+1} - logsumexp(logits_1..K); strictly increasing in s."""
    return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=1)


SCORE_FUNCTIONS = {"probability": something_probability, "log_odds": something_log_odds}


# ---- backbone names and fingerprints ----------------------------------------------------------------------


def check_backbone_name(name: str) -> None:
    """BadInput unless ``name`` is the embedded CLIP or a well-formed ``hub-clip:<model>@<file>``
    whose files exist (checked without building anything)."""
    if not isinstance(name, str):
        raise BadInput(f"bad CLIP backbone {name!r}")
    accepted = (
        f"{EMBEDDED_CLIP}, openai-vit-b-32, {HUB_CLIP_PREFIX}<open_clip model name>@<path to a local "
        "checkpoint file>"
    )
    if name == EMBEDDED_CLIP:
        missing = [
            p for p in (WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json") if not p.is_file()
        ]
        if missing:
            raise BadInput(f"CLIP backbone {name!r}: {missing[0]} is missing; run `bench backbones build`")
        return
    if name in PAPER_BACKBONES and PAPER_BACKBONES[name] == "clip":
        return  # its files are checked while planning (bench.backbones.paper.plan_check)
    if name.startswith(HUB_CLIP_PREFIX):
        from bench.backbones.hub import parse_hub_clip

        model_name, checkpoint = parse_hub_clip(name)  # BadInput when malformed
        import open_clip

        if model_name not in open_clip.list_models():
            raise BadInput(f"CLIP backbone {name!r}: {model_name!r} is not in open_clip.list_models()")
        if not checkpoint.is_file():
            raise BadInput(f"CLIP backbone {name!r}: checkpoint file {checkpoint} does not exist")
        return
    raise BadInput(f"unknown CLIP backbone {name!r}; accepted: {accepted}")


def backbone_fingerprint(name: str) -> str:
    """Which weights ``name`` means now: the embedded weights' sha256 (from their JSON), or the sha256 of
    a hub checkpoint file; ``"missing"`` when the files are absent. Saved with a zero-shot detector, which
    refuses to load over other weights (cache keys hash the files themselves: ``Method.data_files``)."""
    if name == EMBEDDED_CLIP:
        config = WEIGHTS_DIR / f"{name}.json"
        if not config.is_file():
            return "missing"
        return str(json.loads(config.read_text()).get("weights_sha256", "unknown"))
    if name in PAPER_BACKBONES:
        from bench.backbones.paper import backbone_files

        files = backbone_files(name)
        if not files:
            return "missing"
        from bench.code_version import file_digest

        return file_digest(files[0])
    if isinstance(name, str) and name.startswith(HUB_CLIP_PREFIX):
        from bench.backbones.hub import parse_hub_clip

        _, checkpoint = parse_hub_clip(name)
        if not checkpoint.is_file():
            return "missing"
        from bench.code_version import file_digest

        return file_digest(checkpoint)
    return "unknown"


def check_settings(method: str, logit_scale: float, outlier_prompt: str, class_template: str, score: str):
    """BadInput for field values the CLIP methods cannot use."""
    if not (isinstance(logit_scale, int | float) and math.isfinite(logit_scale) and logit_scale > 0):
        raise BadInput(f"{method} logit_scale must be a finite number > 0, got {logit_scale!r}")
    if not isinstance(outlier_prompt, str) or not outlier_prompt.strip():
        raise BadInput(f"{method} outlier_prompt must be a non-empty text, got {outlier_prompt!r}")
    if not isinstance(class_template, str) or class_template.count("{}") != 1:
        raise BadInput(f"{method} class_template must contain '{{}}' exactly once, got {class_template!r}")
    if score not in SCORE_FUNCTIONS:
        raise BadInput(f"unknown {method} score {score!r}; accepted: {', '.join(SCORES)}")


# ---- the detector -----------------------------------------------------------------------------------------


@detector_class
class ClipDetector(Detector):
    """Images in [0, 1] -> the score of the "something" prompt among K class prompts + 1 (Eq. 4/5).

    ``classify`` returns the K class logits (ID accuracy) when K >= 2. Parameters are frozen
    (``requires_grad`` False); the score stays differentiable in the input.
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        prompts: list[str],
        text_features: torch.Tensor | None = None,
        logit_scale: float = PAPER_LOGIT_SCALE,
        score: str = "probability",
        fine_tuned: bool = False,
        backbone_weights: str = "",
    ):
        super().__init__()
        if score not in SCORE_FUNCTIONS:
            raise ValueError(f"unknown score {score!r}; accepted: {', '.join(SCORES)}")
        if len(prompts) < 2:
            raise ValueError("need at least one class prompt and the outlier prompt")
        self.backbone = backbone
        self.prompts = list(prompts)
        self.logit_scale = float(logit_scale)
        self.score_name = score
        self.fine_tuned = bool(fine_tuned)
        self.backbone_weights = backbone_weights
        if text_features is None:
            with torch.no_grad():
                backbone.eval()
                text_features = backbone.encode_text(self.prompts).float()
        self.register_buffer("text_features", text_features.detach().clone().float())
        self.requires_grad_(False)

    @property
    def num_inlier_classes(self) -> int:
        return len(self.prompts) - 1

    @property
    def classifies(self) -> bool:  # type: ignore[override]
        return self.num_inlier_classes >= 2

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K+1) logit_scale * cos(image, prompt)."""
        return clip_logits(self.backbone.encode_image(x), self.text_features, self.logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCORE_FUNCTIONS[self.score_name](self.logits(x))

    def attack_objective(self, x: torch.Tensor) -> torch.Tensor:
        """Both score forms are attacked through the log-odds (the same ranking; the probability is 1.0
        in float32 for hundreds of digits outliers, where its gradient is zero)."""
        return something_log_odds(self.logits(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if not self.classifies:
            raise TypeError("this detector does not classify inliers (one inlier class)")
        return self.logits(x)[:, :-1]

    # -- persistence: text embeddings always, the image tower only when fine-tuned --------------------------

    def _stored(self, key: str) -> bool:
        return key == "text_features" or (self.fine_tuned and key.startswith("backbone.model.visual."))

    def state_dict(self, *args, **kwargs):
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if not self._stored(k[len(prefix) :])]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        full = super().state_dict()
        expected = {k for k in full if self._stored(k)}
        unexpected = sorted(set(state_dict) - expected)
        missing = sorted(expected - set(state_dict))
        if strict and (unexpected or missing):
            raise RuntimeError(f"ClipDetector state: missing {missing[:5]}, unexpected {unexpected[:5]}")
        merged = {**full, **{k: v for k, v in state_dict.items() if k in expected}}
        return super().load_state_dict(merged, strict=strict, assign=assign)

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.name,
            "backbone_weights": self.backbone_weights,
            "prompts": self.prompts,
            "embed_dim": int(self.text_features.shape[1]),
            "logit_scale": self.logit_scale,
            "score": self.score_name,
            "fine_tuned": self.fine_tuned,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClipDetector:
        backbone = load_clip(config["backbone"], device="cpu")
        if not config["fine_tuned"] and config.get("backbone_weights"):
            current = backbone_fingerprint(config["backbone"])
            if current != config["backbone_weights"]:
                raise ValueError(
                    f"the weights of backbone {config['backbone']!r} changed since this zero-shot detector "
                    f"was saved ({config['backbone_weights'][:12]} -> {current[:12]}); fit it again"
                )
        # the right shape only: load_detector then loads the saved text embeddings into this buffer
        saved_shape = torch.zeros(len(config["prompts"]), int(config["embed_dim"]))
        return cls(
            backbone,
            config["prompts"],
            text_features=saved_shape,
            logit_scale=config["logit_scale"],
            score=config["score"],
            fine_tuned=config["fine_tuned"],
            backbone_weights=config.get("backbone_weights", ""),
        )


def build_detector(
    backbone_name: str,
    task_prompts: list[str],
    device: str,
    class_template: str,
    outlier_prompt: str,
    logit_scale: float,
    score: str,
) -> ClipDetector:
    """A zero-shot detector for the task's classes on ``device``."""
    backbone = load_clip(backbone_name, device=device)
    prompts = [*class_prompts(task_prompts, class_template), outlier_prompt]
    detector = ClipDetector(
        backbone,
        prompts,
        logit_scale=logit_scale,
        score=score,
        backbone_weights=backbone_fingerprint(backbone_name),
    )
    unknown = _unknown_words(backbone, prompts)
    if unknown:
        detector.meta["unknown_prompt_words"] = unknown
    return detector.to(device).eval()


def _unknown_words(backbone: ClipBackbone, prompts: list[str]) -> list[str]:
    """Words of the prompts outside a word-level tokenizer's vocabulary (glyph-clip maps them to <unk>)."""
    finder = getattr(backbone.tokenizer, "unknown_words", None)
    if finder is None:
        return []
    return sorted({word for prompt in prompts for word in finder(prompt)})


__all__ = [
    "CLASS_TEMPLATE",
    "OUTLIER_PROMPT",
    "PAPER_LOGIT_SCALE",
    "ClipDetector",
    "backbone_fingerprint",
    "build_detector",
    "check_backbone_name",
    "check_settings",
    "class_prompts",
    "clip_logits",
    "something_log_odds",
    "something_probability",
]
