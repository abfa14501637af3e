"""Backbone names and the files each name loads, without building anything (standard library only).

Kept apart from the loaders so that ``bench.contracts`` (every method's data files) and the cache keys
do not depend on the code of the backbone loaders and builders.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_CLIP = "glyph-clip"
EMBEDDED_DDPM = "glyph-ddpm"
# the same DDPM trained at 32x32 (`bench backbones build --only ddpm --size 32`): RODEO's exposure for
# 28x28 data is then generated above the data's resolution and area-downsampled, not upsampled from 16
EMBEDDED_DDPM_SIZES = {16: EMBEDDED_DDPM, 32: "glyph-ddpm-32"}
EMBEDDED = {EMBEDDED_CLIP: "clip", **{name: "ddpm" for name in EMBEDDED_DDPM_SIZES.values()}}
HUB_CLIP_PREFIX = "hub-clip:"
HUB_DDPM_PREFIX = "hub-ddpm:"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # as diffusers prefers
SCHEDULER_CONFIGS = ("scheduler/scheduler_config.json", "scheduler_config.json")


def _first_file(*candidates: Path) -> list[Path]:
    return next(([path] for path in candidates if path.is_file()), [])


def backbone_files(name: str) -> list[Path]:
    """The files that loading backbone ``name`` reads, as far as they exist (none for an unknown name).

    Embedded: ``weights/<name>.safetensors`` and ``.json``. ``hub-clip:<model>@<file>``: the checkpoint
    file. ``hub-ddpm:<folder>``: the UNet's ``config.json`` and weights (``unet/`` or the folder itself)
    and the scheduler config, the ones ``bench.backbones.hub`` loads.
    """
    if not isinstance(name, str):
        return []
    if name in EMBEDDED:
        candidates = [WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"]
    elif name.startswith(HUB_CLIP_PREFIX):
        _, at, checkpoint = name[len(HUB_CLIP_PREFIX) :].partition("@")  # the model name ends at the first @
        candidates = [Path(checkpoint).expanduser()] if at and checkpoint else []
    elif name.startswith(HUB_DDPM_PREFIX) and name != HUB_DDPM_PREFIX:
        folder = Path(name[len(HUB_DDPM_PREFIX) :]).expanduser()
        unet = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
        return [
            *_first_file(unet / "config.json"),
            *_first_file(*(unet / file for file in UNET_WEIGHTS)),
            *_first_file(*(folder / file for file in SCHEDULER_CONFIGS)),
        ]
    else:
        candidates = []
    return [path for path in candidates if path.is_file()]


__all__ = ["backbone_files"]
