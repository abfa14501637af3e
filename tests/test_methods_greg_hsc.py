"""GReg, GReg+ and HSC: known answers for their losses, scores and sampling, training that lowers the
loss on digits, and fitted detectors that score finitely and survive a cache round trip."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from bench.cache import DetectorCache
from bench.config import get_profile
from bench.contracts import RunContext
from bench.datasets import load_dataset
from bench.methods import greg, hsc, training
from bench.methods.classifier import SCORES, ClassifierDetector
from bench.metrics import auroc
from bench.protocols import get_protocol
from bench.registry import METHODS, list_methods


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Training on a shared CPU is far faster with one intra-op thread (no spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TanhNet(nn.Module):
    """A smooth toy network (float64) for finite differences."""

    def __init__(self, in_features: int = 12, outputs: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 6), nn.Tanh(), nn.Linear(6, outputs))
        self.double()

    def forward(self, x):
        return self.net(x)


def _fd_gradient_norms(network, x, h=1e-6) -> torch.Tensor:
    """||grad_x E(x)|| per sample by central differences."""
    norms = []
    with torch.no_grad():
        for sample in x:
            flat = sample.flatten()
            grad = torch.empty_like(flat)
            for j in range(flat.numel()):
                step = torch.zeros_like(flat)
                step[j] = h
                e_plus = greg.energy(network((flat + step).view(1, *sample.shape)))
                e_minus = greg.energy(network((flat - step).view(1, *sample.shape)))
                grad[j] = (e_plus - e_minus) / (2 * h)
            norms.append(grad.norm())
    return torch.stack(norms)


# ---- GReg: energy, margins, gradient penalty -----------------------------------------------------------


def test_energy_margin_loss_matches_hand_computation():
    logits_in = torch.tensor([[30.0, 0.0], [10.0, 10.0]])
    logits_out = torch.tensor([[0.0, 0.0], [8.0, 8.0], [-5.0, -5.0]])
    e_in, e_out = greg.energy(logits_in), greg.energy(logits_out)
    assert float(e_in[1]) == pytest.approx(-(10 + math.log(2)))
    # inliers: E = -30 - log(1 + e^-30) is below m_in = -25 (no loss); E = -10.69 is 14.31 above it
    expected_in = (0 + (-(10 + math.log(2)) + 25) ** 2) / 2
    # outliers: E = -log 2 and 5 - log 2 are above m_out = -7 (no loss); E = -8.69 is 1.69 below it
    expected_out = (0 + (-7 + 8 + math.log(2)) ** 2 + 0) / 3
    loss = greg.energy_margin_loss(e_in, e_out, m_in=-25.0, m_out=-7.0)
    assert float(loss) == pytest.approx(expected_in + expected_out, rel=1e-6)
    one_logit = greg.energy(torch.tensor([[3.5], [-2.0]]))  # one class: E = -z
    assert one_logit.tolist() == [-3.5, 2.0]


def test_gradient_norms_match_finite_differences():
    network = TanhNet()
    x = torch.rand((5, 1, 3, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits, energies, norms = greg.energy_and_gradient_norms(network, x)
    assert torch.allclose(energies, greg.energy(network(x)))
    assert torch.allclose(logits, network(x))
    assert torch.allclose(norms, _fd_gradient_norms(network, x), rtol=1e-6, atol=1e-9)


def test_gradient_penalty_counts_only_correctly_detected_samples():
    network = TanhNet()
    generator = torch.Generator().manual_seed(2)
    x_in = torch.rand((4, 1, 3, 4), generator=generator, dtype=torch.float64)
    x_out = torch.rand((6, 1, 3, 4), generator=generator, dtype=torch.float64)
    _, e_in, n_in = greg.energy_and_gradient_norms(network, x_in)
    _, e_out, n_out = greg.energy_and_gradient_norms(network, x_out)
    fd_in, fd_out = _fd_gradient_norms(network, x_in), _fd_gradient_norms(network, x_out)
    # margins between the samples' energies, so that each side has correct and mis-detected samples
    m_in = float(e_in.detach().median())
    m_out = float(e_out.detach().median())
    correct_in = (e_in.detach() <= m_in).double()
    correct_out = (e_out.detach() >= m_out).double()
    assert 0 < correct_in.sum() < 4 and 0 < correct_out.sum() < 6
    expected = float((correct_in * fd_in).sum() / 4 + (correct_out * fd_out).sum() / 6)
    penalty = greg.gradient_penalty(n_in, n_out, e_in, e_out, m_in, m_out)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    # every sample mis-detected: zero penalty and zero gradient for the weights
    network.zero_grad()
    none = greg.gradient_penalty(n_in, n_out, e_in, e_out, m_in=-1e9, m_out=1e9)
    assert float(none.detach()) == 0.0
    none.backward(retain_graph=True)
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in network.parameters())


def test_gradient_penalty_is_differentiable_in_the_weights():
    """Double backprop: d penalty / d weight equals a finite difference in that weight."""
    network = TanhNet()
    x = torch.rand((3, 1, 3, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weight = network.net[1].weight

    def penalty() -> torch.Tensor:
        _, energies, norms = greg.energy_and_gradient_norms(network, x)
        return greg.gradient_penalty(norms[:1], norms[1:], energies[:1], energies[1:], 1e9, -1e9)

    network.zero_grad()
    penalty().backward()
    analytic = float(weight.grad[2, 5])
    h = 1e-6
    with torch.no_grad():
        weight[2, 5] += h
    plus = float(penalty().detach())
    with torch.no_grad():
        weight[2, 5] -= 2 * h
    minus = float(penalty().detach())
    assert analytic != 0.0
    assert analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-5)


def test_greg_loss_is_the_weighted_sum_of_its_terms():
    network = TanhNet()
    generator = torch.Generator().manual_seed(4)
    x_in = torch.rand((4, 1, 3, 4), generator=generator, dtype=torch.float64)
    x_oe = torch.rand((6, 1, 3, 4), generator=generator, dtype=torch.float64)
    y_in = torch.tensor([0, 1, 2, 1])
    total, parts = greg.greg_loss(network, x_in, y_in, x_oe, -0.5, -1.5, 0.1, 1.0, classify=True)
    ce = float(nn.functional.cross_entropy(network(x_in), y_in).detach())
    assert parts["ce"] == pytest.approx(ce)
    assert float(total.detach()) == pytest.approx(parts["ce"] + 0.1 * parts["energy"] + parts["grad"])
    _, one_class = greg.greg_loss(network, x_in, y_in, x_oe, -0.5, -1.5, 0.1, 1.0, classify=False)
    assert one_class["ce"] == 0.0


# ---- GReg+: energy-based sampling ----------------------------------------------------------------------


def test_select_by_cluster_energy_hand_example():
    clusters = np.array([2, 0, 1, 0, 2, 1, 0, 2])
    energies = np.array([5.0, 3.0, -1.0, 7.0, -2.0, 4.0, 1.0, 9.0])
    # cluster 0: {1: 3, 3: 7, 6: 1}; cluster 1: {2: -1, 5: 4}; cluster 2: {0: 5, 4: -2, 7: 9}
    assert greg.select_by_cluster_energy(clusters, energies).tolist() == [6, 3, 2, 5, 4, 7]
    # a singleton cluster gives one sample
    assert greg.select_by_cluster_energy(np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0])).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        greg.select_by_cluster_energy(np.array([0, 1]), np.array([1.0]))


class DirectionNet(nn.Module):
    """Features = the input vector (2-d direction + a small third coordinate t); one logit 100 t."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x.flatten(1)

    def head(self, z):
        return 100 * z[:, 2:3]

    def forward(self, x):
        return self.head(self.features(x))


