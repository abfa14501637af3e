"""Backbone names and the files each name loads, without building anything (standard library only).

Kept apart from the loaders so that ``bench.contracts`` (every method's data files) and the cache keys
do not depend on the code of the backbone loaders and builders.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from bench.errors import BadInput

EMBEDDED_CLIP = "glyph-clip"
EMBEDDED_DDPM = "glyph-ddpm"
# the same DDPM trained at 32x32 (`bench backbones build --only ddpm --size 32`): RODEO's exposure for
# 28x28 data is then generated above the data's resolution and area-downsampled, not upsampled from 16
EMBEDDED_DDPM_SIZES = {16: EMBEDDED_DDPM, 32: "glyph-ddpm-32"}
EMBEDDED = {EMBEDDED_CLIP: "clip", **{name: "ddpm" for name in EMBEDDED_DDPM_SIZES.values()}}
# the papers' backbones (bench.backbones.paper: fetched into $BENCH_DATA/backbones/<name>/), name -> kind
PAPER_BACKBONES = {"openai-vit-b-32": "clip", "ddpm-cifar10-32": "ddpm"}


def is_hub_like(name) -> bool:
    """A pre-trained real backbone (``hub-*`` forms or a paper backbone), not an embedded noise-aware one."""
    return isinstance(name, str) and (name.startswith("hub-") or name in PAPER_BACKBONES)


BACKBONE_SWITCHES = ("embedded", "paper")  # values of the methods' ``backbones`` field


def method_backbones(method) -> list[str]:
    """The backbone names a method's fields ``backbone`` and ``*_backbone`` hold, in field order."""
    from dataclasses import fields

    names = [f.name for f in fields(method) if f.name == "backbone" or f.name.endswith("_backbone")]
    return [getattr(method, name) for name in names if isinstance(getattr(method, name), str)]


def backbone_label(method) -> str:
    """The rows' ``backbone`` column: the method's backbones joined by ``+``, prefixed ``embedded:`` when
    any is an embedded stand-in (e.g. ``embedded:glyph-clip+glyph-ddpm``); "" for a method without
    pre-trained backbones."""
    names = method_backbones(method)
    joined = "+".join(names)
    return f"embedded:{joined}" if any(name in EMBEDDED for name in names) else joined


def switch_backbones(value: str, backbones: dict[str, str], defaults: dict[str, dict[str, str]]) -> dict:
    """The ``backbones`` switch of rodeo, clip and bce-clip: ``"embedded"`` turns each paper backbone among
    ``backbones`` (field -> name) into the field's embedded stand-in, ``"paper"`` each embedded one into
    the papers' (``defaults``: switch value -> field -> name). A hub form is left as it is."""
    if value not in BACKBONE_SWITCHES:
        raise BadInput(f"unknown backbones {value!r}; accepted: {', '.join(BACKBONE_SWITCHES)}")
    other = set(EMBEDDED) if value == "paper" else set(PAPER_BACKBONES)
    return {field: (defaults[value][field] if name in other else name) for field, name in backbones.items()}


HUB_CLIP_PREFIX = "hub-clip:"
HUB_DDPM_PREFIX = "hub-ddpm:"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # as diffusers prefers
SCHEDULER_CONFIGS = ("scheduler/scheduler_config.json", "scheduler_config.json")


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def offline():
    """HF_HUB_OFFLINE=1 (and friends) for the duration, restored afterwards."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    constants = None
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as constants
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    try:
        for name in OFFLINE_VARIABLES:
            os.environ[name] = "1"
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _pretrained_tag(model_name: str, checkpoint: Path) -> str | None:
    """The open_clip pretrained tag that ``checkpoint`` names (no such file exists), else None."""
    import open_clip

    tag = str(checkpoint)
    if checkpoint.exists() or tag not in open_clip.list_pretrained_tags_by_model(model_name):
        return None
    return tag


def _cached_clip_weights(model_name: str, tag: str) -> str:
    """The path of the tag's weights in the Hugging Face cache (open_clip's own lookup, offline)."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    with offline():
        try:
            path = download_pretrained(cfg)
        except Exception as error:  # FileNotFoundError / LocalEntryNotFoundError: not in the cache
            raise BadInput(
                f"open_clip weights {model_name}@{tag} are not in the Hugging Face cache ({_hf_cache()}; "
                f'{_one_line(error)[:120]}); on a machine with network run `python -c "import open_clip; '
                f"open_clip.create_model('{model_name}', pretrained='{tag}')\"` and copy the cache here"
            ) from None
    if not path or not Path(path).is_file():
        raise BadInput(f"open_clip weights {model_name}@{tag}: no cached file ({_hf_cache()})")
    return path


