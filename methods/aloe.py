"""ALOE: Adversarial Learning with inlier and Outlier Exposure (Chen, Li, Wu, Liang & Jha,
"Robust Out-of-distribution Detection for Neural Networks", 2020; code: jfc43/robust-ood-detection).

Outlier exposure in which both sides are adversarially perturbed before the update:

    L = E_{(x,y) ~ D_in}[ max_{x' in B(x, eps)} CE(f(x'), y) ]
        + lam * E_{x ~ D_out}[ max_{x' in B(x, eps)} L_OE(f(x')) ],
    L_OE(z) = -(mean_k z_k - logsumexp_k z_k) = -mean_k log softmax(z)_k = CE(softmax(z), uniform).

The ID attack maximises the cross-entropy, the OOD attack maximises L_OE (the code's two
``LinfPGDAttack`` objects, ``loss_func='CE'`` and ``'OE'``); the update uses only the attacked images
(``loss = adv_in_loss + beta3 * adv_out_loss``). Score: MSP (default) or energy of the K logits.

Settings from the public code (CIFAR/robust_ood_train.py), see also shared/papers/README.md:
eps = 1/255 (``--epsilon 1.0`` in 1/255 units), 2 steps (``--iters 2``), step 1/255 (``--iter-size
1.0``, i.e. step = eps), lam = 0.5 (``--beta3 0.5``). The code asks for a random start
(``rand_init=True``) but truncates it to whole 1/255 levels (``delta.int()``), which is 0 at
eps = 1/255, so its attack effectively starts at the clean point: ``random_start = False`` here.
The code attacks with the network in train mode (its attack never calls ``model.eval()``): kept.
In- and outlier images go through one forward pass, each loss averaged over its own group.
Note: eps is the paper's 1/255 whatever the evaluation eps (8/255 on digits); ``--set aloe.eps=...``
changes it.

With one inlier class (novelty detection) the uniform target is degenerate, so ALOE takes the binary
form of OE (bench.methods.oe): one output (the outlier logit z), BCE with inliers 0 and auxiliary
outliers 1, the outlier term weighted by lam; PGD perturbs inliers to maximise BCE(z, 0) (raise z)
and outliers to maximise BCE(z, 1) (lower z), and the score is the outlier logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.contracts import Method, RunContext, TrainTask
from bench.errors import BadInput
from bench.methods.adversarial import pgd_maximize
from bench.methods.classifier import ClassifierDetector
from bench.methods.oe import binary_oe_loss
from bench.methods.training import cached_network
from bench.registry import register_method

SCORES = ("msp", "energy")


def oe_loss_per_sample(logits: torch.Tensor) -> torch.Tensor:
    """L_OE per sample: -(mean_k z_k - logsumexp_k z_k) (the ALOE code's ``OELoss``)."""
    return -(logits.mean(dim=1) - torch.logsumexp(logits, dim=1))


def oe_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`oe_loss_per_sample` over the batch."""
    return oe_loss_per_sample(logits).mean()


def aloe_loss(
    logits_in: torch.Tensor, y_in: torch.Tensor, logits_oe: torch.Tensor, lam: float
) -> torch.Tensor:
    """CE(f(x_in'), y) + lam * L_OE(f(x_oe')) on the logits of the (attacked) images."""
    return F.cross_entropy(logits_in, y_in) + lam * oe_loss(logits_oe)


def inlier_objective(network: nn.Module, y: torch.Tensor, binary: bool):
    """Per-sample loss the inlier attack maximises: CE(f(x), y), or BCE(z, 0) in the binary form."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = network(x)
        if binary:
            z = logits[:, 0]
            return F.binary_cross_entropy_with_logits(z, torch.zeros_like(z), reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    return loss


def outlier_objective(network: nn.Module, binary: bool):
    """Per-sample loss the outlier attack maximises: L_OE(f(x)), or BCE(z, 1) in the binary form."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = network(x)
        if binary:
            z = logits[:, 0]
            return F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none")
        return oe_loss_per_sample(logits)

    return loss


def perturb_batches(
    network: nn.Module,
    x_in: torch.Tensor,
    y_in: torch.Tensor,
    x_oe: torch.Tensor,
    binary: bool,
    attack: dict[str, Any],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD on the inliers (maximising their loss) and on the outliers (maximising theirs)."""
    x_in_adv = pgd_maximize(inlier_objective(network, y_in, binary), x_in, generator=generator, **attack)
    x_oe_adv = pgd_maximize(outlier_objective(network, binary), x_oe, generator=generator, **attack)
    return x_in_adv, x_oe_adv


def make_aloe_loss(
    lam: float, binary: bool, attack: dict[str, Any], generator: torch.Generator | None = None
):
    """ALOE's training loss (``attack``: eps, steps, step_size, random_start for :func:`pgd_maximize`)."""

    def loss_fn(network, x_in, y_in, x_oe):
        x_in, x_oe = perturb_batches(network, x_in, y_in, x_oe, binary, attack, generator)
        logits = network(torch.cat([x_in, x_oe]))
        n_in = len(x_in)
        if binary:
            return binary_oe_loss(logits[:n_in, 0], logits[n_in:, 0], lam)
        return aloe_loss(logits[:n_in], y_in, logits[n_in:], lam)

    return loss_fn


@register_method("aloe")
@dataclass
class ALOE(Method):
    """Adversarially perturbed inliers (CE) and outliers (OE loss), Chen et al. 2020."""

    clean_floor = {"nd": 0.80}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.adversarial", "bench.methods.oe", "bench.methods.training")

    lam: float = 0.5  # ALOE code robust_ood_train.py: --beta3 0.5 (weight of the attacked-OE term)
    eps: float = 1 / 255  # ALOE code: --epsilon 1.0 (in 1/255 units); shared/papers/README.md
    steps: int = 2  # ALOE code: --iters 2; shared/papers/README.md
    step_size: float = 1 / 255  # ALOE code: --iter-size 1.0 (1/255), i.e. step = eps
    random_start: bool = False  # ALOE code: rand_init truncated to whole 1/255 levels = 0 at eps 1/255
    score: str = "msp"  # ALOE reports MSP-based detection; "energy" also accepted

    requires = frozenset({"oe"})

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise BadInput(f"unknown aloe score {self.score!r}; accepted: {', '.join(SCORES)}")
        if not 0.0 <= self.eps <= 1.0:
            raise BadInput(f"aloe eps must lie in [0, 1], got {self.eps}")
        if self.steps < 0:
            raise BadInput(f"aloe steps must be >= 0, got {self.steps}")
        if self.step_size <= 0:
            raise BadInput(f"aloe step_size must be > 0, got {self.step_size}")
        if self.lam < 0:
            raise BadInput(f"aloe lam must be >= 0, got {self.lam}")

    def training_plan(self, task: TrainTask) -> dict[str, Any]:
        binary = task.num_classes < 2
        attack = {
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
        }
        generator = torch.Generator().manual_seed(task.seed * 1_000_003 + 31)
        recipe = {"name": "aloe_binary" if binary else "aloe_multiclass", "lam": self.lam, "attack": attack}
        return {
            "recipe": recipe,
            "num_outputs": 1 if binary else task.num_classes,
            "loss_fn": make_aloe_loss(self.lam, binary, attack, generator),
            "score": "outlier_logit" if binary else self.score,
        }

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        plan = self.training_plan(task)
        network, config, summary = cached_network(
            ctx, plan["recipe"], task, plan["num_outputs"], plan["loss_fn"], uses_oe=True
        )
        detector = ClassifierDetector(config, score=plan["score"], num_inlier_classes=task.num_classes)
        detector.network.load_state_dict(network.state_dict())
        detector.meta["training"] = summary
        return detector
