"""RODEO's adaptive exposure: near-outlier prompts, CLIP-guided diffusion from the inliers, and the
CLIP filter (Mirzaei et al., "RODEO", ICML 2024, Sec. 4, Alg. 1, App. E.3 and K, Table 10).

Steps (Alg. 1):

1. **Near-outlier prompt search** (lines 1-7, App. K). ``tau_text`` (Eq. 20) is the mean L2 distance
   between the CLIP text embeddings of every pair of vocabulary labels. For each inlier label, the
   vocabulary labels (less the inlier labels themselves) are the candidates. Line 5 removes a candidate
   whose minimum distance to Y \\ {label}, the *other* inlier labels, is below ``tau_text``
   (``label_filter="other-labels"``; with one inlier class nothing is removed). The earlier rule,
   ``"all-labels"``, also measured the distance to the class's own label (App. K: "eliminate labels that
   demonstrate semantic equivalence to the inlier label"). ``near_labels`` of the survivors are drawn
   without replacement with probability proportional to their cosine similarity to the inlier label
   (App. K). The class's prompt set is those labels, the 14 negative-adjective prompts of App. K with
   the inlier label, and "others". Deviation: the paper ranks neighbours with Word2Vec; here the CLIP
   text tower is the encoder (the one model that knows the offline vocabulary).
2. **Adaptive generation** (lines 10-17, Sec. 4 "Conditioning on Image", App. E.3). Each inlier image x
   draws a prompt c uniformly from its class's set (line 11) and a start time t0 (one of three readings
   of the paper, :func:`start_step_bounds`), is noised to x_t0 by q(x_t0 | x), and is denoised with the
   DDPM's ancestral sampler on a strided schedule, CLIP-guided at every step:
   mu' = mu + s * Sigma * grad_x_t cos(E_I(x_t), E_T(c)).
   The embedded CLIP is noise-aware (trained on x_t, like GLIDE's), so it reads x_t itself; a hub CLIP
   is not, so it reads the predicted clean image x0_hat(x_t) (deviation, recorded in the metadata).
3. **Filter** (line 18, Eq. 13). ``tau_image`` is the mean cosine similarity between validation images
   and the labels they do not show; a generated image is kept only when its similarity to its own
   inlier label is below ``tau_image``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from bench.datasets.glyph_corpus import NEGATIVE_TEMPLATES, caption, fill_template

OTHERS_LABEL = "others"  # App. K: "we include an extra label, marked as 'others'"
LABEL_FILTERS = ("other-labels", "all-labels")
T0_RULES = ("table10", "sec4.1", "alg1")


def text_threshold(text_embeddings: torch.Tensor) -> float:
    """Eq. 20: tau_text = sum_{i != j} |E_T(y_i) - E_T(y_j)| / (M (M - 1)), the L2 norm of differences."""
    count = len(text_embeddings)
    if count < 2:
        raise ValueError("tau_text needs at least two labels")
    distances = torch.cdist(text_embeddings.double(), text_embeddings.double())
    return float(distances.sum() / (count * (count - 1)))  # the diagonal is zero


def image_threshold(
    image_embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor
) -> float:
    """Eq. 13: tau_image = mean over images x_i^j and labels y_r with r != j of D(E_I(x_i^j), E_T(y_r)),
    D the cosine similarity (embeddings are unit vectors)."""
    similarity = image_embeddings.double() @ text_embeddings.double().T  # (N, M)
    others = torch.ones_like(similarity, dtype=torch.bool)
    others[torch.arange(len(labels)), labels.long()] = False
    return float(similarity[others].mean())


@dataclass
class PromptSet:
    """The n-outlier prompts of one inlier class (Alg. 1 lines 3-6)."""

    inlier_label: str
    near_labels: list[str]
    prompts: list[str]
    candidates_kept: int
    candidates_total: int


def near_outlier_prompts(
    inlier_labels: list[str],
    vocabulary: list[str],
    text_embedding: dict[str, torch.Tensor],
    tau_text: float,
    near_labels: int,
    generator: torch.Generator,
    label_filter: str = "other-labels",
) -> list[PromptSet]:
    """Alg. 1 lines 3-6 for every inlier label. ``text_embedding`` maps each label (inlier and vocabulary)
    to its unit CLIP text embedding (of ``caption(label)``).

    ``label_filter``: ``"other-labels"`` (Alg. 1 line 5) removes, for inlier label k, the candidates whose
    minimum distance to Y \\ {k} is below ``tau_text``; ``"all-labels"`` (the earlier rule) removes those
    within ``tau_text`` of any inlier label, k's own included, so every class keeps the same candidates."""
    if label_filter not in LABEL_FILTERS:
        raise ValueError(f"unknown label_filter {label_filter!r}; accepted: {', '.join(LABEL_FILTERS)}")
    inlier_set = set(inlier_labels)
    candidates = [label for label in dict.fromkeys(vocabulary) if label not in inlier_set]
    inlier_matrix = torch.stack([text_embedding[label] for label in inlier_labels])
    prompt_sets = []
    if not candidates:
        candidate_matrix = torch.empty(0, inlier_matrix.shape[1])
    else:
        candidate_matrix = torch.stack([text_embedding[label] for label in candidates])
    distance_to_inliers = torch.cdist(candidate_matrix, inlier_matrix)  # (C, K)
    far_from = distance_to_inliers >= tau_text  # (C, K): candidate c is no synonym of inlier label j
    for k, label in enumerate(inlier_labels):
        if label_filter == "all-labels":
            keep = far_from.all(dim=1)
        else:  # line 5: MinDist(candidate, Y \ {label}) >= tau_text; all kept when Y \ {label} is empty
            others = [j for j in range(len(inlier_labels)) if j != k]
            keep = far_from[:, others].all(dim=1)
        kept = torch.nonzero(keep).flatten()
        chosen: list[str] = []
        if len(kept) and near_labels > 0:
            similarity = (candidate_matrix[kept] @ inlier_matrix[k]).clamp_min(1e-6)  # App. K: proportional
            draws = torch.multinomial(
                similarity, min(near_labels, len(kept)), replacement=False, generator=generator
            )
            order = kept[draws]
            order = order[torch.argsort(distance_to_inliers[order, k], stable=True)]  # nearest first
            chosen = [candidates[int(i)] for i in order]
        prompts = [caption(c) for c in chosen]
        prompts += [fill_template(template, label) for template in NEGATIVE_TEMPLATES]  # line 6, App. K
        prompts.append(caption(OTHERS_LABEL))
        prompt_sets.append(PromptSet(label, chosen, prompts, int(keep.sum()), len(candidates)))
    return prompt_sets


