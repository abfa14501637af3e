"""Rebuild the embedded backbones (``glyph-clip``, ``glyph-ddpm``) from scratch on a CPU, deterministically.

``python -m bench.backbones.build [--only clip|ddpm] [--out DIR] [--steps N]`` or
``bench backbones build ...`` (same options). Default ``--out``: the package's ``weights/`` folder.

Each backbone is trained on a seeded pool of the glyph corpus's training split with a fixed number of
steps (``--steps`` overrides both; tiny values are for tests), with ``torch.manual_seed(seed)`` and
``torch.set_num_threads(BUILD_THREADS)`` (1 thread: the result depends on the thread count, and on a
shared 2-core machine 2 threads ran several times slower than 1), then evaluated on the validation split
(and the CLIP on scikit-learn's digits) and written as ``<name>.safetensors`` (weights only) +
``<name>.json`` (config, tokenizer vocabulary, training settings and losses, metrics, sha256 and size of
the weights, versions, wall time). The same arguments on the same software give byte-identical
safetensors.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.backbones import EMBEDDED_CLIP, WEIGHTS_DIR
from bench.backbones.files import EMBEDDED_DDPM_SIZES
from bench.code_version import file_digest
from bench.errors import BadInput

ONLY = ("clip", "ddpm")
BUILD_THREADS = 1


def _write_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temporary), metadata={"format": "pt"})
    temporary.chmod(0o644)
    os.replace(temporary, path)


def _write_json(meta: dict, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(meta, indent=2) + "\n")
    temporary.chmod(0o644)
    os.replace(temporary, path)


def _versions() -> dict[str, str]:
    import diffusers
    import open_clip

    return {
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def _params(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _build_clip(out: Path, steps: int, seed: int, log, evaluate: bool) -> dict:
    from bench.backbones.tiny_clip import (
        IMAGE_MEAN,
        IMAGE_SIZE,
        IMAGE_STD,
        clip_config,
        evaluate_clip,
        train_clip,
    )

    started = time.perf_counter()
    backbone, summary = train_clip(steps=steps, seed=seed, log=log, name=EMBEDDED_CLIP)
    metrics = {}
    if evaluate:
        log("glyph-clip: evaluating (held-out glyph digits, scikit-learn digits, t = 500)")
        metrics = evaluate_clip(backbone, seed=seed)
    weights = out / f"{EMBEDDED_CLIP}.safetensors"
    _write_safetensors(backbone.model.state_dict(), weights)
    tokenizer = backbone.tokenizer
    meta = {
        "name": EMBEDDED_CLIP,
        "kind": "clip",
        "architecture": "open_clip.CLIP",
        "config": clip_config(tokenizer.vocab_size),
        "image": {"size": IMAGE_SIZE, "channels": 3, "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)},
        "tokenizer": {
            "kind": "word-level (bench.backbones.tiny_clip.WordTokenizer)",
            "context_length": tokenizer.context_length,
            "pad_id": tokenizer.pad_id,
            "unk_id": tokenizer.unk_id,
            "sot_id": tokenizer.sot_id,
            "eot_id": tokenizer.eot_id,
            "layout": "ids: 0 pad, 1 <unk>, 2.. the vocabulary below, V-2 <start_of_text>, V-1 <end_of_text>",
        },
        "vocabulary": tokenizer.words,
        "params": _params(backbone.model),
        "training": summary,
        "metrics": metrics,
        "weights_file": weights.name,
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": file_digest(weights),
        "build": {
            "seconds": round(time.perf_counter() - started, 1),
            "threads": BUILD_THREADS,
            **_versions(),
        },
    }
    _write_json(meta, out / f"{EMBEDDED_CLIP}.json")
    log(
        f"glyph-clip: {meta['params']:,} params, {meta['weights_bytes']:,} bytes, final loss "
        f"{summary['final_loss']:.4f}, logit scale {backbone.logit_scale:.2f}, metrics {metrics}"
    )
    return meta


def _build_ddpm(out: Path, steps: int, seed: int, log, evaluate: bool, size: int = 16) -> dict:
    from bench.backbones.tiny_ddpm import SCHEDULER_CONFIG, evaluate_ddpm, train_ddpm, unet_init_config

    started = time.perf_counter()
    name = EMBEDDED_DDPM_SIZES[size]
    backbone, summary = train_ddpm(steps=steps, seed=seed, log=log, name=name, size=size)
    metrics = {}
    if evaluate:
        log("glyph-ddpm: evaluating (held-out denoising loss)")
        metrics = evaluate_ddpm(backbone, seed=seed)
    weights = out / f"{name}.safetensors"
    _write_safetensors(backbone.unet.state_dict(), weights)
    meta = {
        "name": name,
        "kind": "ddpm",
        "architecture": "diffusers.UNet2DModel + diffusers.DDPMScheduler (epsilon prediction)",
        "unet_config": unet_init_config(backbone.unet),
        "scheduler_config": dict(SCHEDULER_CONFIG),
        "image": {"size": backbone.image_size, "channels": backbone.channels, "model_space": [-1, 1]},
        "params": _params(backbone.unet),
        "training": summary,
        "metrics": metrics,
        "weights_file": weights.name,
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": file_digest(weights),
        "build": {
            "seconds": round(time.perf_counter() - started, 1),
            "threads": BUILD_THREADS,
            **_versions(),
        },
    }
    _write_json(meta, out / f"{name}.json")
    log(
        f"{name}: {meta['params']:,} params, {meta['weights_bytes']:,} bytes, final loss "
        f"{summary['final_loss']:.4f}, metrics {metrics}"
    )
    return meta


def check_build_args(out_dir, only, steps, size: int = 16) -> tuple[Path, str | None, int | None]:
    """Validated (out folder, only, steps); BadInput naming the accepted values otherwise."""
    if only is not None and only not in ONLY:
        raise BadInput(f"unknown backbone {only!r} for --only; accepted: {', '.join(ONLY)}")
    if size not in EMBEDDED_DDPM_SIZES:
        raise BadInput(f"bad --size {size!r}; accepted: {', '.join(map(str, EMBEDDED_DDPM_SIZES))}")
    if size != 16 and only != "ddpm":
        raise BadInput(
            f"--size {size} builds the DDPM only (the CLIP filter stays at 16); accepted: --only ddpm"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise BadInput(f"bad step count {steps!r}; accepted: an integer >= 1")
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; accepted: a folder (created if missing)")
    return out, only, steps


def build_backbones(
    out_dir: str | Path | None = None,
    only: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    evaluate: bool = True,
    size: int = 16,
) -> dict:
    """Train and write the embedded backbones (both, or ``only`` "clip" / "ddpm"); returns their metadata.

    ``evaluate=False`` skips the held-out metrics (for quick determinism checks); the JSON then has none.
    """
    from bench.backbones.tiny_clip import DEFAULT_STEPS as CLIP_STEPS
    from bench.backbones.tiny_ddpm import DEFAULT_STEPS as DDPM_STEPS

    out, only, steps = check_build_args(out_dir, only, steps, size)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda message: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    results = {}
    try:
        with torch.random.fork_rng():
            if only in (None, "clip"):
                results[EMBEDDED_CLIP] = _build_clip(out, steps or CLIP_STEPS, seed, log, evaluate)
            if only in (None, "ddpm"):
                name = EMBEDDED_DDPM_SIZES[size]
                results[name] = _build_ddpm(out, steps or DDPM_STEPS, seed, log, evaluate, size)
    finally:
        torch.set_num_threads(threads)
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.backbones.build``: the options of ``bench backbones build``, without importing the
    CLI (nothing in bench.backbones imports bench.cli); one-line errors and exit code 2 for bad input."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.backbones.build")
    parser.add_argument("--only", default=None, help="clip or ddpm (default: both)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the package's)")
    parser.add_argument("--steps", type=int, default=None, help="training steps for each backbone")
    args = parser.parse_args(argv)
    try:
        check_build_args(args.out, args.only, args.steps)
    except BadInput as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for name, meta in build_backbones(args.out, only=args.only, steps=args.steps).items():
        size = f"{meta['weights_bytes']:,} bytes"
        print(f"{name}: {meta['weights_file']} ({size}), sha256 {meta['weights_sha256']}")


if __name__ == "__main__":
    main()
