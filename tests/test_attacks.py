"""Attacks against small analytic detectors whose worst case is known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.attacks import Budget
from bench.attacks.base import project
from bench.attacks.clean import Clean
from bench.attacks.pgd import PGD
from bench.config import get_profile
from bench.detector import Detector
from bench.errors import BadInput
from bench.metrics import auroc
from bench.registry import ATTACKS

EPS = 8 / 255
SHAPE = (1, 4, 4)
DIM = 16


class LinearDetector(Detector):
    """score(x) = w . x: the worst case in an L-inf ball is a corner, known in closed form."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


class WavyDetector(Detector):
    """A non-convex score: sum_i sin(freq * x_i + phase_i); elementwise, so batch-independent."""

    def __init__(self, freq: float = 60.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.freq = freq
        self.phase = nn.Parameter(torch.rand(DIM, generator=generator) * 6.28, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x.flatten(1) + self.phase).sum(1)


class MLPDetector(Detector):
    """A small random ReLU network."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


class CountingDetector(LinearDetector):
    """Counts samples scored with a graph (gradient evaluations) and without (queries)."""

    def __init__(self, w: torch.Tensor):
        super().__init__(w)
        self.grad_samples = 0
        self.query_samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_samples += len(x)
        else:
            self.query_samples += len(x)
        return super().forward(x)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Random images with exact 0 and 1 pixels, so clipping to [0, 1] binds."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=generator)
    x.view(n, -1)[:, 0] = 0.0
    x.view(n, -1)[:, 1] = 1.0
    x.view(n, -1)[:, 2] = 0.01  # closer to 0 than eps
    x.view(n, -1)[:, 3] = 0.995  # closer to 1 than eps
    return x


def _weights(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(DIM, generator=generator)
    w[:4] = torch.tensor([1.0, -1.0, 2.0, -2.0])  # push clipped pixels both ways
    return w


def _mixed_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 3 == 0  # inliers and outliers in one batch


def _objective(detector: Detector, x: torch.Tensor, is_outlier: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (1.0 - 2.0 * is_outlier.float()) * detector(x)


# ---- (a) PGD finds the analytic optimum ------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "restarts", "batch_size"), [(20, 1, 1024), (10, 2, 7)])
def test_pgd_reaches_the_linear_optimum_for_inliers_and_outliers(steps, restarts, batch_size):
    n = 24
    x, w, is_outlier = _images(n), _weights(), _mixed_labels(n)
    detector = LinearDetector(w)
    x_adv = PGD(steps=steps, restarts=restarts, batch_size=batch_size, seed=0).perturb(
        detector, x, is_outlier, EPS
    )
    direction = torch.where(is_outlier[:, None, None, None], -1.0, 1.0) * torch.sign(w).view(1, *SHAPE)
    optimum_x = (x + EPS * direction).clamp(0.0, 1.0)
    optimum = _objective(detector, optimum_x, is_outlier)
    found = _objective(detector, x_adv, is_outlier)
    assert is_outlier.any() and (~is_outlier).any()
    assert torch.all(found >= optimum - 1e-3), (found - optimum).min()
    assert torch.all(found <= optimum + 1e-4)  # nothing beats the optimum inside the constraints
    # the clipped pixels: 0 stays 0 when pushed down and 1 stays 1 when pushed up
    assert torch.allclose(x_adv, optimum_x, atol=1e-5)


def test_pgd_moves_inlier_scores_up_and_outlier_scores_down():
    n = 12
    x, detector, is_outlier = _images(n, seed=3), LinearDetector(_weights()), _mixed_labels(n)
    x_adv = PGD(steps=5, restarts=1, seed=0).perturb(detector, x, is_outlier, EPS)
    with torch.no_grad():
        delta = detector(x_adv) - detector(x)
    assert torch.all(delta[~is_outlier] > 0)
    assert torch.all(delta[is_outlier] < 0)


# ---- (b) constraints ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", [PGD(steps=5, restarts=2, seed=0), Clean()], ids=["pgd", "clean"])
@pytest.mark.parametrize("detector_cls", [LinearDetector, WavyDetector, MLPDetector])
@pytest.mark.parametrize("eps", [EPS, 0.3])
def test_attack_stays_in_the_eps_ball_and_in_unit_box(attack, detector_cls, eps):
    n = 20
    x, is_outlier = _images(n, seed=5), _mixed_labels(n)
    detector = detector_cls(_weights()) if detector_cls is LinearDetector else detector_cls()
    x_adv = attack.perturb(detector, x, is_outlier, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert not x_adv.requires_grad


def test_project_clips_to_ball_then_box():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert project(torch.tensor([-1.0, 0.9, 2.0]), x, 0.1).tolist() == pytest.approx([0.0, 0.6, 1.0])
    assert project(torch.tensor([0.05, 0.1, 0.95]), x, 0.1).tolist() == pytest.approx([0.05, 0.4, 0.95])


def test_clean_attack_returns_a_copy_of_the_input():
    x = _images(4)
    x_adv = Clean().perturb(MLPDetector(), x, _mixed_labels(4), EPS)
    assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


# ---- (c) per-sample worst case ----------------------------------------------------------------------------


@pytest.mark.parametrize("detector_cls", [WavyDetector, MLPDetector])
@pytest.mark.parametrize(("steps", "restarts"), [(1, 1), (3, 2)])
def test_pgd_never_returns_a_point_worse_than_the_clean_one(detector_cls, steps, restarts):
    n = 64
    x, is_outlier, detector = _images(n, seed=7), _mixed_labels(n), detector_cls()
    x_adv = PGD(steps=steps, restarts=restarts, seed=0).perturb(detector, x, is_outlier, EPS)
    assert torch.all(_objective(detector, x_adv, is_outlier) >= _objective(detector, x, is_outlier))


def test_pgd_keeps_the_clean_point_when_every_iterate_is_worse():
    # one step of size 2.5 eps on a high-frequency score overshoots: for some samples the random start
    # and the final iterate are both worse than the clean point, and the clean point must be returned
    n = 64
    x, is_outlier, detector = _images(n, seed=7), _mixed_labels(n), WavyDetector(freq=200.0)
    x_adv = PGD(steps=1, restarts=1, seed=0).perturb(detector, x, is_outlier, EPS)
    unchanged = (x_adv == x).flatten(1).all(1)
    assert unchanged.any() and not unchanged.all()


def test_more_restarts_never_hurt_with_the_same_seed():
    # restart r draws the same noise whatever the number of restarts, so the worst case over 3 restarts
    # includes the one over 1 restart
    n = 64
    x, is_outlier, detector = _images(n, seed=9), _mixed_labels(n), WavyDetector()
    one = PGD(steps=3, restarts=1, seed=4).perturb(detector, x, is_outlier, EPS)
    three = PGD(steps=3, restarts=3, seed=4).perturb(detector, x, is_outlier, EPS)
    assert torch.all(_objective(detector, three, is_outlier) >= _objective(detector, one, is_outlier))


# ---- (d) attacked AUROC <= clean AUROC ------------------------------------------------------------------


@pytest.mark.parametrize("detector_cls", [WavyDetector, MLPDetector])
def test_pgd_cannot_raise_auroc(detector_cls):
    n = 80
    generator = torch.Generator().manual_seed(11)
    is_outlier = torch.arange(n) >= n // 2
    # outliers are brighter, so the MLP / wavy score separates the classes somewhat
    x = (torch.rand(n, *SHAPE, generator=generator) * 0.8 + 0.2 * is_outlier.view(-1, 1, 1, 1)).clamp(0, 1)
    detector = detector_cls()
    x_adv = PGD(steps=10, restarts=1, seed=0).perturb(detector, x, is_outlier, EPS)
    clean = auroc(detector.score(x).numpy(), is_outlier.numpy())
    attacked = auroc(detector.score(x_adv).numpy(), is_outlier.numpy())
    assert attacked <= clean
    assert attacked < clean  # PGD actually moves the ranking, so the comparison is not vacuous


# ---- (e) budgets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "restarts"), [(1, 1), (7, 3), (40, 2)])
def test_pgd_budget(steps, restarts):
    budget = PGD(steps=steps, restarts=restarts).budget()
    assert budget == Budget(steps=steps, restarts=restarts, grad_evals=steps * restarts, queries=1 + restarts)


def test_clean_budget_is_zero():
    assert Clean().budget() == Budget(steps=0, restarts=0, grad_evals=0, queries=0)


@pytest.mark.parametrize(("steps", "restarts", "batch_size"), [(7, 3, 1024), (4, 2, 5)])
def test_pgd_spends_exactly_its_budget(steps, restarts, batch_size):
    n = 13
    detector = CountingDetector(_weights())
    attack = PGD(steps=steps, restarts=restarts, batch_size=batch_size, seed=0)
    attack.perturb(detector, _images(n), _mixed_labels(n), EPS)
    budget = attack.budget()
    assert detector.grad_samples == n * budget.grad_evals == n * steps * restarts
    assert detector.query_samples == n * budget.queries


def test_clean_attack_spends_nothing():
    detector = CountingDetector(_weights())
    Clean().perturb(detector, _images(5), _mixed_labels(5), EPS)
    assert detector.grad_samples == detector.query_samples == 0


def test_pgd_from_profile_uses_the_profile_budget():
    ci = get_profile("ci")
    attack = ATTACKS.get("pgd").from_profile(ci, seed=3)
    assert (attack.steps, attack.restarts, attack.batch_size, attack.seed) == (
        ci.pgd_steps,
        ci.pgd_restarts,
        ci.attack_batch_size,
        3,
    )
    assert ATTACKS.get("pgd").from_profile(ci, steps=2).budget().grad_evals == 2 * ci.pgd_restarts


def test_every_attack_has_a_budget_for_every_profile_and_a_new_profile_gets_none_by_accident():
    """A profile an attack does not name is refused (it used to get the paper budget silently)."""
    import dataclasses

    from bench.config import PROFILES

    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        for profile in PROFILES.values():
            cls.from_profile(profile)
        assert cls.from_profile(PROFILES["paper"]).budget() == cls().budget()
    stranger = dataclasses.replace(get_profile("quick"), name="stranger")
    for name in ("aa", "a3", "blackbox"):
        with pytest.raises(BadInput, match=f"attack {name} has no budget for profile 'stranger'"):
            ATTACKS.get(name).from_profile(stranger)
    assert ATTACKS.get("a3").from_profile(get_profile("reference")).budget_per_sample == 100


# ---- (f) bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", [PGD(steps=2, restarts=1), Clean()], ids=["pgd", "clean"])
@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_bad_eps_is_rejected(attack, eps):
    with pytest.raises(BadInput, match="eps"):
        attack.perturb(LinearDetector(_weights()), _images(3), _mixed_labels(3), eps)


@pytest.mark.parametrize("attack", [PGD(steps=2, restarts=1), Clean()], ids=["pgd", "clean"])
@pytest.mark.parametrize(("low", "high"), [(-0.1, 1.0), (0.0, 1.2)])
def test_input_outside_unit_box_is_rejected(attack, low, high):
    x = torch.full((3, *SHAPE), 0.5)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = low, high
    with pytest.raises(BadInput, match=r"\[0, 1\]"):
        attack.perturb(LinearDetector(_weights()), x, _mixed_labels(3), EPS)


def test_mismatched_labels_are_rejected():
    with pytest.raises(BadInput):
        PGD(steps=2, restarts=1).perturb(LinearDetector(_weights()), _images(3), _mixed_labels(4), EPS)


@pytest.mark.parametrize("settings", [{"steps": 0}, {"restarts": 0}, {"steps": -3}])
def test_non_positive_budgets_are_rejected(settings):
    with pytest.raises(BadInput):
        PGD(**settings)


# ---- (g) eps = 0 and (h) determinism ----------------------------------------------------------------------


@pytest.mark.parametrize("detector_cls", [LinearDetector, MLPDetector])
def test_eps_zero_returns_the_input_unchanged(detector_cls):
    x = _images(10)
    detector = detector_cls(_weights()) if detector_cls is LinearDetector else detector_cls()
    x_adv = PGD(steps=5, restarts=2, seed=0).perturb(detector, x, _mixed_labels(10), 0.0)
    assert torch.equal(x_adv, x)


def test_same_seed_gives_identical_results_and_other_seeds_differ():
    n = 32
    x, is_outlier, detector = _images(n, seed=2), _mixed_labels(n), WavyDetector()
    first = PGD(steps=3, restarts=2, seed=5).perturb(detector, x, is_outlier, EPS)
    second = PGD(steps=3, restarts=2, seed=5).perturb(detector, x, is_outlier, EPS)
    other = PGD(steps=3, restarts=2, seed=6).perturb(detector, x, is_outlier, EPS)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_registry_holds_both_attacks():
    assert {"clean", "pgd"} <= set(ATTACKS.names())
    assert ATTACKS.get("pgd") is PGD and ATTACKS.get("clean") is Clean
    assert PGD.uses_eps and not Clean.uses_eps


@pytest.mark.parametrize("attack", [PGD(steps=2, restarts=1), Clean()], ids=["pgd", "clean"])
def test_nan_pixels_are_rejected(attack):
    x = _images(3)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(BadInput):
        attack.perturb(LinearDetector(_weights()), x, _mixed_labels(3), EPS)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_non_positive_batch_size_is_rejected(batch_size):
    with pytest.raises(BadInput):
        PGD(steps=5, restarts=1, batch_size=batch_size)


# ---- (i) detectors without parameters (analytic scores) -------------------------------------------------


class MeanPixelDetector(Detector):
    """score = mean pixel value: no parameters and no buffers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)


