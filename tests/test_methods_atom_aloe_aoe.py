"""ATOM / NTOM, ALOE and AOE: mining selection, losses and train-time perturbations on hand-made
inputs and toy models, loss decrease on digits, registry and --set, fitted detectors (ci profile)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import DetectorCache
from bench.config import get_profile, parse_overrides, with_overrides
from bench.contracts import RunContext
from bench.datasets import load_dataset
from bench.errors import BadInput
from bench.methods import aloe, aoe, atom, oe
from bench.methods.aloe import ALOE
from bench.methods.aoe import AOE
from bench.methods.atom import ATOM, NTOM
from bench.methods.classifier import ClassifierDetector
from bench.methods.training import new_network, train_network
from bench.plan import RunSpec, plan_run
from bench.protocols import get_protocol
from bench.registry import METHODS

EPS = 8 / 255
METHOD_CLASSES = {"atom": ATOM, "ntom": NTOM, "aloe": ALOE, "aoe": AOE}


def _ce(logits: list[float], target: int) -> float:
    """Cross-entropy by hand: log sum_k exp(z_k) - z_target."""
    return math.log(sum(math.exp(z) for z in logits)) - logits[target]


class Linear(nn.Module):
    """A toy network on 1x4x4 images: flatten and one linear layer (losses convex in x)."""

    def __init__(self, outputs: int, seed: int = 0):
        super().__init__()
        self.fc = nn.Linear(16, outputs)
        generator = torch.Generator().manual_seed(seed)  # leaves the global RNG alone
        with torch.no_grad():
            self.fc.weight.copy_(0.5 * torch.randn((outputs, 16), generator=generator))
            self.fc.bias.copy_(0.1 * torch.randn((outputs,), generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _images(n: int, seed: int = 1, low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((n, 1, 4, 4), generator=generator)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tiny networks run fastest on one thread; two threads on a busy 2-core machine were
    measured 20x slower (thread contention). Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cells():
    dataset, ci = load_dataset("digits"), get_profile("ci")
    return {
        "nd": next(iter(get_protocol("nd").cells(dataset, ci, 0))),
        "osr": next(iter(get_protocol("osr").cells(dataset, ci, 0))),
    }


# ---------------------------------------------------------------------------------------------------
# ATOM: informative outlier mining


SCORES = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
# ascending: 0.1 (1), 0.2 (5), 0.3 (3), 0.4 (7), 0.5 (2), 0.7 (4), 0.8 (6), 0.9 (0)


@pytest.mark.parametrize(
    ("q", "n", "expected"),
    [
        (0.0, 2, [1, 5]),  # q = 0: the hardest (lowest OOD score) first
        (0.0, 8, [1, 5, 3, 7, 2, 4, 6, 0]),
        (0.25, 3, [3, 7, 2]),  # start at floor(0.25 * 8) = 2
        (0.125, 4, [5, 3, 7, 2]),  # start at 1
        (0.75, 2, [6, 0]),  # the last admissible window
        (0.3, 1, [3]),  # floor(0.3 * 8) = 2
    ],
)
def test_select_mined_picks_ranks_qN_to_qN_plus_n(q, n, expected):
    assert atom.select_mined(SCORES, q, n).tolist() == expected


def test_select_mined_ties_keep_pool_order_and_bad_windows_raise():
    assert atom.select_mined(torch.tensor([0.5, 0.1, 0.5, 0.5]), 0.25, 3).tolist() == [0, 2, 3]
    with pytest.raises(ValueError):
        atom.select_mined(SCORES, 0.9, 2)  # 7 + 2 > 8: q must be <= 1 - n/N
    with pytest.raises(ValueError):
        atom.select_mined(SCORES, -0.1, 2)
    with pytest.raises(ValueError):
        atom.select_mined(SCORES, 0.0, 0)


def test_mining_sizes_follow_the_paper_and_a_short_pool_keeps_the_ratio_or_n():
    # App. B.1: |train| = 50,000 -> n = 100,000, N = 400,000 (pool large enough): both rules agree
    for rule in atom.SHORT_POOL:
        assert atom.mining_sizes(50_000, 10**6, 2.0, 4.0, 0.125, rule) == (400_000, 100_000)
        assert atom.mining_sizes(125, 1000, 2.0, 4.0, 0.125, rule) == (1000, 250)  # digits nd, ci: fits
    # keep_ratio (default): N = pool, n = N / 4
    assert atom.mining_sizes(755, 1000, 2.0, 4.0, 0.125) == (1000, 250)  # osr, ci pool
    assert atom.mining_sizes(755, 5000, 2.0, 4.0, 0.125) == (5000, 1250)  # osr, quick pool
    assert atom.mining_sizes(2000, 10_000, 2.0, 4.0, 0.125) == (10_000, 2500)  # reference nd on MNIST
    assert atom.mining_sizes(755, 10**5, 2.0, 4.0) == (6040, 1510)
    # keep_n (paper profile): the whole 300K Random Images, n = 2 x |train| kept
    assert atom.mining_sizes(50_000, 300_000, 2.0, 4.0, 0.125, "keep_n") == (300_000, 100_000)
    assert atom.mining_sizes(755, 5000, 2.0, 4.0, 0.125, "keep_n") == (5000, 1510)
    # osr on digits, ci pool: n = 1,510 does not fit after rank floor(0.125 x 1,000) = 125 -> 875
    assert atom.mining_sizes(755, 1000, 2.0, 4.0, 0.125, "keep_n") == (1000, 875)
    assert atom.mining_sizes(755, 1000, 2.0, 4.0, 0.0, "keep_n") == (1000, 1000)
    for train, pool, q in [(755, 1000, 0.125), (10, 7, 0.5), (50_000, 300_000, 0.6)]:
        for rule in atom.SHORT_POOL:
            candidates, n = atom.mining_sizes(train, pool, 2.0, 4.0, q, rule)
            assert int(q * candidates) + n <= candidates  # select_mined's window always fits


def test_an_unknown_short_pool_rule_is_refused():
    with pytest.raises(BadInput, match="unknown short_pool 'keep_both'; accepted: keep_ratio, keep_n"):
        ATOM(short_pool="keep_both")


class MeanOODNet(nn.Module):
    """Two logits [0, 10 * (mean pixel - 0.5)]: the OOD score sigmoid(...) increases with the mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 10 * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_mine_outliers_keeps_the_window_of_lowest_ood_scores():
    values = torch.randperm(40, generator=torch.Generator().manual_seed(0)).float() / 40
    pool = values.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    mined = atom.mine_outliers(MeanOODNet(), pool, 40, 10, 0.125, torch.Generator().manual_seed(1))
    # all 40 candidates scored; ranks [5, 15) of the ascending OOD score = values 5/40 .. 14/40
    assert sorted(mined[:, 0, 0, 0].tolist()) == pytest.approx([k / 40 for k in range(5, 15)])
    # with fewer candidates than the pool, the n kept are the lowest-scored of the drawn candidates
    mined = atom.mine_outliers(MeanOODNet(), pool, 20, 5, 0.0, torch.Generator().manual_seed(2))
    assert len(mined) == 5 and mined.shape[1:] == pool.shape[1:]


