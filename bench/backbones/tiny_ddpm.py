"""``glyph-ddpm``: a tiny DDPM (``diffusers.UNet2DModel`` + ``DDPMScheduler``) trained on the glyph corpus.

UNet (:data:`UNET_CONFIG`, 0.69M parameters): 16 x 16, 1 channel, block channels (16, 32, 64), one ResNet
layer per block, self-attention only at the 4 x 4 level (the last down block, the middle block and the
first up block), GroupNorm with 8 groups. Scheduler (:data:`SCHEDULER_CONFIG`): T = 1000, the cosine
schedule (``squaredcos_cap_v2``), epsilon prediction. Trained on corpus images (digits, letters, symbols,
20% damaged) scaled to [-1, 1], with the simple loss ||eps - eps_theta(x_t, t)||^2 at t ~ U{0, ..., 999};
AdamW (lr 2e-3, 100 warm-up steps, cosine decay), a fixed number of steps; the shipped weights are an
exponential moving average (decay 0.995) of the trained ones.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bench.backbones import DiffusionBackbone
from bench.errors import BadInput

UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": [16, 32, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 8,
    "attention_head_dim": 16,
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "clip_sample": True,
}
TRAINING = {
    "batch_size": 64,
    "pool_size": 60_000,
    "lr": 2e-3,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "ema_decay": 0.995,
}
DEFAULT_STEPS = 2000
EVAL_TIMESTEPS = (50, 200, 500, 800)


def make_unet(config: dict | None = None):
    from diffusers import UNet2DModel

    return UNet2DModel(**(config or UNET_CONFIG))


def make_scheduler(config: dict | None = None):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**(config or SCHEDULER_CONFIG))


def unet_init_config(unet) -> dict:
    """The keyword arguments that rebuild ``unet`` (its diffusers config without private keys)."""
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def load_embedded_ddpm(name: str, weights: Path, config_path: Path) -> DiffusionBackbone:
    from bench.code_version import file_digest

    meta = json.loads(Path(config_path).read_text())
    expected = meta.get("weights_sha256")
    if expected and file_digest(weights) != expected:
        raise BadInput(
            f"{weights} does not match the sha256 in {Path(config_path).name}; run `bench backbones build`"
        )
    unet = make_unet(meta["unet_config"])
    unet.load_state_dict(load_file(str(weights)), strict=True)
    scheduler = make_scheduler(meta["scheduler_config"])
    info = {k: meta.get(k) for k in ("metrics", "training", "params", "weights_sha256")}
    return DiffusionBackbone(name=name, unet=unet, scheduler=scheduler, source="embedded", info=info)


@torch.no_grad()
def denoising_loss(
    backbone: DiffusionBackbone, images01: torch.Tensor, timesteps=EVAL_TIMESTEPS, seed: int = 0
) -> dict[int, float]:
    """Mean ||eps - eps_theta(x_t, t)||^2 per timestep on ``images01``, with fixed noise from ``seed``."""
    x0 = backbone.to_model_space(images01)
    generator = torch.Generator().manual_seed(seed)
    losses = {}
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        steps = torch.full((len(x0),), int(t), dtype=torch.long, device=x0.device)
        x_t = backbone.add_noise(x0, noise, steps)
        losses[int(t)] = float(F.mse_loss(backbone.predict_noise(x_t, steps), noise))
    return losses


def heldout_images(count: int = 500, seed: int = 0, size: int = 16) -> torch.Tensor:
    from bench.datasets.glyph_corpus import glyph_corpus

    return glyph_corpus("validation", count, seed=seed, size=size).images


def train_ddpm(
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    log: Callable[[str], None] = print,
    name: str = "glyph-ddpm",
    size: int = 16,
) -> tuple[DiffusionBackbone, dict]:
    """Train the tiny DDPM from scratch, deterministically, on ``size`` x ``size`` glyphs (the UNet's
    sample size follows); returns the (EMA) backbone and a summary."""
    from bench.datasets.glyph_corpus import glyph_corpus

    cfg = TRAINING
    batch = cfg["batch_size"]
    pool_size = int(min(cfg["pool_size"], max(steps * batch, 4 * batch)))
    torch.manual_seed(seed)
    started = time.perf_counter()
    corpus = glyph_corpus("train", pool_size, seed=seed + 1, size=size)
    corpus_seconds = time.perf_counter() - started
    unet = make_unet({**UNET_CONFIG, "sample_size": size})
    scheduler = make_scheduler()
    ema = copy.deepcopy(unet).requires_grad_(False)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
        progress = (step - cfg["warmup_steps"]) / max(1, steps - cfg["warmup_steps"])
        return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(pool_size, generator=generator)
    cursor, losses = 0, []
    unet.train()
    for step in range(steps):
        if cursor + batch > pool_size:
            order, cursor = torch.randperm(pool_size, generator=generator), 0
        x0 = corpus.images[order[cursor : cursor + batch]] * 2 - 1
        cursor += batch
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = F.mse_loss(unet(x_t, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
            for ema_param, param in zip(ema.parameters(), unet.parameters(), strict=True):
                ema_param.lerp_(param, 1 - decay)
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"glyph-ddpm step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.4f}")
    ema.eval()
    summary = {
        "steps": int(steps),
        "seed": int(seed),
        **cfg,
        "pool_size": pool_size,
        "corpus": {
            "split": "train",
            "count": pool_size,
            "seed": int(seed) + 1,
            "size": int(size),
            "damaged_fraction": 0.2,
        },
        "final_loss": float(np.mean(losses[-100:])),
        "first_loss": float(losses[0]),
        "corpus_seconds": round(corpus_seconds, 2),
        "train_seconds": round(time.perf_counter() - started - corpus_seconds, 2),
    }
    backbone = DiffusionBackbone(
        name=name, unet=ema, scheduler=scheduler, source="embedded", info={"training": summary}
    )
    return backbone, summary


def evaluate_ddpm(backbone: DiffusionBackbone, seed: int = 0) -> dict:
    """Held-out denoising loss (validation split, 500 images, fixed noise) of ``backbone`` and, for scale,
    of a randomly initialised UNet."""
    images = heldout_images(seed=seed, size=backbone.image_size)
    trained = denoising_loss(backbone, images)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = make_unet({**UNET_CONFIG, "sample_size": backbone.image_size})
        untrained = DiffusionBackbone("random", unet, make_scheduler(), "embedded").eval()
    baseline = denoising_loss(untrained, images)
    return {
        "heldout_loss_by_t": trained,
        "heldout_loss": float(np.mean(list(trained.values()))),
        "random_unet_heldout_loss": float(np.mean(list(baseline.values()))),
        "heldout_images": len(images),
    }