class BufferDistanceDetector(Detector):
    """score = mean squared distance to a fixed image held in a buffer (no parameters)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("centre", torch.full(SHAPE, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.centre) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("detector_cls", [MeanPixelDetector, BufferDistanceDetector])
def test_every_attack_runs_on_a_detector_without_parameters(name, detector_cls):
    n = 30
    x, is_outlier, detector = _images(n, seed=4), _mixed_labels(n), detector_cls()
    assert not list(detector.parameters())
    attack = ATTACKS.get(name).from_profile(get_profile("ci"), seed=0)
    attack.reset_spent()
    x_adv = attack.perturb(detector, x, is_outlier, EPS)
    assert x_adv.shape == x.shape and x_adv.device == x.device
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    clean, attacked = _objective(detector, x, is_outlier), _objective(detector, x_adv, is_outlier)
    # sign convention: inlier scores never fall, outlier scores never rise
    assert torch.all(attacked >= clean - 1e-7), (attacked - clean).min()
    if name != "clean":
        assert bool((attacked > clean + 1e-4).any())  # the attack did move scores the right way
        spent = attack.spent_budget()
        assert spent.grad_evals + spent.queries > 0
        assert spent.grad_evals <= attack.budget().grad_evals
    else:
        assert torch.equal(x_adv, x)


def test_detector_device_prefers_parameters_then_buffers_then_the_input():
    from bench.attacks.base import detector_device

    x = torch.zeros(2, *SHAPE)
    assert detector_device(MeanPixelDetector(), x) == x.device
    on_meta = BufferDistanceDetector().to("meta")  # a buffer on another device than the input
    assert detector_device(on_meta, x) == torch.device("meta")
    linear = LinearDetector(_weights()).to("meta")
    linear.register_buffer("extra", torch.zeros(1))  # a CPU buffer: the parameter's device wins
    assert detector_device(linear, x) == torch.device("meta")


# ---- (j) a3 records the restarts and steps that ran ----------------------------------------------------


def _easy_problem(n: int = 40):
    """Images near 0.5 (inliers) and 0.55 (outliers) with a mean-pixel score: one step of eps = 0.1
    moves a score by 0.1, far more than the clean scores' spread, so every sample breaks at once."""
    generator = torch.Generator().manual_seed(0)
    is_outlier = torch.arange(n) % 2 == 1
    x = 0.5 + 0.05 * is_outlier.float().view(-1, 1, 1, 1) + 0.005 * torch.rand(n, *SHAPE, generator=generator)
    return x, is_outlier


