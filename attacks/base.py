"""The Attack contract (docs/design.md).

``perturb(detector, x, is_outlier, eps) -> x_adv`` maximises ``sign * score`` with sign = +1 for
inliers and -1 for outliers, returns points inside the L-inf eps-ball around x and inside [0, 1], and
keeps per sample the worst case it found. ``budget()`` reports what one image is planned to cost and
``spent_budget()`` what the calls since ``reset_spent()`` actually cost per image, counted by the
:class:`ScoreObjective` every attack evaluates the detector through: ``grad_evals`` (forward+backward
passes) and ``queries`` (forward-only score evaluations).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from bench.config import Profile
from bench.detector import Detector, attack_objective, detector_device  # noqa: F401  (re-exported)
from bench.errors import BadInput


@dataclass(frozen=True)
class Budget:
    steps: int
    restarts: int
    grad_evals: float  # per image; an integer for fixed-budget attacks, an average for adaptive ones
    queries: float


def check_attack_inputs(x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> None:
    """Reject an eps outside [0, 1], inputs outside [0, 1] (or NaN) or mismatched lengths."""
    if not 0.0 <= float(eps) <= 1.0:
        raise BadInput(f"eps {eps!r} is outside [0, 1]")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise BadInput("input images contain NaN or infinite pixels; accepted: values in [0, 1]")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise BadInput(
            f"input images must lie in [0, 1]; got range [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    if len(is_outlier) != len(x):
        raise BadInput(f"is_outlier has {len(is_outlier)} entries for {len(x)} images")


def check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise BadInput(f"bad {name} {key} {value!r}; accepted: integers >= 1")


def check_range(name: str, key: str, value: float, low: float, high: float = math.inf,
                low_open: bool = True, high_open: bool = False) -> None:  # fmt: skip
    """BadInput naming ``name.key``, its value and the accepted interval unless ``value`` lies in it
    (a step size of 0 or below, or a Square ``p_init`` outside (0, 1], silently weakens the attack)."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    above = number and (value > low if low_open else value >= low)
    below = number and (value < high if high_open else value <= high)
    if not (above and below):
        left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
        shown = "inf" if high == math.inf else f"{high:g}"
        raise BadInput(f"bad {name}.{key}={value!r}; accepted: a number in {left}{low:g}, {shown}{right}")


