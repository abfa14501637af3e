"""``glyph-clip``: a tiny noise-aware CLIP (``open_clip.CLIP``) trained on the glyph corpus.

Architecture (:data:`CLIP_CONFIG`, 1.07M parameters): ViT image tower, patch 4, width 128, 4 layers of 4
heads, 16 x 16 input (3 channels: gray images are repeated), CLS-token pooling; text transformer of width
96, 2 layers of 4 heads, context length 16; joint embedding 128. Inputs are normalised with mean 0.5,
std 0.5 per channel, so the model sees [0, 1] images as [-1, 1], the DDPM's model space.

Tokenizer (:class:`WordTokenizer`): the full 49k BPE vocabulary is far too slow to train on a CPU, so the
text tower has a word-level vocabulary: every word of the corpus captions and of RODEO's 14 negative
templates (filled with every concept), plus a few words that prompts commonly use (:data:`EXTRA_WORDS`).
Text is lowercased and split into runs of ``[a-z0-9]``; everything else (punctuation) is dropped. Ids:
0 = padding, 1 = ``<unk>`` (any word outside the vocabulary), 2 ... V-3 = the words in sorted order,
V-2 = ``<start_of_text>``, V-1 = ``<end_of_text>``. A sequence is [start, words..., end, 0, ...]; text longer
than 14 words is cut and still ends in ``<end_of_text>``. The end token has the largest id, so
open_clip's default ``argmax`` text pooling (the installed open_clip pools at ``text.argmax(-1)``) takes
its position, exactly as with open_clip's own tokenizer. The vocabulary is saved in the JSON config.

Training (:func:`train_clip`): contrastive, on a seeded pool of training-split corpus images. Batches hold
repeated captions, so the loss is CLIP's symmetric cross-entropy over the *distinct* captions of the
batch: image -> its caption, caption -> uniform over the images that carry it (no false negatives).
Known limitation: the model learns the concepts well but hardly the damage (``damaged_vs_clean_glyphs``
in the JSON, chance 0.5); adding each image's clean and a damaged caption of its concept as hard
negatives, with half of the pool damaged, did not fix that in trials of 300-600 steps either.
Noise-aware: 40% of the batches are replaced by q(x_t | x_0) of the DDPM's cosine schedule
(``squaredcos_cap_v2``, T = 1000) at t ~ U{1, ..., 700} per image, so the CLIP can guide a diffusion model
on noisy samples. AdamW (lr 1e-3, weight decay 0.05 on matrices), 100 warm-up steps, cosine decay, a fixed
number of steps; the logit scale starts at ln(1/0.07), learns with a 10x learning rate (it barely moves
otherwise in so few steps) and is clipped at ln(100).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bench.backbones import ClipBackbone
from bench.errors import BadInput

CONTEXT_LENGTH = 16
EMBED_DIM = 128
IMAGE_SIZE = 16
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
VISION_CFG = {"layers": 4, "width": 128, "head_width": 32, "patch_size": 4, "image_size": IMAGE_SIZE}
TEXT_CFG = {"context_length": CONTEXT_LENGTH, "width": 96, "heads": 4, "layers": 2}
PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<start_of_text>", "<end_of_text>"
EXTRA_WORDS = (
    "others", "something", "an", "image", "picture", "drawing", "number", "character", "glyph", "sign",
    "handwritten", "written", "stain", "no", "not", "and", "or", "blurry", "noisy", "clean", "normal",
    "anomalous", "unknown", "object", "background", "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "hundred", "letters",
    "digits", "symbols", "numbers",
)  # fmt: skip
TRAINING = {
    "batch_size": 128,
    "pool_size": 60_000,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 100,
    "noise_fraction": 0.4,
    "max_noise_t": 700,
    "max_logit_scale": math.log(100.0),
    "logit_scale_lr_factor": 10.0,
    "damaged_fraction": 0.2,
}
DEFAULT_STEPS = 1500
WORD = re.compile(r"[a-z0-9]+")


class WordTokenizer:
    """Word-level tokenizer laid out for open_clip's argmax text pooling (see the module docstring)."""

    def __init__(self, words: list[str], context_length: int = CONTEXT_LENGTH):
        self.words = list(words)
        self.vocab = [PAD, UNK, *self.words, SOT, EOT]
        self.ids = {word: i for i, word in enumerate(self.vocab)}
        self.context_length = int(context_length)
        self.pad_id, self.unk_id = 0, 1
        self.sot_id, self.eot_id = len(self.vocab) - 2, len(self.vocab) - 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        return WORD.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        words = self.split(text)[: self.context_length - 2]
        return [self.sot_id, *(self.ids.get(w, self.unk_id) for w in words), self.eot_id]

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokens = torch.zeros((len(texts), self.context_length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in self.split(text) if w not in self.ids]


def build_vocabulary() -> list[str]:
    """Sorted words of every corpus caption, every filled negative template and :data:`EXTRA_WORDS`."""
    from bench.datasets.glyph_corpus import NEGATIVE_TEMPLATES, caption, concepts, fill_template

    words: set[str] = set(EXTRA_WORDS)
    for concept in concepts():
        for text in (caption(concept), *(fill_template(t, concept) for t in NEGATIVE_TEMPLATES)):
            words.update(WORD.findall(text.lower()))
    return sorted(words)


def clip_config(vocab_size: int) -> dict:
    """The ``open_clip.CLIP`` keyword arguments."""
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": dict(VISION_CFG),
        "text_cfg": {**TEXT_CFG, "vocab_size": int(vocab_size)},
    }


