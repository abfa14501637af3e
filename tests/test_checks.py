"""Validity checks (bench.checks, issue 29), each on a detector built to trip it or not: a quantised
(zero-gradient) score trips the gradient and masking checks, a saturating one the saturation check, a
detector trained against blurred copies of its inliers RODEO's shortcut probe, and a healthy trained one
trips none. The attacks run through the same function as a unit of ``bench run`` (``attack_sets``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import checks
from bench.backbones import load_ddpm
from bench.config import get_profile
from bench.contracts import EvalSet
from bench.detector import Detector
from bench.execute import GroupState, attack_sets
from bench.methods.rodeo import shortcut_probe
from bench.registry import ATTACKS

EPS = 8 / 255
ATTACK_ORDER = ("clean", "pgd", "blackbox")  # gradient attacks before the black-box one, as in a run


class MeanPixel(Detector):
    """score = f(mean pixel value); ``quantum`` > 0 rounds it (zero gradient), ``sharpness`` > 0 turns it
    into a probability sigmoid(sharpness * (mean - 0.5)) that is exactly 0 or 1 in float32 far out."""

    def __init__(self, quantum: float = 0.0, sharpness: float = 0.0):
        super().__init__()
        self.quantum, self.sharpness = quantum, sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        if self.quantum:
            return torch.floor(mean / self.quantum) * self.quantum
        if self.sharpness:
            return torch.sigmoid(self.sharpness * (mean - 0.5))
        return mean

    def attack_objective(self, x: torch.Tensor) -> torch.Tensor:
        if self.sharpness:  # the logit, as the probability scores of the harness are attacked
            return self.sharpness * (x.flatten(1).mean(1) - 0.5)
        return self(x)


class SmallNet(Detector):
    """A two-layer perceptron whose output is the outlier logit."""

    def __init__(self, pixels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def mean_sets(spread: float = 0.01) -> EvalSet:
    """8x8 images around a mean grey level: inliers near 0.50, outliers near 0.52 (they overlap)."""
    generator = torch.Generator().manual_seed(0)
    means = torch.cat(
        [
            0.50 + spread * torch.randn(60, generator=generator),
            0.52 + spread * torch.randn(60, generator=generator),
        ]
    )
    images = (means.view(-1, 1, 1, 1) + 0.05 * torch.randn(120, 1, 8, 8, generator=generator)).clamp(0, 1)
    return EvalSet("test", images, torch.arange(120) >= 60)


def run_checks(detector: Detector, evalset: EvalSet) -> dict[str, dict[str, checks.Check]]:
    """attack -> check name -> Check, the ci profile's budgets, as the units of one group."""
    state, found = GroupState(), {}
    profile = get_profile("ci")
    for name in ATTACK_ORDER:
        attack = ATTACKS.get(name).from_profile(profile, seed=0)
        done = attack_sets(name, attack, detector.eval(), [evalset], EPS, state)
        assert not done.problem
        found[name] = {c.name: c for c in done.checks}
    return found


def tripped(found: dict[str, dict[str, checks.Check]]) -> set[tuple[str, str]]:
    return {(attack, name) for attack, named in found.items() for name, c in named.items() if c.tripped}


