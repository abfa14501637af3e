"""The dry run's device-hour estimate, from a forward + backward pass timed on the current device.

The estimate counts image passes (one forward + backward of the profile's network on one image):

- training, per (method, cell, seed): ``epochs x (inliers + exposure images) x (1 + train-time attack
  steps)``; exposure images per epoch are ``inliers x oe_batch_size / batch_size`` for methods that
  need an OE source, one per inlier for methods that make their own (RODEO), none otherwise;
- attacks: every gradient evaluation of the dry run's budget table;

and multiplies them by the measured seconds per image pass. It ignores data loading, RODEO's diffusion
sampling and CLIP towers, so it is a floor; on a CPU it is a CPU figure and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

WARMUP = 1
REPEATS = 3
# Timed passes stop after this many seconds (at least one is timed): on a CPU a WRN-40-4 pass at 32x32
# took 0.5-3 s here, and the dry run should stay within a few seconds of its 5 s target.
MEASURE_SECONDS = 1.0


@dataclass(frozen=True)
class StepCost:
    seconds_per_image: float  # one forward + backward pass, per image
    device: str  # "cuda (NVIDIA H200)" or "cpu"
    batch: int

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.device.startswith("cuda") else "CPU-hours (this CPU; not a GPU figure)"


def measure_step(network: str, image_shape: tuple[int, int, int], num_outputs: int, device: str) -> StepCost:
    """Time forward + backward of ``network`` on a batch (64 at <= 64 px, 8 above; 2 and 1 on a CPU): one
    warm-up pass, then up to ``REPEATS`` timed ones while they take less than ``MEASURE_SECONDS``; the
    median."""
    from bench.methods.networks import build_network

    channels = image_shape[0]
    big = image_shape[-1] > 64
    batch = (8 if big else 64) if device == "cuda" else (1 if big else 2)
    model = build_network(network, channels, num_outputs, [0.5] * channels, [0.5] * channels).to(device)
    x = torch.rand((batch, *image_shape), device=device)
    elapsed: list[float] = []
    for i in range(WARMUP + REPEATS):
        if elapsed and sum(elapsed) >= MEASURE_SECONDS:
            break
        started = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(dim=1).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            elapsed.append(time.perf_counter() - started)
    name = f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else "cpu"
    return StepCost(sorted(elapsed)[len(elapsed) // 2] / batch, name, batch)


def training_passes(method, profile, n_train: int) -> int:
    """Image passes of one fit (module docstring)."""
    if "oe" in getattr(type(method), "requires", ()):
        exposure = n_train * profile.oe_batch_size / profile.batch_size
    elif hasattr(method, "steps"):
        exposure = n_train  # generates its own exposure, one per inlier (RODEO)
    else:
        exposure = 0
    adversarial = 1 + int(getattr(method, "steps", 0) or 0)
    return int(profile.epochs * (n_train + exposure) * adversarial)


def estimate(plan, sizes, attack_grad_evals: int, costs: dict[str, StepCost]) -> tuple[float, float]:
    """(training hours, attack hours) of the planned grid; ``costs``: network name -> measured step. Each
    method trains with its own profile (``plan.profile_for``) and takes an equal share of the attacks."""
    seeds = len(plan.spec.seeds)
    train = attack = 0.0
    for name, method in plan.methods.items():
        profile = plan.profile_for(name)
        seconds = costs[profile.network].seconds_per_image
        train += (
            sum(training_passes(method, profile, n_train) for _, n_train, _, _ in sizes) * seeds * seconds
        )
        attack += attack_grad_evals / len(plan.methods) * seconds
    return train / 3600, attack / 3600
