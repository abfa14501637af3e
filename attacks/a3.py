"""``a3``: Adaptive Auto Attack (Liu et al., CVPR 2022) adapted to an outlier score.

A3 spends a fixed *average* budget of gradient evaluations per sample where it matters. What we keep
from the paper and its official code (liuye6666/adaptive_auto_attack), and how each part is adapted
to a scalar score:

- **Success.** A3 stops attacking a sample once it is misclassified. Here a sample is *broken* when
  it crosses the detection threshold tau fixed on the clean scores at 95% inlier TPR (tau = the 95th
  percentile of the clean inlier scores): an inlier whose score rises above tau, an outlier whose
  score falls to tau or below. The margin is m = sign * (score - tau); broken means m > 0 (inliers)
  or m >= 0 (outliers). The objective the steps ascend stays sign * score (m up to a constant).
- **Restarts and online statistics-based discarding.** Outer restarts follow A3's schedule: every
  restart starts from a uniform random point of the eps-ball and attacks only the unbroken samples
  with the highest best-so-far margin (closest to breaking), a fraction alpha_r of them
  (alpha: 1, 1, 1, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.065, 0.03, as in the official code, and at
  least ``min_active`` samples); broken samples leave the batch at once, so no gradient is spent on
  them.
- **Iterations per restart** = remaining budget / (restarts left x samples attacked), clamped to
  the restart's cap (A3's max_iter per restart, scaled by budget / 100 since A3's schedule is for
  100 iterations per sample on average), as in the official code; the budget is never exceeded.
  As in the official code's APGD loop, the start and every iterate are evaluated by a gradient pass
  (n moves cost n + 1 gradient evaluations; the last gradient of a restart goes unused), so apart
  from the clean point the attack makes no forward-only evaluations.
- **Exploitation** (our addition for scores). A3's restarts get ``search_fraction`` (0.5) of the
  budget; the rest, and whatever the restarts leave, goes in one cosine-step ascent to all samples from
  their best points: AUROC rewards pushing a broken sample further past the threshold, which A3's
  stopping rule, built for accuracy, never does.
- **Cosine step size** from eps down to 0.1 eps (<= 10 steps) or 0.001 eps (A3's cosine schedule).
- **Adaptive direction initialisation (ADI).** A3 (after ODI) starts each restart with a few steps of
  size eps along a random projection w.f(x) of the logits, biased toward the directions whose
  initialisation steps broke samples before. A score has one output, and signed steps are scale-free,
  so the projection reduces to its sign per sample: +1 ascends the objective, -1 moves away from it
  (diversifying the start). The first restart takes no ADI steps (as A3); later restarts take
  ``adi_steps`` (7, A3's code) with P(+1) equal to the share of ADI successes seen so far with +1
  (0.5 before any success, kept within [0.1, 0.9] so both directions stay explored).

Per sample, the result is the worst case over the clean point and every evaluated iterate.
``budget_per_sample`` is the average number of gradient evaluations (paper profile: 1,000).

**What a row records** (``spent_budget()``, over the ``perturb`` calls since ``reset_spent()``):

- ``grad_evals``: gradient evaluations per image, averaged over all images (two decimals);
- ``restarts``: the outer restarts that actually ran (attacked at least one sample), the most in any
  one ``perturb`` call; restarts skipped because every sample was already broken, or because the search
  budget was used up, are not counted, and neither is the exploitation ascent;
- ``steps``: the longest single ascent that actually ran, in gradient evaluations of one sample (start
  point included): the most any sample received in one outer restart (before it broke or the restart
  ended) or in the exploitation ascent. A maximum, not a mean: with ``restarts`` it bounds what any image
  got, and ``grad_evals`` says what the average image got;
- ``queries``: forward-only evaluations per image (the clean point).

``budget()`` is the plan these are measured against: ``outer_restarts`` restarts, ``budget_per_sample``
gradient evaluations per image on average, and as steps the most one ascent may take
(:meth:`AdaptiveAutoAttack.max_ascent`: ``budget_per_sample``, or a late restart's cap plus its ADI steps
when that is larger, as for budgets below 20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from bench.attacks.base import (
    Attack,
    Budget,
    ScoreObjective,
    check_attack_inputs,
    check_positive,
    detector_device,
    project,
)
from bench.attacks.pgd import WorstCase
from bench.errors import BadInput
from bench.registry import register_attack

# Official code, non-biased branch: fraction of unbroken samples attacked and max iterations per
# outer restart (out_re = 0..12).
ALPHA_SCHEDULE = (1.0, 1.0, 1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.065, 0.03, 0.03)
MAX_ITER_SCHEDULE = (8, 8, 8, 25, 30, 30, 35, 40, 45, 50, 50, 55, 60)


def detection_threshold(clean_scores: torch.Tensor, is_outlier: torch.Tensor) -> float:
    """Score threshold that keeps 95% of the inliers (95% TPR): their 95th percentile."""
    inlier_scores = clean_scores[~is_outlier]
    if len(inlier_scores) == 0:
        return float(clean_scores.median())
    return float(torch.quantile(inlier_scores.double(), 0.95))


def cosine_step(step: int, steps: int, eps: float) -> float:
    """A3's cosine step size: eps at step 0, decaying toward 0.1 eps (<= 10 steps) or 0.001 eps."""
    smallest = 0.1 * eps if steps <= 10 else 0.001 * eps
    return smallest + (eps - smallest) * (1 + math.cos(math.pi * step / (steps + 1))) / 2


