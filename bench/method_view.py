"""What each planned method will run, for the dry run (issue 28, item 6): network, backbones, epochs,
optimiser and schedule, and the list headed "differs from the paper" (``bench.paper_settings``'s
``not_expressed`` lines, every embedded stand-in, and the missing paper backbones of a dry run). Reads the
plan only: nothing is built or loaded, so the dry run stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.backbones.files import EMBEDDED, method_backbones
from bench.backbones.paper import PAPER_BACKBONES

ZERO_SHOT = {"clip"}  # methods that train nothing


@dataclass
class MethodView:
    method: str
    network: str
    backbones: str
    epochs: str
    optimiser: str
    schedule: str
    augment: str
    fields: str
    differs: list[str] = field(default_factory=list)


def describe_backbone(name: str) -> str:
    if name in PAPER_BACKBONES:
        return f"{name}: {PAPER_BACKBONES[name].description}"
    if name in EMBEDDED:
        return f"{name} (embedded stand-in)"
    return name


def method_views(plan) -> list[MethodView]:
    from bench.paper_settings import method_defaults, not_expressed

    paper = plan.profile.name == "paper"
    views = []
    for name, method in plan.methods.items():
        p = plan.profile_for(name)
        if hasattr(method, "training_profile"):  # a method with its own optimiser (rodeo, bce-clip)
            p = method.training_profile(p)
        backbones = method_backbones(method)
        if p.lr_schedule == "cosine":
            schedule = "cosine"
        else:
            milestones = ", ".join(f"{m:.3g}" for m in p.lr_milestones)
            schedule = f"x0.1 at {milestones} of the epochs" if p.lr_milestones else "constant"
        network = p.network
        if hasattr(method, "backbone"):  # the CLIP methods: the CLIP's image tower is the network
            network = f"image tower of {method.backbone}"
        trains = name not in ZERO_SHOT
        own = method_defaults(plan.profile.name, name, plan.spec.dataset)
        differs = list(not_expressed(plan.profile.name, name))
        stand_ins = [b for b in backbones if b in EMBEDDED]
        if stand_ins:
            differs.append(
                f"stand-in backbones {', '.join(stand_ins)} (embedded, trained on 16 px glyphs): not the "
                "paper's method"
            )
        if not paper:
            differs.append(
                f"profile {plan.profile.name}: a CPU scale-down of the papers' recipes (docs/design.md)"
            )
        if name == "rodeo":
            from bench.methods.rodeo_exposure import start_step_rule

            differs.append(
                "start step (same rule as docs/design.md and README): "
                + start_step_rule(method.t0_rule, method.t0_min_fraction, method.t0_max_fraction)
            )
        views.append(
            MethodView(
                method=name,
                network=network if trains or hasattr(method, "backbone") else "-",
                backbones=", ".join(describe_backbone(b) for b in backbones) or "-",
                epochs=str(p.epochs) if trains else "- (zero-shot)",
                optimiser=f"{p.optimizer} lr {p.lr:g}" if trains else "-",
                schedule=schedule if trains else "-",
                augment=(p.augment or "none") if trains else "-",
                fields=", ".join(f"{k}={v}" for k, v in own.items()) or "-",
                differs=differs,
            )
        )
    return views


def print_method_views(console, plan) -> None:
    from rich.table import Table

    table = Table(title=f"what each method runs (profile {plan.profile.name}; bench/paper_settings.py)")
    columns = ("method", "network", "backbones", "epochs", "optimiser", "schedule", "augment", "paper fields")
    for column in columns:
        table.add_column(column)
    views = method_views(plan)
    for v in views:
        table.add_row(
            v.method, v.network, v.backbones, v.epochs, v.optimiser, v.schedule, v.augment, v.fields
        )
    console.print(table)
    for v in views:
        console.print(f"differs from the paper ({v.method}):")
        for line in v.differs or ["nothing listed"]:
            console.print(f"  - {line}", soft_wrap=True)
    for note in getattr(plan, "backbone_notes", []):
        console.print(f"not here yet: {note}", soft_wrap=True)


__all__ = ["MethodView", "method_views", "print_method_views"]
