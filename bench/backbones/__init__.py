"""Pretrained backbones for methods that need a text-image model or a diffusion model (RODEO, zero-shot CLIP).

Two kinds, each loaded by name, and never over the network:

- a CLIP (:class:`ClipBackbone`, :func:`load_clip`): an ``open_clip`` model with a tokenizer;
- a DDPM (:class:`DiffusionBackbone`, :func:`load_ddpm`): a ``diffusers.UNet2DModel`` (epsilon prediction)
  with its ``DDPMScheduler``.

Names:

- ``"glyph-clip"`` (:data:`EMBEDDED_CLIP`) and ``"glyph-ddpm"`` (:data:`EMBEDDED_DDPM`): small models trained
  on the synthetic glyph corpus (:mod:`bench.datasets.glyph_corpus`) and shipped inside the package
  (``bench/backbones/weights/<name>.safetensors`` + ``<name>.json``). ``bench backbones build`` (or
  ``python -m bench.backbones.build``) retrains them deterministically on a CPU; ``bench backbones list``
  shows what is there and the metrics measured at build time.
- ``"hub-clip:<open_clip model name>@<path to a local checkpoint file or a pretrained tag>"``, e.g.
  ``"hub-clip:ViT-B-32@/data/clip/open_clip_pytorch_model.bin"`` or ``"hub-clip:ViT-B-16@openai"`` (read
  from the Hugging Face cache, offline): an architecture that
  ``open_clip.list_models()`` knows, with the weights of a checkpoint file already on disk (a state dict
  saved with ``torch.save`` or safetensors, as open_clip writes and the hub serves them). The model name
  ends at the first ``@``. The tokenizer is the one open_clip pairs with that model (the bundled BPE for
  most models; a HuggingFace tokenizer must already be in the local HF cache).
- ``"hub-ddpm:<path to a local diffusers folder or a hub repo id>"``, e.g.
  ``"hub-ddpm:/data/ddpm-cifar10-32"`` or ``"hub-ddpm:google/ddpm-cifar10-32"`` (its snapshot in the
  Hugging Face cache, offline): a folder with
  the UNet (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``, as
  ``UNet2DModel.save_pretrained`` writes them, either in the folder itself or in its ``unet/``) and the
  scheduler config (``scheduler/scheduler_config.json`` or ``scheduler_config.json``), the layouts of
  ``DDPMPipeline.save_pretrained`` and of the hub's DDPM repositories.

:func:`backbone_files` lists the files a name loads (for cache keys) without building anything.

Hub files are read with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``; a missing file raises
:class:`bench.errors.BadInput` with one line that says which files to put where. An unknown embedded
name, or a missing embedded weights file, raises ``BadInput`` too (the latter says to run
``bench backbones build``).

Images are always float tensors in [0, 1], (N, C, H, W) with C in {1, 3}; resizing, channel matching and
normalisation happen inside the backbones, differentiably.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones.files import (
    EMBEDDED,
    EMBEDDED_CLIP,
    EMBEDDED_DDPM,
    EMBEDDED_DDPM_SIZES,
    HUB_CLIP_PREFIX,
    HUB_DDPM_PREFIX,
    PAPER_BACKBONES,
    WEIGHTS_DIR,
    backbone_files,
)
from bench.errors import BadInput

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's RGB -> L


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise BadInput(f"images must be a float tensor (N, C, H, W) with C in 1, 3; got {shape}")


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray -> repeated over ``channels``; RGB -> luma when one channel is wanted."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise BadInput(f"cannot turn {images.shape[1]}-channel images into {channels} channels")


def resize(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing without antialiasing (differentiable, cheap); identity at the same size."""
    if tuple(images.shape[-2:]) == tuple(hw):
        return images
    return F.interpolate(images, size=tuple(hw), mode="bilinear", align_corners=False, antialias=False)


def _hw(size) -> tuple[int, int]:
    if isinstance(size, int | float):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


