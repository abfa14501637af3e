"""ATOM and NTOM (Chen, Li, Wu, Liang & Jha, "ATOM: Robustifying Out-of-distribution Detection Using
Outlier Mining", ECML PKDD 2021).

A (K+1)-way classifier F = softmax(f) whose extra class K+1 means "out-of-distribution" (Sec. 3.1):

    min_theta  E_{(x,y) ~ D_in}[ CE(f(x), y) ]
               + lam * E_{x ~ D_out^train}[ max_{x' in B_inf(x, eps)} CE(f(x'), K+1) ]        (Eq. 1)

The inner max is solved with PGD on half of each outlier mini-batch, the other half kept clean
(Sec. 3.1; App. B.1: eps 8/255, 5 steps of 2/255, random start). OOD score = F(x)_{K+1} (Eq. 2), so
the detector's score is ``extra_class`` (in [0, 1]).

Informative outlier mining (Sec. 3.1, Alg. 1): at the start of every epoch draw N candidates from the
auxiliary pool, score them with the current model (V = {F(x)_{K+1}}), sort V from the lowest to the
highest OOD score (the lowest are the hardest outliers: the model thinks they are inliers), and train
the epoch on V[qN : qN + n] (:func:`select_mined`). Mining scores clean (not attacked) candidates.
App. B.1: q = 0.125 (CIFAR-10), lam = 1, n = 2 x |train| (100,000 for CIFAR's 50,000), N = 400,000
(= 4n). The public code (``select_ood`` in jfc43/informative-outlier-mining) sorts with ``argsort``
ascending and takes ``indices[int(q*N) : int(q*N) + n]``, as here.

Pool sizes here: n = ``n_per_train`` x |train| and N = ``candidates_per_selected`` x n, as in the
paper, when the OE pool holds N images. A smaller pool cannot keep both, and ``short_pool`` says which
gives way (N is then the whole pool):
- ``keep_ratio`` (default): n = N / ``candidates_per_selected``, so each epoch still trains on Alg. 1's
  informative band, ranks [qN, qN + N/4) of the candidates. Digits, ci profile (pool 1,000): nd
  (|train| ~ 150) and osr (|train| ~ 755) both give N = 1,000, n = 250; MNIST nd on the reference profile
  (pool 10,000, |train| 2,000) N = 10,000, n = 2,500.
- ``keep_n``: n stays 2 x |train| (App. B.1: ATOM trains on as many outliers as OE does), unless fewer
  than n candidates lie past rank floor(qN), where n = N - floor(qN); the band widens to ranks
  [qN, qN + n). The paper profile (``bench.paper_settings``) uses it with the whole 300K Random Images,
  memory-mapped: N = 300,000 and n = 100,000 for CIFAR's 50,000, where the paper drew N = 400,000 of
  80 Million Tiny Images. On the ci profile's 1,000-image pool it gives n = 875 on osr: the band covers
  all but the hardest 12.5%, and ATOM's ood AUROC on digits fell from 0.963 to 0.911 (ci baseline).
Each step then draws its 128 outliers from the n mined ones (with replacement, as the shared loop does
for every OE method; the paper's loader passes over them once).

q = 0.125 skips the hardest 12.5% of the candidates; on TinyImages that guards against ID-like
contamination of the auxiliary set. With an uncontaminated OE source far from the inliers (natural
patches vs digits) those are the only informative candidates, and q = 0 (the paper's SVHN value,
App. B.1) can do much better: ``--set atom.q=0``.

NTOM ("Natural Training with informative Outlier Mining", Sec. 4.2, Table 2 ablation): the same
objective and mining without the adversarial inner max.

Choices where the paper is silent, from its public code (train_atom.py / utils/pgd_attack.py):
- the train-time attack runs with the network in eval mode (``LinfPGDAttack.perturb`` calls
  ``model.eval()``), and the training forward pass in train mode; the mode is restored afterwards;
- the adversarial half is the second half of the outlier batch, and in- and outlier images go
  through one forward pass (``cat_input``), each loss averaged over its own group;
- the code's random start is rounded to whole 1/255 levels and it keeps each sample's worst iterate
  (``elementwise_best``); here the start is continuous and the last PGD iterate is used
  (:func:`bench.methods.adversarial.pgd_maximize`).
- eps defaults to the task's train-time eps (8/255 on <= 64 px data, as App. B.1; 2/255 above) and
  the step to eps / 4 (= 2/255 at 8/255).
With one inlier class (novelty detection) the network has K + 1 = 2 outputs: the inlier class and the
OOD class; nothing else changes.
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
from bench.methods.training import cached_network
from bench.registry import register_method

MINING_BATCH = 1024  # candidates scored per forward pass while mining


def select_mined(ood_scores: torch.Tensor, q: float, n: int) -> torch.Tensor:
    """Alg. 1, lines 3-4: indices of the ``n`` samples ranked [floor(qN), floor(qN) + n) when the N
    OOD scores are sorted from the lowest (hardest outlier) to the highest (stable sort for ties)."""
    scores = torch.as_tensor(ood_scores).detach().flatten().cpu()
    total = len(scores)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    start = int(q * total)
    if start + n > total:
        raise ValueError(f"q = {q} with n = {n} of N = {total} runs past the end; q must be <= 1 - n/N")
    order = torch.argsort(scores, stable=True)
    return order[start : start + n]


SHORT_POOL = ("keep_ratio", "keep_n")


def mining_sizes(
    train_size: int,
    pool_size: int,
    n_per_train: float,
    candidates_per_selected: float,
    q: float = 0.0,
    short_pool: str = "keep_ratio",
) -> tuple[int, int]:
    """(N, n): n = n_per_train x |train| and N = candidates_per_selected x n (App. B.1). A pool smaller
    than N shrinks N to the pool; ``keep_ratio`` then shrinks n to N / candidates_per_selected, ``keep_n``
    keeps n (App. B.1: "ATOM uses the same amount of outlier data as OE") unless fewer than n candidates
    lie past rank floor(qN), where n = N - floor(qN) (module docstring)."""
    n = max(1, round(n_per_train * train_size))
    candidates = round(candidates_per_selected * n)
    if candidates > pool_size:
        candidates = pool_size
        if short_pool == "keep_ratio":
            n = max(1, min(n, int(candidates / candidates_per_selected)))
    n = max(1, min(n, candidates - int(q * candidates)))
    return candidates, n


@torch.no_grad()
def extra_class_scores(network: nn.Module, images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """F(x)_{K+1} of every image, in batches (the OOD score that mining sorts by)."""
    parts = [
        torch.softmax(network(images[i : i + MINING_BATCH].to(device)), dim=1)[:, -1].cpu()
        for i in range(0, len(images), MINING_BATCH)
    ]
    return torch.cat(parts) if parts else torch.empty(0)


def mine_outliers(
    network: nn.Module,
    pool: torch.Tensor,
    candidates: int,
    n: int,
    q: float,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Alg. 1, lines 2-4: draw ``candidates`` images of ``pool`` at random, keep the ``n`` ranked from
    ``floor(q * candidates)`` by ascending OOD score."""
    draw = torch.randperm(len(pool), generator=generator)[:candidates]
    # scored a batch at a time: a memory-mapped pool (300K images) is never copied whole
    parts = [
        extra_class_scores(network, pool[draw[i : i + MINING_BATCH]], device)
        for i in range(0, len(draw), MINING_BATCH)
    ]
    scores = torch.cat(parts) if parts else torch.empty(0)
    return pool[draw[select_mined(scores, q, n)]]