# ---------------------------------------------------------------------------------------------------
# ATOM / NTOM losses


def test_atom_loss_equals_a_hand_computation():
    logits_in = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    y_in = torch.tensor([0, 1])
    logits_ood = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.5, -0.5, 2.0]])
    expected_in = (_ce([2, 0, 0], 0) + _ce([0, 1, -1], 1)) / 2
    expected_ood = (_ce([0, 0, 1], 2) + _ce([1, 0, 0], 2) + _ce([0.5, -0.5, 2], 2)) / 3
    assert atom.atom_loss(logits_in, y_in, logits_ood, 1.0).item() == pytest.approx(
        expected_in + expected_ood, rel=1e-6
    )
    assert atom.atom_loss(logits_in, y_in, logits_ood, 0.5).item() == pytest.approx(
        expected_in + 0.5 * expected_ood, rel=1e-6
    )


def _ood_ce(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return atom.ood_class_cross_entropy(network)(x)


def test_atom_half_batch_pgd_raises_the_ood_cross_entropy_and_keeps_the_clean_half():
    network, x_ood = Linear(3), _images(16)
    mixed = atom.perturb_half(network, x_ood, EPS, 5, 2 / 255, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(mixed[:8], x_ood[:8])  # first half clean
    delta = mixed[8:] - x_ood[8:]
    assert delta.abs().max() <= EPS + 1e-6 and delta.abs().max() > 0
    assert mixed.min() >= 0 and mixed.max() <= 1
    clean, attacked = _ood_ce(network, x_ood[8:]), _ood_ce(network, mixed[8:])
    assert (attacked > clean).all()
    # and so the ATOM loss on the batch exceeds the NTOM (clean) loss with the same weights
    x_in, y_in = _images(6, seed=2), torch.tensor([0, 1, 0, 1, 1, 0])
    adversarial = atom.make_atom_loss(1.0, {"eps": EPS, "steps": 5, "step_size": 2 / 255, "fraction": 0.5})
    clean_loss = atom.make_atom_loss(1.0, None)
    assert adversarial(network, x_in, y_in, x_ood).item() > clean_loss(network, x_in, y_in, x_ood).item()


def test_atom_attack_runs_in_eval_mode_and_restores_train_mode():
    modes = []

    class Spy(Linear):
        def forward(self, x):
            modes.append(self.training)
            return super().forward(x)

    network = Spy(3).train()
    atom.perturb_half(network, _images(4), EPS, 2, 2 / 255, 0.5, None)
    assert modes == [False, False] and network.training


def test_ntom_loss_is_the_clean_loss_without_any_adversarial_step():
    network, x_in, x_oe = Linear(3), _images(4, seed=3), _images(8, seed=4)
    y_in = torch.tensor([0, 1, 1, 0])
    loss_fn = atom.make_atom_loss(1.0, None)
    calls = []
    original = network.forward
    network.forward = lambda x: (calls.append(len(x)), original(x))[1]
    value = loss_fn(network, x_in, y_in, x_oe)
    assert calls == [12]  # one forward pass on the concatenated clean batch, no attack
    with torch.no_grad():
        expected = atom.atom_loss(original(x_in), y_in, original(x_oe), 1.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert NTOM().attack_settings(None) is None and "eps" not in NTOM().hyperparameters()


# ---------------------------------------------------------------------------------------------------
# ALOE


def test_aloe_oe_loss_equals_minus_mean_logit_plus_logsumexp():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, -2.0, 1.0]])
    rows = [[1, 2, 3], [0, 0, 0], [4, -2, 1]]
    per_sample = [math.log(sum(math.exp(z) for z in r)) - sum(r) / 3 for r in rows]
    assert aloe.oe_loss_per_sample(logits).tolist() == pytest.approx(per_sample, rel=1e-6)
    assert aloe.oe_loss(logits).item() == pytest.approx(sum(per_sample) / 3, rel=1e-6)
    assert per_sample[1] == pytest.approx(math.log(3))  # uniform logits: log K
    # = cross-entropy to the uniform distribution
    uniform_ce = -F.log_softmax(logits, dim=1).mean(dim=1)
    assert torch.allclose(aloe.oe_loss_per_sample(logits), uniform_ce, atol=1e-6)


