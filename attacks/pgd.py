"""``pgd``: L-inf projected gradient ascent on the outlier score (RODEO Sec. 5, "Adversarial Testing").

Objective: sign * score, sign = +1 for inliers and -1 for outliers. N steps of size
alpha = 2.5 * eps / N (RODEO Sec. 5), R restarts from uniform random starts in (-eps, eps), and per
sample the worst case over the clean point, every iterate and every restart. The paper profile runs
N = 1000, R = 10 (PGD-1000); smaller profiles run less and every row records what ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.attacks.base import (
    Attack,
    Budget,
    ScoreObjective,
    check_attack_inputs,
    check_positive,
    check_range,
    detector_device,
    project,
)
from bench.config import Profile
from bench.registry import register_attack


def batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


class WorstCase:
    """Per-sample best (highest) objective seen so far and the point that reached it."""

    def __init__(self, x: torch.Tensor, objective: torch.Tensor):
        self.x = x.clone()
        self.objective = objective.clone()

    def update(
        self, candidate: torch.Tensor, objective: torch.Tensor, rows: torch.Tensor | None = None
    ) -> None:
        if rows is None:
            better = objective > self.objective
            self.objective = torch.where(better, objective, self.objective)
            self.x = torch.where(better.view(-1, *[1] * (candidate.dim() - 1)), candidate, self.x)
        else:
            better = objective > self.objective[rows]
            self.objective[rows[better]] = objective[better]
            self.x[rows[better]] = candidate[better]


@register_attack("pgd")
@dataclass
class PGD(Attack):
    steps: int = 1000  # RODEO Sec. 5: N = 1000
    restarts: int = 10  # RODEO Sec. 5: 10 random restarts
    step_factor: float = 2.5  # RODEO Sec. 5: alpha = 2.5 * eps / N
    batch_size: int = 1024

    def __post_init__(self) -> None:
        check_positive("pgd", steps=self.steps, restarts=self.restarts, batch_size=self.batch_size)
        check_range("pgd", "step_factor", self.step_factor, 0.0)  # alpha = step_factor * eps / steps

    @classmethod
    def from_profile(cls, profile: Profile, seed: int = 0, **overrides) -> PGD:
        settings = {
            "steps": profile.pgd_steps,
            "restarts": profile.pgd_restarts,
            "batch_size": profile.attack_batch_size,
        }
        return cls(seed=seed, **{**settings, **overrides})

    def budget(self) -> Budget:
        # queries: the forward-only evaluations (clean point + final iterate of each restart)
        return Budget(self.steps, self.restarts, self.steps * self.restarts, 1 + self.restarts)

    def perturb(self, detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> torch.Tensor:
        check_attack_inputs(x, is_outlier, eps)
        detector.eval()
        device = detector_device(detector, x)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        parts = []
        for rows in batches(len(x), self.batch_size):
            x_batch = x[rows].to(device)
            objective = ScoreObjective(detector, is_outlier[rows], device)
            parts.append(self._perturb_batch(objective, x_batch, float(eps), generator).cpu())
            self._record(objective, len(x_batch))
        return torch.cat(parts) if parts else x.clone()

    def _perturb_batch(self, objective: ScoreObjective, x, eps, generator) -> torch.Tensor:
        alpha = self.step_factor * eps / self.steps
        worst = WorstCase(x, objective.value(x))
        for _restart in range(self.restarts):
            noise = torch.rand(x.shape, generator=generator).to(x.device)
            x_adv = project(x + (2 * noise - 1) * eps, x, eps)
            for _step in range(self.steps):
                value, gradient = objective.value_and_grad(x_adv)
                worst.update(x_adv, value)
                x_adv = project(x_adv + alpha * gradient.sign(), x, eps)
            worst.update(x_adv, objective.value(x_adv))
        return worst.x