def atom_loss(
    logits_in: torch.Tensor, y_in: torch.Tensor, logits_ood: torch.Tensor, lam: float
) -> torch.Tensor:
    """Eq. 1 on given logits: CE(f(x_in), y_in) + lam * CE(f(x_ood), K+1), the OOD class being the
    last logit; each term is the mean over its own batch."""
    ood_class = torch.full(
        (len(logits_ood),), logits_ood.shape[1] - 1, dtype=torch.long, device=logits_ood.device
    )
    return F.cross_entropy(logits_in, y_in) + lam * F.cross_entropy(logits_ood, ood_class)


def ood_class_cross_entropy(network: nn.Module):
    """Per-sample CE(f(x), K+1): the loss the train-time attack maximises (and App. B.4's attack on ATOM)."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = network(x)
        target = torch.full((len(x),), logits.shape[1] - 1, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")

    return loss


def perturb_half(
    network: nn.Module,
    x_ood: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    fraction: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The outlier batch with its last ``fraction`` (Sec. 3.1: half) replaced by PGD examples that
    maximise CE(f(x'), K+1), computed with the network in eval mode (ATOM's code)."""
    n_clean = int((1.0 - fraction) * len(x_ood))  # the code attacks out_input[int(out_len / 2):]
    if n_clean == len(x_ood) or eps <= 0 or steps <= 0:
        return x_ood
    was_training = network.training
    network.eval()
    try:
        adversarial = pgd_maximize(
            ood_class_cross_entropy(network),
            x_ood[n_clean:],
            eps=eps,
            steps=steps,
            step_size=step_size,
            random_start=True,
            generator=generator,
        )
    finally:
        network.train(was_training)
    return torch.cat([x_ood[:n_clean], adversarial])