class ClipBackbone(nn.Module):
    """An open_clip CLIP with its tokenizer and preprocessing; images in [0, 1].

    ``model`` is the ``open_clip.CLIP`` itself (image tower ``model.visual``), trainable for fine-tuning.
    ``encode_image`` and ``encode_text`` return L2-normalised embeddings; ``logit_scale`` is the trained
    temperature, exp(model.logit_scale).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size,
        mean,
        std,
        embed_dim: int,
        source: str,
        info: dict | None = None,
    ):
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.image_hw = _hw(image_size)
        self.image_size = self.image_hw[0]
        self.embed_dim = int(embed_dim)
        self.channels = len(mean)
        self.source = source
        self.info = dict(info or {})
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().reshape(-1)[0])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (any size, 1 or 3 channels) -> the model's normalised input, differentiably."""
        _check_images(images)
        x = images.to(device=self.device, dtype=torch.float32)
        x = resize(match_channels(x, self.channels), self.image_hw)
        return (x - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) unit vectors; differentiable w.r.t. ``images``."""
        return F.normalize(self.model.encode_image(self.preprocess(images)), dim=-1)

    def tokenize(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts: list[str] | str) -> torch.Tensor:
        """(len(texts), D) unit vectors."""
        return F.normalize(self.model.encode_text(self.tokenize(texts)), dim=-1)

    def logits(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(N, len(texts)) logit_scale * cosine similarity, as CLIP's zero-shot classifier."""
        return self.logit_scale * self.encode_image(images) @ self.encode_text(texts).T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


class DiffusionBackbone(nn.Module):
    """A diffusers UNet2DModel (epsilon prediction) with its DDPMScheduler; model space is [-1, 1]."""

    def __init__(self, name: str, unet: nn.Module, scheduler, source: str, info: dict | None = None):
        super().__init__()
        self.name = name
        self.unet = unet
        self.scheduler = scheduler
        self.image_hw = _hw(unet.config.sample_size)
        self.image_size = self.image_hw[0]
        self.channels = int(unet.config.in_channels)
        self.source = source
        self.info = dict(info or {})

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) float32 alpha-bar of the scheduler, on the backbone's device."""
        return self.scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)

    def to_model_space(self, images01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (any size, 1 or 3 channels) -> (N, channels, size, size) in [-1, 1]."""
        _check_images(images01)
        x = images01.to(device=self.device, dtype=torch.float32)
        return resize(match_channels(x, self.channels), self.image_hw) * 2 - 1

    def from_model_space(self, x: torch.Tensor, size=None, channels: int | None = None, clamp: bool = True):
        """[-1, 1] -> [0, 1] (clipped unless ``clamp=False``), optionally resized / channel-matched."""
        images = (x + 1) / 2
        if clamp:
            images = images.clamp(0, 1)
        if channels is not None:
            images = match_channels(images, int(channels))
        if size is not None:
            images = resize(images, _hw(size))
        return images

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, in model space."""
        abar = self.alphas_cumprod[timesteps.to(self.device).long()].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, timesteps.to(self.device)).sample

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.predict_noise(x_t, timesteps)


def _embedded_files(name: str, weights_dir: str | Path | None) -> tuple[Path, Path]:
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    weights, config = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not weights.is_file() or not config.is_file():
        raise BadInput(
            f"embedded backbone {name!r}: {weights} or {config.name} is missing; run `bench backbones build`"
            + (f" --out {folder}" if weights_dir is not None else "")
        )
    return weights, config


def check_backbone(name: str) -> None:
    """Raise BadInput, with the same one line a load would give, when backbone ``name`` (embedded,
    ``hub-clip:...`` or ``hub-ddpm:...``) names no known form or its files are missing. Loads nothing:
    a run calls it while planning, before it writes anything."""
    if not isinstance(name, str):
        raise BadInput(f"bad backbone name {name!r}")
    if name.startswith(HUB_CLIP_PREFIX):
        from bench.backbones.hub import check_hub_clip

        check_hub_clip(name)
    elif name.startswith(HUB_DDPM_PREFIX):
        from bench.backbones.hub import check_hub_ddpm

        check_hub_ddpm(name)
    elif name in EMBEDDED:
        _embedded_files(name, None)
    elif name in PAPER_BACKBONES:
        from bench.backbones.paper import check_present

        check_present(name)
    else:
        raise BadInput(
            f"unknown backbone {name!r}; accepted: {', '.join([*EMBEDDED, *PAPER_BACKBONES])}, "
            f"{HUB_CLIP_PREFIX}<open_clip model name>@<checkpoint file or tag>, "
            f"{HUB_DDPM_PREFIX}<diffusers folder or repo id>"
        )


