"""Each method's training recipe on the ``paper`` profile, as its paper (``shared/papers``) gives it.

``--profile paper`` is not one recipe for all: for each method the plan replaces the profile's training
fields (network, epochs, batches, optimiser, lr and its schedule) by the values below, cited next to each,
and sets the method's own fields' defaults (a ``--set`` still wins). Low resolution (<= 64 px) and high
resolution get separate entries where the paper separates them; ``by_dataset`` holds per-data-set
exceptions. The attack budgets stay the profile's (RODEO Sec. 5), for every method alike. A method whose
OE pool differs from the run's (ATOM, OE, GReg+: the whole auxiliary set) gets its own pool, drawn from the
data set's OE source when the method trains (``bench.execute.method_task``).

What a paper does that this harness cannot express yet is listed in ``not_expressed`` and printed by the
dry run, so a reader sees every deviation: pre-trained initialisation, data augmentation, settings a
paper leaves unstated, papers not in shared/papers. The optimiser (SGD or Adam) and the learning-rate
schedule (step decay or cosine annealing) are Profile fields like the rest.

Only the paper profile changes: on every other profile each method trains with the profile as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from bench.config import Profile

HIGH_RES = 64  # above this image size the high-resolution entries apply (docs/design.md: eps 2/255)


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # paper, section / table


@dataclass(frozen=True)
class PaperRecipe:
    profile: dict[str, Setting]  # Profile fields, low resolution
    high_res: dict[str, Setting] = field(default_factory=dict)  # replaces ``profile`` entries above 64 px
    by_dataset: dict[str, dict[str, Setting]] = field(default_factory=dict)  # data set -> Profile fields
    method: dict[str, Setting] = field(default_factory=dict)  # the method's own fields (defaults)
    not_expressed: tuple[str, ...] = ()
    # data set -> the method's own fields there (replaces ``method`` entries), e.g. ATOM's q per data set
    method_by_dataset: dict[str, dict[str, Setting]] = field(default_factory=dict)


ATOM_B1 = "ATOM App. B.1"
# ATOM App. B.1: "All neural networks are trained with stochastic gradient descent with Nesterov momentum
# ... momentum 0.9 and l2 weight decay 1e-4 for all model training ... for CIFAR-10 and CIFAR-100, 100
# epochs, initial learning rate 0.1 decays by 0.1 at 50, 75, 90 epoch ... batch size 64 for in-distribution
# data and 128 for out-of-distribution data". WRN-40-4 is its App. B.12 network (DenseNet-BC is Table 1's).
ATOM_RECIPE = {
    "network": Setting("wrn40_4", "ATOM App. B.1 / B.12: WRN-40-4 (depth 40, widening 4)"),
    "epochs": Setting(100, f"{ATOM_B1}: 100 epochs (CIFAR-10/100)"),
    "lr": Setting(0.1, f"{ATOM_B1}: initial learning rate 0.1"),
    "momentum": Setting(0.9, f"{ATOM_B1}: SGD with Nesterov momentum 0.9"),
    "weight_decay": Setting(1e-4, f"{ATOM_B1}: l2 weight decay 1e-4"),
    "lr_milestones": Setting((0.5, 0.75, 0.9), f"{ATOM_B1}: decay by 0.1 at epochs 50, 75, 90 of 100"),
    "batch_size": Setting(64, f"{ATOM_B1}: batch 64 in-distribution"),
    "oe_batch_size": Setting(128, f"{ATOM_B1}: batch 128 out-of-distribution"),
}
# ATOM App. B.1: "random cropping with padding of 4 pixels ... random horizontal flipping" (the CIFAR
# recipe of ATOM's and OE's code); without the flip on digits and house numbers (a mirrored digit is
# another glyph)
ATOM_AUGMENT = {"augment": Setting("crop_flip", f"{ATOM_B1}: random crop (padding 4) + horizontal flip")}
NO_FLIP = {
    name: {"augment": Setting("crop", f"{ATOM_B1}: random crop (padding 4); no flip on digits (ours)")}
    for name in ("svhn", "mnist", "digits")
}
ATOM_SVHN = {"epochs": Setting(20, f"{ATOM_B1}: SVHN, 20 epochs, decay at 10, 15, 18 (same fractions)")}
WHOLE_300K = 300_000  # 300K Random Images, the field's stand-in for 80 Million Tiny Images (withdrawn)
ATOM_POOL = {
    "oe_pool_size": Setting(
        WHOLE_300K,
        "ATOM App. B.1: N = 400,000 candidates drawn per epoch from the auxiliary set; here the whole 300K "
        "Random Images (memory-mapped), mined for n = 2 x |train| each epoch",
    )
}
ATOM_KEEP_N = {
    "short_pool": Setting(
        "keep_n",
        "ATOM App. B.1: n = 2 x |train| (100,000 for CIFAR), 'the same amount of outlier data as OE'; the "
        "300K pool is below N = 400,000, so N = 300,000",
    )
}
# ATOM App. B.1 "Hyperparameters": "Based on the validation, we set q = 0 for SVHN, q = 0.125 for CIFAR-10,
# and q = 0.5 for CIFAR-100" (Sec. 4.1 says the same for the CIFARs). The paper names no other data set:
# elsewhere atom.q keeps its default 0.125 (the CIFAR-10 value), and the dry run says so.
ATOM_Q = {
    "svhn": {"q": Setting(0.0, f"{ATOM_B1}: q = 0 for SVHN (Table 3: the best of 0 ... 0.75 there)")},
    "cifar10": {"q": Setting(0.125, f"{ATOM_B1}: q = 0.125 for CIFAR-10")},
    "cifar100": {"q": Setting(0.5, f"{ATOM_B1}: q = 0.5 for CIFAR-100 (fine labels in the paper)")},
    "cifar100-fine": {"q": Setting(0.5, f"{ATOM_B1}: q = 0.5 for CIFAR-100")},
}
ATOM_Q_SILENT = (
    "atom.q on data sets other than SVHN / CIFAR-10 / CIFAR-100: App. B.1 gives none; the default 0.125 "
    "(CIFAR-10's) is kept. With --oe imagenet-rc App. B.11 finds q = 0 best on all three (set it with --set)"
)
# ATOM App. B.1: "For DenseNet, we follow the same setup as in [23], with depth L = 100, growth rate k = 12
# (Dense-BC) and dropout rate 0"; Table 1 (the published rows) and Tables 2-8, 10-14 use it, App. B.12 /
# Table 9 repeats them with WRN-40-4
ATOM_DENSENET = {
    "network": Setting("densenet_bc100", "ATOM App. B.1 / Table 1: DenseNet-BC, L = 100, k = 12, dropout 0")
}

# What RODEO on the paper profile still does differently from RODEO Sec. 4.1 / Table 10 (docs/design.md
# "Papers' backbones")
RODEO_DIFFERENCES = (
    "generator: google/ddpm-cifar10-32 (unconditional 35.7M-parameter DDPM, 32 px, trained on CIFAR-10's "
    "training images) for GLIDE (text-conditional, 64 px, trained on a filtered web set of 67M images); "
    "the text steers only through CLIP guidance",
    "CLIP: OpenAI ViT-B/32, not GLIDE's noise-aware CLIP: guidance differentiates the CLIP similarity of the "
    "predicted clean image x0_hat(x_t), not of x_t",
    "tau_image (Eq. 13): on ImageNet validation images when $BENCH_DATA/imagenet-val/ holds them "
    "(one folder per class), else rodeo.tau_image must be set",
)

EOE_G1 = "EOE App. G.1"
EOE_HIGH_RES = {
    "network": Setting(
        "resnet18_224", f"{EOE_G1}: the WideResNet of Hendrycks et al. 2019b, a ResNet-18 backbone"
    ),
    "epochs": Setting(150, f"{EOE_G1} (ImageNet): 150 epochs"),
    "lr_milestones": Setting((100 / 150, 125 / 150), f"{EOE_G1} (ImageNet): milestones 100 and 125"),
}

PAPER_SETTINGS: dict[str, PaperRecipe] = {
    "atom": PaperRecipe(
        {**ATOM_RECIPE, **ATOM_DENSENET, **ATOM_POOL},
        by_dataset={"svhn": ATOM_SVHN},
        method=ATOM_KEEP_N,
        method_by_dataset=ATOM_Q,
        not_expressed=(ATOM_Q_SILENT,),
    ),
    "ntom": PaperRecipe(
        {**ATOM_RECIPE, **ATOM_DENSENET, **ATOM_POOL},
        by_dataset={"svhn": ATOM_SVHN},
        method=ATOM_KEEP_N,
        method_by_dataset=ATOM_Q,
        not_expressed=(ATOM_Q_SILENT,),
    ),
    # ATOM App. B.1 trains its baselines (MSP, OE, ...) with the same recipe ("for all model training")
    "msp": PaperRecipe(
        {**ATOM_RECIPE, **ATOM_DENSENET, **ATOM_AUGMENT},
        by_dataset={**NO_FLIP, "svhn": {**ATOM_SVHN, **NO_FLIP["svhn"]}},
    ),
    "energy": PaperRecipe(
        {**ATOM_RECIPE, **ATOM_DENSENET, **ATOM_AUGMENT},
        by_dataset={**NO_FLIP, "svhn": {**ATOM_SVHN, **NO_FLIP["svhn"]}},
    ),
    "oe": PaperRecipe(
        {
            **ATOM_RECIPE,
            "network": Setting("wrn40_2", "OE (Hendrycks et al. 2019): WRN-40-2 (not in shared/papers)"),
            "oe_pool_size": Setting(
                WHOLE_300K, "OE (Hendrycks et al. 2019): the whole auxiliary set each epoch"
            ),
            "lr_schedule": Setting(
                "cosine", "OE (Hendrycks et al. 2019) public code: cosine annealing of the lr per step"
            ),
            **ATOM_AUGMENT,
        },
        by_dataset={**NO_FLIP, "svhn": {**ATOM_SVHN, **NO_FLIP["svhn"]}},
    ),
    "aloe": PaperRecipe(
        ATOM_RECIPE,
        not_expressed=(
            "ALOE's paper is not in shared/papers: ATOM App. B.1's recipe (same authors) is used",
        ),
    ),
    "aoe": PaperRecipe(
        ATOM_RECIPE, not_expressed=("the AOE poster gives no training recipe: ATOM App. B.1's is used",)
    ),
    # RODEO Sec. 5 (Implementation Details): "ResNet-18 ... for the high-resolution datasets and for the
    # low-resolution datasets ... Wide ResNet ... trained 100 epochs with Adam ... learning rate 0.001";
    # Table 9: PGD-10, step 2.5 eps / 10, Adam, lr 0.001. Adam and its lr are the method's (rodeo.lr).
    "rodeo": PaperRecipe(
        {
            "network": Setting(
                "wrn40_4", "RODEO Sec. 5: Wide ResNet for low resolution (depth/width unstated)"
            ),
            "epochs": Setting(100, "RODEO Sec. 5: trained 100 epochs"),
            "lr_milestones": Setting((), "RODEO Sec. 5 / Table 9: Adam at lr 0.001, no decay stated"),
            # rodeo builds its own Adam at rodeo.lr (below); these make the profile say the same
            "optimizer": Setting("adam", "RODEO Sec. 5 / Table 9: Adam"),
            "lr": Setting(1e-3, "RODEO Table 9: learning rate 0.001"),
        },
        high_res={
            "network": Setting("resnet18_224", "RODEO Sec. 5 / Table 9: ResNet-18 for high resolution")
        },
        method={
            "lr": Setting(1e-3, "RODEO Table 9: Adam, lr 0.001"),
            "steps": Setting(10, "RODEO Table 9: PGD-10 adversarial training"),
            "backbones": Setting(
                "paper",
                "RODEO Sec. 4.1 / Table 10: GLIDE and its noise-aware CLIP; here OpenAI ViT-B/32 and "
                "google/ddpm-cifar10-32, the closest models the libraries load (docs/design.md)",
            ),
        },
        not_expressed=RODEO_DIFFERENCES,
    ),
    # EOE Sec. 3.3 / App. G.2: zero-shot CLIP with OpenAI's pre-trained ViT-B/32
    "clip": PaperRecipe(
        {},
        method={
            "backbones": Setting("paper", "EOE Sec. 3.3, App. G.2: CLIP ViT-B/32"),
            "class_template": Setting("a photo of a {}", "EOE Sec. 3.3: 'a photo of a {NORMAL_CLASS}'"),
        },
    ),
    # EOE App. G.1: Adam, lr 1e-3, batches of 128 normal + 128 OE; CIFAR-10 200 epochs, milestones 100, 150
    "hsc": PaperRecipe(
        {
            "network": Setting(
                "lenet_bn32", f"{EOE_G1} (CIFAR-10): LeNet-style, conv 32-64-128 with BN, FC 512-256"
            ),
            "optimizer": Setting("adam", f"{EOE_G1}: Adam"),
            "lr": Setting(1e-3, f"{EOE_G1} (CIFAR-10, ImageNet, MVTec-AD): learning rate 0.001"),
            "epochs": Setting(200, f"{EOE_G1} (CIFAR-10): 200 epochs"),
            "lr_milestones": Setting((0.5, 0.75), f"{EOE_G1} (CIFAR-10): milestones 100 and 150 of 200"),
            "batch_size": Setting(128, f"{EOE_G1}: 128 normal samples per batch"),
            "oe_batch_size": Setting(128, f"{EOE_G1}: 128 OE samples per batch"),
            "augment": Setting(
                "eoe",
                f"{EOE_G1}: color jitter, random crop, flip, Gaussian pixel noise (Table 6: 96.1 with, 91.8 "
                "without)",
            ),
        },
        high_res=EOE_HIGH_RES,
        by_dataset={
            # "Fashion-MNIST: a similar setup as CIFAR-10 ... only two convolutional layers with 16 and 32
            # kernels"; "MNIST: the same setup as on Fashion-MNIST"
            "fmnist": {"network": Setting("lenet_bn28", f"{EOE_G1} (Fashion-MNIST): conv 16-32")},
            "mnist": {
                "network": Setting("lenet_bn28", f"{EOE_G1} (MNIST): as Fashion-MNIST"),
                "augment": Setting("", f"{EOE_G1} (MNIST): no data augmentation"),
            },
            "mvtec": {
                "epochs": Setting(300, f"{EOE_G1} (MVTec-AD): 300 epochs"),
                "lr_milestones": Setting((200 / 300, 250 / 300), f"{EOE_G1} (MVTec-AD): milestones 200, 250"),
            },
        },
        not_expressed=(
            "augmentation magnitudes (EOE App. G.1 names color jitter, crop, flip and pixel noise, no "
            "magnitudes): ours in bench/methods/augment.py",
            "Adam's weight decay (not stated in EOE App. G.1): the paper profile's 1e-4",
        ),
    ),
    # GReg Sec. 6.1: GReg fine-tunes a pre-trained model 20 epochs (SGD, cosine annealing); GReg+ trains from
    # scratch 50 epochs at lr 0.1, then 10 at 0.01, same optimiser
    # The pre-trained classifier is the one msp and energy share (ATOM App. B.1's recipe, 100 epochs);
    # the fine-tuning runs finetune_fraction x 100 = 20 epochs with cosine annealing
    "greg": PaperRecipe(
        # the pre-trained classifier is msp's and energy's, augmentation included (one cache entry)
        {**ATOM_RECIPE, **ATOM_DENSENET, **ATOM_AUGMENT},
        by_dataset={**NO_FLIP, "svhn": {**ATOM_SVHN, **NO_FLIP["svhn"]}},
        method={
            "finetune_fraction": Setting(0.2, "GReg Sec. 6.1: fine-tune 20 epochs (of the classifier's 100)"),
            "finetune_lr_schedule": Setting("cosine", "GReg Sec. 6.1: SGD with cosine annealing"),
        },
        not_expressed=(
            "a pre-trained checkpoint: the harness pre-trains the cross-entropy classifier itself",
        ),
    ),
    # GReg Sec. 6.1: "For GReg+, we train the model from scratch for 50 epochs with a learning rate of 0.1,
    # followed by 10 epochs with a learning rate of 0.01" (CIFAR; same SGD as GReg)
    "greg+": PaperRecipe(
        {
            **ATOM_RECIPE,
            **ATOM_DENSENET,
            "epochs": Setting(60, "GReg Sec. 6.1: GReg+ 50 epochs at lr 0.1, then 10 at 0.01"),
            "lr": Setting(0.1, "GReg Sec. 6.1: learning rate 0.1"),
            "lr_milestones": Setting((50 / 60,), "GReg Sec. 6.1: lr 0.01 for the last 10 of 60 epochs"),
            "oe_pool_size": Setting(
                WHOLE_300K, "GReg Supp. (Sampling Details): the whole 300K set each epoch"
            ),
        },
        method={
            "from_scratch": Setting(True, "GReg Sec. 6.1: GReg+ trains from scratch (no pre-trained model)"),
            "lr_factor": Setting(1.0, "GReg Sec. 6.1: lr 0.1 itself (the profile's), then 0.01"),
        },
    ),
    # EOE App. G.2: SGD with Nesterov momentum, 80 epochs, milestones 50, 60, 70, 75 (the method's own),
    # batches of 128 normal + 128 OE (App. G.1's balance applies to the CLIP methods as well)
    "bce-clip": PaperRecipe(
        {
            "epochs": Setting(80, "EOE App. G.2: 80 epochs"),
            "batch_size": Setting(128, "EOE App. G.1/G.2: 128 normal samples per batch"),
            "oe_batch_size": Setting(128, "EOE App. G.1/G.2: 128 OE samples per batch"),
        },
        method={
            "backbones": Setting("paper", "EOE Sec. 3.3, App. G.2: BCE fine-tuning of CLIP ViT-B/32"),
            "class_template": Setting("a photo of a {}", "EOE Sec. 3.3: 'a photo of a {NORMAL_CLASS}'"),
        },
    ),
}


def recipe_settings(method_name: str, image_size: int, dataset: str) -> dict[str, Setting]:
    """The Profile fields a method's paper sets for this image size and data set (empty: none)."""
    recipe = PAPER_SETTINGS.get(method_name)
    if recipe is None:
        return {}
    settings = dict(recipe.profile)
    if image_size > HIGH_RES:
        settings.update(recipe.high_res)
    settings.update(recipe.by_dataset.get(dataset, {}))
    return settings


