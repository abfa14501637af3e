"""Plan and execute a benchmark run: methods x protocol cells x seeds x attacks.

``plan_run`` validates everything and writes nothing (bad input raises BadInput). ``execute`` fits
each (method, cell, seed) once (or loads it from the detector cache), runs every attack that has no
rows yet, and appends each finished (method, cell, seed, attack) unit to results.csv atomically, so the
same command resumes a killed run and redoes nothing that finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench
from bench.attacks.base import Attack, detector_device
from bench.cache import DetectorCache, payload_hash
from bench.code_version import method_dependencies, source_version
from bench.config import Profile, get_profile, parse_overrides
from bench.contracts import Cell, EvalSet, Method, RunContext
from bench.datasets.oe_sources import check_oe_source, list_oe_sources, load_oe_source
from bench.detector import Detector
from bench.determinism import configure as configure_determinism
from bench.errors import BadInput, NotApplicable
from bench.metrics import METRICS, detection_metrics, id_acc
from bench.registry import ATTACKS, DATASETS, METHODS, PROTOCOLS
from bench.store import AGGREGATE_SUFFIX, ResultStore

PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "pandas", "safetensors", "bench")


@dataclass
class RunSpec:
    """What the user asked for (CLI arguments)."""

    methods: list[str]
    protocol: str
    dataset: str = "digits"
    attacks: list[str] | None = None  # None: every registered attack
    profile: str = "quick"
    seeds: list[int] = field(default_factory=lambda: [0])
    out: Path | None = None
    device: str = "auto"
    settings: list[str] = field(default_factory=list)  # "method.field=value" / "attack.field=value"
    oe: str | None = None  # auxiliary-outlier source (bench.datasets.oe_sources); None: the dataset's default
    command: str = ""
    rerun_stale: bool = False  # recompute the finished units whose code has changed since (else: refuse)


@dataclass
class RunPlan:
    """A validated run: resolved registries, configs and the run directory."""

    spec: RunSpec
    run_id: str
    run_dir: Path
    profile: Profile
    device: str
    methods: dict[str, Method]
    attack_settings: dict[str, dict[str, Any]]
    attacks: list[str]
    dataset: Any = None  # the ImageDataset (arrays only; no cell, OE pool or OOD set is built by planning)
    stale: list[Unit] = field(default_factory=list)  # finished units whose method or attack code changed

    def attack(self, name: str, seed: int) -> Attack:
        return ATTACKS.get(name).from_profile(self.profile, seed=seed, **self.attack_settings[name])

    def attack_config(self, name: str) -> dict[str, Any]:
        """Every field of attack ``name`` as this run resolves it (profile budget + --set), seed aside."""
        config = dataclasses.asdict(self.attack(name, 0))
        config.pop("seed", None)
        return config

    def config(self) -> dict[str, Any]:
        return {
            "methods": {name: method.hyperparameters() for name, method in self.methods.items()},
            "protocol": self.spec.protocol,
            "dataset": self.spec.dataset,
            "attacks": {name: self.attack_settings[name] for name in self.attacks},
            "profile": self.profile.name,
            "seeds": self.spec.seeds,
            "settings": sorted(self.spec.settings),
            "oe": self.spec.oe or "dataset default",
        }


def resolve_device(device: str) -> str:
    if device not in {"auto", "cpu", "cuda"}:
        raise BadInput(f"unknown device {device!r}; accepted: auto, cpu, cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but no CUDA device is available; accepted here: auto, cpu")
    return device


def default_run_id(spec: RunSpec, attacks: list[str]) -> str:
    """A readable name of the grid, so the same command resumes the same run."""
    seeds = "-".join(str(s) for s in spec.seeds)
    name = (
        f"{spec.dataset}-{spec.protocol}-{spec.profile}-{'+'.join(spec.methods)}-{'+'.join(attacks)}-s{seeds}"
    )
    if spec.oe:
        name += f"-oe_{spec.oe}"
    if spec.settings:
        name += "-set" + hashlib.sha256("\n".join(sorted(spec.settings)).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def with_oe_source(dataset, oe: str | None):
    """``dataset`` with its auxiliary outliers taken from the OE source ``oe`` (None: unchanged)."""
    if oe is None:
        return dataset
    return dataclasses.replace(
        dataset,
        oe_source=functools.partial(load_oe_source, oe, shape=dataset.image_shape),
        notes={**dataset.notes, "oe": f"{oe} (chosen with --oe)"},
    )


def plan_run(spec: RunSpec) -> RunPlan:
    """Validate a RunSpec; raises BadInput naming the bad value. Writes nothing.

    Besides names and values it checks every file and folder the run will read (the dataset's converted
    files, the OE source, each backbone) and compares the finished units of an existing run folder with
    the current code, so a run that would fail or mix code versions fails here, before any write, and a
    dry run reports the same error."""
    if not spec.methods:
        raise BadInput(f"no method given; accepted: {', '.join(METHODS.names())}")
    for name in spec.methods:
        METHODS.get(name)
    if len(set(spec.methods)) != len(spec.methods):
        raise BadInput(f"a method is named twice in --methods {' '.join(spec.methods)}")
    PROTOCOLS.get(spec.protocol)
    DATASETS.get(spec.dataset)
    if spec.oe is not None and spec.oe not in list_oe_sources():
        raise BadInput(f"unknown OE source {spec.oe!r}; accepted: {', '.join(list_oe_sources())}")
    profile = get_profile(spec.profile)
    attacks = list(spec.attacks) if spec.attacks else ATTACKS.names()
    for name in attacks:
        ATTACKS.get(name)
    if len(set(attacks)) != len(attacks):
        raise BadInput(f"an attack is named twice in --attacks {' '.join(attacks)}")
    if not spec.seeds:
        raise BadInput("no seed given; --seeds takes one or more integers >= 0")
    for seed in spec.seeds:
        if seed < 0:
            raise BadInput(f"bad seed {seed}; seeds are integers >= 0")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise BadInput(
            f"a seed is named twice in --seeds {' '.join(map(str, spec.seeds))}; accepted: distinct seeds"
        )
    device = resolve_device(spec.device)

    types = {name: METHODS.get(name).field_types() for name in spec.methods}
    types.update({name: ATTACKS.get(name).field_types() for name in attacks})
    overrides = parse_overrides(spec.settings, types)
    methods = {name: _build(METHODS.get(name), overrides[name], name) for name in spec.methods}
    attack_settings = {name: overrides[name] for name in attacks}
    for name in attacks:  # instantiate once so bad budgets (e.g. steps=0) fail before any work
        ATTACKS.get(name).from_profile(profile, seed=0, **attack_settings[name])

    run_id = default_run_id(spec, attacks)
    run_dir = Path(spec.out) if spec.out is not None else Path("results") / "runs" / run_id
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(
            f"--out {str(run_dir)!r} is an existing file; accepted: a new or existing run directory"
        )
    plan = RunPlan(
        spec,
        run_dir.name if spec.out else run_id,
        run_dir,
        profile,
        device,
        methods,
        attack_settings,
        attacks,
    )
    previous = ResultStore(run_dir).read_manifest() if run_dir.is_dir() else None
    if previous is not None and previous.get("config") != json.loads(json.dumps(plan.config())):
        raise BadInput(
            f"--out {str(run_dir)!r} holds a run with a different configuration; "
            "accepted: the same command that started it, or a new --out"
        )
    plan.dataset = prepare_dataset(spec)
    for name, method in methods.items():
        check_method_files(name, method)
    plan.stale = stale_units(plan)
    if plan.stale and not spec.rerun_stale:
        raise BadInput(
            f"--out {str(run_dir)!r} has {len(plan.stale)} finished unit(s) computed by other code "
            f"({describe_units(plan.stale)}); accepted: --rerun-stale to recompute exactly those units, "
            "or a new --out"
        )
    return plan


def prepare_dataset(spec: RunSpec):
    """The dataset with its OE source, after checking (cheaply) that their files exist."""
    builder = DATASETS.get(spec.dataset)
    preflight = getattr(builder, "preflight", None)
    if preflight is not None:
        preflight()
    dataset = with_oe_source(builder(), spec.oe)
    name = spec.oe or default_oe_name(dataset)
    if name is not None:
        check_oe_source(name)
    return dataset


def default_oe_name(dataset) -> str | None:
    """The registered OE source behind ``dataset.oe_source`` (None when it is not one)."""
    source = dataset.oe_source
    if isinstance(source, functools.partial) and source.func is load_oe_source and source.args:
        return str(source.args[0])
    return None


def check_method_files(name: str, method: Method) -> None:
    """Every backbone a method's ``*_backbone`` fields name exists (BadInput with the fix otherwise)."""
    for f in dataclasses.fields(method):
        if f.name.endswith("_backbone"):
            from bench.backbones import check_backbone

            try:
                check_backbone(getattr(method, f.name))
            except BadInput as error:
                raise BadInput(f"{name}.{f.name}: {error}") from None