def make_atom_loss(
    lam: float,
    attack: dict[str, Any] | None,
    generator: torch.Generator | None = None,
):
    """The training loss of ATOM (``attack`` = eps, steps, step_size, fraction) or NTOM (None)."""

    def loss_fn(network, x_in, y_in, x_oe):
        if attack is not None:
            x_oe = perturb_half(network, x_oe, generator=generator, **attack)
        logits = network(torch.cat([x_in, x_oe]))  # one pass, as the ATOM code does (BatchNorm)
        return atom_loss(logits[: len(x_in)], y_in, logits[len(x_in) :], lam)

    return loss_fn


def _bad(message: str) -> None:
    raise BadInput(message)


@dataclass
class _MinedOutlierTraining(Method):
    """Fields and fit shared by ATOM and NTOM (registered below)."""

    q: float = 0.125  # Sec. 4.1 "Hyperparameters" and App. B.1: q = 0.125 for CIFAR-10
    lam: float = 1.0  # Sec. 4.1, App. B.1 and B.10: "we set lambda = 1"
    n_per_train: float = 2.0  # App. B.1: n twice the in-distribution training set (100,000 for 50,000)
    candidates_per_selected: float = 4.0  # App. B.1: N = 400,000 candidates for n = 100,000
    # An OE pool smaller than N: keep N : n (keep_ratio) or n (keep_n); module docstring. Ours (the paper
    # always had 80M images); the paper profile sets keep_n (App. B.1's n = 2 x |train| on 300K images).
    short_pool: str = "keep_ratio"

    requires = frozenset({"oe"})
    recipe_name = ""

    def __post_init__(self) -> None:
        if self.candidates_per_selected < 1:
            _bad(f"candidates_per_selected must be >= 1 (N >= n), got {self.candidates_per_selected}")
        if not 0.0 <= self.q <= 1.0 - 1.0 / self.candidates_per_selected:
            _bad(
                f"q must lie in [0, 1 - 1/candidates_per_selected] (Alg. 1: q in [0, 1 - n/N]), got {self.q}"
            )
        if self.lam < 0:
            _bad(f"lam must be >= 0, got {self.lam}")
        if self.n_per_train <= 0:
            _bad(f"n_per_train must be > 0, got {self.n_per_train}")
        if self.short_pool not in SHORT_POOL:
            _bad(f"unknown short_pool {self.short_pool!r}; accepted: {', '.join(SHORT_POOL)}")

    def attack_settings(self, task: TrainTask) -> dict[str, Any] | None:
        return None

    def training_plan(self, task: TrainTask) -> dict[str, Any]:
        """What :func:`cached_network` needs: recipe, outputs, loss and the per-epoch mining hook."""
        pool_size = len(task.oe.images) if task.oe is not None else 0
        candidates, n = mining_sizes(
            len(task.images),
            pool_size,
            self.n_per_train,
            self.candidates_per_selected,
            self.q,
            self.short_pool,
        )
        attack = self.attack_settings(task)
        mining_generator = torch.Generator().manual_seed(task.seed * 1_000_003 + 17)
        attack_generator = torch.Generator().manual_seed(task.seed * 1_000_003 + 29)
        q, device = self.q, task.device

        def epoch_outliers(network, epoch, oe_pool):
            return mine_outliers(network, oe_pool, candidates, n, q, mining_generator, device)

        recipe = {
            "name": self.recipe_name,
            "q": self.q,
            "lam": self.lam,
            "mining_candidates": candidates,
            "mining_selected": n,
            "attack": attack,
        }
        return {
            "recipe": recipe,
            "num_outputs": task.num_classes + 1,
            "loss_fn": make_atom_loss(self.lam, attack, attack_generator),
            "epoch_outliers": epoch_outliers,
        }

    def fit(self, task: TrainTask, ctx: RunContext) -> ClassifierDetector:
        plan = self.training_plan(task)
        network, config, summary = cached_network(
            ctx,
            plan["recipe"],
            task,
            plan["num_outputs"],
            plan["loss_fn"],
            uses_oe=True,
            epoch_outliers=plan["epoch_outliers"],
        )
        detector = ClassifierDetector(config, score="extra_class", num_inlier_classes=task.num_classes)
        detector.network.load_state_dict(network.state_dict())
        detector.meta["training"] = {
            **summary,
            "mining_candidates": plan["recipe"]["mining_candidates"],
            "mining_selected": plan["recipe"]["mining_selected"],
        }
        return detector


