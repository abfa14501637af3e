"""Square Attack (Andriushchenko et al., ECCV 2020) on the score objective, from the official AutoAttack
code (``pyautoattack.square``). Query-only: it never takes a gradient, so gradient masking does not
stop it. Shared by ``aa`` (as the ensemble's black-box member) and ``blackbox``.
"""

from __future__ import annotations

import torch
from pyautoattack.square import SquareAttack

from bench.attacks.base import ScoreObjective


class _ScoreSquare(SquareAttack):
    """The official Square loop with the objective plugged in through its loss hook.

    Square minimises ``loss`` and stops on samples whose ``margin`` drops to <= 0 (misclassified).
    Here loss = -(sign * score) and the margin stays positive, so every sample spends every query
    on raising the objective. Every call then sees the whole batch in order, and the running maximum
    of the objective is the value of Square's current best point (it moves only on a strict
    improvement), so the best point needs no re-evaluation.
    """

    best_objective: torch.Tensor | None = None

    def margin_and_loss(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.predict(x)
        objective = logits.gather(1, y[:, None]).squeeze(1)
        if self.best_objective is None:
            self.best_objective = objective.detach().clone()
        elif self.best_objective.shape == objective.shape:
            self.best_objective = torch.maximum(self.best_objective, objective.detach())
        return torch.ones_like(objective), -objective


def square_search(
    objective: ScoreObjective,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    queries: int,
    restarts: int,
    p_init: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run Square ``restarts`` times; return the per-sample best point and its objective."""
    model = objective.as_two_logits()
    attack = _ScoreSquare(
        model, norm="Linf", n_queries=queries, eps=eps, p_init=p_init, seed=seed, device=x.device
    )
    attack.init_hyperparam(x)
    best_x, best_value = x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(restarts):
            attack.best_objective = None
            _, candidate = attack.attack_single_run(x, labels)
            value = attack.best_objective
            if value is None or value.shape != (len(x),):  # not seen whole: evaluate the point
                value = objective.value(candidate)
            better = value > best_value
            best_x[better], best_value[better] = candidate[better], value[better]
    return best_x, best_value
