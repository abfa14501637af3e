"""Detection floor in the default suite (issue 11, §6): every trained method detects outliers clearly
better than chance, and adversarial training beats undefended OE under PGD.

Not marked slow, so CI runs it. Seed 0, a private detector cache (every detector is trained here), eps
8/255 and:

- the novelty-detection cell ``class2`` (digit two as inliers; 54 test inliers, 120 test outliers) on the
  ci profile (small CNN, 80 optimiser steps; PGD 10 x 1) for every trained method that can run it;
- msp and energy need two or more inlier classes, and the ci profile's 80 steps leave their classifier
  near chance (osr split0: msp 0.64, energy 0.53; ood: 0.16-0.55, more confident on the OOD sets than on
  digits), so they get the open-set cell ``split0`` (6 known digits; 100 test images per side) on the
  quick profile (tiny CNN, 360 steps), where one shared network serves both.

The slow behaviour tests on the quick profile (tests/test_behaviour.py) check the full claims.

Measured clean AUROC (seeds 0 / 1 / 2; a floor sits about 0.07 or more below the smallest, rounded down to
0.05), PGD AUROC (10 x 1 for every row) and the CPU seconds of the fit (seed 0) on a 2-core machine shared
with other jobs (so inflated, but comparable between rows):

| method | clean | floor | pgd | fit CPU s |
| --- | --- | --- | --- | --- |
| oe | 0.902 / 0.874 / 0.891 | 0.80 | 0.714 / 0.619 / 0.636 | 32 |
| atom | 0.927 / 0.970 / 0.940 | 0.85 | 0.812 / 0.931 / 0.816 | 81 |
| ntom | 0.898 / 0.952 / 0.928 | 0.80 | 0.743 / 0.855 / 0.779 | 28 |
| aloe | 0.903 / 0.875 / 0.887 | 0.80 | 0.723 / 0.624 / 0.636 | 27 |
| aoe | 0.917 / 0.885 / 0.892 | 0.80 | 0.765 / 0.646 / 0.657 | 16 |
| hsc | 0.938 / 0.971 / 0.970 | 0.85 | 0.814 / 0.880 / 0.853 | 24 |
| greg | 0.794 / 0.823 / 0.799 | 0.70 | 0.494 / 0.472 / 0.455 | 47 |
| greg+ | 0.758 / 0.790 / 0.784 | 0.65 | 0.447 / 0.398 / 0.418 | 31 |
| msp (osr, quick) | 0.845 / 0.866 / 0.889 | 0.75 | 0.505 / 0.536 / 0.540 | 53 (shared) |
| energy (osr, quick) | 0.813 / 0.907 / 0.896 | 0.70 | 0.519 / 0.670 / 0.688 | 0 (msp's net) |
| rodeo (not run here) | 0.821 / 0.706 / 0.843 | - | 0.366 / 0.144 / 0.461 | 140 / 213 / 190 |
| bce-clip (not run here) | 0.988 (seed 0) | - | 0.940 | 131, PGD 91 |

ATOM's PGD AUROC beats OE's by 0.098 / 0.312 / 0.180 (seeds 0 / 1 / 2), so the margin is 0.04; HSC's gaps
are 0.100 / 0.261 / 0.218 (also robust, not asserted).

Run time of this file (``time pytest tests/test_detection_floor.py``, 2 cores with other jobs on them, load
4-6): 4 min 2 s wall, 2 min 41 s user CPU, so under 3 minutes on two free cores.
"""

from __future__ import annotations

import pytest

from bench.cache import DetectorCache
from bench.config import get_profile
from bench.contracts import RunContext
from bench.datasets import load_dataset
from bench.metrics import auroc
from bench.protocols import get_protocol
from bench.registry import ATTACKS, METHODS