def objective_sign(is_outlier: torch.Tensor) -> torch.Tensor:
    """+1 for inliers (push the score up), -1 for outliers (push it down)."""
    return 1.0 - 2.0 * is_outlier.float()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the L-inf ball of radius eps around x, then into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class ScoreObjective:
    """The attack objective ``sign * score`` of one batch, counting every image evaluation.

    ``score`` here is the detector's ``attack_objective`` (:func:`bench.detector.attack_objective`): a
    strictly increasing, log-space function of the score (the same ranking, so the same worst case per
    sample), never a probability that saturates at 0 or 1 and starves gradient attacks.

    ``value(x, rows)`` is a forward-only query, ``value_and_grad(x, rows)`` a gradient evaluation;
    ``rows`` selects which samples of the batch ``x`` holds (default: all, in order).
    """

    def __init__(self, detector: Detector, is_outlier: torch.Tensor, device: torch.device):
        self.detector = detector
        self.sign = objective_sign(is_outlier).to(device)
        self.grad_evals = 0
        self.queries = 0
        self.zero_gradients = 0  # gradient evaluations (images) whose input gradient was exactly zero
        # one entry per gradient call and per forward-only call (for throughput checks)
        self.grad_batch_sizes: list[int] = []
        self.query_batch_sizes: list[int] = []

    def _sign(self, rows: torch.Tensor | None) -> torch.Tensor:
        return self.sign if rows is None else self.sign[rows]

    @torch.no_grad()
    def value(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        self.queries += len(x)
        self.query_batch_sizes.append(len(x))
        return self._sign(rows) * attack_objective(self.detector, x).float()

    def value_and_grad(self, x: torch.Tensor, rows: torch.Tensor | None = None):
        self.grad_evals += len(x)
        self.grad_batch_sizes.append(len(x))
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = self._sign(rows) * attack_objective(self.detector, x).float()
            (gradient,) = torch.autograd.grad(objective.sum(), x)
        self.zero_gradients += int((gradient.flatten(1).abs().amax(1) == 0).sum())
        return objective.detach(), gradient.detach()

    def as_two_logits(self) -> nn.Module:
        """A module mapping x to (score, -score): the label-indexed column is ``sign * score`` when the
        label is 0 for inliers and 1 for outliers. Lets the official AutoAttack code drive the
        objective; it counts its own calls as queries or gradient evaluations."""
        return _SignedScoreColumns(self)


class _SignedScoreColumns(nn.Module):
    def __init__(self, objective: ScoreObjective):
        super().__init__()
        self.objective = objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.objective.grad_evals += len(x)
            self.objective.grad_batch_sizes.append(len(x))
        else:
            self.objective.queries += len(x)
            self.objective.query_batch_sizes.append(len(x))
        score = attack_objective(self.objective.detector, x).float()
        return torch.stack([score, -score], dim=1)


@dataclass
class Attack:
    """Base of every attack config; subclasses are dataclasses with their paper budget as defaults
    and ``PROFILE_BUDGETS`` (profile name -> field overrides; ``"paper": {}`` keeps the defaults). An
    attack with a budget must name every profile it runs under: a new profile gets no budget by
    accident. ``None``: the attack has no budget (clean)."""

    seed: int = 0

    registry_name: ClassVar[str] = ""
    uses_eps: ClassVar[bool] = True  # False for the identity attack: its rows record eps = 0
    PROFILE_BUDGETS: ClassVar[dict[str, dict] | None] = None

    @classmethod
    def from_profile(cls, profile: Profile, seed: int = 0, **overrides) -> Attack:
        return cls(seed=seed, **{**cls.profile_budget(profile), **overrides})

    @classmethod
    def profile_budget(cls, profile: Profile) -> dict:
        """The field overrides of ``profile``; BadInput when the attack declares none for it."""
        if cls.PROFILE_BUDGETS is None:
            return {}
        if profile.name not in cls.PROFILE_BUDGETS:
            raise BadInput(
                f"attack {cls.registry_name or cls.__name__} has no budget for profile {profile.name!r}; "
                f"profiles with one: {', '.join(cls.PROFILE_BUDGETS)}"
            )
        return cls.PROFILE_BUDGETS[profile.name]

    @classmethod
    def field_types(cls) -> dict[str, type]:
        names = {"int": int, "float": float, "bool": bool, "str": str}
        return {
            f.name: (f.type if isinstance(f.type, type) else names.get(str(f.type), str))
            for f in fields(cls)
            if f.name != "seed"
        }

    def budget(self) -> Budget:  # pragma: no cover - abstract
        raise NotImplementedError

    def perturb(
        self, detector: Detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float
    ) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    # accounting ---------------------------------------------------------------------------------
    def reset_spent(self) -> None:
        self._spent = {
            "grad_evals": 0,
            "queries": 0,
            "images": 0,
            "grad_batch_sizes": [],
            "query_batch_sizes": [],
        }
        self.warnings: list[str] = []

    def _record(self, objective: ScoreObjective, images: int) -> None:
        """Add one batch's spending; warn (AutoAttack's ``check_zero_gradients``) when gradient
        evaluations of ``ScoreObjective.value_and_grad`` saw an all-zero input gradient: a sign step
        cannot move those points, so a gradient attack's result there says nothing about robustness."""
        if not hasattr(self, "_spent"):
            self.reset_spent()
        if objective.zero_gradients:
            self._warn(
                f"zero gradients at {objective.zero_gradients} of {objective.grad_evals} gradient "
                "evaluations: gradient-based results may be unreliable (masked or saturated score)"
            )
        self._spent["grad_evals"] += objective.grad_evals
        self._spent["queries"] += objective.queries
        self._spent["images"] += images
        self._spent["grad_batch_sizes"] += objective.grad_batch_sizes
        self._spent["query_batch_sizes"] += objective.query_batch_sizes

    def _warn(self, message: str) -> None:
        if not hasattr(self, "_spent"):
            self.reset_spent()
        if message not in self.warnings:
            self.warnings.append(message)
            warnings.warn(message, stacklevel=3)

    def gradient_batch_sizes(self) -> list[int]:
        """The batch size of every gradient evaluation since ``reset_spent()``, in order."""
        return list(getattr(self, "_spent", {}).get("grad_batch_sizes", []))

    def query_batch_sizes(self) -> list[int]:
        """The batch size of every forward-only evaluation since ``reset_spent()``, in order."""
        return list(getattr(self, "_spent", {}).get("query_batch_sizes", []))

    def spent_budget(self) -> Budget:
        """Per-image gradient evaluations and queries actually spent since ``reset_spent()``."""
        planned = self.budget()
        spent = getattr(self, "_spent", None)
        if not spent or not spent["images"]:
            return planned
        n = spent["images"]

        def per_image(total: int):
            return total // n if total % n == 0 else round(total / n, 2)

        return Budget(
            planned.steps, planned.restarts, per_image(spent["grad_evals"]), per_image(spent["queries"])
        )