def load_clip(
    name: str = EMBEDDED_CLIP, *, device="cpu", weights_dir: str | Path | None = None
) -> ClipBackbone:
    """The CLIP backbone ``name`` (an embedded name or ``hub-clip:<model>@<checkpoint file>``), eval mode."""
    if not isinstance(name, str):
        raise BadInput(f"bad CLIP backbone name {name!r}")
    if name.startswith(HUB_CLIP_PREFIX):
        from bench.backbones.hub import load_hub_clip

        backbone = load_hub_clip(name)
    elif name == EMBEDDED_CLIP:
        from bench.backbones.tiny_clip import load_embedded_clip

        backbone = load_embedded_clip(name, *_embedded_files(name, weights_dir))
    elif PAPER_BACKBONES.get(name) == "clip":
        from bench.backbones.paper import load_paper_clip

        backbone = load_paper_clip(name)
    else:
        raise BadInput(
            f"unknown CLIP backbone {name!r}; accepted: {EMBEDDED_CLIP}, "
            f"{HUB_CLIP_PREFIX}<open_clip model name>@<path to a local checkpoint file or a pretrained tag>"
        )
    return backbone.to(device).eval()


def load_ddpm(
    name: str = EMBEDDED_DDPM, *, device="cpu", weights_dir: str | Path | None = None
) -> DiffusionBackbone:
    """The diffusion backbone ``name`` (an embedded name or ``hub-ddpm:<diffusers folder>``), eval mode."""
    if not isinstance(name, str):
        raise BadInput(f"bad DDPM backbone name {name!r}")
    if name.startswith(HUB_DDPM_PREFIX):
        from bench.backbones.hub import load_hub_ddpm

        backbone = load_hub_ddpm(name)
    elif EMBEDDED.get(name) == "ddpm":
        from bench.backbones.tiny_ddpm import load_embedded_ddpm

        backbone = load_embedded_ddpm(name, *_embedded_files(name, weights_dir))
    elif PAPER_BACKBONES.get(name) == "ddpm":
        from bench.backbones.paper import load_paper_ddpm

        backbone = load_paper_ddpm(name)
    else:
        raise BadInput(
            f"unknown DDPM backbone {name!r}; accepted: {', '.join(EMBEDDED_DDPM_SIZES.values())}, "
            f"{HUB_DDPM_PREFIX}<path to a local diffusers folder or a hub repo id>"
        )
    return backbone.to(device).eval()


def list_backbones(weights_dir: str | Path | None = None) -> list[dict]:
    """One dict per embedded backbone (read from its JSON; no model is built), then the hub forms."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    rows = []
    for name, kind in EMBEDDED.items():
        weights, config = folder / f"{name}.safetensors", folder / f"{name}.json"
        row = {"name": name, "kind": kind, "source": "embedded", "file": str(weights)}
        if weights.is_file() and config.is_file():
            meta = json.loads(config.read_text())
            row.update(
                size_bytes=weights.stat().st_size,
                params=meta.get("params"),
                metrics={"final_loss": meta.get("training", {}).get("final_loss"), **meta.get("metrics", {})},
                steps=meta.get("training", {}).get("steps"),
                status="ok",
            )
        else:
            row.update(
                size_bytes=None,
                params=None,
                metrics={},
                steps=None,
                status="missing: run bench backbones build"
                + (
                    ""
                    if name in (EMBEDDED_CLIP, EMBEDDED_DDPM)
                    else f" --only ddpm --size {name.rsplit('-', 1)[1]}"
                ),
            )
        rows.append(row)
    rows.append(
        {
            "name": f"{HUB_CLIP_PREFIX}<open_clip model name>@<checkpoint file or pretrained tag>",
            "kind": "clip",
            "source": "hub",
            "file": "a local open_clip checkpoint, or a tag's weights in the Hugging Face cache",
            "status": "on demand",
        }
    )
    rows.append(
        {
            "name": f"{HUB_DDPM_PREFIX}<diffusers folder or hub repo id>",
            "kind": "ddpm",
            "source": "hub",
            "file": "a local diffusers UNet2DModel + DDPMScheduler folder, or a repo snapshot (HF cache)",
            "status": "on demand",
        }
    )
    return rows


__all__ = [
    "EMBEDDED_CLIP",
    "EMBEDDED_DDPM",
    "ClipBackbone",
    "DiffusionBackbone",
    "backbone_files",
    "list_backbones",
    "load_clip",
    "load_ddpm",
]