@register_attack("a3")
@dataclass
class AdaptiveAutoAttack(Attack):
    budget_per_sample: int = 1000  # average gradient evaluations per sample (paper profile)
    outer_restarts: int = len(ALPHA_SCHEDULE)  # official code: 13 outer restarts
    adi_steps: int = 7  # official code: 7 ADI steps after the first restart
    min_active: int = 100  # official code: attack at least 100 unbroken samples per restart
    search_fraction: float = 0.5  # ours: share of the budget for A3's restarts; the rest exploits
    batch_size: int = 1024

    PROFILE_BUDGETS = {
        "paper": {},
        "reference": {"budget_per_sample": 100},
        "quick": {"budget_per_sample": 80},
        "ci": {"budget_per_sample": 10},
    }

    def __post_init__(self) -> None:
        check_positive(
            "a3",
            budget_per_sample=self.budget_per_sample,
            outer_restarts=self.outer_restarts,
            min_active=self.min_active,
            batch_size=self.batch_size,
        )
        if not 0.0 < self.search_fraction <= 1.0:
            raise BadInput(f"bad a3 search_fraction {self.search_fraction!r}; accepted: (0, 1]")
        if self.adi_steps < 0:
            check_positive("a3", adi_steps=self.adi_steps)

    def budget(self) -> Budget:
        # the caps; spent_budget() reports what ran (module docstring, "What a row records")
        return Budget(self.max_ascent(), self.outer_restarts, self.budget_per_sample, 1 + self.outer_restarts)

    def restart_cap(self, restart: int) -> int:
        """A3's max iterations of outer restart ``restart``, scaled from its 100-iteration schedule."""
        schedule = MAX_ITER_SCHEDULE[min(restart, len(MAX_ITER_SCHEDULE) - 1)]
        return math.ceil(schedule * self.budget_per_sample / 100)

    def max_ascent(self) -> int:
        """The most gradient evaluations one sample can receive in one ascent: an outer restart (its cap,
        its ADI steps and the start point), or the exploitation ascent (at most the average budget); every
        ascent takes at least 2."""
        restarts = (
            self.restart_cap(r) + (self.adi_steps if r > 0 else 0) + 1 for r in range(self.outer_restarts)
        )
        return max(2, self.budget_per_sample, *restarts)

    def perturb(self, detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> torch.Tensor:
        check_attack_inputs(x, is_outlier, eps)
        detector.eval()
        device = detector_device(detector, x)
        x = x.to(device)
        is_outlier = is_outlier.to(device)
        objective = ScoreObjective(detector, is_outlier, device)
        clean_value = self._values(objective, x, torch.arange(len(x), device=device))  # rows = all
        worst = WorstCase(x, clean_value)
        clean_scores = objective.sign * clean_value
        tau = detection_threshold(clean_scores, is_outlier)
        sign = objective.sign
        # margin m = sign * (score - tau) = objective - sign * tau; broken: m > 0, or m >= 0 for outliers
        offset = sign * tau

        def broken(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            margin = values - offset[rows]
            return (margin > 0) | (is_outlier[rows] & (margin >= 0))

        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        total_budget = self.budget_per_sample * len(x)
        search_budget = self.search_fraction * total_budget
        adi_successes = {1.0: 0, -1.0: 0}
        restarts_run, longest_ascent = 0, 0
        for restart in range(self.outer_restarts):
            unbroken = torch.nonzero(~broken(worst.objective, torch.arange(len(x), device=device))).squeeze(1)
            remaining = int(search_budget - objective.grad_evals)
            if len(unbroken) == 0 or remaining <= 0:
                break
            alpha = ALPHA_SCHEDULE[min(restart, len(ALPHA_SCHEDULE) - 1)]
            n_active = min(len(unbroken), max(self.min_active, math.ceil(alpha * len(unbroken))))
            closest = torch.argsort(worst.objective[unbroken] - offset[unbroken], descending=True)
            active = unbroken[closest[:n_active]]
            restarts_left = self.outer_restarts - restart
            cap = self.restart_cap(restart)
            adi = self.adi_steps if restart > 0 else 0
            # as APGD in the official code: n moves cost n + 1 gradient evaluations (the start and
            # every iterate are evaluated with a gradient pass; the last gradient goes unused)
            steps = min(cap + adi + 1, remaining // (restarts_left * n_active))
            if steps < 2:
                steps = min(cap + adi + 1, remaining // n_active)
            if steps < 2:
                active = active[: int(remaining) // 2]
                steps = 2
            if len(active) == 0:
                break
            adi = max(0, min(adi, steps - 2))  # at least one cosine-step move per restart
            taken = self._restart(
                objective, x, worst, active, steps, adi, float(eps), generator, broken, adi_successes
            )
            restarts_run += 1
            longest_ascent = max(longest_ascent, taken)
        taken = self._exploit(objective, x, worst, offset, float(eps), total_budget - objective.grad_evals)
        longest_ascent = max(longest_ascent, taken)
        self._record(objective, len(x))
        self._spent["restarts_run"] = max(self._spent.get("restarts_run", 0), restarts_run)
        self._spent["longest_ascent"] = max(self._spent.get("longest_ascent", 0), longest_ascent)
        return worst.x.cpu()

    def spent_budget(self) -> Budget:
        """What ran since ``reset_spent()`` (module docstring, "What a row records"): the average
        gradient evaluations and queries per image, the most outer restarts run in one call and the
        longest single ascent in gradient evaluations; the plan (``budget()``) before any call."""
        spent = super().spent_budget()
        record = getattr(self, "_spent", None)
        if not record or not record["images"]:
            return spent
        return replace(spent, steps=record.get("longest_ascent", 0), restarts=record.get("restarts_run", 0))

    def _values(self, objective: ScoreObjective, points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Objective at ``points`` (one per entry of ``rows``), in batches; forward-only."""
        size = self.batch_size
        return torch.cat(
            [objective.value(points[i : i + size], rows[i : i + size]) for i in range(0, len(rows), size)]
        )

    def _values_and_grads(self, objective: ScoreObjective, x_adv: torch.Tensor, rows: torch.Tensor):
        values, grads = [], []
        for i in range(0, len(rows), self.batch_size):
            value, grad = objective.value_and_grad(
                x_adv[i : i + self.batch_size], rows[i : i + self.batch_size]
            )
            values.append(value)
            grads.append(grad)
        return torch.cat(values), torch.cat(grads)

    def _exploit(self, objective, x, worst, offset, eps, remaining) -> int:
        """Spend what the restarts left on every sample, from its best point (our addition: AUROC
        rewards pushing broken samples further past the threshold, which A3's stopping rule skips).
        Returns the gradient evaluations each attacked sample received (0: none)."""
        steps = int(remaining // len(x))  # gradient evaluations: steps - 1 moves, every iterate evaluated
        rows = torch.arange(len(x), device=x.device)
        if steps < 2:  # too little for every sample: two evaluations each for those nearest tau
            steps = 2
            rows = torch.argsort((worst.objective - offset).abs())[: int(remaining) // 2]
            if len(rows) == 0:
                return 0
        x_adv = worst.x[rows].clone()
        for step in range(steps):
            values, gradient = self._values_and_grads(objective, x_adv, rows)
            worst.update(x_adv, values, rows)
            if step == steps - 1:
                break
            x_adv = project(x_adv + cosine_step(step, steps - 1, eps) * gradient.sign(), x[rows], eps)
        return steps

    def _restart(self, objective, x, worst, active, steps, adi, eps, generator, broken, adi_successes) -> int:
        """One restart on the ``active`` rows: random start, ADI steps, then cosine-step ascent. Broken
        samples leave at once. Returns the gradient evaluations of the sample that stayed longest."""
        noise = torch.rand((len(active), *x.shape[1:]), generator=generator).to(x.device)
        x_adv = project(x[active] + (2 * noise - 1) * eps, x[active], eps)
        p_up = 0.5
        seen = adi_successes[1.0] + adi_successes[-1.0]
        if seen:
            p_up = min(0.9, max(0.1, adi_successes[1.0] / seen))
        draw = torch.rand(len(active), generator=generator).to(x.device)
        direction = torch.where(draw < p_up, 1.0, -1.0)
        rows = active
        for step in range(steps):
            values, gradient = self._values_and_grads(objective, x_adv, rows)
            worst.update(x_adv, values, rows)
            done = broken(values, rows)
            if step > 0 and step <= adi:  # the previous step was an ADI step
                for d in (1.0, -1.0):
                    adi_successes[d] += int((done & (direction == d)).sum())
            keep = ~done
            if not bool(keep.any()) or step == steps - 1:
                return step + 1
            rows, x_adv, gradient, direction = rows[keep], x_adv[keep], gradient[keep], direction[keep]
            if step < adi:
                step_size = eps
                ascent = direction.view(-1, *[1] * (x.dim() - 1)) * gradient.sign()
            else:
                step_size = cosine_step(step - adi, steps - 1 - adi, eps)
                ascent = gradient.sign()
            x_adv = project(x_adv + step_size * ascent, x[rows], eps)
        return steps