def test_a3_records_the_restarts_and_steps_it_ran_when_it_stops_early():
    from bench.attacks.a3 import AdaptiveAutoAttack

    x, is_outlier = _easy_problem()
    attack = AdaptiveAutoAttack(budget_per_sample=80, min_active=4, seed=0)
    planned = attack.budget()
    assert (planned.steps, planned.restarts) == (80, 13)
    attack.reset_spent()
    attack.perturb(MeanPixelDetector(), x, is_outlier, 0.1)
    spent = attack.spent_budget()
    # every sample is broken within the first restart, so no further restart runs
    assert spent.restarts == 1 < planned.restarts
    # the first restart is cut short by the breaks (a sample spends 1 or 2 evaluations there) and the
    # exploitation ascent gets what is left: 80 - (at most 2) per sample, fewer than the plan's 80
    assert 2 <= spent.steps < planned.steps
    assert spent.steps >= 78
    assert spent.grad_evals <= 80
    # the row's numbers are consistent: no sample got more than restarts x steps evaluations
    assert spent.grad_evals <= spent.steps * (spent.restarts + 1)


def test_a3_records_every_restart_on_a_detector_it_cannot_break():
    from bench.attacks.a3 import AdaptiveAutoAttack

    x, is_outlier = _easy_problem()
    attack = AdaptiveAutoAttack(budget_per_sample=80, min_active=4, seed=0)
    attack.reset_spent()
    attack.perturb(MeanPixelDetector(), x, is_outlier, 0.0001)  # too small an eps to cross tau
    spent = attack.spent_budget()
    assert spent.restarts == attack.budget().restarts  # all 13 outer restarts ran
    assert 2 <= spent.steps <= attack.budget().steps
    assert spent.grad_evals <= 80


