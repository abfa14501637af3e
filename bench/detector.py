"""The Detector contract: an ``nn.Module`` mapping images in [0, 1] to outlier scores (higher = more
anomalous), differentiable in the input, saved as safetensors + JSON (never pickle).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

DETECTOR_CLASSES: dict[str, type[Detector]] = {}


def detector_device(detector: nn.Module, x: torch.Tensor | None = None) -> torch.device:
    """The device ``detector`` runs on: that of its first parameter, else of its first buffer, else (an
    analytic score with neither, e.g. the mean pixel value) that of the input ``x`` (or the CPU)."""
    for tensor in itertools.chain(detector.parameters(), detector.buffers()):
        return tensor.device
    return x.device if x is not None else torch.device("cpu")


def detector_class(cls: type[Detector]) -> type[Detector]:
    """Register a Detector subclass so that :func:`load_detector` can rebuild it from JSON."""
    DETECTOR_CLASSES[cls.__name__] = cls
    return cls


class Detector(nn.Module):
    """Base class. Subclasses implement ``forward(x) -> scores`` of shape (N,) and ``config()``.

    ``meta`` holds the method name, resolved hyperparameters and a training summary. A detector that
    also classifies inliers implements ``classify(x) -> logits`` (used for ID accuracy).
    """

    classifies: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Detector:  # pragma: no cover - abstract
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not classify")

    def attack_objective(self, x: torch.Tensor) -> torch.Tensor:
        """What attacks differentiate: a strictly increasing function of ``forward(x)`` built from
        log-space quantities (a log-probability, a logit difference, an energy), so it ranks images as the
        score does but keeps a gradient where a probability score is exactly 0 or 1 in float32 (ATOM
        App. B.4 attacks the log-probability, RODEO's code the cross-entropy). Default: the score itself,
        for scores that are already such quantities."""
        return self(x)

    @torch.inference_mode()
    def score(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Scores of a whole tensor in eval mode, in batches, without building a graph."""
        self.eval()
        device = detector_device(self, x)
        parts = [self(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0)

    def save(self, directory: Path) -> None:
        """Write ``detector.safetensors`` and ``detector.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp_weights = directory / "detector.safetensors.tmp"
        save_file(state, str(tmp_weights))
        tmp_weights.replace(directory / "detector.safetensors")
        record = {"class": type(self).__name__, "config": self.config(), "meta": self.meta}
        tmp_json = directory / "detector.json.tmp"
        tmp_json.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        tmp_json.replace(directory / "detector.json")


def attack_objective(detector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``detector.attack_objective(x)`` for a :class:`Detector`; the score itself for a bare module (the
    analytic detectors of the tests)."""
    method = getattr(detector, "attack_objective", None)
    return method(x) if method is not None else detector(x)


def load_detector(directory: Path, device: str = "cpu") -> Detector:
    """Rebuild a detector written by :meth:`Detector.save` (JSON config + safetensors weights)."""
    import bench.methods  # noqa: F401  (registers the detector classes)

    directory = Path(directory)
    record = json.loads((directory / "detector.json").read_text())
    cls = DETECTOR_CLASSES[record["class"]]
    detector = cls.from_config(record["config"])
    detector.load_state_dict(load_file(str(directory / "detector.safetensors")))
    detector.meta = record.get("meta", {})
    return detector.to(device).eval()