SEED = 0
ND = ("nd", "class2", get_profile("ci"))
OSR = ("osr", "split0", get_profile("quick"))
# Each method declares its floor beside it (``clean_floor`` in its module: protocol -> clean AUROC, the
# smallest value measured over seeds 0, 1, 2 minus about 0.07; the table above). {} means not checked
# here, with the reason beside it: clip trains nothing; a fit of rodeo or bce-clip costs as much as 4 to 10
# OE fits, the two together about as much as this whole file (RODEO's nd claim is in the slow
# tests/test_behaviour.py; tests/test_methods_clip.py checks bce-clip's training on a tiny CLIP).
# A method with an "osr" floor needs two or more inlier classes (msp, energy).
CLEAN_FLOOR = {
    name: floor for name in METHODS.names() for floor in (METHODS.get(name).clean_floor or {}).items()
}  # name -> (protocol, floor)
MULTI_CLASS = {name for name, (protocol, _) in CLEAN_FLOOR.items() if protocol == "osr"}
ROBUST = "atom"  # the adversarially trained method compared with OE under PGD
PGD_MARGIN = 0.04  # AUROC; the smallest gap measured over seeds 0, 1, 2 is 0.098


class Floor:
    """Trains each method once (on first use) in a private cache; clean and PGD AUROC on its cell."""

    def __init__(self, root):
        assert not any(root.iterdir())  # an empty cache: every detector is trained here
        self.cache = DetectorCache(root)
        dataset = load_dataset("digits")
        self.eps = dataset.eps
        self.cells = {}
        for protocol, cell_id, profile in (ND, OSR):
            cells = get_protocol(protocol).cells(dataset, profile, SEED)
            self.cells[protocol] = (next(c for c in cells if c.cell_id == cell_id), profile)
        self.detectors = {}

    def cell(self, name: str):
        return self.cells["osr" if name in MULTI_CLASS else "nd"]

    def detector(self, name: str):
        if name not in self.detectors:
            cell, _ = self.cell(name)
            detector = METHODS.get(name)().fit(cell.task, RunContext(device="cpu", cache=self.cache))
            self.detectors[name] = detector.eval()
        return self.detectors[name]

    def clean_auroc(self, name: str) -> float:
        evalset = self.cell(name)[0].evalsets[0]
        scores = self.detector(name).score(evalset.images).numpy()
        return auroc(scores, evalset.is_outlier.numpy())

    def pgd_auroc(self, name: str) -> float:
        (cell, profile), detector = self.cell(name), self.detector(name)
        evalset = cell.evalsets[0]
        attack = ATTACKS.get("pgd").from_profile(profile, seed=SEED)
        x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, self.eps)
        return auroc(detector.score(x_adv).numpy(), evalset.is_outlier.numpy())


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    root = tmp_path_factory.mktemp("floor-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(root))  # nothing comes from a shared cache: CI really trains
        yield Floor(root)


def test_every_method_declares_its_floor():
    # a new method fails here until its floor is measured and declared in its module (or {} with a reason)
    undeclared = [name for name in METHODS.names() if METHODS.get(name).clean_floor is None]
    assert not undeclared, f"declare clean_floor in these methods' modules: {undeclared}"
    assert all(len(METHODS.get(n).clean_floor or {}) <= 1 for n in METHODS.names())  # one cell each
    assert {protocol for protocol, _ in CLEAN_FLOOR.values()} <= {"nd", "osr"}


@pytest.mark.parametrize("name", sorted(CLEAN_FLOOR))
def test_trained_method_detects_clearly_better_than_chance(floor, name):
    value = floor.clean_auroc(name)
    assert value > CLEAN_FLOOR[name][1], (name, value)


def test_adversarial_training_beats_undefended_oe_under_pgd(floor):
    oe, robust = floor.pgd_auroc("oe"), floor.pgd_auroc(ROBUST)
    assert oe < floor.clean_auroc("oe")  # the attack bites
    assert robust > oe + PGD_MARGIN, (ROBUST, robust, oe)
