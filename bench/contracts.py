"""The data contracts between protocols, methods, attacks and the runner (docs/design.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from bench.cache import DetectorCache
    from bench.config import Profile
    from bench.detector import Detector


def tensor_fingerprint(*tensors: torch.Tensor | None) -> str:
    """A short content hash of tensors (shape, dtype and bytes)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(memoryview(t.numpy()).cast("B"))  # no copy: a memory-mapped pool stays on disk
    return digest.hexdigest()[:16]


@dataclass
class OutlierSource:
    """Auxiliary outliers for outlier exposure: images in [0, 1] and where they come from."""

    name: str
    images: torch.Tensor
    origin: str

    def fingerprint(self) -> str:
        return f"{self.name}:{tensor_fingerprint(self.images)}"


@dataclass
class TrainTask:
    """What a method may train on. Labels are 0..K-1; ``oe`` may be None."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    class_prompts: list[str]  # how text prompts name each class ("digit seven"); see ImageDataset
    oe: OutlierSource | None
    image_shape: tuple[int, int, int]
    train_eps: float
    seed: int
    device: str
    profile: Profile

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """Content hash of everything a fit depends on, except the method's own settings."""
        parts = [
            tensor_fingerprint(self.images, self.labels),
            ",".join(self.class_names),
            ",".join(self.class_prompts),
            self.oe.fingerprint() if self.oe is not None else "no-oe",
            str(self.image_shape),
            f"{self.train_eps:.8f}",
            str(self.seed),
            self.profile.training_fingerprint(),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class EvalSet:
    """Test images with their ground truth: ``is_outlier`` per image, inlier labels where known."""

    name: str
    images: torch.Tensor
    is_outlier: torch.Tensor
    labels: torch.Tensor | None = None  # inlier class per image (-1 for outliers); None if unknown

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.is_outlier.shape[0]:
            raise ValueError("images and is_outlier differ in length")
        self.is_outlier = self.is_outlier.bool()

    @property
    def n_in(self) -> int:
        return int((~self.is_outlier).sum())

    @property
    def n_out(self) -> int:
        return int(self.is_outlier.sum())


@dataclass
class Cell:
    """One unit of a protocol: a training task and the evaluation sets its detector is tested on."""

    cell_id: str
    task: TrainTask
    evalsets: list[EvalSet]


@dataclass
class RunContext:
    """What a method's ``fit`` may use besides the task: device, cache, a progress callback."""

    device: str
    cache: DetectorCache | None = None
    log: Any = None  # callable(str) or None

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


@dataclass
class Method:
    """Base of every method config. Subclasses are dataclasses whose field defaults are the paper's.

    ``protocols`` lists the protocols the method supports; ``requires`` names the resources it
    needs (``"oe"`` for an auxiliary outlier source). ``fit`` returns a trained Detector or raises
    :class:`bench.errors.NotApplicable`. The code a fit depends on is found from the imports of the
    method's module (:mod:`bench.code_version`); the files it loads are :meth:`data_files`.
    """

    protocols: ClassVar[tuple[str, ...]] = ("nd", "osr", "ood")
    requires: ClassVar[frozenset[str]] = frozenset()
    registry_name: ClassVar[str] = ""
    # What the tests hold each method to, declared beside it so that adding a method is adding its file:
    # ``clean_floor``: protocol ("nd", or "osr" for a method that needs several inlier classes) -> the
    # clean AUROC its detector must beat on digits (tests/test_detection_floor.py); {} when not checked
    # there (say why). ``shared_code``: the modules outside its own file whose code its detector
    # depends on; editing one must change its cache key (tests/test_code_version.py).
    clean_floor: ClassVar[dict[str, float] | None] = None
    shared_code: ClassVar[tuple[str, ...]] = ()

    def fit(self, task: TrainTask, ctx: RunContext) -> Detector:  # pragma: no cover - abstract
        raise NotImplementedError

    def write_artifacts(self, task: TrainTask, ctx: RunContext, directory: Path) -> None:
        """Write per-cell files a reader of the run should see (e.g. RODEO's generated outliers) into
        ``directory``; called once per (method, cell, seed) after fit. Default: nothing."""

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def data_files(self) -> list[Path]:
        """The weight and data files a fit loads (their digests go into the cache key and method_hash).
        Default: the files of the backbone each field named ``backbone`` or ``*_backbone`` names."""
        from bench.backbones.files import backbone_files

        chosen = [f.name for f in fields(self) if f.name == "backbone" or f.name.endswith("_backbone")]
        return [path for name in chosen for path in backbone_files(getattr(self, name))]

    @classmethod
    def field_types(cls) -> dict[str, type]:
        hints = {f.name: f.type for f in fields(cls)}
        return {name: _resolve_type(t) for name, t in hints.items()}


def _resolve_type(annotation: Any) -> type:
    if isinstance(annotation, type):
        return annotation
    return {"int": int, "float": float, "bool": bool, "str": str}.get(str(annotation), str)


__all__ = [
    "Cell",
    "EvalSet",
    "Method",
    "OutlierSource",
    "RunContext",
    "TrainTask",
    "tensor_fingerprint",
]
