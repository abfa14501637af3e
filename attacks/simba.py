"""``simba``: SimBA in the pixel basis (Guo et al., "Simple Black-box Adversarial Attacks", ICML 2019,
Alg. 1), the black-box attack of RODEO Sec. 5 / Table 8, on the score objective ``sign * score``.

Alg. 1 with the standard basis Q = {e_1 .. e_D} of the image's D = C x H x W pixels: every sample draws a
random order of its pixels and visits each pixel q once; it queries x - eps q and keeps it if the
objective rises, else queries x + eps q and keeps that if it rises, else leaves the pixel as it is. So
each query costs one forward pass, the point stays in the L-inf eps-ball (every pixel moves by eps at most
once; [0, 1] is enforced by clipping), and per sample the result is the best point seen (the objective
never falls). Guo et al. step by epsilon along the basis vector under an L2 budget; under RODEO's L-inf
threat model the step is the eps of the ball itself, the largest move a single pixel may make.

Budget: ``queries`` per image (RODEO does not state SimBA's budget; the paper profile gives it the 5,000
of the Square attack of ``blackbox``, the same black-box budget). A sample stops when its queries are
spent or every pixel has been visited (at most 2 D queries), so rows record what was spent, an average
over the images, plus the clean query. Vectorised over the batch: one iteration visits one pixel of every
active sample with at most two batched queries.
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
    detector_device,
)
from bench.attacks.pgd import batches
from bench.registry import register_attack


def simba_pixel(
    objective: ScoreObjective, x: torch.Tensor, eps: float, queries: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimBA (pixel basis) on one batch; returns the final points and their objective values. Each sample
    spends at most ``queries`` forward queries (besides the clean one, evaluated here first)."""
    n = len(x)
    flat = x.flatten(1).clone()
    origin = flat.clone()
    dims = flat.shape[1]
    order = torch.argsort(torch.rand(n, dims, generator=generator), dim=1).to(x.device)
    value = objective.value(x)
    spent = torch.zeros(n, dtype=torch.long, device=x.device)
    rows_all = torch.arange(n, device=x.device)
    for step in range(dims):
        active = rows_all[spent < queries]
        if len(active) == 0:
            break
        pixel = order[active, step]
        for direction in (-1.0, 1.0):
            candidate = flat[active].clone()
            moved = (origin[active, pixel] + direction * eps).clamp(0.0, 1.0)
            candidate[torch.arange(len(active), device=x.device), pixel] = moved
            candidate_value = objective.value(candidate.view(len(active), *x.shape[1:]), active)
            spent[active] += 1
            better = candidate_value > value[active]
            flat[active[better]] = candidate[better]
            value[active[better]] = candidate_value[better]
            # the second direction only for the samples the first did not improve and with queries left
            keep = ~better & (spent[active] < queries)
            active, pixel = active[keep], pixel[keep]
            if len(active) == 0:
                break
    return flat.view_as(x), value


@register_attack("simba")
@dataclass
class SimBA(Attack):
    queries: int = 5000  # per image; RODEO states none: the black-box budget of ``blackbox`` (Square)
    batch_size: int = 1024

    PROFILE_BUDGETS = {
        "paper": {},
        "reference": {"queries": 1000},
        "quick": {"queries": 300},
        "ci": {"queries": 100},
    }

    def __post_init__(self) -> None:
        check_positive("simba", queries=self.queries, batch_size=self.batch_size)

    def budget(self) -> Budget:
        """The plan: ``queries`` per image plus the clean query (images with fewer than queries / 2
        pixels stop earlier; rows record the queries spent)."""
        return Budget(self.queries, 1, 0, 1 + self.queries)

    def perturb(self, detector, x: torch.Tensor, is_outlier: torch.Tensor, eps: float) -> torch.Tensor:
        check_attack_inputs(x, is_outlier, eps)
        detector.eval()
        device = detector_device(detector, x)
        generator = torch.Generator().manual_seed(self.seed)
        parts = []
        for rows in batches(len(x), self.batch_size):
            x_batch = x[rows].to(device)
            objective = ScoreObjective(detector, is_outlier[rows], device)
            # a point moves only on a strict rise of the objective: the result is the best point seen
            candidate, _ = simba_pixel(objective, x_batch, float(eps), self.queries, generator)
            parts.append(candidate.cpu())
            self._record(objective, len(x_batch))
        return torch.cat(parts) if parts else x.clone()