def test_energy_based_sampling_takes_extremes_of_each_feature_cluster():
    rng = np.random.default_rng(0)
    points, expected = [], set()
    for c, angle in enumerate((0.0, 2.1, 4.2)):  # three well separated directions
        t = rng.permutation(np.linspace(-0.01, 0.01, 5))
        radius = rng.uniform(0.5, 3.0, size=5)  # normalisation removes the length
        for i in range(5):
            points.append([radius[i] * math.cos(angle), radius[i] * math.sin(angle), t[i]])
        members = np.arange(5) + 5 * c
        expected |= {int(members[np.argmax(t)]), int(members[np.argmin(t)])}  # lowest / highest E
    candidates = torch.tensor(points, dtype=torch.float32).view(15, 1, 1, 3)
    chosen = greg.energy_based_sampling(DirectionNet(), candidates, num_clusters=3, seed=0, n_init=1)
    assert set(chosen.tolist()) == expected and len(chosen) == 6


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ci_cells(digits):
    ci = get_profile("ci")
    return {
        "nd": next(iter(get_protocol("nd").cells(digits, ci, 0))),
        "osr": next(iter(get_protocol("osr").cells(digits, ci, 0))),
    }


def test_greg_plus_epoch_outliers_select_two_per_cluster_from_the_pool(ci_cells):
    task = ci_cells["nd"].task  # 125 inliers: 2 steps per epoch; pool 1000 -> 2 candidate batches of 384
    network, _ = training.new_network(task, 1)
    network.eval()
    sample = greg.GRegPlus().epoch_outliers(task)
    chosen = sample(network, 0, task.oe.images)
    assert chosen.shape == (2 * 2 * task.profile.batch_size, *task.image_shape)
    pool = task.oe.images.flatten(1)
    in_pool = (chosen.flatten(1)[:, None, :] == pool[None]).all(dim=2).any(dim=1)
    assert bool(in_pool.all())  # every image is a pool image
    assert torch.equal(sample(network, 0, task.oe.images), chosen)  # deterministic per epoch
    assert not torch.equal(sample(network, 1, task.oe.images), chosen)
    assert greg.GReg().epoch_outliers(task) is None  # plain GReg draws from the whole pool


