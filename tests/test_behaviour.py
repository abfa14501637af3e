"""Behaviour on digits, quick profile (issue 4): adversarially trained methods beat undefended ones
under PGD, and every method detects clearly better than chance when not attacked.

Slow (the nd and osr grids of ten methods, clean and PGD, on the quick profile): ``make test-slow`` or
``pytest -m slow tests/test_behaviour.py``.

Margins are the smallest gaps seen over seeds 0, 1, 2 on nd (PGD AUROC, %): atom - oe 8.4 / 2.6 / 12.8,
aloe - oe 1.1 / 0.9 / 1.3, atom - ntom 3.8 / 4.1 / 4.8, rodeo - oe 5.0 / 5.4 / 8.9 (msp and energy have
no nd rows: one inlier class). On osr (seed 0, CPU): atom 46.9, ntom 45.9, aloe 68.0, oe 66.8, energy
58.0, msp 50.3 (an H100 run gave atom 50.7, ntom 46.1, aloe 68.6, oe 67.0), so atom - ntom on osr gets a
0.5-point margin. ALOE trains at its paper's eps 1/255 and is attacked at 8/255, so it gains little
over OE.
"""

from __future__ import annotations

import csv
from statistics import mean

import pytest

from bench.cache import DetectorCache
from bench.plan import RunSpec, plan_run
from bench.runner import Runner

pytestmark = pytest.mark.slow

ISSUE_METHODS = ("atom", "aloe", "aoe", "greg", "greg+", "hsc", "ntom")
UNDEFENDED = ("msp", "energy", "oe")
MARGIN = {"atom": 0.02, "aloe": 0.005, "rodeo": 0.02}  # AUROC; below the smallest gaps (docstring)
ABLATION_MARGIN = {"nd": 0.02, "osr": 0.005}  # atom - ntom


def mean_auroc_by_method(run_dir) -> dict[tuple[str, str], float]:
    """Mean AUROC over the per-cell rows (not the aggregate ``:mean`` rows) per (method, attack)."""
    values: dict[tuple[str, str], list[float]] = {}
    with (run_dir / "results.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["cell"].endswith(":mean") or row["metric"] != "auroc" or row["value"] in ("", "nan"):
                continue
            values.setdefault((row["method"], row["attack"]), []).append(float(row["value"]))
    return {key: mean(v) for key, v in values.items()}


@pytest.fixture(scope="module", params=["nd", "osr"])
def grid(request, tmp_path_factory) -> tuple[str, dict[tuple[str, str], float]]:
    """(protocol, mean AUROC per (method, attack)) of the ten methods (and RODEO on nd), clean and PGD,
    seed 0."""
    root = tmp_path_factory.mktemp(f"behaviour-{request.param}")
    extra = ["rodeo"] if request.param == "nd" else []  # issue 5 states RODEO's claim on nd
    spec = RunSpec(
        methods=[*ISSUE_METHODS, *UNDEFENDED, *extra],
        protocol=request.param,
        attacks=["clean", "pgd"],
        profile="quick",
        out=root / "run",
    )
    Runner(plan_run(spec), cache=DetectorCache(root / "cache")).run()
    return request.param, mean_auroc_by_method(root / "run")


def best_undefended(auroc: dict[tuple[str, str], float]) -> float:
    values = [auroc[(m, "pgd")] for m in UNDEFENDED if (m, "pgd") in auroc]
    assert values, auroc
    return max(values)


def test_every_method_detects_clearly_better_than_chance(grid):
    protocol, auroc = grid
    for method in (*ISSUE_METHODS, *UNDEFENDED):
        if protocol == "nd" and method in ("msp", "energy"):
            assert (method, "clean") not in auroc  # na: one inlier class
            continue
        assert auroc[(method, "clean")] > 0.6, (protocol, method, auroc)


def test_attacked_auroc_is_below_clean(grid):
    protocol, auroc = grid
    for (method, attack), value in auroc.items():
        if attack == "pgd":
            assert value <= auroc[(method, "clean")] + 1e-9, (protocol, method)


def test_aloe_beats_the_undefended_methods_under_pgd(grid):
    protocol, auroc = grid
    assert auroc[("aloe", "pgd")] > best_undefended(auroc) + MARGIN["aloe"], (protocol, auroc)


def test_atom_adversarial_training_beats_its_natural_ablation_under_pgd(grid):
    """ATOM vs NTOM (ATOM Sec. 4.2, Table 2): the same objective and mining without the inner max."""
    protocol, auroc = grid
    assert auroc[("atom", "pgd")] > auroc[("ntom", "pgd")] + ABLATION_MARGIN[protocol], (protocol, auroc)


def test_atom_beats_the_undefended_methods_under_pgd(grid, request):
    protocol, auroc = grid
    if protocol == "osr":  # strict: a pass here means the behaviour changed and this note is stale
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason=(
                    "ATOM's (K+1)-th class score does not separate unknown digits from known ones: on "
                    "osr (seed 0, CPU) its PGD AUROC is 46.9 against OE's 66.8, as in RODEO Table 1b where "
                    "ATOM is the weakest robust method on OSR (MNIST: 74.8 clean / 4.1 PGD; ALOE 79.5 / "
                    "37.3)"
                ),
            )
        )
    assert auroc[("atom", "pgd")] > best_undefended(auroc) + MARGIN["atom"], (protocol, auroc)


@pytest.mark.xfail(
    reason="since issue 11 RODEO follows Alg. 1 (union training set, line-5 filter, t0 ~ U(0.3T, T), "
    "guidance 1000, chosen on the validation split): digits nd quick seed 0 gives clean 76.8 / PGD 44.8, "
    "below OE's 70.9 under PGD; with the embedded backbones 6-23 of ~125 generated images per digit pass "
    "the filter, so the union set is ~90% inliers (docs/findings.md, 'RODEO's generated outliers')",
    strict=True,
)
def test_rodeo_beats_the_undefended_methods_under_pgd_on_nd(grid):
    """Issue 5: on nd, RODEO's adaptive exposure and adversarial training beat undefended detectors."""
    protocol, auroc = grid
    if protocol != "nd":
        pytest.skip("RODEO's claim is checked on nd (issue 5)")
    assert auroc[("rodeo", "clean")] > 0.6, auroc
    assert auroc[("rodeo", "pgd")] > best_undefended(auroc) + MARGIN["rodeo"], auroc
