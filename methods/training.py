"""The one training loop the methods share, and a cache for networks that several methods reuse.

A method supplies a loss ``loss_fn(network, x_in, y_in, x_oe) -> scalar``; the loop supplies the
profile's optimiser (SGD with Nesterov momentum, as ATOM App. B.1, or Adam), learning-rate schedule (step
decay or cosine annealing), batching of inliers and auxiliary outliers, and seeding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.contracts import RunContext, TrainTask
from bench.methods.augment import augment
from bench.methods.networks import Classifier, build_network

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# Called at the start of every epoch with (network, epoch, full OE pool); returns the OE images that
# this epoch draws its outlier batches from (ATOM's outlier mining, GReg+'s sampling).
EpochOutliers = Callable[[nn.Module, int, torch.Tensor], torch.Tensor]
# Builds the optimiser from the parameters when a method's paper prescribes another one than the
# profile's (RODEO Table 9: Adam with its own lr); the profile's learning-rate schedule still applies.
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]


def network_config(task: TrainTask, num_outputs: int) -> dict[str, Any]:
    """Arguments of :func:`build_network` for this task: the profile's network, normalised with the
    per-channel mean and std of the inlier training images."""
    images = task.images
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return {
        "name": task.profile.network,
        "in_channels": int(images.shape[1]),
        "num_outputs": int(num_outputs),
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
    }


def new_network(task: TrainTask, num_outputs: int) -> tuple[Classifier, dict[str, Any]]:
    """A freshly initialised network, seeded by the task's seed."""
    config = network_config(task, num_outputs)
    torch.manual_seed(task.seed)
    return build_network(**config), config


def profile_optimizer(parameters, profile) -> torch.optim.Optimizer:
    """The profile's optimiser: SGD with Nesterov momentum (ATOM App. B.1) or Adam (EOE App. G.1), both
    with the profile's lr and L2 weight decay."""
    if profile.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=profile.lr, weight_decay=profile.weight_decay)
    return torch.optim.SGD(
        parameters,
        lr=profile.lr,
        momentum=profile.momentum,
        weight_decay=profile.weight_decay,
        nesterov=profile.momentum > 0,
    )


def lr_scheduler(optimizer: torch.optim.Optimizer, profile, total_steps: int):
    """Stepped once per optimiser step: x0.1 at each of the profile's milestones (fractions of the run),
    or cosine annealing from the initial lr to 0 over ``total_steps`` (GReg Sec. 6.1; OE's public code)."""
    if profile.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    milestones = sorted({max(1, round(f * total_steps)) for f in profile.lr_milestones})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def train_network(
    network: nn.Module,
    task: TrainTask,
    loss_fn: LossFn,
    uses_oe: bool,
    epoch_outliers: EpochOutliers | None = None,
    optimizer_factory: OptimizerFactory | None = None,
) -> dict[str, Any]:
    """Train ``network`` in place on ``task`` for ``task.profile.epochs`` epochs; return a summary.

    Each step draws an inlier batch (a shuffled pass per epoch) and, with ``uses_oe``, a random batch
    of ``profile.oe_batch_size`` auxiliary outliers from the epoch's OE images (the whole pool, or
    what ``epoch_outliers`` returns for that epoch).
    """
    profile = task.profile
    device = torch.device(task.device)
    network.to(device).train()
    generator = torch.Generator().manual_seed(task.seed)
    # a generator of its own, so that turning augmentation on leaves the batch order as it was
    augmenter = torch.Generator().manual_seed(task.seed + 7_919)
    images, labels = task.images, task.labels
    oe_pool = task.oe.images if (uses_oe and task.oe is not None) else None
    if uses_oe and oe_pool is None:
        raise ValueError("this method needs an auxiliary outlier source (task.oe is None)")

    steps_per_epoch = max(1, math.ceil(len(images) / profile.batch_size))
    epochs = max(profile.epochs, math.ceil(profile.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    if optimizer_factory is not None:
        optimizer = optimizer_factory(network.parameters())
    else:
        optimizer = profile_optimizer(network.parameters(), profile)
    scheduler = lr_scheduler(optimizer, profile, total_steps)

    started = time.perf_counter()
    running_loss = float("nan")
    for epoch in range(epochs):
        oe_images = oe_pool
        if oe_pool is not None and epoch_outliers is not None:
            network.eval()
            oe_images = epoch_outliers(network, epoch, oe_pool)
            network.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * profile.batch_size : (step + 1) * profile.batch_size]
            x_in = images[batch].to(device)
            y_in = labels[batch].to(device)
            x_oe = None
            if oe_images is not None:
                pick = torch.randint(len(oe_images), (profile.oe_batch_size,), generator=generator)
                x_oe = oe_images[pick].to(device)
            if profile.augment:  # the paper recipes' augmentation (bench.methods.augment)
                x_in = augment(x_in, profile.augment, augmenter)
                x_oe = None if x_oe is None else augment(x_oe, profile.augment, augmenter)
            loss = loss_fn(network, x_in, y_in, x_oe)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if profile.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(network.parameters(), profile.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            running_loss = float(loss.detach())
    network.eval()
    return {
        "epochs": epochs,
        "steps": total_steps,
        "final_loss": round(running_loss, 6),
        "train_seconds": round(time.perf_counter() - started, 3),
    }


def cached_network(
    ctx: RunContext,
    recipe: dict[str, Any],
    task: TrainTask,
    num_outputs: int,
    loss_fn: LossFn,
    uses_oe: bool,
    epoch_outliers: EpochOutliers | None = None,
    optimizer_factory: OptimizerFactory | None = None,
) -> tuple[Classifier, dict[str, Any], dict[str, Any]]:
    """Train a network for ``recipe`` on ``task``, or load it from the cache if any method trained
    the same recipe before (e.g. MSP and energy share one cross-entropy classifier).

    ``recipe`` names the training objective and its settings; the cache key adds the task's content
    fingerprint and the source of the loss's module and of this one, with every bench module they import
    (:func:`bench.code_version.source_version`).
    Returns (network, network_config, summary).
    """
    from bench.code_version import source_version

    network, config = new_network(task, num_outputs)
    key_payload = {
        "recipe": recipe,
        "network": config,
        "task": task.fingerprint(),
        "code": source_version(loss_fn.__module__, __name__),
    }
    cache = ctx.cache
    if cache is not None:
        hit = cache.load_weights(key_payload)
        if hit is not None:
            state, summary = hit
            network.load_state_dict(state)
            ctx.say(f"reused cached network for {recipe.get('name')}")
            return network.to(task.device).eval(), config, {**summary, "cached_network": True}
    summary = train_network(network, task, loss_fn, uses_oe, epoch_outliers, optimizer_factory)
    if cache is not None:
        cache.save_weights(key_payload, network.state_dict(), summary)
    return network, config, summary
