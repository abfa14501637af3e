"""Profiles (quick, paper, ci) and ``--set key=value`` overrides.

A profile only changes numbers: network size, epochs, batch sizes, attack budgets, evaluation caps.
Every result row records the budget that actually ran.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from bench.errors import BadInput

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class Profile:
    name: str
    network: str  # see bench.methods.networks.NETWORKS
    epochs: int
    min_steps: int  # at least this many optimizer steps (more epochs for tiny one-class training sets)
    batch_size: int  # inlier batch
    oe_batch_size: int  # auxiliary-outlier batch
    lr: float
    momentum: float
    weight_decay: float
    lr_milestones: tuple[float, ...]  # fractions of training at which lr is multiplied by 0.1
    oe_pool_size: int  # auxiliary outliers drawn from the OE source per task
    pgd_steps: int
    pgd_restarts: int
    attack_batch_size: int
    osr_splits: int
    max_eval_per_side: int | None  # cap on test inliers and on test outliers per cell (None: all)
    grad_clip_norm: float | None = None  # clip the training gradient's global L2 norm (None: no clipping)
    # at most this many training images per inlier class, a fixed subsample per (split version, class);
    # None: all. It changes the training data, so the task fingerprint (a hash of the images) covers it.
    max_train_per_class: int | None = None
    # the training loop's optimiser (bench.methods.training): "sgd" (Nesterov when momentum > 0, ATOM
    # App. B.1) or "adam" (EOE App. G.1); a method that brings its own (RODEO) ignores it
    optimizer: str = "sgd"
    # "step": lr x 0.1 at each of lr_milestones; "cosine": annealed to 0 over the run (GReg Sec. 6.1)
    lr_schedule: str = "step"
    # training-time augmentation of inlier and OE batches (bench.methods.augment): "" none (every profile
    # but paper), "crop_flip" (ATOM App. B.1), "crop", "eoe" (EOE App. G.1)
    augment: str = ""

    def __post_init__(self):
        if self.augment not in ("", "crop_flip", "crop", "eoe"):
            raise BadInput(
                f"profile {self.name}: unknown augment {self.augment!r}; accepted: '', crop_flip, crop, eoe"
            )
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"profile {self.name}: unknown optimizer {self.optimizer!r}; accepted: sgd, adam")
        if self.lr_schedule not in LR_SCHEDULES:
            raise BadInput(
                f"profile {self.name}: unknown lr_schedule {self.lr_schedule!r}; accepted: step, cosine"
            )

    def training_fingerprint(self) -> str:
        """Hash of the fields that change what a method trains (not the attack budgets)."""
        training = {
            k: v
            for k, v in asdict(self).items()
            if k
            in {
                "network",
                "epochs",
                "min_steps",
                "batch_size",
                "oe_batch_size",
                "lr",
                "momentum",
                "weight_decay",
                "lr_milestones",
                "oe_pool_size",
                "grad_clip_norm",
                "optimizer",
                "lr_schedule",
            }
        }
        if self.augment:  # only when set: the fingerprints of profiles without augmentation stay as they were
            training["augment"] = self.augment
        return hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:12]


PROFILES: dict[str, Profile] = {
    # The papers' settings, for GPUs. ATOM App. B.1: WRN-40-4, SGD with Nesterov momentum 0.9,
    # weight decay 1e-4, lr 0.1 decayed by 0.1 at epochs 50/75/90 of 100, batch 64 ID / 128 OOD
    # (OE uses the same in ATOM App. B.2). RODEO Sec. 5 / App. E: PGD-1000 with 10 restarts.
    "paper": Profile(
        name="paper",
        network="wrn40_4",
        epochs=100,
        min_steps=0,
        batch_size=64,
        oe_batch_size=128,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_milestones=(0.5, 0.75, 0.9),
        oe_pool_size=100_000,
        pgd_steps=1000,
        pgd_restarts=10,
        attack_batch_size=256,
        osr_splits=5,
        max_eval_per_side=None,
    ),
    # The papers' recipe scaled to 2 CPU cores for MNIST / Fashion-MNIST reference runs (docs/design.md,
    # "Profiles"): what is cut, and by how much, is said next to each field. The attack budgets are held
    # against PGD-1000 x 10 by python -m bench.budget_check (measurements in results/budget_check/).
    "reference": Profile(
        name="reference",
        # CPU: the papers' WRN-40-4 / ResNet-18 cost ~100x more per image; strided_cnn, not tiny_cnn, because
        # it sees the whole 28x28 image (validation split: datasets/mnist.py, results/network_choice/)
        network="strided_cnn",
        epochs=10,  # CPU: the papers' 100 epochs cut 10x (lr milestones scale with it)
        min_steps=0,
        batch_size=64,  # ATOM App. B.1: 64 ID / 128 OOD
        oe_batch_size=128,
        lr=0.05,  # 0.1 in the papers; 0.05 with the gradient clip below, as on the quick profile
        momentum=0.9,
        weight_decay=1e-4,
        lr_milestones=(0.5, 0.75, 0.9),
        oe_pool_size=10_000,  # CPU: the papers' 100,000-image auxiliary pool cut 10x
        pgd_steps=100,  # checked against PGD-1000 x 10 (bench.budget_check); the paper profile runs 1000 x 10
        pgd_restarts=1,
        attack_batch_size=1024,
        osr_splits=5,  # RODEO Sec. 5: 5 random splits
        max_eval_per_side=500,  # a fixed, seeded test sample of 500 per side (the papers use all)
        grad_clip_norm=5.0,  # BN-free CPU network: see the quick profile
        max_train_per_class=2000,  # CPU: ~1/3 of MNIST's ~6,000 per class (osr trains on 12,000, not 36,000)
    ),
    # CPU-sized: a tiny CNN, short training, at most 100 test inliers and 100 test outliers per cell and
    # a reduced attack budget (rows record it; this is not PGD-1000). Sized so that the README's main
    # command (rodeo and atom, novelty detection, every attack) finishes within 5 minutes on 2 cores.
    "quick": Profile(
        name="quick",
        network="tiny_cnn",
        epochs=30,
        min_steps=150,
        batch_size=64,
        oe_batch_size=128,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        lr_milestones=(0.5, 0.75, 0.9),
        oe_pool_size=5000,
        pgd_steps=40,
        pgd_restarts=2,
        attack_batch_size=1024,
        osr_splits=5,
        max_eval_per_side=100,
        # Not in the papers (their WRNs have BatchNorm): the BN-free small CNN trained at lr 0.05 with
        # adversarial outliers diverged (ATOM, osr split2: loss 0.5 -> 6.6 at epoch 12, then a dead
        # network); clipping the gradient norm at 5 keeps it stable.
        grad_clip_norm=5.0,
    ),
    # Smallest deterministic setting, for tests and regression tracking.
    "ci": Profile(
        name="ci",
        network="small_cnn",
        # 20 epochs: osr (12 batches an epoch on digits) trains 240 steps and ood (20) 400, where its
        # classifier learns (at 80 steps the digits classifier was at 32-55% test accuracy and osr/ood AUROC
        # at chance, 240 steps 97-98%; docs/ci.md "Less chaotic osr and ood"). ood at 240 steps fell to
        # 0.59-0.77 clean AUROC for msp, energy, oe, aloe and aoe (docs/ci.md "What it costs"). A one-class
        # nd set (2 batches) still trains min_steps: nd is unchanged.
        epochs=20,
        min_steps=80,
        batch_size=64,
        oe_batch_size=128,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        lr_milestones=(0.5, 0.75, 0.9),
        oe_pool_size=1000,
        pgd_steps=10,
        pgd_restarts=1,
        attack_batch_size=1024,
        osr_splits=2,
        max_eval_per_side=120,
        grad_clip_norm=5.0,
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise BadInput(f"unknown profile {name!r}; accepted: {', '.join(PROFILES)}")
    return PROFILES[name]


def with_overrides(profile: Profile, **changes) -> Profile:
    return replace(profile, **changes)


def for_dataset(profile: Profile, dataset_builder) -> Profile:
    """``profile`` as it runs on the data set that ``dataset_builder`` (a registered builder) builds: the
    builder's ``profile_adjustments[profile.name]`` (field -> value) replace the profile's fields, the name
    stays. Papers pick the network per data set too; the adjustments are documented next to the data set.
    No data is loaded."""
    adjustments = getattr(dataset_builder, "profile_adjustments", {}).get(profile.name, {})
    unknown = sorted(set(adjustments) - {f.name for f in fields(Profile)} | ({"name"} & set(adjustments)))
    if unknown:
        raise BadInput(f"profile adjustments of {dataset_builder.__name__} name unknown fields {unknown}")
    return replace(profile, **adjustments) if adjustments else profile


def parse_value(raw: str, target: type, key: str):
    """Convert a ``--set`` value to the field's type, or raise BadInput naming the key."""
    try:
        if target is bool:
            lowered = raw.strip().lower()
            if lowered in {"true", "1", "yes"}:
                return True
            if lowered in {"false", "0", "no"}:
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        return target(raw)
    except ValueError:
        raise BadInput(f"bad value {raw!r} for --set {key}: expected {target.__name__}") from None


def parse_overrides(pairs: list[str], method_types: dict[str, dict[str, type]]) -> dict[str, dict]:
    """Parse ``method.field=value`` pairs against the chosen methods' config fields.

    ``method_types`` maps each chosen method to its field name -> type. Returns method -> {field: value}.
    """
    accepted = [f"{m}.{f}" for m, fields in method_types.items() for f in fields]
    result: dict[str, dict] = {m: {} for m in method_types}
    for pair in pairs:
        if "=" not in pair:
            raise BadInput(
                f"bad --set {pair!r}: expected key=value with key one of: {', '.join(accepted) or '(none)'}"
            )
        key, raw = pair.split("=", 1)
        method, _, field_name = key.strip().partition(".")
        if method not in method_types or field_name not in method_types[method]:
            raise BadInput(f"unknown --set key {key!r}; accepted: {', '.join(accepted) or '(none)'}")
        result[method][field_name] = parse_value(raw, method_types[method][field_name], key)
    return result
