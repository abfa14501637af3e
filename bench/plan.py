"""Planning a run: validate what the user asked for and resolve it into a RunPlan. Writes nothing.

``plan_run`` checks every name, value and file the run will read, the output folder (writable, with free
space, not holding another configuration) and the finished units of an existing run folder against the
current code, so a run that would fail or mix code versions fails here, before any write; a dry run
calls it too and reports the same errors. The plan also carries what every unit's rows share (the
method and attack hashes, the git sha), so executing a unit is a function of the plan and the unit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import frozen
from bench.attacks.base import Attack
from bench.backbones.paper import is_paper_backbone
from bench.cache import default_cache_dir, payload_hash
from bench.code_version import method_dependencies, source_version
from bench.config import Profile, for_dataset, get_profile, parse_overrides
from bench.contracts import Method
from bench.datasets.oe_sources import check_oe_source, list_oe_sources, load_oe_source
from bench.errors import BadInput
from bench.paper_settings import method_defaults, method_profile
from bench.provenance import git_sha
from bench.registry import ATTACKS, DATASETS, METHODS, PROTOCOLS
from bench.store import ResultStore

EXECUTORS = ("local", "ray")
MIN_FREE_BYTES = 64 * 2**20  # an output folder with less free space is refused before any training


@dataclass
class ExecutorSettings:
    """``--set executor.FIELD=VALUE``: how the ray executor asks for resources (ignored by local)."""

    cpus_per_task: float = 1.0  # CPUs a unit-group task asks for (and its torch threads)
    gpus_per_task: float = -1.0  # -1: one GPU when the cluster has GPUs, none otherwise
    local_cpus: int = 0  # CPUs of a Ray instance started here (no --address); 0: all of this machine

    def __post_init__(self):
        if not self.cpus_per_task > 0 or self.cpus_per_task == float("inf"):
            raise BadInput(f"bad --set executor.cpus_per_task={self.cpus_per_task}; accepted: a number > 0")
        if self.gpus_per_task != -1.0 and not 0 <= self.gpus_per_task < float("inf"):
            raise BadInput(
                f"bad --set executor.gpus_per_task={self.gpus_per_task}; accepted: -1 (auto) or a number >= 0"
            )
        if self.local_cpus < 0:
            raise BadInput(f"bad --set executor.local_cpus={self.local_cpus}; accepted: an integer >= 0")

    @classmethod
    def field_types(cls) -> dict[str, type]:
        return typing.get_type_hints(cls)


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
    executor: str = "local"  # "local" or "ray" (bench.executors); not part of the run's configuration
    address: str | None = None  # ray: "auto" or HOST:PORT of a running cluster; None: start one here
    retries: int = 2  # ray: times a unit group whose worker died is retried before it becomes error rows
    dry_run: bool = False  # a data set not yet fetched is planned from its declared counts (if it has them)
    # Compute only these cells of the grid (None: all). A selection, not part of the run's configuration:
    # the same command without --cells later computes the rest into the same --out.
    cells: list[str] | None = None
    # Evaluate the detectors saved in this folder instead of fitting any (bench.frozen); part of the run's
    # configuration. ``save_detectors`` also writes every detector of the run there (not part of it).
    frozen_detectors: Path | None = None
    save_detectors: Path | None = None

    def run_settings(self) -> list[str]:
        """The --set values that define the run (the executor's do not: a run resumes on any executor)."""
        return [s for s in self.settings if not s.strip().startswith("executor.")]


@dataclass(frozen=True)
class Unit:
    """One (method, cell, seed, attack): the smallest piece of a run that gets rows."""

    method: str
    cell: str
    seed: int
    attack: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.method, self.cell, self.seed, self.attack)


@dataclass(frozen=True)
class UnitGroup:
    """The pending units of one (method, cell, seed): fitted once, then attacked once per attack.
    ``finished`` holds the group's attacks that have rows already, with the ``detector_digest`` those rows
    carry: a detector with another digest (trained again on another machine, or by other library
    versions) recomputes them too, so a group's rows never come from two detectors."""

    method: str
    cell: str
    seed: int
    attacks: tuple[str, ...]
    finished: tuple[tuple[str, str], ...] = ()  # (attack, detector_digest) of its rows

    def units(self) -> list[Unit]:
        return [Unit(self.method, self.cell, self.seed, attack) for attack in self.attacks]


