"""Attack throughput against a bare loop of forward+backward passes on the same model and batch
(pytest-benchmark). Timing ratios depend on a quiet machine, so these are marked slow and stay out of
the default run: ``pytest -m slow --benchmark-only`` (or ``make bench-speed``). The ratio is measured
in one run.

The bare loop replays exactly the network passes the attack made: a forward+backward pass for each
of its gradient evaluations and a forward pass for each of its forward-only queries (the clean point,
Square's initial point), batch for batch. The ratio thus measures the attack's own overhead
(bookkeeping, projections, Python), not its algorithm, whose queries the result rows record. The
ratio against gradient passes alone is printed too."""

from __future__ import annotations

import time

import pytest
import torch

from bench.attacks.a3 import AdaptiveAutoAttack
from bench.attacks.autoattack import AutoAttackScore
from bench.attacks.pgd import PGD
from bench.methods.classifier import ClassifierDetector

STEPS = 30
REPEATS = 9
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    config = {"name": "small_cnn", "in_channels": 1, "num_outputs": 10, "mean": [0.3], "std": [0.3]}
    detector = ClassifierDetector(config, score="energy", num_inlier_classes=10).eval()
    x = torch.rand(256, 1, 8, 8)
    is_outlier = torch.arange(256) % 2 == 0
    return detector, x, is_outlier


def bare_gradient_loop(detector, x, batch_sizes: list[int], query_sizes: list[int] = ()) -> None:
    """The floor: forward + backward to the input on batches of the given sizes, and a forward pass on
    batches of ``query_sizes``, nothing else."""
    for size in batch_sizes:
        x_req = x[:size].detach().requires_grad_(True)
        torch.autograd.grad(detector(x_req).sum(), x_req)
    with torch.no_grad():
        for size in query_sizes:
            detector(x[:size])


def best_time(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize(
    "make_attack",
    [
        lambda: PGD(steps=STEPS, restarts=1),
        lambda: AutoAttackScore(apgd_steps=STEPS, apgd_restarts=1, square_queries=1),
        lambda: AdaptiveAutoAttack(budget_per_sample=STEPS, min_active=256),
    ],
    ids=["pgd", "aa-apgd", "a3"],
)
def test_attack_throughput_is_at_least_90_percent_of_a_bare_loop(benchmark, model_and_batch, make_attack):
    detector, x, is_outlier = model_and_batch
    attack = make_attack()

    def run_attack():
        attack.reset_spent()
        attack.perturb(detector, x, is_outlier, 8 / 255)

    run_attack()  # warm-up
    benchmark.pedantic(run_attack, rounds=3, iterations=1)  # the benchmark's own statistics
    spent = attack.spent_budget()
    # the same network passes, batch for batch (A3 attacks shrinking subsets of the batch)
    sizes, query_sizes = attack.gradient_batch_sizes(), attack.query_batch_sizes()
    assert abs(sum(sizes) - spent.grad_evals * len(x)) <= 0.01 * len(x)
    assert abs(sum(query_sizes) - spent.queries * len(x)) <= 0.01 * len(x)
    # alternate the timings so that drift and jitter of a shared VM hit all; best of REPEATS each
    attack_times, bare_times, gradient_times = [], [], []
    for _ in range(REPEATS):
        attack_times.append(best_time(run_attack, repeats=1))
        bare_times.append(best_time(lambda: bare_gradient_loop(detector, x, sizes, query_sizes), repeats=1))
        gradient_times.append(best_time(lambda: bare_gradient_loop(detector, x, sizes), repeats=1))
    attack_seconds = min(attack_times)
    ratio = min(bare_times) / attack_seconds
    gradient_only = min(gradient_times) / attack_seconds
    benchmark.extra_info.update(
        {
            "throughput_ratio": round(ratio, 3),
            "ratio_to_gradient_passes_only": round(gradient_only, 3),
            "grad_evals_per_image": spent.grad_evals,
            "queries_per_image": spent.queries,
        }
    )
    print(
        f"{attack.registry_name}: throughput ratio {ratio:.3f} (to gradient passes only {gradient_only:.3f}; "
        f"{spent.grad_evals} grad evals and {spent.queries} queries per image)"
    )
    assert ratio >= 0.9, ratio