def test_the_pure_checks_on_known_values():
    assert checks.saturation_share(np.array([1.0, 1.0, 1.0, 0.2, 0.3])) == pytest.approx(0.6)
    assert checks.saturation_share(np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(0.25)
    gradients = torch.zeros(4, 1, 2, 2)
    gradients[0, 0, 0, 0], gradients[1, 0, 1, 1] = 1.0, float("nan")
    assert checks.zero_gradient_share(gradients) == pytest.approx(0.75)  # two zero, one NaN
    assert checks.masking({"pgd": 0.60, "aa": 0.55, "blackbox": 0.50}).value == pytest.approx(0.05)
    assert checks.masking({"pgd": 0.6}) is None
    assert checks.budget_ratio((99.9, 1), (100, 14)) == pytest.approx(0.999)  # a3: gradient evaluations
    assert checks.budget_ratio((0, 150), (0, 301)) == pytest.approx(150 / 301)  # a query-only attack
    assert checks.budget_ratio((0, 0), (0, 0)) is None
    assert checks.budget(0.5).tripped and not checks.budget(0.999).tripped
    assert not checks.budget(0.37, "simba").tripped  # SimBA's plan is a bound (2 queries per pixel)
    assert checks.above_clean(0.01).tripped and not checks.above_clean(0.0).tripped
    assert not checks.shortcut(None).tripped and checks.shortcut(0.9).tripped
    assert checks.tripped_names([checks.saturation(0.5), checks.budget(1.0), checks.shortcut(0.95)]) == (
        "saturation;shortcut"
    )


def test_a_quantised_detector_trips_the_gradient_and_the_masking_checks():
    found = run_checks(MeanPixel(quantum=1e-4), mean_sets())
    assert found["pgd"]["zero_gradient"].value == 1.0
    assert ("pgd", "zero_gradient") in tripped(found)
    assert ("blackbox", "masking") in tripped(found)  # Square climbs the steps; PGD sees no slope


def test_a_saturating_detector_trips_the_saturation_check():
    found = run_checks(MeanPixel(sharpness=2000.0), mean_sets(spread=0.05))
    assert ("pgd", "saturation") in tripped(found)
    assert ("clean", "saturation") in tripped(found)
    assert not any(name == "zero_gradient" for _, name in tripped(found))  # the logit keeps its slope


def train(detector: Detector, inliers: torch.Tensor, outliers: torch.Tensor, steps: int = 300) -> Detector:
    """Binary cross-entropy, inliers 0 and outliers 1, full batch (a few seconds on a CPU)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(detector.parameters(), lr=3e-3)
    x = torch.cat([inliers, outliers])
    y = torch.cat([torch.zeros(len(inliers)), torch.ones(len(outliers))])
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(detector(x), y).backward()
        optimizer.step()
    return detector.eval()


def blur(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


@pytest.fixture(scope="module")
def digits():
    from bench.registry import DATASETS

    data = DATASETS.get("digits")()
    zeros = data.train_images[data.train_labels == 0]
    held_out = data.test_images[data.test_labels == 0][:40]
    others = data.test_images[data.test_labels != 0][:80]
    return zeros, held_out, others


def probe(detector: Detector, held_out: torch.Tensor) -> float:
    """The shortcut probe with one denoising step (t = 25, the sampling stride; a run starts at RODEO's
    smallest start step): the same round trip at a twelfth of the cost."""
    return shortcut_probe(
        detector, held_out, load_ddpm("glyph-ddpm"), 25, 25, torch.Generator().manual_seed(0)
    )


def test_a_detector_trained_against_blurred_copies_of_its_inliers_trips_the_shortcut_probe(digits):
    zeros, held_out, _ = digits
    detector = train(SmallNet(64), zeros, blur(zeros))
    assert checks.shortcut(probe(detector, held_out)).tripped


class BlockMeans(SmallNet):
    """A perceptron on the 2x2 means of 4x4 blocks: what a generator round trip keeps."""

    def __init__(self):
        Detector.__init__(self)
        self.net = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def test_a_healthy_trained_detector_trips_no_check(digits):
    """Healthy for the probe means blind to the generator's artifacts. The probe is a rank statistic, so a
    detector that sees single pixels ranks round trips apart (a perceptron on the 64 pixels scores 0.99
    even when trained with round-tripped inliers); one that sees block means scores about 0.5."""
    zeros, held_out, others = digits
    from bench.registry import DATASETS

    letters = DATASETS.get("digits")().oe_source(300, 0).images  # glyph letters, the default OE
    detector = train(BlockMeans(), zeros, letters)
    evalset = EvalSet("test", torch.cat([held_out, others]), torch.arange(len(held_out) + len(others)) >= 40)
    found = run_checks(detector, evalset)
    assert tripped(found) == set(), {a: [c.describe() for c in named.values()] for a, named in found.items()}
    assert not checks.shortcut(probe(detector, held_out)).tripped


def test_compare_reports_a_newly_tripped_check_as_a_change_not_a_failure(tmp_path):
    import csv

    from bench.compare import compare, format_text
    from bench.store import COLUMNS, PRE_WARNINGS_COLUMNS

    def write(name: str, warnings: str | None) -> Path:
        path = tmp_path / name
        columns = COLUMNS if warnings is not None else PRE_WARNINGS_COLUMNS
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            row = dict.fromkeys(columns, "")
            row.update(method="oe", protocol="nd", dataset="digits", cell="class0", seed=0, attack="pgd")
            row.update(metric="auroc", value=0.8, status="ok", run_id="r")
            if warnings is not None:
                row["warnings"] = warnings
            writer.writerow(row)
        return path

    baseline = write("baseline.csv", None)  # a file from before the column: no warnings
    result = compare(baseline, write("candidate.csv", "saturation;masking"))
    assert result.ok and [c.checks for c in result.new_warnings] == [["saturation", "masking"]]
    assert "check newly tripped: method=oe" in format_text(result)
    assert compare(write("same.csv", "saturation"), write("again.csv", "saturation")).new_warnings == []


def test_a_group_hands_its_check_seconds_to_its_units_once():
    state = GroupState()
    state.check_seconds = 2.5
    assert state.take_check_seconds() == 2.5 and state.take_check_seconds() == 0
    state.check_seconds += 0.25
    assert state.take_check_seconds() == 0.25