def test_a3_spent_budget_is_the_plan_before_any_call_and_the_maximum_over_calls():
    from bench.attacks.a3 import AdaptiveAutoAttack

    attack = AdaptiveAutoAttack(budget_per_sample=80, min_active=4, seed=0)
    attack.reset_spent()
    assert attack.spent_budget() == attack.budget()
    x, is_outlier = _easy_problem()
    attack.perturb(MeanPixelDetector(), x, is_outlier, 0.0001)  # 13 restarts
    attack.perturb(MeanPixelDetector(), x, is_outlier, 0.1)  # 1 restart
    assert attack.spent_budget().restarts == 13
    attack.reset_spent()
    attack.perturb(MeanPixelDetector(), x, is_outlier, 0.1)
    assert attack.spent_budget().restarts == 1


@pytest.mark.parametrize("budget_per_sample", [1, 3, 10, 25, 80])
def test_a3_single_ascent_never_exceeds_the_planned_steps(budget_per_sample):
    from bench.attacks.a3 import AdaptiveAutoAttack

    x, is_outlier = _images(30, seed=6), _mixed_labels(30)
    attack = AdaptiveAutoAttack(budget_per_sample=budget_per_sample, min_active=4, seed=0)
    attack.reset_spent()
    attack.perturb(WavyDetector(), x, is_outlier, EPS)
    spent, planned = attack.spent_budget(), attack.budget()
    assert 1 <= spent.restarts <= planned.restarts
    assert 2 <= spent.steps <= planned.steps
    assert spent.grad_evals <= budget_per_sample


# ---- (k) zero gradients are reported ---------------------------------------------------------------------


class FlatDetector(Detector):
    """A rounded mean pixel: piecewise constant, so every input gradient is exactly zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(4 * x.flatten(1).mean(1)) / 4


@pytest.mark.parametrize("name", ["pgd", "a3", "aa"])
def test_gradient_attacks_warn_about_zero_gradients(name):
    attack = ATTACKS.get(name).from_profile(get_profile("ci"), seed=0)
    attack.reset_spent()
    with pytest.warns(UserWarning, match="zero gradient"):
        attack.perturb(FlatDetector(), _images(12), _mixed_labels(12), EPS)
    assert any("zero gradient" in message for message in attack.warnings)


def test_no_zero_gradient_warning_when_gradients_exist():
    attack = PGD(steps=3, restarts=1, seed=0)
    attack.reset_spent()
    attack.perturb(LinearDetector(_weights()), _images(12), _mixed_labels(12), EPS)
    assert attack.warnings == []
