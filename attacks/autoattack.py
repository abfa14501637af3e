"""``aa``: AutoAttack (Croce & Hein, ICML 2020) adapted to a scalar outlier score.

The ensemble, run on the objective sign * score (sign +1 for inliers, -1 for outliers), with no
saturating surrogate (a cross-entropy on a 2-logit wrapper loses its gradient when |score| is large):

- APGD from the official code (``pyautoattack.APGDAttack``): its step-size schedule (2*eps, halved at
  the checkpoints on oscillation or stagnation), momentum 0.75 and checkpoints are kept; the objective
  enters through the loss hook (a subclass's ``dlr_loss`` with ``loss="dlr"``), the wrapper's columns
  being (score, -score) and the label 0 / 1 for inlier / outlier, so the label-indexed column is the
  objective. Each restart keeps its highest-objective point (``best_loss`` semantics).
- Square (query-based, ``pyautoattack.square``) on the same objective: it needs no gradient, so it
  catches gradient masking.
- Per sample, the worst case over the clean point and every member.

Not applicable to a scalar score, as in the RODEO paper (App. E): APGD-DLR, APGD-T and FAB-T, which
need at least 3 logits; they are not run. Budgets: the paper profile uses AutoAttack's 'standard'
version (APGD-CE 100 iterations, 1 restart; Square 5,000 queries, 1 restart).

Validity checks in the spirit of AutoAttack's ``checks.py``: a warning when APGD sees zero gradients,
and when Square beats APGD on more than 10% of the samples (a sign of gradient masking).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from pyautoattack.autopgd_base import APGDAttack

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


class _ScoreAPGD(APGDAttack):
    """Official APGD with its per-sample loss replaced by the label-indexed column (the objective)."""

    def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.gather(1, y[:, None]).squeeze(1)


def apgd_search(objective: ScoreObjective, x, labels, eps, steps, restarts, seed):
    """Official APGD restarts on the objective; the per-sample best point and objective."""
    attack = _ScoreAPGD(
        objective.as_two_logits(),
        n_iter=steps,
        norm="Linf",
        n_restarts=restarts,
        eps=eps,
        seed=seed,
        loss="dlr",
        device=x.device,
    )
    attack.init_hyperparam(x)
    best_x, best_value = x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
    messages = []
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(seed)
        for _ in range(restarts):
            candidate, _, value, _ = attack.attack_single_run(x, labels)
            better = value > best_value
            best_x[better], best_value[better] = candidate[better], value[better]
        messages = [str(w.message).split(" See ")[0] for w in caught]
    return best_x, best_value, messages


@register_attack("aa")
@dataclass
class AutoAttackScore(Attack):
    apgd_steps: int = 100  # AutoAttack 'standard': APGD 100 iterations (Croce & Hein 2020, Sec. 5)
    apgd_restarts: int = 1  # 'standard' runs APGD-CE with 1 restart
    square_queries: int = 5000  # 'standard': Square with 5,000 queries
    square_restarts: int = 1
    square_p_init: float = 0.8  # Square's default p_init for L-inf (official code)
    batch_size: int = 1024

    PROFILE_BUDGETS = {
        "paper": {},
        "reference": {"apgd_steps": 100, "apgd_restarts": 1, "square_queries": 300},
        "quick": {"apgd_steps": 40, "apgd_restarts": 2, "square_queries": 300},
        "ci": {"apgd_steps": 10, "apgd_restarts": 1, "square_queries": 100},
    }

    def __post_init__(self) -> None:
        check_positive(
            "aa",
            apgd_steps=self.apgd_steps,
            apgd_restarts=self.apgd_restarts,
            square_queries=self.square_queries,
            square_restarts=self.square_restarts,
            batch_size=self.batch_size,
        )
        check_range("aa", "square_p_init", self.square_p_init, 0.0, 1.0)

    def budget(self) -> Budget:
        # APGD: 1 gradient at the start + 1 per iteration, per restart. Queries: the clean point,
        # then per Square restart its initial point and its queries.
        grad_evals = (self.apgd_steps + 1) * self.apgd_restarts
        queries = 1 + self.square_restarts * (self.square_queries + 1)
        return Budget(self.apgd_steps, self.apgd_restarts, grad_evals, queries)

    def perturb(self, detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> torch.Tensor:
        check_attack_inputs(x, is_outlier, eps)
        detector.eval()
        device = detector_device(detector, x)
        parts = []
        for rows in batches(len(x), self.batch_size):
            x_batch = x[rows].to(device)
            labels = is_outlier[rows].long().to(device)
            objective = ScoreObjective(detector, is_outlier[rows], device)
            worst = WorstCase(x_batch, objective.value(x_batch))
            apgd_x, apgd_value, messages = apgd_search(
                objective, x_batch, labels, float(eps), self.apgd_steps, self.apgd_restarts, self.seed
            )
            worst.update(apgd_x, apgd_value)
            square_x, square_value = square_search(
                objective,
                x_batch,
                labels,
                float(eps),
                self.square_queries,
                self.square_restarts,
                self.square_p_init,
                self.seed,
            )
            worst.update(square_x, square_value)
            for message in messages:
                self._warn(f"APGD: {message}")
            beaten = float(
                (square_value > apgd_value + 1e-6 * apgd_value.abs().clamp_min(1.0)).float().mean()
            )
            if beaten > 0.1:
                self._warn(f"Square beat APGD on {beaten:.0%} of the samples: possible gradient masking")
            parts.append(worst.x.cpu())
            self._record(objective, len(x_batch))
        return torch.cat(parts) if parts else x.clone()