def make_model(config: dict):
    from open_clip.model import CLIP

    return CLIP(**config)


def _backbone(name: str, model, tokenizer: WordTokenizer, info: dict) -> ClipBackbone:
    return ClipBackbone(
        name=name,
        model=model,
        tokenizer=tokenizer,
        image_size=IMAGE_SIZE,
        mean=IMAGE_MEAN,
        std=IMAGE_STD,
        embed_dim=EMBED_DIM,
        source="embedded",
        info=info,
    )


def load_embedded_clip(name: str, weights: Path, config_path: Path) -> ClipBackbone:
    from bench.code_version import file_digest

    meta = json.loads(Path(config_path).read_text())
    expected = meta.get("weights_sha256")
    if expected and file_digest(weights) != expected:
        raise BadInput(
            f"{weights} does not match the sha256 in {Path(config_path).name}; run `bench backbones build`"
        )
    tokenizer = WordTokenizer(meta["vocabulary"], meta["config"]["text_cfg"]["context_length"])
    model = make_model(meta["config"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    info = {k: meta.get(k) for k in ("metrics", "training", "params", "weights_sha256")}
    return _backbone(name, model, tokenizer, info)


# ---- training and evaluation ----------------------------------------------------------------------------


def noise_schedule() -> torch.Tensor:
    """alpha-bar (T,) of the DDPM's scheduler (cosine, T = 1000), float32."""
    from bench.backbones.tiny_ddpm import make_scheduler

    return make_scheduler().alphas_cumprod.to(torch.float32)


def noised(
    images01: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, generator=None
) -> torch.Tensor:
    """q(x_t | x_0) in model space, mapped back to the [0, 1] scale (values outside it are kept)."""
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    x0 = images01 * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    return ((abar.sqrt() * x0 + (1 - abar).sqrt() * noise) + 1) / 2


def _contrastive_loss(image_features, text_features, targets, scale):
    """Image -> its caption among all candidates; caption -> uniform over its images (captions that only
    serve as hard negatives have no images and no text-side term)."""
    logits = scale * image_features @ text_features.T  # (B, U)
    image_loss = F.cross_entropy(logits, targets)
    positives = F.one_hot(targets, num_classes=text_features.shape[0]).T.float()  # (U, B)
    counts = positives.sum(1)
    has_images = counts > 0
    positives = positives[has_images] / counts[has_images, None]
    text_loss = -(positives * F.log_softmax(logits.T[has_images], dim=1)).sum(1).mean()
    return (image_loss + text_loss) / 2


def caption_table() -> list[str]:
    """Every caption the corpus can produce: the clean one and the 14 negative templates of each concept."""
    from bench.datasets.glyph_corpus import NEGATIVE_TEMPLATES, caption, concepts, fill_template

    texts = [caption(c) for c in concepts()]
    texts += [fill_template(t, c) for c in concepts() for t in NEGATIVE_TEMPLATES]
    return sorted(set(texts))


def train_clip(
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    log: Callable[[str], None] = print,
    name: str = "glyph-clip",
) -> tuple[ClipBackbone, dict]:
    """Train the tiny CLIP from scratch, deterministically; returns the backbone and a training summary."""
    from bench.datasets.glyph_corpus import glyph_corpus

    cfg = TRAINING
    batch = cfg["batch_size"]
    pool_size = int(min(cfg["pool_size"], max(steps * batch, 4 * batch)))
    torch.manual_seed(seed)
    started = time.perf_counter()
    corpus = glyph_corpus("train", pool_size, seed=seed, damaged_fraction=cfg["damaged_fraction"])
    corpus_seconds = time.perf_counter() - started
    tokenizer = WordTokenizer(build_vocabulary())
    config = clip_config(tokenizer.vocab_size)
    model = make_model(config)
    backbone = _backbone(name, model, tokenizer, {})
    table = caption_table()
    position = {text: i for i, text in enumerate(table)}
    caption_tokens = tokenizer(table)
    caption_index = torch.tensor([position[text] for text in corpus.captions])
    abar = noise_schedule()
    decay, no_decay = [], []
    for param_name, param in model.named_parameters():
        if param_name != "logit_scale":
            (decay if param.ndim >= 2 and "embedding" not in param_name else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg["weight_decay"], "lr_factor": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_factor": 1.0},
        {"params": [model.logit_scale], "weight_decay": 0.0, "lr_factor": cfg["logit_scale_lr_factor"]},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
        progress = (step - cfg["warmup_steps"]) / max(1, steps - cfg["warmup_steps"])
        return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(pool_size, generator=generator)
    cursor, losses = 0, []
    model.train()
    for step in range(steps):
        if cursor + batch > pool_size:
            order, cursor = torch.randperm(pool_size, generator=generator), 0
        rows = order[cursor : cursor + batch]
        cursor += batch
        images = corpus.images[rows]
        if torch.rand((), generator=generator) < cfg["noise_fraction"]:
            t = torch.randint(1, cfg["max_noise_t"] + 1, (batch,), generator=generator)
            images = noised(images, t, abar, generator)
        distinct, targets = torch.unique(caption_index[rows], return_inverse=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["lr_factor"]
        image_features = backbone.encode_image(images)
        text_features = F.normalize(model.encode_text(caption_tokens[distinct]), dim=-1)
        loss = _contrastive_loss(image_features, text_features, targets, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, cfg["max_logit_scale"])
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"glyph-clip step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.4f}")
    model.eval()
    summary = {
        "steps": int(steps),
        "seed": int(seed),
        **cfg,
        "pool_size": pool_size,
        "corpus": {
            "split": "train",
            "count": pool_size,
            "seed": int(seed),
            "size": 16,
            "damaged_fraction": cfg["damaged_fraction"],
        },
        "final_loss": float(np.mean(losses[-100:])),
        "first_loss": float(losses[0]),
        "distinct_captions_in_pool": len(set(corpus.captions)),
        "corpus_seconds": round(corpus_seconds, 2),
        "train_seconds": round(time.perf_counter() - started - corpus_seconds, 2),
    }
    backbone.info.update(training=summary)
    return backbone, summary


@torch.no_grad()
def zero_shot_accuracy(
    backbone: ClipBackbone, images: torch.Tensor, labels: torch.Tensor, prompts: list[str]
) -> float:
    """Share of images whose most similar prompt is ``prompts[label]``."""
    text = backbone.encode_text(prompts)
    predictions = []
    for start in range(0, len(images), 256):
        predictions.append((backbone.encode_image(images[start : start + 256]) @ text.T).argmax(1).cpu())
    return float((torch.cat(predictions) == torch.as_tensor(labels)).float().mean())


def digit_prompts() -> list[str]:
    from bench.datasets.glyph_corpus import caption, digit_concept

    return [caption(digit_concept(d)) for d in range(10)]


def heldout_glyph_digits(count: int = 500, seed: int = 0):
    """Validation-split clean corpus digits and their labels (the build's held-out set)."""
    from bench.datasets.glyph_corpus import DIGIT_WORDS, glyph_corpus

    corpus = glyph_corpus("validation", count, seed=seed, damaged_fraction=0.0, kinds=("digit",))
    labels = torch.tensor([DIGIT_WORDS.index(c.split()[-1]) for c in corpus.concepts])
    return corpus.images, labels


@torch.no_grad()
def damage_accuracy(backbone: ClipBackbone, count: int = 400, seed: int = 0) -> float:
    """Held-out corpus glyphs (all kinds, half damaged): share of images for which "damaged" is called
    right, calling an image damaged when one of its concept's 14 damaged captions is more similar to it
    than its clean caption. Chance: 0.5."""
    from bench.datasets.glyph_corpus import NEGATIVE_TEMPLATES, caption, fill_template, glyph_corpus

    corpus = glyph_corpus("validation", count, seed=seed, damaged_fraction=0.5)
    table = caption_table()
    position = {text: i for i, text in enumerate(table)}
    text = torch.cat([backbone.encode_text(table[i : i + 512]) for i in range(0, len(table), 512)])
    image = backbone.encode_image(corpus.images)
    clean = torch.tensor([position[caption(c)] for c in corpus.concepts])
    damaged = torch.tensor(
        [[position[fill_template(t, c)] for t in NEGATIVE_TEMPLATES] for c in corpus.concepts]
    )
    similarity = image @ text.T
    rows = torch.arange(len(corpus))
    called = similarity[rows[:, None], damaged].amax(1) > similarity[rows, clean]
    truth = torch.tensor([d is not None for d in corpus.damage])
    return float((called == truth).float().mean())


@torch.no_grad()
def evaluate_clip(backbone: ClipBackbone, seed: int = 0) -> dict:
    """Zero-shot digit accuracy on held-out corpus digits and scikit-learn's digits (test split), clean and
    at t = 500 of the DDPM schedule (fixed noise); damaged-vs-clean accuracy; the logit scale."""
    from bench.datasets.digits import digits

    prompts = digit_prompts()
    glyph_images, glyph_labels = heldout_glyph_digits(seed=seed)
    real = digits()
    abar = noise_schedule()
    generator = torch.Generator().manual_seed(1234)
    t500 = torch.full((len(glyph_images),), 500)
    real16 = F.interpolate(real.test_images, size=(16, 16), mode="bilinear", align_corners=False)
    t500_real = torch.full((len(real16),), 500)
    return {
        "zero_shot_glyph_digits": zero_shot_accuracy(backbone, glyph_images, glyph_labels, prompts),
        "zero_shot_sklearn_digits": zero_shot_accuracy(backbone, real16, real.test_labels, prompts),
        "zero_shot_glyph_digits_t500": zero_shot_accuracy(
            backbone, noised(glyph_images, t500, abar, generator), glyph_labels, prompts
        ),
        "zero_shot_sklearn_digits_t500": zero_shot_accuracy(
            backbone, noised(real16, t500_real, abar, generator), real.test_labels, prompts
        ),
        "damaged_vs_clean_glyphs": damage_accuracy(backbone, seed=seed),
        "heldout_glyph_digits": len(glyph_images),
        "sklearn_digits_test": len(real16),
        "logit_scale": backbone.logit_scale,
    }
