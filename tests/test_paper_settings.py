"""``--profile paper`` resolves each method's training recipe to its paper's values (table-driven: the
expected values are typed here from the papers, not read from bench.paper_settings)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.config import get_profile
from bench.errors import BadInput, NotApplicable
from bench.execute import build_cell, fit_detector
from bench.paper_settings import PAPER_SETTINGS, method_profile
from bench.plan import RunSpec, method_hash, plan_run

# (method, data set, image size, Profile field, value, where the paper says it)
PROFILE_ROWS = [
    ("atom", "cifar10", 32, "network", "densenet_bc100", "ATOM App. B.1 / Table 1: DenseNet-BC"),
    ("atom", "cifar10", 32, "epochs", 100, "ATOM App. B.1"),
    ("atom", "cifar10", 32, "lr", 0.1, "ATOM App. B.1"),
    ("atom", "cifar10", 32, "momentum", 0.9, "ATOM App. B.1"),
    ("atom", "cifar10", 32, "weight_decay", 1e-4, "ATOM App. B.1"),
    ("atom", "cifar10", 32, "lr_milestones", (0.5, 0.75, 0.9), "ATOM App. B.1: 50/75/90 of 100"),
    ("atom", "cifar10", 32, "batch_size", 64, "ATOM App. B.1"),
    ("atom", "cifar10", 32, "oe_batch_size", 128, "ATOM App. B.1"),
    ("atom", "svhn", 32, "epochs", 20, "ATOM App. B.1: SVHN 20 epochs"),
    ("msp", "cifar10", 32, "epochs", 100, "ATOM App. B.1: all model training"),
    ("msp", "cifar10", 32, "network", "densenet_bc100", "ATOM App. B.1: all model training"),
    ("oe", "cifar10", 32, "lr_schedule", "cosine", "OE public code: cosine annealing"),
    ("atom", "cifar10", 32, "optimizer", "sgd", "ATOM App. B.1: SGD with Nesterov momentum"),
    ("atom", "cifar10", 32, "lr_schedule", "step", "ATOM App. B.1: decay by 0.1 at 50, 75, 90"),
    ("oe", "cifar10", 32, "network", "wrn40_2", "OE: WRN-40-2"),
    ("rodeo", "cifar10", 32, "epochs", 100, "RODEO Sec. 5"),
    ("rodeo", "cifar10", 32, "lr_milestones", (), "RODEO Sec. 5: Adam, no decay"),
    ("rodeo", "cifar10", 32, "optimizer", "adam", "RODEO Sec. 5 / Table 9: Adam"),
    ("rodeo", "mvtec", 224, "network", "resnet18_224", "RODEO Sec. 5 / Table 9"),
    ("hsc", "cifar10", 32, "epochs", 200, "EOE App. G.1 (CIFAR-10)"),
    ("hsc", "cifar10", 32, "optimizer", "adam", "EOE App. G.1: Adam"),
    ("hsc", "cifar10", 32, "lr", 1e-3, "EOE App. G.1: learning rate 0.001"),
    ("hsc", "cifar10", 32, "network", "lenet_bn32", "EOE App. G.1 (CIFAR-10): LeNet-style, 32-64-128"),
    ("hsc", "fmnist", 28, "network", "lenet_bn28", "EOE App. G.1 (Fashion-MNIST): 16-32"),
    ("hsc", "mnist", 28, "network", "lenet_bn28", "EOE App. G.1 (MNIST): as Fashion-MNIST"),
    ("hsc", "imagenet30", 224, "optimizer", "adam", "EOE App. G.1 (ImageNet): Adam"),
    ("hsc", "cifar10", 32, "lr_milestones", (0.5, 0.75), "EOE App. G.1: 100, 150 of 200"),
    ("hsc", "cifar10", 32, "batch_size", 128, "EOE App. G.1"),
    ("hsc", "cifar10", 32, "oe_batch_size", 128, "EOE App. G.1"),
    ("hsc", "imagenet30", 224, "epochs", 150, "EOE App. G.1 (ImageNet)"),
    ("hsc", "imagenet30", 224, "network", "resnet18_224", "EOE App. G.1 (ImageNet)"),
    ("hsc", "mvtec", 224, "epochs", 300, "EOE App. G.1 (MVTec-AD)"),
    ("greg", "cifar10", 32, "epochs", 100, "GReg Sec. 6.1: the pre-trained classifier (msp's)"),
    ("greg+", "cifar10", 32, "epochs", 60, "GReg Sec. 6.1: 50 + 10 epochs"),
    ("greg+", "cifar10", 32, "lr", 0.1, "GReg Sec. 6.1"),
    ("greg+", "cifar10", 32, "lr_milestones", (50 / 60,), "GReg Sec. 6.1: 0.01 for the last 10"),
    ("bce-clip", "cifar10", 32, "epochs", 80, "EOE App. G.2"),
]


@pytest.mark.parametrize(("method", "dataset", "size", "key", "value", "source"), PROFILE_ROWS)
def test_the_paper_profile_resolves_each_methods_recipe(method, dataset, size, key, value, source):
    profile = method_profile(get_profile("paper"), method, size, dataset)
    assert getattr(profile, key) == pytest.approx(value), source
    assert profile.pgd_steps == 1000 and profile.pgd_restarts == 10  # attack budgets stay the profile's


def test_every_method_with_a_recipe_is_registered_and_every_field_is_a_profile_or_method_field():
    from dataclasses import fields

    from bench.config import Profile
    from bench.registry import METHODS

    profile_fields = {f.name for f in fields(Profile)}
    for name, recipe in PAPER_SETTINGS.items():
        method_fields = set(METHODS.get(name).field_types())
        settings = [recipe.profile, recipe.high_res, *recipe.by_dataset.values()]
        assert all(set(s) <= profile_fields for s in settings), name
        assert set(recipe.method) <= method_fields, name
        assert all(s.source for group in (*settings, recipe.method) for s in group.values()), name


def test_a_plan_on_the_paper_profile_gives_methods_their_recipes_and_set_still_wins():
    # the embedded backbones, explicitly (without the papers' weights a paper-profile run exits 2)
    stand_in = ["rodeo.backbones=embedded"]
    spec = RunSpec(
        methods=["rodeo", "atom"], protocol="nd", dataset="digits", profile="paper", settings=stand_in
    )
    plan = plan_run(RunSpec(**{**spec.__dict__, "settings": [*stand_in, "rodeo.steps=5"]}))
    assert plan.methods["rodeo"].steps == 5 and plan.methods["rodeo"].lr == pytest.approx(1e-3)
    assert plan.profile_for("rodeo").lr_milestones == () and plan.profile_for("atom").lr_milestones == (
        0.5,
        0.75,
        0.9,
    )
    # the recipe enters the method hash: rodeo's differs from what the bare paper profile gives
    bare = plan_run(spec)
    bare.method_profiles = {}
    assert method_hash(plan_run(spec), "rodeo") != method_hash(bare, "rodeo")


@pytest.mark.parametrize("profile", ["ci", "quick", "reference"])
def test_other_profiles_train_every_method_with_the_profile_itself(profile):
    plan = plan_run(
        RunSpec(methods=["rodeo", "atom", "hsc"], protocol="nd", dataset="digits", profile=profile)
    )
    assert all(plan.profile_for(name) is plan.profile for name in plan.methods)


def test_the_fit_sees_the_methods_own_profile(monkeypatch):
    plan = plan_run(RunSpec(methods=["msp", "hsc"], protocol="nd", dataset="digits", profile="paper"))
    plan.profile = replace(plan.profile, oe_pool_size=200)  # a small OE pool: the cell builds in a second
    plan.method_profiles = {name: method_profile(plan.profile, name, 8, "digits") for name in plan.methods}
    seen = {}

    def fake_fit(self, task, ctx):
        seen[type(self).__name__] = task.profile
        raise NotApplicable("stop after seeing the task")

    cell = build_cell(plan, "class0", 0)
    for name in plan.methods:
        monkeypatch.setattr(type(plan.methods[name]), "fit", fake_fit)
        detector, reason, _ = fit_detector(plan, name, cell, cache=_NoCache())
        assert detector is None and reason == "stop after seeing the task"
    profiles = list(seen.values())
    assert [p.epochs for p in profiles] == [100, 200] and profiles[1].batch_size == 128
    assert all(p.oe_pool_size == 200 for p in profiles)  # the run's own fields stay


class _NoCache:
    recovered: list[str] = []

    def load_detector(self, key, device, expected_digest=""):
        return None


def test_a_method_whose_recipe_asks_for_another_oe_pool_gets_its_own(monkeypatch):
    from bench import paper_settings
    from bench.execute import method_task

    atom_recipe = paper_settings.PAPER_SETTINGS["atom"]
    small = replace(
        atom_recipe, profile={**atom_recipe.profile, "oe_pool_size": paper_settings.Setting(300, "test")}
    )
    monkeypatch.setitem(paper_settings.PAPER_SETTINGS, "atom", small)
    plan = plan_run(RunSpec(methods=["atom", "msp"], protocol="nd", dataset="digits", profile="paper"))
    plan.profile = replace(plan.profile, oe_pool_size=200)
    plan.method_profiles = {name: method_profile(plan.profile, name, 8, "digits") for name in plan.methods}
    cell = build_cell(plan, "class0", 0)
    assert len(cell.task.oe.images) == 200
    assert len(method_task(plan, "atom", cell).oe.images) == 300  # ATOM App. B.1: the whole auxiliary set
    assert method_task(plan, "msp", cell).oe is cell.task.oe


# (method, data set, image size, method field, value, where the paper says it)
METHOD_ROWS = [
    ("rodeo", "cifar10", 32, "lr", 1e-3, "RODEO Table 9: Adam, lr 0.001"),
    ("rodeo", "cifar10", 32, "steps", 10, "RODEO Table 9: PGD-10"),
    ("atom", "cifar10", 32, "short_pool", "keep_n", "ATOM App. B.1: n = 2 x |train| on the 300K pool"),
    ("ntom", "cifar10", 32, "short_pool", "keep_n", "ATOM App. B.1: n = 2 x |train| on the 300K pool"),
    ("greg", "cifar10", 32, "finetune_fraction", 0.2, "GReg Sec. 6.1: 20 epochs of the classifier's 100"),
    ("greg", "cifar10", 32, "finetune_lr_schedule", "cosine", "GReg Sec. 6.1: cosine annealing"),
    ("greg+", "cifar10", 32, "from_scratch", True, "GReg Sec. 6.1: GReg+ from scratch"),
    ("greg+", "cifar10", 32, "lr_factor", 1.0, "GReg Sec. 6.1: lr 0.1, then 0.01"),
    ("clip", "cifar10", 32, "backbones", "paper", "EOE Sec. 3.3: OpenAI's ViT-B/32"),
    ("clip", "cifar10", 32, "class_template", "a photo of a {}", "EOE Sec. 3.3: 'a photo of a {class}'"),
    ("bce-clip", "cifar10", 32, "backbones", "paper", "EOE App. G.2: OpenAI's ViT-B/32"),
    ("rodeo", "cifar10", 32, "backbones", "paper", "RODEO Table 10: GLIDE's nearest loadable models"),
]


@pytest.mark.parametrize(
    ("dataset", "q"), [("svhn", 0.0), ("cifar10", 0.125), ("cifar100", 0.5), ("cifar100-fine", 0.5)]
)
def test_atom_q_is_app_b1_value_per_dataset(dataset, q):
    """ATOM App. B.1: q = 0 for SVHN, 0.125 for CIFAR-10, 0.5 for CIFAR-100; only on the paper profile."""
    from bench.paper_settings import method_defaults

    for method in ("atom", "ntom"):
        assert method_defaults("paper", method, dataset)["q"] == q
        assert "q" not in method_defaults("quick", method, dataset)
    assert "q" not in method_defaults("paper", "atom", "digits")  # the paper is silent: the field default


def test_atom_q_reaches_the_planned_method():
    plan = plan_run(RunSpec(methods=["atom"], protocol="nd", dataset="svhn", profile="paper", dry_run=True))
    assert plan.methods["atom"].q == 0.0
    quick = plan_run(RunSpec(methods=["atom"], protocol="nd", dataset="svhn", profile="quick", dry_run=True))
    assert quick.methods["atom"].q == 0.125


@pytest.mark.parametrize(("method", "dataset", "size", "key", "value", "source"), METHOD_ROWS)
def test_the_paper_profile_sets_the_methods_own_fields(method, dataset, size, key, value, source):
    from bench.paper_settings import PAPER_SETTINGS

    setting = PAPER_SETTINGS[method].method[key]
    assert setting.value == value, source
    plan = plan_run(RunSpec(methods=[method], protocol="nd", dataset="digits", profile="paper", dry_run=True))
    assert getattr(plan.methods[method], key) == value, source


def test_greg_pretrains_the_classifier_that_msp_shares_and_fine_tunes_with_cosine_annealing():
    """The pre-trained model of GReg Sec. 6.1 is msp's classifier (same training fields: one cache entry),
    fine-tuned 20 epochs with cosine annealing; elsewhere the fine-tuning keeps the profile's schedule."""
    paper = get_profile("paper")
    greg, msp = (method_profile(paper, name, 32, "cifar10") for name in ("greg", "msp"))
    assert greg.training_fingerprint() == msp.training_fingerprint()
    assert greg.epochs * PAPER_SETTINGS["greg"].method["finetune_fraction"].value == 20
    from bench.methods.greg import GReg

    assert GReg().finetune_lr_schedule == ""  # ci, quick, reference: the profile's step decay
    with pytest.raises(BadInput, match="finetune_lr_schedule"):
        GReg(finetune_lr_schedule="linear")