@dataclass
class RunPlan:
    """A validated run: resolved registries, configs, the run directory and what every row shares."""

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
    method_hashes: dict[str, str] = field(default_factory=dict)
    attack_hashes: dict[str, str] = field(default_factory=dict)
    git_sha: str = "unknown"
    executor_settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    # the profile each method trains with: on ``paper`` its paper's recipe (bench.paper_settings), else
    # the run's profile; filled once the data set (its image size) is known
    method_profiles: dict[str, Profile] = field(default_factory=dict)
    backbone_notes: list[str] = field(default_factory=list)  # a dry run's missing paper backbones

    def profile_for(self, method_name: str) -> Profile:
        return self.method_profiles.get(method_name, self.profile)

    def attack(self, name: str, seed: int) -> Attack:
        return ATTACKS.get(name).from_profile(self.profile, seed=seed, **self.attack_settings[name])

    def attack_config(self, name: str) -> dict[str, Any]:
        """Every field of attack ``name`` as this run resolves it (profile budget + --set), seed aside."""
        config = dataclasses.asdict(self.attack(name, 0))
        config.pop("seed", None)
        return config

    @property
    def protocol(self):
        return PROTOCOLS.get(self.spec.protocol)()

    def config(self) -> dict[str, Any]:
        return {
            "methods": {name: method.hyperparameters() for name, method in self.methods.items()},
            "protocol": self.spec.protocol,
            "dataset": self.spec.dataset,
            "attacks": {name: self.attack_settings[name] for name in self.attacks},
            "profile": self.profile.name,
            "seeds": self.spec.seeds,
            "settings": sorted(self.spec.run_settings()),
            "oe": self.spec.oe or "dataset default",
            # only when given, so the runs made before the option resume as they were
            **({"frozen_detectors": str(self.spec.frozen_detectors)} if self.spec.frozen_detectors else {}),
        }

    def frozen_entry(self, method: str, cell: str, seed: int) -> Path | None:
        """Where ``--frozen-detectors`` / ``--save-detectors`` keep this unit group's detector (None
        without either)."""
        root = self.spec.frozen_detectors or self.spec.save_detectors
        if root is None:
            return None
        return frozen.entry_dir(root, self.spec.dataset, self.spec.protocol, method, cell, seed)


def command_view(config: dict[str, Any] | None) -> Any:
    """What a resumed command must repeat: ``config`` with the methods' resolved hyperparameters reduced to
    the method names. The ``--set`` strings stay, so another setting is refused; a new or changed default
    in the code is a code change, which ``method_hash`` turns into stale units (``--rerun-stale``)."""
    if not isinstance(config, dict):
        return config
    view = json.loads(json.dumps(config))
    if isinstance(view.get("methods"), dict):
        view["methods"] = sorted(view["methods"])
    return view


def resolve_device(device: str) -> str:
    if device not in {"auto", "cpu", "cuda"}:
        raise BadInput(f"unknown device {device!r}; accepted: auto, cpu, cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but no CUDA device is available; accepted here: auto, cpu")
    return device


def default_run_id(spec: RunSpec, attacks: list[str]) -> str:
    """A readable name of the grid, so the same command resumes the same run (on any executor)."""
    seeds = "-".join(str(s) for s in spec.seeds)
    name = (
        f"{spec.dataset}-{spec.protocol}-{spec.profile}-{'+'.join(spec.methods)}-{'+'.join(attacks)}-s{seeds}"
    )
    if spec.oe:
        name += f"-oe_{spec.oe}"
    settings = spec.run_settings()
    if settings:
        name += "-set" + hashlib.sha256("\n".join(sorted(settings)).encode()).hexdigest()[:8]
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


def check_executor(spec: RunSpec) -> None:
    """The executor name, its options, and (for ray) that the ray package is installed."""
    if spec.executor not in EXECUTORS:
        raise BadInput(f"unknown executor {spec.executor!r}; accepted: {', '.join(EXECUTORS)}")
    if not isinstance(spec.retries, int) or spec.retries < 0:
        raise BadInput(f"bad --retries {spec.retries!r}; accepted: an integer >= 0")
    if spec.executor == "local" and spec.address is not None:
        raise BadInput(
            f"--address {spec.address!r} needs --executor ray; accepted: --executor ray --address …"
        )
    if spec.address is not None and not re.fullmatch(
        r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", spec.address
    ):
        raise BadInput(f"bad --address {spec.address!r}; accepted: auto or HOST:PORT")
    if spec.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise BadInput(
            "--executor ray needs the ray package, which is not installed; "
            "accepted: pip install -e '.[ray]' (or pip install 'ray[default]'), or --executor local"
        )


