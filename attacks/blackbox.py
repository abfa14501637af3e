"""``blackbox``: Square Attack alone on the score objective (query-only), for clean / black-box /
white-box comparisons as in RODEO Table 5. Per sample, the worst case over the clean point and
every restart. The paper profile spends 5,000 queries (AutoAttack 'standard' Square budget).
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
)
from bench.attacks.pgd import WorstCase, batches
from bench.attacks.square import square_search
from bench.registry import register_attack


@register_attack("blackbox")
@dataclass
class BlackBoxSquare(Attack):
    queries: int = 5000  # AutoAttack 'standard' Square budget (Croce & Hein 2020)
    restarts: int = 1
    p_init: float = 0.8  # official Square default for L-inf
    batch_size: int = 1024

    PROFILE_BUDGETS = {
        "paper": {},
        "reference": {"queries": 1000},
        "quick": {"queries": 300},
        "ci": {"queries": 100},
    }

    def __post_init__(self) -> None:
        check_positive("blackbox", queries=self.queries, restarts=self.restarts, batch_size=self.batch_size)
        check_range("blackbox", "p_init", self.p_init, 0.0, 1.0)  # Square's initial fraction of pixels

    def budget(self) -> Budget:
        return Budget(self.queries, self.restarts, 0, 1 + self.restarts * (self.queries + 1))

    def perturb(self, detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> torch.Tensor:
        check_attack_inputs(x, is_outlier, eps)
        detector.eval()
        device = detector_device(detector, x)
        parts = []
        for rows in batches(len(x), self.batch_size):
            x_batch = x[rows].to(device)
            objective = ScoreObjective(detector, is_outlier[rows], device)
            worst = WorstCase(x_batch, objective.value(x_batch))
            labels = is_outlier[rows].long().to(device)
            candidate, value = square_search(
                objective, x_batch, labels, float(eps), self.queries, self.restarts, self.p_init, self.seed
            )
            worst.update(candidate, value)
            parts.append(worst.x.cpu())
            self._record(objective, len(x_batch))
        return torch.cat(parts) if parts else x.clone()
