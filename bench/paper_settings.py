"""Each method's training recipe on the ``paper`` profile, as its paper (``shared/papers``) gives it.

``--profile paper`` is not one recipe for all: for each method the plan replaces the profile's training
fields (network, epochs, batches, SGD settings, lr milestones) by the values below, cited next to each,
and sets the method's own fields' defaults (a ``--set`` still wins). Low resolution (<= 64 px) and high
resolution get separate entries where the paper separates them; ``by_dataset`` holds per-data-set
exceptions. The attack budgets stay the profile's (RODEO Sec. 5), for every method alike.

What a paper does that this harness cannot express yet is listed in ``not_expressed`` and printed by the
dry run, so a reader sees every deviation: optimiser families other than the shared SGD (where the
method does not bring its own), networks the harness lacks (DenseNet-BC, EOE's LeNet-BN), pre-trained
initialisation and cosine schedules.

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
ATOM_SVHN = {"epochs": Setting(20, f"{ATOM_B1}: SVHN, 20 epochs, decay at 10, 15, 18 (same fractions)")}
HIGH_RES_STEM = (
    "at 224 px the ResNet-18 keeps its CIFAR stem (3x3, stride 1, no max-pool): the ImageNet-stem variant "
    "is not in bench.methods.networks yet"
)
NO_DENSENET = (
    "DenseNet-BC (L=100, k=12), ATOM Table 1's network: not in bench.methods.networks; WRN-40-4 used"
)

EOE_G1 = "EOE App. G.1"
EOE_HIGH_RES = {
    "network": Setting(
        "resnet18", f"{EOE_G1}: the WideResNet of Hendrycks et al. 2019b, a ResNet-18 backbone"
    ),
    "epochs": Setting(150, f"{EOE_G1} (ImageNet): 150 epochs"),
    "lr_milestones": Setting((100 / 150, 125 / 150), f"{EOE_G1} (ImageNet): milestones 100 and 125"),
}

PAPER_SETTINGS: dict[str, PaperRecipe] = {
    "atom": PaperRecipe(ATOM_RECIPE, by_dataset={"svhn": ATOM_SVHN}, not_expressed=(NO_DENSENET,)),
    "ntom": PaperRecipe(ATOM_RECIPE, by_dataset={"svhn": ATOM_SVHN}, not_expressed=(NO_DENSENET,)),
    # ATOM App. B.1 trains its baselines (MSP, OE, ...) with the same recipe ("for all model training")
    "msp": PaperRecipe(ATOM_RECIPE, by_dataset={"svhn": ATOM_SVHN}, not_expressed=(NO_DENSENET,)),
    "energy": PaperRecipe(ATOM_RECIPE, by_dataset={"svhn": ATOM_SVHN}, not_expressed=(NO_DENSENET,)),
    "oe": PaperRecipe(
        {
            **ATOM_RECIPE,
            "network": Setting("wrn40_2", "OE (Hendrycks et al. 2019): WRN-40-2 (not in shared/papers)"),
        },
        by_dataset={"svhn": ATOM_SVHN},
        not_expressed=("OE's own cosine learning-rate schedule: ATOM App. B.1's step decay is used",),
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
        },
        high_res={"network": Setting("resnet18", "RODEO Sec. 5 / Table 9: ResNet-18 for high resolution")},
        not_expressed=(HIGH_RES_STEM,),
        method={
            "lr": Setting(1e-3, "RODEO Table 9: Adam, lr 0.001"),
            "steps": Setting(10, "RODEO Table 9: PGD-10 adversarial training"),
        },
    ),
    # EOE App. G.1: Adam, lr 1e-3, batches of 128 normal + 128 OE; CIFAR-10 200 epochs, milestones 100, 150
    "hsc": PaperRecipe(
        {
            "epochs": Setting(200, f"{EOE_G1} (CIFAR-10): 200 epochs"),
            "lr_milestones": Setting((0.5, 0.75), f"{EOE_G1} (CIFAR-10): milestones 100 and 150 of 200"),
            "batch_size": Setting(128, f"{EOE_G1}: 128 normal samples per batch"),
            "oe_batch_size": Setting(128, f"{EOE_G1}: 128 OE samples per batch"),
        },
        high_res=EOE_HIGH_RES,
        by_dataset={
            "mvtec": {
                "epochs": Setting(300, f"{EOE_G1} (MVTec-AD): 300 epochs"),
                "lr_milestones": Setting((200 / 300, 250 / 300), f"{EOE_G1} (MVTec-AD): milestones 200, 250"),
            }
        },
        not_expressed=(
            HIGH_RES_STEM,
            "Adam at lr 1e-3 (EOE App. G.1): hsc trains with the profile's SGD",
            "EOE's LeNet-style BN networks for CIFAR-10 / (F)MNIST: not in bench.methods.networks; the "
            "paper profile's WRN-40-4 is used",
        ),
    ),
    # GReg Sec. 6.1: GReg fine-tunes a pre-trained model 20 epochs (SGD, cosine annealing); GReg+ trains from
    # scratch 50 epochs at lr 0.1, then 10 at 0.01, same optimiser
    "greg": PaperRecipe(
        {"epochs": Setting(20, "GReg Sec. 6.1: fine-tune 20 epochs (CIFAR)")},
        not_expressed=(
            "cosine annealing (GReg Sec. 6.1): the profile's step decay is used",
            "a pre-trained checkpoint: the harness pre-trains the cross-entropy classifier itself",
        ),
    ),
    "greg+": PaperRecipe(
        {
            "epochs": Setting(60, "GReg Sec. 6.1: GReg+ 50 epochs at lr 0.1, then 10 at 0.01"),
            "lr": Setting(0.1, "GReg Sec. 6.1: learning rate 0.1"),
            "lr_milestones": Setting((50 / 60,), "GReg Sec. 6.1: lr 0.01 for the last 10 of 60 epochs"),
        }
    ),
    # EOE App. G.2: SGD with Nesterov momentum, 80 epochs, milestones 50, 60, 70, 75 (the method's own),
    # batches of 128 normal + 128 OE (App. G.1's balance applies to the CLIP methods as well)
    "bce-clip": PaperRecipe(
        {
            "epochs": Setting(80, "EOE App. G.2: 80 epochs"),
            "batch_size": Setting(128, "EOE App. G.1/G.2: 128 normal samples per batch"),
            "oe_batch_size": Setting(128, "EOE App. G.1/G.2: 128 OE samples per batch"),
        }
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


def method_defaults(profile_name: str, method_name: str) -> dict[str, Any]:
    """The method fields its paper sets (defaults under ``--set``); only on the paper profile."""
    if profile_name != "paper" or method_name not in PAPER_SETTINGS:
        return {}
    return {k: s.value for k, s in PAPER_SETTINGS[method_name].method.items()}


def not_expressed(profile_name: str, method_name: str) -> tuple[str, ...]:
    if profile_name != "paper" or method_name not in PAPER_SETTINGS:
        return ()
    return PAPER_SETTINGS[method_name].not_expressed