def test_aloe_loss_hand_value():
    logits_in, y_in = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    logits_oe = torch.tensor([[2.0, 0.0]])
    expected = _ce([1, 0], 0) + 0.5 * (math.log(math.exp(2) + 1) - 1.0)
    assert aloe.aloe_loss(logits_in, y_in, logits_oe, 0.5).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_aloe_pgd_raises_both_loss_terms(binary):
    network = Linear(1 if binary else 3)
    x_in, x_oe = _images(10, seed=5), _images(12, seed=6)
    y_in = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    attack = {"eps": EPS, "steps": 2, "step_size": EPS, "random_start": False}
    x_in_adv, x_oe_adv = aloe.perturb_batches(network, x_in, y_in, x_oe, binary, attack)
    for clean, adv in ((x_in, x_in_adv), (x_oe, x_oe_adv)):
        assert (adv - clean).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        loss_in = aloe.inlier_objective(network, y_in, binary)
        loss_oe = aloe.outlier_objective(network, binary)
        # losses convex in x (linear network): every signed-gradient step raises them
        assert (loss_in(x_in_adv) > loss_in(x_in)).all()
        assert (loss_oe(x_oe_adv) > loss_oe(x_oe)).all()


def test_aloe_binary_objectives_push_the_outlier_logit_the_right_way():
    network = Linear(1)
    x_in, x_oe = _images(6, seed=7), _images(6, seed=8)
    attack = {"eps": EPS, "steps": 2, "step_size": EPS, "random_start": False}
    x_in_adv, x_oe_adv = aloe.perturb_batches(
        network, x_in, torch.zeros(6, dtype=torch.long), x_oe, True, attack
    )
    with torch.no_grad():
        assert (network(x_in_adv) > network(x_in)).all()  # inliers made to look like outliers
        assert (network(x_oe_adv) < network(x_oe)).all()  # outliers made to look like inliers


def test_aloe_score_field_accepts_msp_and_energy_only():
    assert ALOE().score == "msp" and ALOE(score="energy").score == "energy"
    with pytest.raises(BadInput, match="accepted: msp, energy"):
        ALOE(score="maxlogit")


# ---------------------------------------------------------------------------------------------------
# AOE


