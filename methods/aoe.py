"""AOE: Adversarial Outlier Exposure (Botschen, Kirchheim & Ortmeier, "Out-of-Distribution Detection
with Adversarial Outlier Exposure", CVPR workshop poster).

Outlier exposure (Hendrycks et al. 2019) in which every outlier batch is first moved along the
*negative* gradient of the energy E(x) = -logsumexp_k f(x)_k, lowering the outliers' energy toward
that of inliers ("FGSM-style augmentation" in the poster):

    x_hat = x - eps * sign(grad_x E(x)),                                      (poster, AOE box)
    L = CE(f(x_in), y_in) + lam * CE(softmax(f(x_hat)), uniform),

so OE then pushes the augmented outliers back into high-energy regions. ``steps`` > 1 replaces the
FGSM step by PGD minimising E with steps of 2.5 * eps / steps and a uniform random start (RODEO's
convention; the poster mentions stronger adversaries only as future work). Images stay in [0, 1].
Score: the energy E(x) (the poster's "OOD detection: Energy").

Settings and choices:
- The poster gives no eps: ``eps = None`` uses the task's train-time eps (8/255 on <= 64 px data,
  2/255 above).
- lam = 0.5 and the CE-to-uniform OE term are OE's (Hendrycks et al. 2019, Sec. 4.2); the poster
  writes the objective as OE's generic L_OE.
- The poster's outliers are samples of a BigGAN trained on CIFAR-100; here the outliers are the
  task's auxiliary OE source (pluggable through the TrainTask), as for every OE method.
- The perturbation is computed with the network in train mode (the poster is silent; small_cnn has
  no BatchNorm, so it makes no difference on the CPU profiles), then in- and outliers go through one
  forward pass (as OE's code does).

With one inlier class (novelty detection) OE takes its binary form (bench.methods.oe): one output z,
the outlier logit, trained with BCE (inliers 0, outliers 1, outlier term weighted by lam). Read as a
two-class energy with the inlier logit -z, E = -logsumexp([-z]) = z: higher for outliers, like the
multi-class energy. AOE lowers it, x_hat = x - eps * sign(grad_x z), before BCE pushes z back up, and
the score is the outlier logit z = E (score ``outlier_logit``, identical to that energy).
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
from bench.methods.oe import binary_oe_loss, uniform_cross_entropy
from bench.methods.training import cached_network
from bench.registry import register_method


def energy(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """Per-sample energy: -logsumexp_k z_k; in the binary form the outlier logit z itself."""
    if binary:
        return logits[:, 0]
    return -torch.logsumexp(logits, dim=1)


def lower_energy(
    network: nn.Module,
    x: torch.Tensor,
    eps: float,
    steps: int,
    binary: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """AOE's augmentation: x - eps * sign(grad_x E(x)) for one step (FGSM, no random start), else PGD
    minimising E with steps of 2.5 * eps / steps from a uniform random start; clipped to [0, 1]."""

    def negative_energy(images: torch.Tensor) -> torch.Tensor:
        return -energy(network(images), binary)

    if steps == 1:
        return pgd_maximize(negative_energy, x, eps=eps, steps=1, step_size=eps, random_start=False)
    return pgd_maximize(
        negative_energy,
        x,
        eps=eps,
        steps=steps,
        step_size=2.5 * eps / steps,
        random_start=True,
        generator=generator,
    )


def aoe_loss(
    logits_in: torch.Tensor, y_in: torch.Tensor, logits_oe: torch.Tensor, lam: float
) -> torch.Tensor:
    """OE's loss on the augmented outliers: CE(f(x_in), y) + lam * CE(f(x_hat), uniform)."""
    return F.cross_entropy(logits_in, y_in) + lam * uniform_cross_entropy(logits_oe)


def make_aoe_loss(lam: float, binary: bool, eps: float, steps: int, generator: torch.Generator | None = None):
    """AOE's training loss: augment the outliers (:func:`lower_energy`), then OE."""

    def loss_fn(network, x_in, y_in, x_oe):
        x_hat = lower_energy(network, x_oe, eps, steps, binary, generator)
        logits = network(torch.cat([x_in, x_hat]))
        n_in = len(x_in)
        if binary:
            return binary_oe_loss(logits[:n_in, 0], logits[n_in:, 0], lam)
        return aoe_loss(logits[:n_in], y_in, logits[n_in:], lam)

    return loss_fn


@register_method("aoe")
@dataclass
class AOE(Method):
    """Outlier exposure on outliers whose energy was lowered adversarially (FGSM by default)."""

    clean_floor = {"nd": 0.80}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.adversarial", "bench.methods.oe", "bench.methods.training")

    eps: float | None = None  # poster: no value given; None -> task.train_eps (8/255 on <= 64 px)
    steps: int = 1  # poster: "FGSM-style augmentations" (one signed-gradient step)
    lam: float = 0.5  # OE (Hendrycks et al. 2019, Sec. 4.2), the objective the poster builds on

    requires = frozenset({"oe"})

    def __post_init__(self) -> None:
        if self.eps is not None and not 0.0 <= self.eps <= 1.0:
            raise BadInput(f"aoe eps must lie in [0, 1], got {self.eps}")
        if self.steps < 1:
            raise BadInput(f"aoe steps must be >= 1 (1 = FGSM), got {self.steps}")
        if self.lam < 0:
            raise BadInput(f"aoe lam must be >= 0, got {self.lam}")

    @classmethod
    def field_types(cls) -> dict[str, type]:
        # eps is an optional float: None (the default) takes the task's eps; --set gives a float.
        return {**super().field_types(), "eps": float}

    def training_plan(self, task: TrainTask) -> dict[str, Any]:
        binary = task.num_classes < 2
        eps = task.train_eps if self.eps is None else self.eps
        generator = torch.Generator().manual_seed(task.seed * 1_000_003 + 37)
        recipe = {
            "name": "aoe_binary" if binary else "aoe_multiclass",
            "lam": self.lam,
            "eps": eps,
            "steps": self.steps,
        }
        return {
            "recipe": recipe,
            "num_outputs": 1 if binary else task.num_classes,
            "loss_fn": make_aoe_loss(self.lam, binary, eps, self.steps, generator),
            "score": "outlier_logit" if binary else "energy",
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