# ---- HSC -----------------------------------------------------------------------------------------------


def test_hsc_scores_and_loss_match_hand_values():
    f = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, 0.0, 4.0]])
    h = hsc.pseudo_huber(f)
    assert h.tolist() == pytest.approx([0.0, 1.0, math.sqrt(26) - 1])
    assert hsc.hsc_paper_score(f).tolist() == pytest.approx(
        [0.0, 1 - math.exp(-1), 1 - math.exp(1 - math.sqrt(26))]
    )
    assert torch.equal(SCORES["hsc"](f), h)
    loss = hsc.hsc_loss(f[1:2], f[1:2])  # ||f|| = sqrt(3): h = 1 on both sides
    assert float(loss) == pytest.approx(1.0 - math.log(1 - math.exp(-1)), rel=1e-6)
    loss = hsc.hsc_loss(f[:2], f[2:])  # normals: mean(0, 1); OE: -log(1 - e^-(sqrt(26) - 1))
    assert float(loss) == pytest.approx(0.5 - math.log(1 - math.exp(1 - math.sqrt(26))), rel=1e-6)
    at_centre = hsc.hsc_loss(f[:1], f[:1])  # OE at the centre: -log(1e-9), finite
    assert float(at_centre) == pytest.approx(-math.log(1e-9), rel=1e-6)


def test_hsc_detector_score_is_monotone_in_the_paper_score():
    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.01, 1.5, 200, dtype=torch.float64)[:, None]  # h up to ~6: no float32 ties
    f = torch.randn((200, 16), generator=generator, dtype=torch.float64) * scale
    h, paper = hsc.pseudo_huber(f), hsc.hsc_paper_score(f)
    order = torch.argsort(h)
    assert bool((paper[order].diff() >= 0).all())
    assert bool((h[order].diff() > 0).all())
    labels = (torch.arange(200) % 3 == 0).numpy()
    assert auroc(h.numpy(), labels) == auroc(paper.numpy(), labels)
    # far from the centre the paper's score saturates in float32, the detector's does not
    far = torch.tensor([[30.0, 0.0], [40.0, 0.0]])
    assert hsc.hsc_paper_score(far)[0] == hsc.hsc_paper_score(far)[1] == 1.0
    assert hsc.pseudo_huber(far)[1] > hsc.pseudo_huber(far)[0]


# ---- training on digits and fitted detectors -------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(ci_cells):
    """Each method fitted on one nd and one osr ci cell, with the losses of its last training run."""
    results = {}
    original = training.train_network
    with pytest.MonkeyPatch.context() as patch:
        for cell_name, cell in ci_cells.items():
            for name in ("greg", "greg+", "hsc"):
                losses: list[float] = []

                def recording(
                    network,
                    task,
                    loss_fn,
                    uses_oe,
                    epoch_outliers=None,
                    optimizer_factory=None,
                    _losses=losses,
                ):
                    _losses.clear()  # the last call is the method's own loss (after pre-training)

                    def wrapped(*args):
                        loss = loss_fn(*args)
                        _losses.append(float(loss.detach()))
                        return loss

                    return original(network, task, wrapped, uses_oe, epoch_outliers, optimizer_factory)

                patch.setattr(training, "train_network", recording)
                detector = METHODS.get(name)().fit(cell.task, RunContext(device="cpu"))
                results[name, cell_name] = (detector, list(losses))
    return results