@register_method("atom")
@dataclass
class ATOM(_MinedOutlierTraining):
    """Adversarial Training with informative Outlier Mining (Sec. 3.1, Alg. 1)."""

    clean_floor = {"nd": 0.85}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.adversarial", "bench.methods.training")

    eps: float | None = None  # App. B.1: eps = 8/255; None -> task.train_eps (8/255 on <= 64 px data)
    steps: int = 5  # App. B.1: "the number of iterations of 5"
    step_size: float | None = None  # App. B.1: 2/255; None -> eps / 4 (= 2/255 at eps = 8/255)
    adversarial_fraction: float = 0.5  # Sec. 3.1: PGD on half of a minibatch, the other half clean

    recipe_name = "atom"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps is not None and not 0.0 <= self.eps <= 1.0:
            _bad(f"eps must lie in [0, 1], got {self.eps}")
        if self.steps < 1:
            _bad(f"steps must be >= 1, got {self.steps} (use ntom for no adversarial training)")
        if self.step_size is not None and self.step_size <= 0:
            _bad(f"step_size must be > 0, got {self.step_size}")
        if not 0.0 <= self.adversarial_fraction <= 1.0:
            _bad(f"adversarial_fraction must lie in [0, 1], got {self.adversarial_fraction}")

    @classmethod
    def field_types(cls) -> dict[str, type]:
        # Optional floats: None (the default) derives the value from the task; --set gives a float.
        return {**super().field_types(), "eps": float, "step_size": float}

    def attack_settings(self, task: TrainTask) -> dict[str, Any]:
        eps = task.train_eps if self.eps is None else self.eps
        step_size = eps / 4 if self.step_size is None else self.step_size
        return {
            "eps": eps,
            "steps": self.steps,
            "step_size": step_size,
            "fraction": self.adversarial_fraction,
        }


@register_method("ntom")
@dataclass
class NTOM(_MinedOutlierTraining):
    """ATOM's ablation without adversarial training (Sec. 4.2, Table 2): same loss and mining."""

    clean_floor = {"nd": 0.80}  # tests/test_detection_floor.py (measured floors in its docstring)
    shared_code = ("bench.methods.adversarial", "bench.methods.training")

    recipe_name = "ntom"