class TiedLogits(nn.Module):
    """Logits [w.x, w.x]: energy -logsumexp = -w.x - log 2, so grad_x E = -w exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w
        return torch.stack([z, z], dim=1)


W = torch.tensor([1.0, -2.0, 0.5, -0.5] * 4)


def test_aoe_fgsm_lowers_the_energy_by_exactly_eps_times_the_l1_norm():
    network, x = TiedLogits(W), _images(5, seed=9)
    x_hat = aoe.lower_energy(network, x, EPS, 1, binary=False)
    assert torch.allclose(x_hat - x, EPS * W.sign().view(1, 1, 4, 4).expand_as(x), atol=1e-6)
    with torch.no_grad():
        drop = aoe.energy(network(x), False) - aoe.energy(network(x_hat), False)
    assert drop.tolist() == pytest.approx([EPS * W.abs().sum().item()] * 5, rel=1e-4)


def test_aoe_perturbation_stays_in_the_eps_ball_and_the_image_range():
    network = Linear(3)
    x = torch.cat([torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4), _images(6, seed=10, low=0.0, high=1.0)])
    for steps in (1, 4):
        x_hat = aoe.lower_energy(
            network, x, EPS, steps, binary=False, generator=torch.Generator().manual_seed(0)
        )
        assert (x_hat - x).abs().max() <= EPS + 1e-6
        assert x_hat.min() >= 0 and x_hat.max() <= 1
        with torch.no_grad():
            inside = slice(6, None)
            assert (aoe.energy(network(x_hat[inside]), False) < aoe.energy(network(x[inside]), False)).all()


def test_aoe_binary_form_lowers_the_outlier_logit():
    network, x = Linear(1), _images(7, seed=11)
    x_hat = aoe.lower_energy(network, x, EPS, 1, binary=True)
    w = network.fc.weight.detach().view(1, 1, 4, 4)
    assert torch.allclose(x_hat - x, -EPS * w.sign().expand_as(x), atol=1e-6)
    with torch.no_grad():
        drop = network(x)[:, 0] - network(x_hat)[:, 0]
    assert drop.tolist() == pytest.approx([EPS * w.abs().sum().item()] * 7, rel=1e-4)


def test_aoe_loss_is_oe_on_the_perturbed_outliers():
    network, x_in, x_oe = TiedLogits(W), _images(3, seed=12), _images(4, seed=13)
    y_in = torch.tensor([0, 1, 0])
    value = aoe.make_aoe_loss(0.5, False, EPS, 1)(network, x_in, y_in, x_oe)
    x_hat = aoe.lower_energy(network, x_oe, EPS, 1, binary=False)
    with torch.no_grad():
        expected = aoe.aoe_loss(network(x_in), y_in, network(x_hat), 0.5)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    # tied logits are uniform already: the OE term is log 2 per outlier
    assert oe.uniform_cross_entropy(network(x_hat)).item() == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# Training on digits


def _recorded_losses(method, task, steps: int, **profile_changes) -> list[float]:
    """The per-step training loss of ``method`` on ``task`` over at least ``steps`` optimiser steps
    of the shared loop (the task's profile with ``profile_changes``)."""
    plan = method.training_plan(task)
    profile = with_overrides(task.profile, epochs=1, min_steps=steps, **profile_changes)
    task = dataclasses.replace(task, profile=profile)
    network, _ = new_network(task, plan["num_outputs"])
    losses: list[float] = []

    def recording(net, x_in, y_in, x_oe):
        loss = plan["loss_fn"](net, x_in, y_in, x_oe)
        losses.append(float(loss.detach()))
        return loss

    train_network(network, task, recording, uses_oe=True, epoch_outliers=plan.get("epoch_outliers"))
    return losses


def _assert_decreases(losses: list[float], steps: int, factor: float, label) -> None:
    assert len(losses) >= steps and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < factor * first, (label, first, last)


@pytest.mark.parametrize("name", ["atom", "ntom", "aloe", "aoe"])
def test_training_loss_decreases_on_digits_novelty_detection(cells, name):
    # nd, class 0 (binary / 2-way forms); half-size batches keep the default run short
    losses = _recorded_losses(METHOD_CLASSES[name](), cells["nd"].task, 48, batch_size=32, oe_batch_size=64)
    _assert_decreases(losses, 48, 0.85, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["atom", "ntom", "aloe", "aoe"])
def test_training_loss_decreases_on_digits_open_set(cells, name):
    # osr split 0 (6 classes): with OE-type losses the small CNN sits on the ln(K) plateau for its
    # first ~60-100 steps, so this runs 144 steps at the profile's constant initial learning rate
    losses = _recorded_losses(METHOD_CLASSES[name](), cells["osr"].task, 144, lr_milestones=())
    _assert_decreases(losses, 144, 0.8, name)


def test_atom_mines_n_of_n_candidates_every_epoch(cells):
    task = cells["osr"].task
    plan = ATOM().training_plan(task)
    assert plan["recipe"]["mining_candidates"] == 1000 and plan["recipe"]["mining_selected"] == 250
    keep_n = ATOM(short_pool="keep_n").training_plan(task)["recipe"]  # n = 2 x |train| after rank 125
    assert keep_n["mining_candidates"] == 1000 and keep_n["mining_selected"] == 875
    assert plan["num_outputs"] == task.num_classes + 1
    network, _ = new_network(task, plan["num_outputs"])
    mined = plan["epoch_outliers"](network.eval(), 0, task.oe.images)
    assert mined.shape == (250, *task.oe.images.shape[1:])


# ---------------------------------------------------------------------------------------------------
# Registry and --set


def test_methods_are_registered_with_oe_requirement_and_all_protocols():
    names = METHODS.names()
    for name, cls in METHOD_CLASSES.items():
        assert name in names and METHODS.get(name) is cls
        assert cls.requires == frozenset({"oe"}) and set(cls.protocols) == {"nd", "osr", "ood"}


def test_set_overrides_are_typed_and_bad_values_raise():
    types = {name: cls.field_types() for name, cls in METHOD_CLASSES.items()}
    parsed = parse_overrides(["atom.q=0.25", "atom.eps=0.01", "aoe.steps=3", "aloe.score=energy"], types)
    assert parsed["atom"] == {"q": 0.25, "eps": 0.01} and isinstance(parsed["atom"]["eps"], float)
    assert parsed["aoe"] == {"steps": 3} and parsed["aloe"] == {"score": "energy"}
    for bad in ("atom.q=abc", "ntom.lam=x", "aloe.steps=1.5", "aoe.eps=none", "aloe.random_start=maybe"):
        with pytest.raises(BadInput):
            parse_overrides([bad], types)
    with pytest.raises(BadInput, match="unknown --set key"):
        parse_overrides(["ntom.eps=0.1"], types)  # NTOM has no attack


@pytest.mark.parametrize(
    "setting", ["atom.q=0.9", "atom.steps=0", "aoe.steps=0", "aloe.score=max", "aloe.eps=2", "atom.eps=-1"]
)
def test_out_of_range_settings_fail_at_plan_time(setting, tmp_path):
    method = setting.split(".")[0]
    with pytest.raises(BadInput):
        plan_run(
            RunSpec(
                methods=[method], protocol="nd", attacks=["clean"], settings=[setting], out=tmp_path / "r"
            )
        )
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------
# Fitted detectors (ci profile)


def _check_fitted(name: str, cell, task, tmp_path) -> None:
    detector = METHOD_CLASSES[name]().fit(task, RunContext(device="cpu", cache=None))
    assert isinstance(detector, ClassifierDetector)
    images = cell.evalsets[0].images
    scores = detector.score(images)
    assert scores.shape == (len(images),) and torch.isfinite(scores).all()
    k = task.num_classes
    expected_score = {"aloe": "msp", "aoe": "energy"}.get(name, "extra_class")
    if k == 1 and name in ("aloe", "aoe"):
        expected_score = "outlier_logit"
    assert detector.score_name == expected_score and detector.classifies == (k >= 2)
    if name in ("atom", "ntom"):
        assert detector.network_config["num_outputs"] == k + 1 and detector.num_inlier_classes == k
        assert scores.min() >= 0 and scores.max() <= 1
    else:
        assert detector.network_config["num_outputs"] == (1 if k == 1 else k)
    cache = DetectorCache(tmp_path / "cache")
    cache.save_detector("key", detector)
    loaded = cache.load_detector("key")
    assert type(loaded) is ClassifierDetector and loaded.score_name == detector.score_name
    assert torch.equal(loaded.score(images), scores)


@pytest.mark.parametrize("name", ["atom", "ntom", "aloe", "aoe"])
@pytest.mark.parametrize("cell_name", ["nd", "osr"])
def test_fitted_detector_short_training(cells, name, cell_name, tmp_path):
    """The ci cells with the ci profile cut to a few steps (the checks do not depend on training length)."""
    cell = cells[cell_name]
    short = with_overrides(cell.task.profile, epochs=1, min_steps=3, batch_size=128, oe_batch_size=64)
    _check_fitted(name, cell, dataclasses.replace(cell.task, profile=short), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["atom", "ntom", "aloe", "aoe"])
@pytest.mark.parametrize("cell_name", ["nd", "osr"])
def test_fitted_detector_ci_profile(cells, name, cell_name, tmp_path):
    _check_fitted(name, cells[cell_name], cells[cell_name].task, tmp_path)