def method_profile(profile: Profile, method_name: str, image_size: int, dataset: str) -> Profile:
    """``profile`` as ``method_name`` trains with it: on ``paper``, with its paper's recipe; else as is."""
    if profile.name != "paper":
        return profile
    known = {f.name for f in fields(Profile)}
    values = {k: s.value for k, s in recipe_settings(method_name, image_size, dataset).items() if k in known}
    return replace(profile, **values) if values else profile


def method_settings(profile_name: str, method_name: str, dataset: str = "") -> dict[str, Setting]:
    """The method fields its paper sets on ``dataset``, with their sources; only on the paper profile."""
    if profile_name != "paper" or method_name not in PAPER_SETTINGS:
        return {}
    recipe = PAPER_SETTINGS[method_name]
    return {**recipe.method, **recipe.method_by_dataset.get(dataset, {})}


def method_defaults(profile_name: str, method_name: str, dataset: str = "") -> dict[str, Any]:
    """The method fields its paper sets (defaults under ``--set``); only on the paper profile."""
    return {k: s.value for k, s in method_settings(profile_name, method_name, dataset).items()}


def not_expressed(profile_name: str, method_name: str) -> tuple[str, ...]:
    if profile_name != "paper" or method_name not in PAPER_SETTINGS:
        return ()
    return PAPER_SETTINGS[method_name].not_expressed