def describe_units(units: list[Unit], limit: int = 4) -> str:
    shown = ", ".join(f"{u.method} {u.cell} seed {u.seed} {u.attack}" for u in units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")


def attack_hash(plan: RunPlan, name: str) -> str:
    """Hash of (attack, its resolved fields, the source of its module's bench import closure)."""
    from bench.code_version import source_version

    cls = ATTACKS.get(name)
    return payload_hash(
        {"attack": name, "config": plan.attack_config(name), "code": source_version(cls.__module__)}, 12
    )


def stale_units(plan: RunPlan) -> list[Unit]:
    """Finished units of the run folder whose rows carry another method or attack hash than the current
    code's (rows written before ``attack_hash`` existed count as stale)."""
    store = ResultStore(plan.run_dir)
    if not store.results_path.is_file():
        return []
    current_method = {name: method_hash(plan, name) for name in plan.methods}
    current_attack = {name: attack_hash(plan, name) for name in plan.attacks}
    stale = []
    for (method, cell, seed, attack), hashes in sorted(store.unit_hashes().items()):
        if method not in current_method or attack not in current_attack:
            continue
        if hashes != {(current_method[method], current_attack[attack])}:
            stale.append(Unit(method, cell, seed, attack))
    return stale


def _build(cls, settings: dict[str, Any], name: str):
    try:
        return cls(**settings)
    except BadInput:
        raise
    except (TypeError, ValueError) as error:
        raise BadInput(f"bad --set for {name}: {error}") from None


# ---------------------------------------------------------------------------------------------------
# Provenance


def git_sha() -> str:
    """The commit of the bench source tree (+ "-dirty" with uncommitted changes), or "unknown"."""
    source = Path(bench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# Execution


@dataclass
class Unit:
    method: str
    cell: str
    seed: int
    attack: str


def expected_units(plan: RunPlan, dataset, protocol) -> list[Unit]:
    return [
        Unit(method, cell, seed, attack)
        for seed in plan.spec.seeds
        for cell in protocol.cell_ids(dataset, plan.profile, seed)
        for method in plan.methods
        for attack in plan.attacks
    ]


def method_code_version(method_name: str) -> str:
    """Source hash of the method's module and every bench module it imports (bench.code_version)."""
    return source_version(METHODS.get(method_name).__module__)


def detector_key(method_name: str, method: Method, task) -> str:
    """Cache key of a trained detector: method, hyperparameters, task content, the source of the method's
    import closure and the digests of the weight and data files it loads."""
    dependencies = method_dependencies(method_name, method)
    payload = {
        "method": method_name,
        "hyperparameters": method.hyperparameters(),
        "task": task.fingerprint(),
        "code": dependencies["code"],
        "files": dependencies["files"],
    }
    return payload_hash(payload)


def method_hash(plan: RunPlan, name: str) -> str:
    """Hash of (method, hyperparameters, code of its import closure, its data files' digests)."""
    method = plan.methods[name]
    dependencies = method_dependencies(name, method)
    payload = {"method": name, "hyperparameters": method.hyperparameters()}
    return payload_hash({**payload, "code": dependencies["code"], "files": dependencies["files"]}, 12)


class Runner:
    def __init__(
        self,
        plan: RunPlan,
        cache: DetectorCache | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.plan = plan
        self.store = ResultStore(plan.run_dir)
        self.cache = cache if cache is not None else DetectorCache()
        self.progress = progress
        self.log = log
        self.git_sha = git_sha()
        self.dataset = None
        self.protocol = PROTOCOLS.get(plan.spec.protocol)()

    def pending_units(self) -> tuple[list[Unit], list[Unit]]:
        """(all expected units, those without rows yet or stale and to be recomputed)."""
        self.dataset = self.plan.dataset if self.plan.dataset is not None else prepare_dataset(self.plan.spec)
        units = expected_units(self.plan, self.dataset, self.protocol)
        done = self.store.finished_units()
        stale = {(u.method, u.cell, u.seed, u.attack) for u in self.plan.stale}
        key = lambda u: (u.method, u.cell, u.seed, u.attack)  # noqa: E731
        return units, [u for u in units if key(u) not in done or key(u) in stale]

    def run(self) -> dict[str, Any]:
        plan = self.plan
        configure_determinism(plan.profile, plan.device)  # ci profile: threads, deterministic kernels
        units, pending = self.pending_units()
        manifest = self.manifest = self._start_manifest(len(units), len(pending))
        completed = 0
        if self.progress:
            self.progress("", completed, len(pending))
        by_cell: dict[tuple[int, str], list[Unit]] = {}
        for unit in pending:
            by_cell.setdefault((unit.seed, unit.cell), []).append(unit)
        for seed in plan.spec.seeds:
            wanted = {cell for (s, cell) in by_cell if s == seed}
            if not wanted:
                continue
            for cell in self.protocol.cells(self.dataset, plan.profile, seed, plan.device):
                if cell.cell_id not in wanted:
                    continue
                for method_name in plan.methods:
                    todo = [u.attack for u in by_cell[(seed, cell.cell_id)] if u.method == method_name]
                    if not todo:
                        continue
                    for _attack in self._run_method_cell(method_name, cell, seed, todo):
                        completed += 1
                        if self.progress:
                            self.progress(
                                f"{method_name} {cell.cell_id} seed {seed}", completed, len(pending)
                            )
        manifest["finished"] = now()
        manifest["invocations"][-1]["finished"] = manifest["finished"]
        self.store.write_manifest(manifest)
        return manifest

    def _start_manifest(self, n_units: int, n_pending: int) -> dict[str, Any]:
        plan = self.plan
        manifest = self.store.read_manifest() or {
            "run_id": plan.run_id,
            "command": plan.spec.command,
            "config": plan.config(),
            "profile": {k: v for k, v in plan.profile.__dict__.items()},
            "dataset": {
                "name": self.dataset.name,
                "origin": self.dataset.origin,
                "split_version": self.protocol.split_version(self.dataset),
                "eps": self.dataset.eps,
                "notes": self.dataset.notes,
            },
            "versions": package_versions(),
            "git_sha": self.git_sha,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "device": plan.device,
            "started": now(),
            "finished": None,
            "invocations": [],
            "warnings": [],
        }
        manifest["finished"] = None
        # the attacks as run (every field, e.g. a3's search_fraction) and the code hashes of this
        # invocation; rows carry the same method_hash / attack_hash
        manifest["attacks"] = {name: plan.attack_config(name) for name in plan.attacks}
        manifest["invocations"].append(
            {
                "command": plan.spec.command or " ".join(sys.argv),
                "started": now(),
                "finished": None,
                "units_total": n_units,
                "units_pending": n_pending,
                "units_rerun_stale": len(plan.stale),
                "git_sha": self.git_sha,
                "method_hashes": {name: method_hash(plan, name) for name in plan.methods},
                "attack_hashes": {name: attack_hash(plan, name) for name in plan.attacks},
            }
        )
        self.store.write_manifest(manifest)
        return manifest

    # -------------------------------------------------------------------------------------------
    def _fit(self, method_name: str, cell: Cell) -> tuple[Detector | None, str, float]:
        """(detector or None, reason if not applicable, fit seconds)."""
        method = self.plan.methods[method_name]
        if self.plan.spec.protocol not in method.protocols:
            return None, f"{method_name} does not support protocol {self.plan.spec.protocol}", 0.0
        if "oe" in method.requires and cell.task.oe is None:
            return None, f"{method_name} needs an auxiliary outlier source; dataset has none", 0.0
        key = detector_key(method_name, method, cell.task)
        started = time.perf_counter()
        detector = self.cache.load_detector(key, self.plan.device)
        if detector is None:
            ctx = RunContext(device=self.plan.device, cache=self.cache, log=self.log)
            try:
                detector = method.fit(cell.task, ctx)
            except NotApplicable as reason:
                return None, str(reason), 0.0
            detector.meta.update(
                {"method": method_name, "hyperparameters": method.hyperparameters(), "cache_key": key}
            )
            detector = detector.to(self.plan.device).eval()
            self.cache.save_detector(key, detector)
        elapsed = time.perf_counter() - started
        trained = detector.meta.get("training", {}).get("train_seconds")
        return detector, "", float(trained) if trained is not None else elapsed

    def _write_artifacts(self, method_name: str, cell: Cell, seed: int) -> None:
        """The method's per-cell files under ``artifacts/<method>/<cell>-seed<seed>/``, written once into
        a temporary folder and renamed into place."""
        target = self.plan.run_dir / "artifacts" / method_name / f"{cell.cell_id}-seed{seed}"
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            ctx = RunContext(device=self.plan.device, cache=self.cache, log=self.log)
            self.plan.methods[method_name].write_artifacts(cell.task, ctx, staging)
            if any(staging.iterdir()):
                staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _run_method_cell(self, method_name: str, cell: Cell, seed: int, attacks: list[str]):
        """Fit once, then run each attack; yields after each unit is stored."""
        detector, reason, fit_seconds = self._fit(method_name, cell)
        if detector is not None:
            self._write_artifacts(method_name, cell, seed)
        clean_scores: dict[str, np.ndarray] = {}
        for attack_name in attacks:
            unit = (method_name, cell.cell_id, seed, attack_name)
            if detector is None:
                self.store.replace_unit_rows(
                    unit, self._na_rows(method_name, cell, seed, attack_name, reason)
                )
                yield attack_name
                continue
            attack = self.plan.attack(attack_name, seed)
            attack.reset_spent()
            rows, arrays = [], {}
            started = time.perf_counter()
            for evalset in cell.evalsets:
                if evalset.name not in clean_scores:
                    clean_scores[evalset.name] = detector.score(evalset.images).numpy()
                x_adv = attack.perturb(detector, evalset.images, evalset.is_outlier, self.dataset.eps)
                attacked = detector.score(x_adv).numpy()
                arrays[f"{evalset.name}__clean"] = clean_scores[evalset.name]
                arrays[f"{evalset.name}__attacked"] = attacked
                arrays[f"{evalset.name}__is_outlier"] = evalset.is_outlier.numpy()
                values = detection_metrics(attacked, evalset.is_outlier.numpy())
                if detector.classifies and evalset.labels is not None:
                    values["id_acc"] = self._id_accuracy(detector, x_adv, evalset)
                rows.append((evalset, values))
            attack_seconds = time.perf_counter() - started
            self._note_warnings(method_name, cell, seed, attack)
            self.store.save_scores(method_name, cell.cell_id, seed, attack_name, arrays)
            self.store.replace_unit_rows(
                unit, self._ok_rows(method_name, cell, seed, attack, rows, fit_seconds, attack_seconds)
            )
            yield attack_name

    def _note_warnings(self, method_name: str, cell: Cell, seed: int, attack: Attack) -> None:
        """Record the attack's validity warnings (e.g. zero gradients) in the manifest."""
        if not attack.warnings:
            return
        for message in attack.warnings:
            line = f"{method_name} {cell.cell_id} seed {seed} {attack.registry_name}: {message}"
            if line not in self.manifest["warnings"]:
                self.manifest["warnings"].append(line)
        self.store.write_manifest(self.manifest)

    @staticmethod
    def _id_accuracy(detector: Detector, x_adv: torch.Tensor, evalset: EvalSet) -> float:
        inliers = ~evalset.is_outlier
        with torch.inference_mode():
            device = detector_device(detector, x_adv)  # a detector may have no parameters
            logits = detector.classify(x_adv[inliers].to(device))
        return id_acc(logits.argmax(dim=1).cpu().numpy(), evalset.labels[inliers].numpy())

    def _unit_fields(
        self, method_name: str, seed: int, attack: Attack, status: str, reason: str = ""
    ) -> dict:
        """The columns shared by every row of one (method, cell, seed, attack) unit."""
        budget = attack.spent_budget() if status == "ok" else attack.budget()
        spent = status == "ok"
        return {
            "run_id": self.plan.run_id,
            "method": method_name,
            "method_hash": method_hash(self.plan, method_name),
            "protocol": self.plan.spec.protocol,
            "dataset": self.plan.spec.dataset,
            "seed": seed,
            "attack": attack.registry_name,
            "attack_hash": attack_hash(self.plan, attack.registry_name),
            "eps": self.dataset.eps if attack.uses_eps else 0.0,
            "steps": budget.steps,
            "restarts": budget.restarts,
            "grad_evals": budget.grad_evals if spent else 0,
            "queries": budget.queries if spent else 0,
            "status": status,
            "reason": reason,
            "profile": self.plan.profile.name,
            "split_version": self.protocol.split_version(self.dataset),
            "bench_version": bench.__version__,
            "git_sha": self.git_sha,
            "device": self.plan.device,
            "timestamp": now(),
        }

    def _na_rows(self, method_name: str, cell: Cell, seed: int, attack_name: str, reason: str) -> list[dict]:
        unit = self._unit_fields(method_name, seed, self.plan.attack(attack_name, seed), "na", reason)
        n_in = cell.evalsets[0].n_in  # every evaluation set of a cell shares its inliers
        n_out = sum(e.n_out for e in cell.evalsets)
        return [_row(unit, cell.cell_id, "auroc", "", n_in, n_out, 0.0, 0.0)]

    def _ok_rows(
        self, method_name, cell: Cell, seed, attack, results, fit_seconds, attack_seconds
    ) -> list[dict]:
        """One row per (evaluation set, metric); with several sets, also their mean as ``<cell>:mean``."""
        unit = self._unit_fields(method_name, seed, attack, "ok")
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
                        _row(unit, cell_name, metric, values[metric], evalset.n_in, evalset.n_out, *timing)
                    )
        if multi:
            n_in = results[0][0].n_in
            n_out = sum(evalset.n_out for evalset, _ in results)
            for metric, values in per_metric.items():
                mean_cell = cell.cell_id + AGGREGATE_SUFFIX
                rows.append(_row(unit, mean_cell, metric, float(np.mean(values)), n_in, n_out, *timing))
        return rows


def _row(
    unit: dict, cell: str, metric: str, value, n_in: int, n_out: int, fit_s: float, attack_s: float
) -> dict:
    return {
        **unit,
        "cell": cell,
        "metric": metric,
        "value": value,
        "n_in": n_in,
        "n_out": n_out,
        "fit_seconds": fit_s,
        "attack_seconds": attack_s,
    }
