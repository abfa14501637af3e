"""Real (hub) backbones from files already on disk; nothing here touches the network.

- ``hub-clip:<open_clip model name>@<path to a local checkpoint file | pretrained tag>``:
  ``open_clip.create_model(name, pretrained=<path or tag>)`` builds the architecture that
  ``open_clip.list_models()`` knows under ``name`` and loads the checkpoint (a state dict saved with
  ``torch.save``, optionally under a ``state_dict`` key, or a safetensors file). A tag of
  ``open_clip.list_pretrained_tags_by_model(name)`` (e.g. ``ViT-B-16@openai``) is read from the Hugging
  Face cache (``$HF_HUB_CACHE``) where open_clip puts it, offline. The model name ends at the first ``@``;
  the path may contain ``@``. Preprocessing (input size, mean, std) comes from open_clip's config of the
  model; the tokenizer from ``open_clip.get_tokenizer(name)`` (the bundled BPE for most models).
- ``hub-ddpm:<path to a local diffusers folder | hub repo id[@revision]>``: a repo id (``org/name``, e.g.
  ``google/ddpm-cifar10-32``, when no such local folder exists) is resolved to its snapshot folder in the
  Hugging Face cache, offline. The UNet comes from ``<folder>/unet/`` if that holds a
  ``config.json``, else from ``<folder>`` itself (``config.json`` + ``diffusion_pytorch_model.safetensors``
  or ``.bin``, as ``UNet2DModel.save_pretrained`` writes them); the scheduler config from
  ``<folder>/scheduler/scheduler_config.json`` or ``<folder>/scheduler_config.json``, read into a
  ``DDPMScheduler``. The UNet must be a ``UNet2DModel`` (unconditional, epsilon prediction).

Loads run with ``HF_HUB_OFFLINE=1`` (environment and ``huggingface_hub.constants``) and
``local_files_only=True``. A missing file raises :class:`bench.errors.BadInput` with one line naming the
files to put where.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.backbones import HUB_CLIP_PREFIX, ClipBackbone, DiffusionBackbone
from bench.backbones.files import (
    _cached_clip_weights,
    _hub_ddpm_folder,
    _one_line,
    _pretrained_tag,
    offline,
)
from bench.errors import BadInput

UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DDPM_LAYOUT = (
    "put config.json + diffusion_pytorch_model.safetensors (diffusers UNet2DModel.save_pretrained) "
    "and scheduler/scheduler_config.json there"
)


def parse_hub_clip(spec: str) -> tuple[str, Path]:
    body = spec[len(HUB_CLIP_PREFIX) :]
    model_name, at, checkpoint = body.partition("@")
    if not at or not model_name or not checkpoint:
        raise BadInput(
            f"bad hub CLIP spec {spec!r}; accepted: {HUB_CLIP_PREFIX}<open_clip model name>@<path to a local "
            "checkpoint file or a pretrained tag>, e.g. hub-clip:ViT-B-32@/data/open_clip_pytorch_model.bin "
            "or hub-clip:ViT-B-16@openai"
        )
    return model_name, Path(checkpoint).expanduser()


def _missing_clip_checkpoint(model_name: str, checkpoint: Path) -> BadInput:
    return BadInput(
        f"hub CLIP checkpoint {checkpoint} does not exist: put the open_clip checkpoint of {model_name} "
        "there (a state dict file saved with torch.save or safetensors, e.g. open_clip_pytorch_model.bin)"
    )


def check_hub_clip(spec: str) -> None:
    """The spec parses and its checkpoint file exists, or its pretrained tag is cached (BadInput
    otherwise); loads nothing."""
    model_name, checkpoint = parse_hub_clip(spec)
    if _pretrained_tag(model_name, checkpoint) is not None:
        _cached_clip_weights(model_name, str(checkpoint))
    elif not checkpoint.is_file():
        raise _missing_clip_checkpoint(model_name, checkpoint)


def check_hub_ddpm(spec: str) -> None:
    """The folder holds a UNet config, UNet weights and a scheduler config (BadInput otherwise)."""
    _ddpm_files(_hub_ddpm_folder(spec))


def load_hub_clip(spec: str) -> ClipBackbone:
    import open_clip

    model_name, checkpoint = parse_hub_clip(spec)
    if model_name not in open_clip.list_models():
        examples = ", ".join(
            m for m in ("ViT-B-32", "ViT-B-16", "RN50", "ViT-L-14") if m in open_clip.list_models()
        )
        raise BadInput(
            f"unknown open_clip model {model_name!r} in {spec!r}; accepted: a name in "
            f"open_clip.list_models() (e.g. {examples})"
        )
    tag = _pretrained_tag(model_name, checkpoint)
    if tag is not None:
        _cached_clip_weights(model_name, tag)
    elif not checkpoint.is_file():
        raise _missing_clip_checkpoint(model_name, checkpoint)
    with offline():
        try:
            model = open_clip.create_model(model_name, pretrained=tag or str(checkpoint), device="cpu")
        except (RuntimeError, KeyError, ValueError, OSError) as error:
            raise BadInput(
                f"hub CLIP checkpoint {checkpoint} does not load into open_clip model {model_name}: "
                f"{_one_line(error)}"
            ) from None
        try:
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as error:  # HF tokenizers that are not in the local cache
            raise BadInput(
                f"the tokenizer of open_clip model {model_name} is not available offline: {_one_line(error)}"
            ) from None
    preprocess = open_clip.get_model_preprocess_cfg(model)
    image_size = getattr(model.visual, "image_size", None) or preprocess["size"]
    embed_dim = getattr(model.visual, "output_dim", None)
    if embed_dim is None:
        with torch.no_grad():
            embed_dim = model.encode_text(tokenizer(["x"])).shape[-1]
    return ClipBackbone(
        name=spec,
        model=model,
        tokenizer=tokenizer,
        image_size=image_size,
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        embed_dim=int(embed_dim),
        source="hub",
        info={"model_name": model_name, "checkpoint": str(checkpoint), "pretrained_tag": tag},
    )


def _ddpm_files(folder: Path) -> tuple[Path, Path]:
    """(UNet folder, scheduler folder) of a local diffusers folder, or a one-line BadInput."""
    if not folder.is_dir():
        raise BadInput(f"hub DDPM folder {folder} does not exist: create it and {DDPM_LAYOUT}")
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise BadInput(f"hub DDPM folder {folder} has no unet config: {DDPM_LAYOUT}")
    if not any((unet_dir / name).is_file() for name in UNET_WEIGHTS):
        raise BadInput(f"hub DDPM folder {folder} has no UNet weights in {unet_dir}: {DDPM_LAYOUT}")
    for scheduler_dir in (folder / "scheduler", folder):
        if (scheduler_dir / "scheduler_config.json").is_file():
            return unet_dir, scheduler_dir
    raise BadInput(f"hub DDPM folder {folder} has no scheduler config: {DDPM_LAYOUT}")


def load_hub_ddpm(spec: str) -> DiffusionBackbone:
    folder = _hub_ddpm_folder(spec)
    unet_dir, scheduler_dir = _ddpm_files(folder)
    class_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise BadInput(f"hub DDPM folder {folder} holds a {class_name}; accepted: a diffusers UNet2DModel")
    with offline():
        from diffusers import DDPMScheduler, UNet2DModel

        try:
            unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
            scheduler = DDPMScheduler.from_pretrained(str(scheduler_dir), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise BadInput(f"hub DDPM folder {folder} does not load: {_one_line(error)}") from None
    prediction = scheduler.config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise BadInput(f"hub DDPM folder {folder}: prediction_type {prediction!r}; accepted: epsilon")
    return DiffusionBackbone(
        name=spec,
        unet=unet,
        scheduler=scheduler,
        source="hub",
        info={"folder": str(folder), "unet": str(unet_dir), "scheduler": str(scheduler_dir)},
    )
