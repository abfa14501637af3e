"""The measurement studies behind docs/findings.md, apart from the product: ``bench study NAME [ARGS]``.

Each study is a module with ``main(argv)``; its data goes under ``results/<study>/`` and its notes under
``docs/studies/``. They use the product's public functions (plan, execute, store), never the reverse.
"""

from __future__ import annotations

import importlib

STUDIES = {  # name -> (module, what it measures)
    "budget": ("budget", "a profile's attack budgets against PGD-1000 x 10 on the same test images"),
    "validation": ("validation", "hyperparameters on a validation split carved from the training data"),
    "efficiency": ("efficiency", "attacked AUROC against gradient evaluations per image"),
    "msp-robustness": ("msp_robustness", "why undefended classifiers hold under PGD on MNIST osr"),
    "osr-per-class": ("osr_per_class", "an osr split's AUROC per unknown and per known class"),
    "exposure-lookalikes": ("exposure_lookalikes", "how much of RODEO's exposure looks like a known class"),
    "exposure-sharpness": ("exposure_sharpness", "sharpness of RODEO's exposure against the inliers"),
    "paper-smoke": ("paper_smoke", "paper-profile per-step costs on a GPU beside the dry run's estimate"),
    "frozen-spread": ("frozen_spread", "how far frozen detectors' rows move on another math code path"),
    "grid-checks": ("grid_checks", "which validity checks trip on finished runs, from their folders"),
    "resume": ("resume", "resume a reference grid at the code in results/reference/GRID_CODE"),
    "commit-finished": ("commit_finished", "commit the reference grids' finished groups and their tables"),
}


def describe() -> str:
    """One line per study, for ``bench study --help``."""
    width = max(map(len, STUDIES))
    return "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in STUDIES.items())


def run_study(name: str, argv: list[str]) -> int:
    """Run study ``name`` with its own command line; its exit status."""
    module = importlib.import_module(f"{__name__}.{STUDIES[name][0]}")
    return module.main(argv) or 0