def check_output_folder(run_dir: Path, min_free: int = MIN_FREE_BYTES, option: str = "--out") -> None:
    """The run folder (or its nearest existing parent) is a writable folder with ``min_free`` bytes free.
    Probes with a temporary file that it removes at once, so nothing is left behind. ``option`` names the
    folder in the messages (``--out``, ``BENCH_CACHE``)."""
    name = f"{option} {str(run_dir)!r}"
    longest = max((len(part.encode()) for part in run_dir.parts), default=0)
    if longest > 255:
        raise BadInput(
            f"{option} {str(run_dir)[:80]!r}...: a folder name of {longest} bytes; accepted: names of at "
            "most 255 bytes"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(f"{name} is an existing file; accepted: a new or existing folder")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{name} lies under the file {str(parent)!r}; accepted: a folder path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bench-write-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BadInput(f"{name} is not writable ({parent}: {reason}); accepted: a writable folder") from None
    free = shutil.disk_usage(parent).free
    if free < min_free:
        raise BadInput(
            f"{name} has {free / 2**20:.0f} MiB free on its disk; accepted: a folder with at least "
            f"{min_free / 2**20:.0f} MiB free"
        )


def check_run_folder(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``run_dir`` (None for a new or empty folder). A folder that is not a
    run (files, but no manifest.json) or whose manifest is not a JSON object is refused."""
    if not run_dir.is_dir():
        return None
    try:
        previous = ResultStore(run_dir).read_manifest()
    except (ValueError, OSError):
        previous = []
    if previous is None and any(not p.name.startswith(".lock") for p in run_dir.iterdir()):
        raise BadInput(
            f"--out {str(run_dir)!r} is a non-empty folder with no manifest.json (not a run folder); "
            "accepted: a new or empty folder, or a run folder"
        )
    if previous is not None and not isinstance(previous, dict):
        raise BadInput(
            f"--out {str(run_dir)!r} holds an unreadable manifest.json; accepted: a run folder or a new --out"
        )
    return previous


def plan_run(spec: RunSpec) -> RunPlan:
    """Validate a RunSpec; raises BadInput naming the bad value. Writes nothing.

    Besides names and values it checks every file and folder the run will read (the dataset's converted
    files, the OE source, each backbone) and the folder it will write, and compares the finished units
    of an existing run folder with the current code, so a run that would fail or mix code versions fails
    here, before any write, and a dry run reports the same error."""
    if not spec.methods:
        raise BadInput(f"no method given; accepted: {', '.join(METHODS.names())}")
    for name in spec.methods:
        METHODS.get(name)
    if len(set(spec.methods)) != len(spec.methods):
        raise BadInput(f"a method is named twice in --methods {' '.join(spec.methods)}")
    PROTOCOLS.get(spec.protocol)
    dataset_builder = DATASETS.get(spec.dataset)
    if spec.oe is not None and spec.oe not in list_oe_sources():
        raise BadInput(f"unknown OE source {spec.oe!r}; accepted: {', '.join(list_oe_sources())}")
    profile = for_dataset(get_profile(spec.profile), dataset_builder)
    attacks = list(spec.attacks) if spec.attacks else ATTACKS.names()
    for name in attacks:
        ATTACKS.get(name)
    if len(set(attacks)) != len(attacks):
        raise BadInput(f"an attack is named twice in --attacks {' '.join(attacks)}")
    if not spec.seeds:
        raise BadInput("no seed given; --seeds takes one or more integers >= 0")
    for seed in spec.seeds:
        if not 0 <= seed < 2**32:
            raise BadInput(f"bad seed {seed}; seeds are integers >= 0 and < 2**32")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise BadInput(
            f"a seed is named twice in --seeds {' '.join(map(str, spec.seeds))}; accepted: distinct seeds"
        )
    check_executor(spec)
    check_detector_folders(spec)
    # on ray, "auto" is chosen by each task on its own node (a GPU when it was given one)
    device = "auto" if spec.executor == "ray" and spec.device == "auto" else resolve_device(spec.device)

    types = {name: METHODS.get(name).field_types() for name in spec.methods}
    types.update({name: ATTACKS.get(name).field_types() for name in attacks})
    types["executor"] = ExecutorSettings.field_types()
    for pair in spec.settings:
        if "=" in pair and not pair.split("=", 1)[0].strip():
            raise BadInput(f"bad --set {pair!r}: nothing before '='; accepted: KEY=VALUE, e.g. oe.lam=1.0")
    overrides = parse_overrides(spec.settings, types)
    for name, values in overrides.items():
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise BadInput(f"bad value {value!r} for --set {name}.{key}: expected a finite number")
    executor_settings = ExecutorSettings(**overrides.pop("executor"))
    methods = {
        name: _build(
            METHODS.get(name), {**method_defaults(profile.name, name, spec.dataset), **overrides[name]}, name
        )
        for name in spec.methods
    }
    from bench.backbones.paper import plan_check  # the papers' backbones: fetched, or exit 2 (issue 28)

    backbone_notes = plan_check(methods, spec.dry_run)
    attack_settings = {name: overrides[name] for name in attacks}
    for name in attacks:  # instantiate once so bad budgets (e.g. steps=0) fail before any work
        _build(ATTACKS.get(name).from_profile, {"profile": profile, "seed": 0, **attack_settings[name]}, name)

    run_id = default_run_id(spec, attacks)
    run_dir = Path(spec.out) if spec.out is not None else Path("results") / "runs" / run_id
    check_output_folder(run_dir)
    if spec.frozen_detectors is None:  # trained detectors go to the cache: check it as --out is checked
        check_output_folder(default_cache_dir(), option="BENCH_CACHE")
    plan = RunPlan(
        spec,
        run_dir.name if spec.out else run_id,
        run_dir,
        profile,
        device,
        methods,
        attack_settings,
        attacks,
        executor_settings=executor_settings,
    )
    previous = check_run_folder(run_dir)
    if previous is not None and command_view(previous.get("config")) != command_view(plan.config()):
        raise BadInput(
            f"--out {str(run_dir)!r} holds a run with a different configuration; "
            "accepted: the same command that started it, or a new --out"
        )
    plan.dataset = prepare_dataset(spec)
    check_cells(spec, plan)
    if spec.frozen_detectors is not None:
        check_frozen_detectors(plan)
    size = plan.dataset.image_shape[-1]
    plan.method_profiles = {name: method_profile(profile, name, size, spec.dataset) for name in methods}
    plan.backbone_notes = backbone_notes
    for name, method in methods.items():
        check_method_files(name, method)
    plan.method_hashes = {name: method_hash(plan, name) for name in plan.methods}
    plan.attack_hashes = {name: attack_hash(plan, name) for name in plan.attacks}
    plan.git_sha = git_sha()
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
    try:
        if preflight is not None:
            if "protocol" in inspect.signature(preflight).parameters:
                preflight(protocol=spec.protocol)
            else:
                preflight()
        dataset = builder()
    except BadInput as error:
        declared = getattr(builder, "declared", None)
        if not (spec.dry_run and declared is not None):
            raise
        dataset = declared()  # labels of the official release, no pixels: counts only (a fresh object)
        dataset.notes["absent"] = str(error)
    dataset = with_oe_source(dataset, spec.oe)
    name = spec.oe or default_oe_name(dataset)
    if name is None:
        return dataset
    try:
        check_oe_source(name)
    except BadInput as error:
        needs_oe = [m for m in spec.methods if "oe" in METHODS.get(m).requires]
        # builders cache their data sets: change a copy, never the shared object
        if spec.oe is None and not needs_oe:
            return dataclasses.replace(dataset, oe_source=None)  # a default source not here, unused
        if not (spec.dry_run and "absent" in dataset.notes):
            raise  # a dry run reports the run's error, unless it plans data not fetched yet
        absent = "; ".join(filter(None, [dataset.notes.get("absent"), str(error)]))
        return dataclasses.replace(dataset, notes={**dataset.notes, "absent": absent})
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
        if f.name.endswith("_backbone") and not is_paper_backbone(getattr(method, f.name)):
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
    cls = ATTACKS.get(name)
    return payload_hash(
        {"attack": name, "config": plan.attack_config(name), "code": source_version(cls.__module__)}, 12
    )


def method_hash(plan: RunPlan, name: str) -> str:
    """Hash of (method, hyperparameters, the training fields of the profile as it runs on this data set,
    code of its import closure, its data files' digests): a profile edit makes finished units stale too."""
    method = plan.methods[name]
    dependencies = method_dependencies(name, method)
    profile = plan.profile_for(name)
    training = [profile.training_fingerprint(), profile.max_train_per_class]
    payload = {"method": name, "hyperparameters": method.hyperparameters(), "profile": training}
    return payload_hash({**payload, "code": dependencies["code"], "files": dependencies["files"]}, 12)


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


def stale_units(plan: RunPlan) -> list[Unit]:
    """Finished units of the run folder whose rows carry another method or attack hash than the current
    code's (rows written before ``attack_hash`` existed count as stale)."""
    store = ResultStore(plan.run_dir)
    if not store.results_path.is_file():
        return []
    try:
        hashes_by_unit = store.unit_hashes()
    except ValueError as error:
        raise BadInput(
            f"--out {str(plan.run_dir)!r}: {error}; accepted: a run folder or a new --out"
        ) from None
    stale = []
    for (method, cell, seed, attack), hashes in sorted(hashes_by_unit.items()):
        if method not in plan.method_hashes or attack not in plan.attack_hashes:
            continue
        if hashes != {(plan.method_hashes[method], plan.attack_hashes[attack])}:
            stale.append(Unit(method, cell, seed, attack))
    return stale


def check_cells(spec: RunSpec, plan: RunPlan) -> None:
    """``--cells`` must name distinct cells of the protocol on this data set."""
    if spec.cells is None:
        return
    known = plan.protocol.cell_ids(plan.dataset, plan.profile, spec.seeds[0])
    if not spec.cells:
        raise BadInput(f"--cells names no cell; accepted: {', '.join(known)}")
    for cell in spec.cells:
        if cell not in known:
            raise BadInput(
                f"unknown cell {cell!r} of --protocol {spec.protocol} on {spec.dataset}; "
                f"accepted: {', '.join(known)}"
            )
    if len(set(spec.cells)) != len(spec.cells):
        raise BadInput(f"a cell is named twice in --cells {' '.join(spec.cells)}")


def check_detector_folders(spec: RunSpec) -> None:
    if spec.frozen_detectors is not None and spec.save_detectors is not None:
        raise BadInput("--frozen-detectors and --save-detectors exclude each other; accepted: one of them")
    if spec.frozen_detectors is not None and not Path(spec.frozen_detectors).is_dir():
        raise BadInput(
            f"--frozen-detectors {str(spec.frozen_detectors)!r} is not a folder; "
            "accepted: a folder written by bench run --save-detectors"
        )
    if spec.save_detectors is not None and not spec.dry_run:
        try:
            Path(spec.save_detectors).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=spec.save_detectors)  # noqa: SIM115
            probe.close()
        except OSError as error:
            raise BadInput(
                f"--save-detectors {str(spec.save_detectors)!r} cannot be written ({error.strerror}); "
                "accepted: a writable folder"
            ) from None


def check_frozen_detectors(plan: RunPlan) -> None:
    """BadInput unless every unit group of the grid has a checked detector under --frozen-detectors."""
    groups = sorted({(u.method, u.cell, u.seed) for u in expected_units(plan)})
    for method, cell, seed in groups:
        frozen.check_entry(plan.frozen_entry(method, cell, seed))


def expected_units(plan: RunPlan, dataset=None, protocol=None) -> list[Unit]:
    """Every unit of the grid (of ``--cells`` when given), in execution order (seed, cell, method, attack)."""
    dataset = dataset if dataset is not None else plan.dataset
    protocol = protocol if protocol is not None else plan.protocol
    chosen = plan.spec.cells
    return [
        Unit(method, cell, seed, attack)
        for seed in plan.spec.seeds
        for cell in protocol.cell_ids(dataset, plan.profile, seed)
        if chosen is None or cell in chosen
        for method in plan.methods
        for attack in plan.attacks
    ]


def pending_units(plan: RunPlan) -> tuple[list[Unit], list[Unit]]:
    """(all expected units, those without finished rows yet or stale and to be recomputed). Units whose
    rows are ``status=error`` count as pending: the same command tries them again."""
    units = expected_units(plan)
    done = ResultStore(plan.run_dir).finished_units()
    stale = {u.key for u in plan.stale}
    return units, [u for u in units if u.key not in done or u.key in stale]


def group_units(
    units: list[Unit], digests: dict[tuple[str, str, int], dict[str, str]] | None = None
) -> list[UnitGroup]:
    """Units grouped by (method, cell, seed), in the order of their first unit; ``digests`` (the store's
    ``detector_digests()``) gives each group the digests of its attacks that are finished already."""
    groups: dict[tuple[str, str, int], list[str]] = {}
    for unit in units:
        groups.setdefault((unit.method, unit.cell, unit.seed), []).append(unit.attack)
    return [
        UnitGroup(
            m,
            c,
            s,
            tuple(attacks),
            tuple((a, d) for a, d in (digests or {}).get((m, c, s), {}).items() if a not in attacks),
        )
        for (m, c, s), attacks in groups.items()
    ]


def _build(cls, settings: dict[str, Any], name: str):
    try:
        return cls(**settings)
    except BadInput:
        raise
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as error:
        raise BadInput(f"bad --set for {name}: {error}") from None
