"""The shared training loop's optimiser and learning-rate schedule (Profile ``optimizer`` and
``lr_schedule``): SGD with Nesterov momentum or Adam; step decay at the milestones or cosine annealing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bench.config import get_profile
from bench.datasets import load_dataset
from bench.errors import BadInput
from bench.methods import training
from bench.protocols import get_protocol

CI = get_profile("ci")


def _lrs(profile, total_steps: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = training.profile_optimizer([parameter], profile)
    scheduler = training.lr_scheduler(optimizer, profile, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_decay_multiplies_by_a_tenth_at_each_milestone():
    profile = replace(CI, lr=0.1, lr_milestones=(0.5, 0.75))
    lrs = _lrs(profile, 100)
    assert lrs[0] == lrs[49] == pytest.approx(0.1)
    assert lrs[50] == lrs[74] == pytest.approx(0.01)
    assert lrs[75] == lrs[99] == pytest.approx(0.001)


def test_cosine_annealing_goes_from_the_lr_to_zero_along_a_half_cosine_and_ignores_milestones():
    profile = replace(CI, lr=0.1, lr_milestones=(0.5,), lr_schedule="cosine")
    lrs = _lrs(profile, 100)
    for step in (0, 25, 50, 99):
        assert lrs[step] == pytest.approx(0.05 * (1 + math.cos(math.pi * step / 100)), abs=1e-9)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # no step at the 0.5 milestone


def test_the_profile_chooses_sgd_with_nesterov_or_adam_with_its_lr_and_weight_decay():
    parameter = [torch.nn.Parameter(torch.zeros(1))]
    sgd = training.profile_optimizer(parameter, replace(CI, lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adam = training.profile_optimizer(parameter, replace(CI, optimizer="adam", lr=1e-3, weight_decay=1e-4))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["lr"] == 1e-3 and adam.defaults["weight_decay"] == 1e-4


def test_unknown_optimizer_or_schedule_is_refused_naming_the_accepted_ones():
    with pytest.raises(BadInput, match="unknown optimizer 'rmsprop'; accepted: sgd, adam"):
        replace(CI, optimizer="rmsprop")
    with pytest.raises(BadInput, match="unknown lr_schedule 'linear'; accepted: step, cosine"):
        replace(CI, lr_schedule="linear")


def test_optimizer_and_schedule_enter_the_training_fingerprint():
    fingerprints = {
        CI.training_fingerprint(),
        replace(CI, optimizer="adam").training_fingerprint(),
        replace(CI, lr_schedule="cosine").training_fingerprint(),
    }
    assert len(fingerprints) == 3


def test_the_training_loop_uses_the_profiles_optimizer_and_schedule(monkeypatch):
    """A real (short) run of train_network on a digits cell builds its optimiser and scheduler from the
    task's profile, and ends at the schedule's last lr."""
    cell = next(iter(get_protocol("nd").cells(load_dataset("digits"), CI, 0)))
    profile = replace(CI, optimizer="adam", lr=1e-3, lr_schedule="cosine", epochs=1, min_steps=4)
    task = replace(cell.task, profile=profile, oe=None)
    built = []
    original = training.profile_optimizer

    def spy(parameters, p):
        optimizer = original(parameters, p)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(training, "profile_optimizer", spy)
    network, _ = training.new_network(task, 2)

    def loss_fn(net, x_in, y_in, x_oe):
        return net(x_in).logsumexp(dim=1).mean()

    summary = training.train_network(network, task, loss_fn, uses_oe=False)
    (optimizer,) = built
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine, annealed to 0
    assert summary["steps"] >= 4