@pytest.mark.parametrize("cell_name", ["nd", "osr"])
@pytest.mark.parametrize("name", ["greg", "greg+", "hsc"])
def test_training_lowers_the_loss_on_digits(fitted, name, cell_name):
    _, losses = fitted[name, cell_name]
    assert len(losses) >= 20 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_registry_has_the_methods_with_their_defaults():
    assert {"greg", "greg+", "hsc"} <= set(list_methods())
    g, plus, h = METHODS.get("greg")(), METHODS.get("greg+")(), METHODS.get("hsc")()
    assert (g.m_in, g.m_out, g.lambda_energy, g.lambda_grad) == (-25.0, -7.0, 0.1, 1.0)
    assert isinstance(plus, greg.GReg) and plus.candidates_per_inlier == 6
    assert h.rep_dim == 256
    for method in (g, plus, h):
        assert method.requires == frozenset({"oe"})
        assert set(method.protocols) == {"nd", "osr", "ood"}


@pytest.mark.parametrize("cell_name", ["nd", "osr"])
@pytest.mark.parametrize("name", ["greg", "greg+", "hsc"])
def test_fitted_detectors_score_finitely_and_round_trip(fitted, ci_cells, tmp_path, name, cell_name):
    detector, _ = fitted[name, cell_name]
    cell = ci_cells[cell_name]
    assert isinstance(detector, ClassifierDetector)
    images = cell.evalsets[0].images
    scores = detector.score(images)
    assert scores.shape == (len(images),) and bool(torch.isfinite(scores).all())
    if name == "hsc":
        assert detector.score_name == "hsc" and not detector.classifies
        assert detector.network.head.out_features == 256
    else:
        assert detector.score_name == "energy"
        assert detector.classifies == (cell.task.num_classes >= 2)
    cache = DetectorCache(tmp_path)
    cache.save_detector("k", detector)
    loaded = cache.load_detector("k")
    assert torch.equal(loaded.score(images), scores)
    x = images[:8].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(detector(x).sum(), x)  # attacks need an input gradient
    assert float(grad.abs().sum()) > 0


def test_fits_are_deterministic_and_use_the_shared_classifier_cache(ci_cells, tmp_path):
    cell = ci_cells["osr"]
    fast = replace(cell.task, profile=replace(cell.task.profile, epochs=1, min_steps=0))
    ctx = RunContext(device="cpu", cache=DetectorCache(tmp_path))
    first = METHODS.get("greg")(finetune_fraction=1.0).fit(fast, ctx)
    assert not first.meta["training"]["pretrain"].get("cached_network", False)
    plus = METHODS.get("greg+")(finetune_fraction=1.0).fit(fast, ctx)  # reuses the CE classifier
    assert plus.meta["training"]["pretrain"]["cached_network"] is True
    again = METHODS.get("greg")(finetune_fraction=1.0).fit(fast, RunContext(device="cpu"))
    x = cell.evalsets[0].images
    assert torch.equal(first.score(x), again.score(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["greg", "greg+", "hsc"])
def test_quick_profile_detects_novel_digits(digits, name):
    quick = get_profile("quick")
    values = []
    for i, cell in enumerate(get_protocol("nd").cells(digits, quick, 0)):
        if i == 3:
            break
        detector = METHODS.get(name)().fit(cell.task, RunContext(device="cpu"))
        ev = cell.evalsets[0]
        values.append(auroc(detector.score(ev.images).numpy(), ev.is_outlier.numpy()))
    assert np.mean(values) > 0.85


def test_greg_plus_from_scratch_trains_the_k_way_network_without_the_classifier(ci_cells, tmp_path):
    """GReg Sec. 6.1 (the paper profile's greg+): from scratch, at the profile's lr (lr_factor 1), for
    the profile's epochs; nothing is pre-trained, and the network is the K-way one."""
    cell = ci_cells["osr"]
    fast = replace(cell.task, profile=replace(cell.task.profile, epochs=1, min_steps=0))
    seen = []
    original = training.train_network

    def recording(network, task, *args, **kwargs):
        seen.append((task.profile.lr, task.profile.epochs))
        return original(network, task, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train_network", recording)
        detector = METHODS.get("greg+")(from_scratch=True, lr_factor=1.0).fit(fast, RunContext(device="cpu"))
    assert seen == [(fast.profile.lr, 1)]  # one training run: no cross-entropy pre-training
    assert "pretrain" not in detector.meta["training"]
    assert detector.network.head.out_features == fast.num_classes
    assert METHODS.get("greg+")().from_scratch is False  # the CPU profiles keep fine-tuning