def _hf_cache() -> str:
    import huggingface_hub.constants as constants

    return str(constants.HF_HUB_CACHE)


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?$")


def _hub_ddpm_folder(spec: str) -> Path:
    """The local folder of a hub DDPM spec: the path itself, or a repo id's snapshot in the HF cache."""
    body = spec[len(HUB_DDPM_PREFIX) :]
    folder = Path(body).expanduser()
    if not body.strip():
        raise BadInput(
            f"bad hub DDPM spec {spec!r}; accepted: {HUB_DDPM_PREFIX}<path to a local diffusers folder> or "
            f"{HUB_DDPM_PREFIX}<hub repo id>[@revision]"
        )
    if folder.exists() or not REPO_ID.match(body):
        return folder
    from huggingface_hub import snapshot_download

    repo_id, _, revision = body.partition("@")
    with offline():
        try:
            return Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
        except Exception as error:  # LocalEntryNotFoundError and friends: not cached
            raise BadInput(
                f"hub DDPM {body} is neither a local folder nor in the Hugging Face cache ({_hf_cache()}; "
                f'{type(error).__name__}); on a machine with network run `python -c "from huggingface_hub '
                f"import snapshot_download; snapshot_download('{repo_id}')\"` and copy the cache here"
            ) from None


def _first_file(*candidates: Path) -> list[Path]:
    return next(([path] for path in candidates if path.is_file()), [])


def _cached(resolve) -> list[Path]:
    """``resolve()`` (hub files in the HF cache), or [] when they are not there (the loader says why)."""
    from bench.errors import BadInput

    try:
        return resolve()
    except (BadInput, TypeError, KeyError):
        return []


def backbone_files(name: str) -> list[Path]:
    """The files that loading backbone ``name`` reads, as far as they exist (none for an unknown name).

    Embedded: ``weights/<name>.safetensors`` and ``.json``. ``hub-clip:<model>@<file | tag>``: the
    checkpoint file (a tag's file in the HF cache). ``hub-ddpm:<folder | repo id>``: the UNet's
    ``config.json`` and weights (``unet/`` or the folder itself) and the scheduler config, the ones
    ``bench.backbones.hub`` loads.
    """
    if not isinstance(name, str):
        return []
    if name in PAPER_BACKBONES:
        from bench.backbones.paper import backbone_files as paper_files

        return paper_files(name)
    if name in EMBEDDED:
        candidates = [WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"]
    elif name.startswith(HUB_CLIP_PREFIX):
        # the model name ends at the first @; a pretrained tag stands for its weights in the HF cache
        model, at, checkpoint = name[len(HUB_CLIP_PREFIX) :].partition("@")
        candidates = [Path(checkpoint).expanduser()] if at and checkpoint else []
        tag = _cached(lambda: [_pretrained_tag(model, candidates[0])]) if candidates else []
        if tag and tag[0] is not None:
            candidates = _cached(lambda: [Path(_cached_clip_weights(model, tag[0]))])
    elif name.startswith(HUB_DDPM_PREFIX) and name != HUB_DDPM_PREFIX:
        folder = _cached(lambda: [_hub_ddpm_folder(name)])
        if not folder:
            return []
        folder = folder[0]
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
