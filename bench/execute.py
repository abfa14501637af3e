"""Executing one unit group: a (method, cell, seed) fitted once and attacked once per pending attack.

``execute_group(plan, group, cache)`` is a function of the plan and the group: it builds the cell, fits
the detector (or loads it from the detector cache), runs each attack and yields one ``UnitResult`` per
attack: its rows, its scores, the attack's validity warnings and, with the first result, the method's
per-cell artifacts. It writes nothing into the run folder (the store does, on the driver), so an executor
may run it in this process or on another machine.

What can go wrong inside a unit becomes rows, never a number made up: a method that cannot run the cell
gives ``status=na`` rows; scores with NaN or inf, or an exception, give ``status=error`` rows with the
reason, and the other groups go on. A GPU out-of-memory error during an attack halves the attack batch
and tries the evaluation set again; the batch that worked is reported with the unit.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import bench
from bench import checks as validity
from bench import frozen
from bench.attacks.base import Attack, attack_objective, detector_device
from bench.backbones.files import backbone_label
from bench.cache import DetectorCache
from bench.checks import Check
from bench.contracts import Cell, EvalSet, Method, RunContext, TrainTask
from bench.detector import Detector
from bench.digests import detector_digest
from bench.errors import NotApplicable
from bench.metrics import METRICS, auroc, detection_metrics, id_acc
from bench.plan import RunPlan, Unit, UnitGroup, detector_key
from bench.provenance import now
from bench.store import AGGREGATE_SUFFIX

Log = Callable[[str], None] | None


@dataclass
class UnitResult:
    """What one (method, cell, seed, attack) produced; the store writes it."""

    unit: Unit
    rows: list[dict]
    scores: dict[str, np.ndarray] | None = None  # "<set>__clean|attacked|is_outlier" -> array
    warnings: list[str] = field(default_factory=list)  # lines for manifest.json "warnings"
    artifacts: dict[str, bytes] = field(default_factory=dict)  # the group's artifacts (first unit only)
    checks: list[Check] = field(default_factory=list)  # validity checks of the unit (bench.checks)
    check_seconds: float = 0.0  # wall seconds this unit spent on its checks (manifest "check_seconds")
    attack_batch: int | None = None  # attack batch size after halving on out-of-memory; None: whole sets
    redone: bool = False  # a finished unit recomputed because its rows came from another detector

    @property
    def status(self) -> str:
        return self.rows[0]["status"] if self.rows else "ok"


def build_cell(plan: RunPlan, cell_id: str, seed: int) -> Cell:
    for cell in plan.protocol.cells(plan.dataset, plan.profile, seed, plan.device):
        if cell.cell_id == cell_id:
            return cell
    raise KeyError(f"no cell {cell_id!r} in protocol {plan.spec.protocol} for seed {seed}")


def execute_group(
    plan: RunPlan, group: UnitGroup, cache: DetectorCache, log: Log = None, cell: Cell | None = None
) -> Iterator[UnitResult]:
    """One UnitResult per attack of ``group``, in order (with the group's finished attacks when its
    detector has changed: ``units_to_run``). A failure gives error rows for the attacks not yet done (the
    reason is the exception's type and first line)."""
    todo = group.units()  # _execute widens it when finished attacks are to be recomputed
    done: set[tuple] = set()
    try:
        for result in _execute(plan, group, cache, log, cell, todo):
            done.add(result.unit.key)
            yield result
    except Exception as error:  # noqa: BLE001 - a failing unit group becomes error rows; the run goes on
        if log:
            log(f"{group.method} {group.cell} seed {group.seed} failed:\n{traceback.format_exc()}")
        reason = failure_reason(error)
        for unit in todo:
            if unit.key not in done:
                yield UnitResult(unit, error_rows(plan, unit, reason))


def failure_reason(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:300]


def failed_group(plan: RunPlan, group: UnitGroup, reason: str) -> Iterator[UnitResult]:
    """``status=error`` results for the pending attacks of ``group`` (it could not run at all)."""
    for unit in group.units():
        yield UnitResult(unit, error_rows(plan, unit, reason))


def _execute(
    plan: RunPlan, group: UnitGroup, cache: DetectorCache, log: Log, cell: Cell | None, todo: list[Unit]
) -> Iterator[UnitResult]:
    cell = cell if cell is not None else build_cell(plan, group.cell, group.seed)
    recovered_before = len(cache.recovered)
    detector, reason, fit_seconds = fit_detector(plan, group.method, cell, cache, log, finished_digest(group))
    digest = detector_digest(detector) if detector is not None else ""
    units, redo, mixed = units_to_run(plan, group, digest)
    todo[:] = units
    artifacts = {}
    if detector is not None:
        artifacts = collect_artifacts(plan, group, cell, cache, log, force=bool(redo))
    cache_warnings = cache.recovered[recovered_before:] + ([mixed] if mixed else [])
    if mixed and log:
        log(mixed)
    state = GroupState()
    if detector is not None:
        started = time.perf_counter()
        state.method_checks = method_checks(plan, group.method, cell, detector, cache, log)
        state.check_seconds += time.perf_counter() - started
    batch: int | None = None
    for index, unit in enumerate(units):
        extra = {"artifacts": artifacts, "warnings": list(cache_warnings)} if index == 0 else {}
        if detector is None:
            result = UnitResult(unit, na_rows(plan, unit, cell, reason))
        else:
            result, batch = attack_unit(plan, unit, cell, detector, fit_seconds, state, batch, digest)
        result.artifacts = extra.get("artifacts", {})
        result.warnings = extra.get("warnings", []) + result.warnings
        result.redone = unit.attack in redo
        yield result


@dataclass
class GroupState:
    """What one (method, cell, seed) computes once for all its attacks: the clean scores and the share of
    zero or non-finite input gradients per evaluation set, each attack's AUROC (for the masking check) and
    the method's own checks (RODEO's shortcut probe and keep rate)."""

    clean_scores: dict[str, np.ndarray] = field(default_factory=dict)
    zero_gradient: dict[str, float] = field(default_factory=dict)
    aurocs: dict[str, float] = field(default_factory=dict)
    method_checks: list[Check] = field(default_factory=list)
    check_seconds: float = 0.0  # spent on the checks so far
    reported_seconds: float = 0.0  # of which already handed to a unit's result

    def take_check_seconds(self) -> float:
        """The check seconds spent since the last call (the first unit carries the group's own)."""
        seconds = self.check_seconds - self.reported_seconds
        self.reported_seconds = self.check_seconds
        return seconds


def method_checks(
    plan: RunPlan, method_name: str, cell: Cell, detector: Detector, cache: DetectorCache, log: Log
) -> list[Check]:
    """The method's own validity checks of its detector, on the cell's test inliers (held out from its
    training): ``validity_checks(detector, task, inliers, ctx) -> {check name: value}`` (names of
    ``bench.checks.METHOD_CHECKS``, which holds their thresholds) where a method defines it
    (RODEO: the shortcut probe and the filter's keep rate; looked up by name, so that ``bench.contracts``,
    which every method's cache key covers, stays as it is). An error there is logged and gives none."""
    method = plan.methods[method_name]
    checks_of = getattr(method, "validity_checks", None)
    if checks_of is None:
        return []
    evalset = cell.evalsets[0]
    inliers = evalset.images[~evalset.is_outlier]
    ctx = RunContext(device=plan.device, cache=cache, log=log)
    try:
        found = checks_of(detector, method_task(plan, method_name, cell), inliers, ctx)
        return [validity.METHOD_CHECKS[name](value) for name, value in found.items()]
    except Exception:  # noqa: BLE001 - a check that fails must not cost the unit its numbers
        if log:
            log(f"{method_name} {cell.cell_id}: validity checks failed:\n{traceback.format_exc()}")
        return []


def clean_gradient_share(detector: Detector, images: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of ``images`` whose input gradient of the attack objective at the clean point is exactly zero
    or not finite (``bench.checks.zero_gradient``): one forward and backward pass per image."""
    if len(images) == 0:
        return 0.0
    device = detector_device(detector, images)
    dead = 0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).requires_grad_(True)
        with torch.enable_grad():
            objective = attack_objective(detector, x).float()
            if not objective.requires_grad:  # a score that does not depend on its input at all
                dead += len(x)
                continue
            (gradient,) = torch.autograd.grad(objective.sum(), x, allow_unused=True)
        if gradient is None:
            dead += len(x)
            continue
        dead += round(validity.zero_gradient_share(gradient.detach()) * len(x))
    return dead / len(images)


def finished_digest(group: UnitGroup) -> str:
    """The ``detector_digest`` of the group's finished rows when they name one detector, else ""."""
    digests = {digest for _, digest in group.finished if digest}
    return digests.pop() if len(digests) == 1 else ""


def units_to_run(plan: RunPlan, group: UnitGroup, digest: str) -> tuple[list[Unit], set[str], str]:
    """(the units to compute, the finished attacks among them, the manifest warning when there are any).
    The group's pending units, and, when the detector in hand is not the one behind the group's finished
    rows (another ``detector_digest``: trained again on another machine), those finished attacks too,
    so every row of a (method, cell, seed) comes from one detector. Rows written before the digest
    existed ("") cannot be checked and stay."""
    redo = {attack for attack, old in group.finished if old and digest and old != digest}
    if not redo:
        return group.units(), set(), ""
    olds = sorted({old for attack, old in group.finished if attack in redo})
    wanted = redo | set(group.attacks)
    units = [Unit(group.method, group.cell, group.seed, a) for a in plan.attacks if a in wanted]
    mixed = (
        f"{group.method} {group.cell} seed {group.seed}: the detector's weights (digest {digest}) are not "
        f"those behind its finished {', '.join(sorted(redo))} rows ({', '.join(olds)}; trained again, "
        "on another machine or with other library versions): those attacks were recomputed with it"
    )
    return units, redo, mixed


def fit_detector(
    plan: RunPlan,
    method_name: str,
    cell: Cell,
    cache: DetectorCache,
    log: Log = None,
    expected_digest: str = "",
) -> tuple[Detector | None, str, float]:
    """(detector or None, reason if not applicable, fit seconds). ``expected_digest``: the digest of the
    group's finished rows; a cache entry with other weights is refused and the detector fitted again."""
    method = plan.methods[method_name]
    if plan.spec.protocol not in method.protocols:
        return None, f"{method_name} does not support protocol {plan.spec.protocol}", 0.0
    if "oe" in method.requires and cell.task.oe is None:
        return None, f"{method_name} needs an auxiliary outlier source; dataset has none", 0.0
    task = method_task(plan, method_name, cell)
    entry = plan.frozen_entry(method_name, cell.cell_id, task.seed)
    if plan.spec.frozen_detectors is not None:
        found = frozen.load(entry, plan.device)
        if isinstance(found, str):
            return None, found, 0.0
        trained = found.meta.get("training", {}).get("train_seconds")
        return found, "", float(trained) if trained is not None else 0.0
    started = time.perf_counter()
    try:
        detector = load_or_fit(method_name, method, task, cache, plan.device, log, expected_digest)
    except NotApplicable as reason:
        if plan.spec.save_detectors is not None:
            frozen.save(entry, str(reason))
        return None, str(reason), 0.0
    if plan.spec.save_detectors is not None:
        frozen.save(entry, detector)
    elapsed = time.perf_counter() - started
    trained = detector.meta.get("training", {}).get("train_seconds")
    return detector, "", float(trained) if trained is not None else elapsed


def load_or_fit(
    method_name: str,
    method: Method,
    task: TrainTask,
    cache: DetectorCache,
    device: str,
    log: Log = None,
    expected_digest: str = "",
) -> Detector:
    """The detector of ``method`` on ``task``: from the cache (when its weights have ``expected_digest``,
    if given), or fitted on ``device`` and cached with its method, hyperparameters and cache key in
    ``meta`` (the one way a detector is made, for ``bench run`` and the studies alike; a failed save is a
    warning). ``NotApplicable`` from the fit passes through."""
    key = detector_key(method_name, method, task)
    detector = cache.load_detector(key, device, expected_digest)
    if detector is None:
        detector = method.fit(task, RunContext(device=device, cache=cache, log=log))
        detector.meta.update(
            {"method": method_name, "hyperparameters": method.hyperparameters(), "cache_key": key}
        )
        detector = detector.to(device).eval()
        cache.save_detector(key, detector)
    return detector


def method_task(plan: RunPlan, method_name: str, cell: Cell):
    """The cell's training task with the method's own profile (the paper profile's recipes) and, when that
    profile asks for another OE pool size, its own pool from the data set's OE source."""
    profile = plan.profile_for(method_name)
    if profile is cell.task.profile:
        return cell.task
    task = dataclasses.replace(cell.task, profile=profile)
    if profile.oe_pool_size != cell.task.profile.oe_pool_size and plan.dataset.oe_source is not None:
        task.oe = plan.dataset.oe_source(profile.oe_pool_size, task.seed)
    return task


def collect_artifacts(
    plan: RunPlan, group: UnitGroup, cell: Cell, cache: DetectorCache, log: Log, force: bool = False
) -> dict[str, bytes]:
    """The method's per-cell files (relative path -> bytes), written into a temporary folder and read
    back; empty when the run folder has them already (a resumed run; a rerun of stale units, or
    ``force`` for a group recomputed with another detector, makes them again) or the method writes none."""
    folder = plan.run_dir / "artifacts" / group.method / f"{cell.cell_id}-seed{group.seed}"
    if folder.exists() and not force and not any(unit in plan.stale for unit in group.units()):
        return {}
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as folder:
        staging = Path(folder)
        ctx = RunContext(device=plan.device, cache=cache, log=log)
        plan.methods[group.method].write_artifacts(method_task(plan, group.method, cell), ctx, staging)
        return {
            str(path.relative_to(staging)): path.read_bytes()
            for path in sorted(staging.rglob("*"))
            if path.is_file()
        }


def attack_unit(
    plan: RunPlan,
    unit: Unit,
    cell: Cell,
    detector: Detector,
    fit_seconds: float,
    state: GroupState,
    batch: int | None = None,
    digest: str = "",
) -> tuple[UnitResult, int | None]:
    """Run one attack on every evaluation set of the cell: (its result, the attack batch that worked)."""
    attack = plan.attack(unit.attack, unit.seed)
    started = time.perf_counter()
    done = attack_sets(unit.attack, attack, detector, cell.evalsets, plan.dataset.eps, state, batch)
    if done.problem:
        return UnitResult(unit, error_rows(plan, unit, done.problem), attack_batch=done.batch), done.batch
    attack_seconds = time.perf_counter() - started
    prefix = f"{unit.method} {unit.cell} seed {unit.seed} {unit.attack}: "
    warnings = [prefix + m for m in attack.warnings]
    warnings += [prefix + f"check {c.describe()}" for c in done.checks if c.tripped]
    rows = ok_rows(plan, unit, cell, attack, done.results, fit_seconds, attack_seconds, digest)
    for r in rows:
        r["warnings"] = validity.tripped_names(done.checks)
    result = UnitResult(unit, rows, done.arrays, warnings, attack_batch=done.batch, checks=done.checks)
    result.check_seconds = state.take_check_seconds()
    return result, done.batch


@dataclass
class Attacked:
    """One attack on a cell's evaluation sets: (set, metric values) per set, the score arrays, the unit's
    validity checks, the reason for error rows ("" when none) and the attack batch that worked."""

    results: list[tuple[EvalSet, dict]]
    arrays: dict[str, np.ndarray]
    checks: list[Check]
    problem: str = ""
    batch: int | None = None


def attack_sets(
    name: str,
    attack: Attack,
    detector: Detector,
    evalsets: list[EvalSet],
    eps: float,
    state: GroupState,
    batch: int | None = None,
) -> Attacked:
    """Attack every set with ``attack`` (registered as ``name``) and score it; the clean scores and the
    clean-point gradient check are computed once per group (``state``), the checks while the unit runs."""
    attack.reset_spent()
    results, arrays, saturated, above = [], {}, [], []
    clean_scores = state.clean_scores
    for evalset in evalsets:
        if evalset.name not in clean_scores:
            clean_scores[evalset.name] = detector.score(evalset.images).numpy()
            started = time.perf_counter()
            state.zero_gradient[evalset.name] = clean_gradient_share(detector, evalset.images)
            state.check_seconds += time.perf_counter() - started
        problem = non_finite(clean_scores[evalset.name], "clean", evalset)
        if problem:
            return Attacked(results, arrays, [], problem, batch)
    adversarial, batch = attack_all(attack, detector, evalsets, eps, batch)
    for evalset, x_adv in zip(evalsets, adversarial, strict=True):
        attacked = detector.score(x_adv).numpy()
        problem = non_finite(attacked, "attacked", evalset)
        if problem:
            return Attacked(results, arrays, [], problem, batch)
        arrays[f"{evalset.name}__clean"] = clean_scores[evalset.name]
        arrays[f"{evalset.name}__attacked"] = attacked
        arrays[f"{evalset.name}__is_outlier"] = evalset.is_outlier.numpy()
        values = detection_metrics(attacked, evalset.is_outlier.numpy())
        if detector.classifies and evalset.labels is not None:
            values["id_acc"] = id_accuracy(detector, x_adv, evalset)
        results.append((evalset, values))
        started = time.perf_counter()
        saturated.append(validity.saturation_share(attacked))
        above.append(values["auroc"] - auroc(clean_scores[evalset.name], evalset.is_outlier.numpy()))
        state.check_seconds += time.perf_counter() - started
    started = time.perf_counter()
    checks = unit_checks(name, attack, state, results, saturated, above)
    state.check_seconds += time.perf_counter() - started
    return Attacked(results, arrays, checks, "", batch)


def shared_inliers(evalsets: list[EvalSet]) -> int:
    """How many leading test inliers all ``evalsets`` share (ood: the same inliers against each OOD
    set), so that an attack perturbs them once; 0 when there is one set or they do not share them."""
    if len(evalsets) < 2:
        return 0
    first = evalsets[0]
    n = first.n_in
    for evalset in evalsets:
        flags = evalset.is_outlier
        if n == 0 or len(flags) <= n or flags[:n].any() or not flags[n:].all():
            return 0
        if not torch.equal(evalset.images[:n], first.images[:n]):
            return 0
    return n


def attack_all(
    attack: Attack, detector: Detector, evalsets: list[EvalSet], eps: float, batch: int | None
) -> tuple[list[torch.Tensor], int | None]:
    """The adversarial images of each set. Sets that share their inliers (:func:`shared_inliers`) are
    attacked as one set, the inliers once and every set's outliers; otherwise set by set."""
    n = shared_inliers(evalsets)
    if not n:
        adversarial = []
        for evalset in evalsets:
            x_adv, batch = perturb_in_batches(attack, detector, evalset, eps, batch)
            adversarial.append(x_adv)
        return adversarial, batch
    first = evalsets[0]
    labels = None
    if all(e.labels is not None for e in evalsets):
        labels = torch.cat([first.labels[:n], *(e.labels[n:] for e in evalsets)])
    union = EvalSet(
        name="+".join(e.name for e in evalsets),
        images=torch.cat([first.images[:n], *(e.images[n:] for e in evalsets)]),
        is_outlier=torch.cat([first.is_outlier[:n], *(e.is_outlier[n:] for e in evalsets)]),
        labels=labels,
    )
    x_union, batch = perturb_in_batches(attack, detector, union, eps, batch)
    adversarial, start = [], n
    for evalset in evalsets:
        end = start + len(evalset.images) - n
        adversarial.append(torch.cat([x_union[:n], x_union[start:end]]))
        start = end
    return adversarial, batch


def unit_checks(name: str, attack: Attack, state: GroupState, results, saturated, above) -> list[Check]:
    """The unit's validity checks (``bench.checks``), the worst over its evaluation sets: zero gradients at
    the clean point, saturation, attacked above clean, spent budget, masking (black-box attacks, against
    the gradient attacks run before them on this detector) and the method's own."""
    state.aurocs[name] = float(np.mean([values["auroc"] for _, values in results]))
    spent, planned = attack.spent_budget(), attack.budget()
    checks = [
        validity.zero_gradient(max(state.zero_gradient.values(), default=0.0)),
        validity.saturation(max(saturated, default=0.0)),
        validity.above_clean(max(above, default=0.0) if name != "clean" else None),
        validity.budget(
            validity.budget_ratio((spent.grad_evals, spent.queries), (planned.grad_evals, planned.queries)),
            name,
        ),
    ]
    if name in validity.BLACK_BOX_ATTACKS:
        compared = (*validity.GRADIENT_ATTACKS, name)
        masking = validity.masking({a: v for a, v in state.aurocs.items() if a in compared})
        if masking is not None:
            checks.append(masking)
    return checks + state.method_checks


def perturb_in_batches(
    attack: Attack, detector: Detector, evalset: EvalSet, eps: float, batch: int | None
) -> tuple[torch.Tensor, int | None]:
    """``attack.perturb`` on the whole set (``batch`` None) or in batches; on a GPU out-of-memory error
    the batch is halved and the set attacked again from the spending recorded before it."""
    images, is_outlier = evalset.images, evalset.is_outlier
    spent_before = copy.deepcopy(getattr(attack, "_spent", None))
    warnings_before = list(getattr(attack, "warnings", []))
    while True:
        size = batch or len(images)
        try:
            parts = [
                attack.perturb(detector, images[i : i + size], is_outlier[i : i + size], eps)
                for i in range(0, len(images), size)
            ]
            return (torch.cat(parts) if parts else images), batch
        except torch.cuda.OutOfMemoryError:
            if size <= 1:
                raise
            batch = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            attack._spent = copy.deepcopy(spent_before)  # the failed attempt's spending does not count
            attack.warnings = list(warnings_before)


def non_finite(scores: np.ndarray, which: str, evalset: EvalSet) -> str:
    """The reason for error rows when ``scores`` hold NaN or inf ("" when all are finite)."""
    nan, inf = int(np.isnan(scores).sum()), int(np.isinf(scores).sum())
    if nan == 0 and inf == 0:
        return ""
    return f"non-finite {which} scores on set {evalset.name}: {nan} NaN, {inf} inf of {len(scores)}"


def id_accuracy(detector: Detector, x_adv: torch.Tensor, evalset: EvalSet) -> float:
    inliers = ~evalset.is_outlier
    with torch.inference_mode():
        device = detector_device(detector, x_adv)  # a detector may have no parameters
        logits = detector.classify(x_adv[inliers].to(device))
    return id_acc(logits.argmax(dim=1).cpu().numpy(), evalset.labels[inliers].numpy())


# ---------------------------------------------------------------------------------------------------
# Rows


def unit_fields(
    plan: RunPlan, unit: Unit, attack: Attack, status: str, reason: str = "", digest: str = ""
) -> dict:
    """The columns shared by every row of one (method, cell, seed, attack) unit; ``digest`` is the
    detector's (``bench.digests.detector_digest``; "" on rows no detector produced)."""
    spent = status == "ok"
    budget = attack.spent_budget() if spent else attack.budget()
    return {
        "run_id": plan.run_id,
        "method": unit.method,
        "method_hash": plan.method_hashes[unit.method],
        "backbone": backbone_label(plan.methods[unit.method]),
        "warnings": "",  # the tripped validity checks (bench.checks), set on ok rows
        "protocol": plan.spec.protocol,
        "dataset": plan.spec.dataset,
        "seed": unit.seed,
        "attack": unit.attack,
        "attack_hash": plan.attack_hashes[unit.attack],
        "detector_digest": digest,
        "eps": plan.dataset.eps if attack.uses_eps else 0.0,
        "steps": budget.steps,
        "restarts": budget.restarts,
        "grad_evals": budget.grad_evals if spent else 0,
        "queries": budget.queries if spent else 0,
        "status": status,
        "reason": reason,
        "profile": plan.profile.name,
        "split_version": plan.protocol.split_version(plan.dataset),
        "bench_version": bench.__version__,
        "git_sha": plan.git_sha,
        "device": plan.device,
        "timestamp": now(),
    }


def na_rows(plan: RunPlan, unit: Unit, cell: Cell, reason: str) -> list[dict]:
    fields = unit_fields(plan, unit, plan.attack(unit.attack, unit.seed), "na", reason)
    n_in = cell.evalsets[0].n_in  # every evaluation set of a cell shares its inliers
    n_out = sum(e.n_out for e in cell.evalsets)
    return [row(fields, unit.cell, "auroc", "", n_in, n_out, 0.0, 0.0)]


def error_rows(plan: RunPlan, unit: Unit, reason: str) -> list[dict]:
    """One ``status=error`` auroc row with the reason and no value; sizes as the protocol plans them."""
    fields = unit_fields(plan, unit, plan.attack(unit.attack, unit.seed), "error", reason)
    try:
        sizes = {
            c: (n_in, n_out) for c, _, n_in, n_out in plan.protocol.cell_sizes(plan.dataset, plan.profile)
        }
    except Exception:  # noqa: BLE001 - the sizes are informative; the error row is what matters
        sizes = {}
    n_in, n_out = sizes.get(unit.cell, ("", ""))
    return [row(fields, unit.cell, "auroc", "", n_in, n_out if n_out != -1 else "", 0.0, 0.0)]


def ok_rows(
    plan: RunPlan, unit: Unit, cell: Cell, attack, results, fit_seconds, attack_seconds, digest: str = ""
) -> list[dict]:
    """One row per (evaluation set, metric); with several sets, also their mean as ``<cell>:mean``."""
    fields = unit_fields(plan, unit, attack, "ok", digest=digest)
    timing = (round(fit_seconds, 3), round(attack_seconds, 3))
    rows = []
    per_metric: dict[str, list[float]] = {}
    multi = len(cell.evalsets) > 1
    for evalset, values in results:
        cell_name = f"{cell.cell_id}:{evalset.name}" if multi else cell.cell_id
        for metric in METRICS:
            if metric in values:
                per_metric.setdefault(metric, []).append(values[metric])
                rows.append(
                    row(fields, cell_name, metric, values[metric], evalset.n_in, evalset.n_out, *timing)
                )
    if multi:
        n_in = results[0][0].n_in
        n_out = sum(evalset.n_out for evalset, _ in results)
        for metric, values in per_metric.items():
            mean_cell = cell.cell_id + AGGREGATE_SUFFIX
            rows.append(row(fields, mean_cell, metric, float(np.mean(values)), n_in, n_out, *timing))
    return rows


def row(fields: dict, cell: str, metric: str, value, n_in, n_out, fit_s: float, attack_s: float) -> dict:
    return {
        **fields,
        "cell": cell,
        "metric": metric,
        "value": value,
        "n_in": n_in,
        "n_out": n_out,
        "fit_seconds": fit_s,
        "attack_seconds": attack_s,
    }