@dataclass
class GuidedSampler:
    """CLIP-guided ancestral DDPM sampling from noised inliers (SDEdit start), Alg. 1 lines 12-17."""

    ddpm: Any  # bench.backbones.DiffusionBackbone
    clip: Any  # bench.backbones.ClipBackbone
    stride: int
    guidance_scale: float
    noise_aware: bool  # guide on x_t (noise-aware CLIP) or on the predicted clean image x0_hat
    stats: dict[str, float] = field(default_factory=dict)

    def _guidance(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} cos(E_I(image), E_T(c)) per sample, in model space."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            if self.noise_aware:
                image = (x + 1) / 2  # the noisy image on the [0, 1] scale the CLIP was trained on
            else:
                abar = self.ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
                eps = self.ddpm.predict_noise(x, t)
                image = (((x - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1) + 1) / 2
            similarity = (self.clip.encode_image(image) * text).sum(dim=1)
            (gradient,) = torch.autograd.grad(similarity.sum(), x)
        return gradient

    @torch.no_grad()
    def sample(
        self, x0: torch.Tensor, t_init: torch.Tensor, text: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``x0`` inliers in model space, ``t_init`` start steps (multiples of ``stride``), ``text`` the
        unit text embedding of each image's prompt. Returns x_0 in model space."""
        abar_all = self.ddpm.alphas_cumprod
        device = x0.device

        def randn(shape):
            return torch.randn(shape, generator=generator).to(device)

        t_init = t_init.to(device)
        x = x0.clone()
        started = torch.zeros(len(x0), dtype=torch.bool, device=device)
        top = int(t_init.max()) if len(t_init) else 0
        for t in range(top, 0, -self.stride):
            begin = (t_init == t) & ~started
            if begin.any():  # q(x_t | x_0): noise each image to its own start time (line 13)
                abar = abar_all[t]
                x[begin] = abar.sqrt() * x0[begin] + (1 - abar).sqrt() * randn(x0[begin].shape)
                started |= begin
            active = torch.nonzero(started).flatten()
            if len(active) == 0:
                continue
            x_t = x[active]
            t_batch = torch.full((len(active),), t, device=device, dtype=torch.long)
            t_prev = t - self.stride
            abar_t = abar_all[t]
            abar_prev = abar_all[t_prev] if t_prev >= 0 else torch.ones((), device=device)
            eps = self.ddpm.predict_noise(x_t, t_batch)
            x0_hat = ((x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)
            beta = 1 - abar_t / abar_prev  # the strided step's beta
            mean = (abar_prev.sqrt() * beta / (1 - abar_t)) * x0_hat + (
                (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar_t)
            ) * x_t
            variance = beta * (1 - abar_prev) / (1 - abar_t)  # posterior variance (Ho et al. 2020, Eq. 7)
            if self.guidance_scale:
                gradient = self._guidance(x_t, t_batch, text[active])
                mean = mean + self.guidance_scale * variance * gradient  # Sec. 4, Alg. 1 line 15
            if t_prev > 0:
                mean = mean + variance.sqrt() * randn(mean.shape)
            x[active] = mean
        return x.clamp(-1, 1)


def start_step_bounds(
    rule: str, num_train_timesteps: int, stride: int, min_fraction: float, max_fraction: float
) -> tuple[int, int]:
    """(t_min, t_max) of the start step t0 under one of the paper's three readings (T = the DDPM's
    ``num_train_timesteps``; ``t_max`` is capped at T - 1 and floored to the stride grid):

    - ``"table10"``: t0 in (0, max_fraction * T] -- Table 10 "(0, 600)" of T = 1000, App. E.3 "between 0
      and 0.6";
    - ``"sec4.1"``: t0 in [min_fraction * T, max_fraction * T] -- Sec. 4.1 t0 ~ U(0.3T, 0.6T);
    - ``"alg1"``: t0 in [T0, T] with T0 = min_fraction * T -- Alg. 1 line 12 t_init ~ U([T0, ..., T]),
      T0 in [0, 0.6T].
    """
    if rule not in T0_RULES:
        raise ValueError(f"unknown t0 rule {rule!r}; accepted: {', '.join(T0_RULES)}")
    top = num_train_timesteps - 1
    low, high = {
        "table10": (0.0, max_fraction),
        "sec4.1": (min_fraction, max_fraction),
        "alg1": (min_fraction, 1.0),
    }[rule]
    t_max = min(max(stride, int(high * num_train_timesteps)), top)
    t_max -= t_max % stride
    t_min = min(int(round(low * num_train_timesteps)), t_max)
    return t_min, t_max


def start_step_rule(rule: str, min_fraction: float, max_fraction: float) -> str:
    """The start-step rule in words, as the dry run, docs/design.md and README state it (one rule)."""
    if rule == "alg1":
        return (
            f"t0 uniform on the sampling-stride grid in [{min_fraction:g}T, T) (Alg. 1 line 12, "
            f"T0 = {min_fraction:g}T)"
        )
    if rule == "sec4.1":
        return f"t0 uniform on the sampling-stride grid in [{min_fraction:g}T, {max_fraction:g}T] (Sec. 4.1)"
    return f"t0 uniform on the sampling-stride grid in (0, {max_fraction:g}T] (Table 10, App. E.3)"


def draw_start_steps(
    count: int, t_min: int, t_max: int, stride: int, generator: torch.Generator
) -> torch.Tensor:
    """t0 uniform over the stride grid points in [max(t_min, stride), t_max] (``t_max`` on the grid; with
    ``t_min`` = 0: U(0, t_max] rounded up to the grid, Table 10's (0, 600))."""
    lowest = max(stride, -(-t_min // stride) * stride)  # the first grid point >= t_min, never 0
    lowest = min(lowest, t_max)
    raw = torch.randint(lowest - stride + 1, t_max + 1, (count,), generator=generator)
    return ((raw + stride - 1) // stride) * stride


@torch.no_grad()
def label_similarity(clip, images: torch.Tensor, texts: list[str], batch_size: int = 512) -> torch.Tensor:
    """cos(E_I(image_i), E_T(text_i)) per image, in batches."""
    parts = []
    for i in range(0, len(images), batch_size):
        embedding = clip.encode_image(images[i : i + batch_size])
        parts.append((embedding * clip.encode_text(texts[i : i + batch_size])).sum(dim=1).cpu())
    return torch.cat(parts) if parts else torch.empty(0)


def downsample_to(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Model-resolution images in [0, 1] back to the dataset's (C, H, W) (area averaging when smaller)."""
    channels, height, width = shape
    if images.shape[1] != channels:
        images = images.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if tuple(images.shape[-2:]) != (height, width):
        mode = "area" if images.shape[-1] > width else "bilinear"
        images = F.interpolate(images, size=(height, width), mode=mode)
    return images.clamp(0, 1).contiguous()
