"""Frozen detectors: evaluate saved weights instead of training (``bench run --frozen-detectors DIR``).

A run with ``--save-detectors DIR`` writes every detector it fits (or loads from the cache) to
``DIR/<dataset>/<protocol>/<method>/<cell>-seed<seed>/``: ``detector.safetensors``, ``detector.json`` and
``digests.json`` (the sha256 of both), published whole as a cache entry is; a method that cannot run the
cell leaves ``not_applicable.json`` with its reason instead. A run with ``--frozen-detectors DIR`` loads
each unit group's detector from there and fits nothing, so every number it writes comes from the same
weights on any machine: regression tracking reruns every attack on the committed ci-profile detectors
(``results/baseline/detectors.npz``, docs/ci.md) and holds the attacked AUROC to the baseline's, whatever the
CPU. An entry that is missing, lacks ``digests.json`` or does not match it is refused before any work
(exit 2); a frozen entry is never deleted.

The layout is keyed by what the unit is, not by the code that trained it (a cache key changes with the
method's code): a method change is judged on the frozen weights it already has.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.cache import DIGESTS, CorruptEntry, check_digests, publish_entry
from bench.detector import Detector, load_detector
from bench.errors import BadInput

NOT_APPLICABLE = "not_applicable.json"
DETECTOR_FILES = ("detector.json", "detector.safetensors")


def entry_dir(root: Path, dataset: str, protocol: str, method: str, cell: str, seed: int) -> Path:
    return Path(root) / dataset / protocol / method / f"{cell}-seed{seed}"


def save(entry: Path, found: Detector | str) -> None:
    """Publish a detector, or the reason its method could not run the cell, as ``entry`` (replaced whole)."""
    if isinstance(found, str):

        def write(folder: Path) -> None:
            (folder / NOT_APPLICABLE).write_text(json.dumps({"reason": found}, indent=2) + "\n")

        publish_entry(Path(entry), write, replace=True)
    else:
        publish_entry(Path(entry), found.save, replace=True)


def check_entry(entry: Path) -> None:
    """BadInput unless ``entry`` holds a detector (or a not-applicable reason) matching its digests."""
    accepted = "accepted: a folder written by bench run --save-detectors"
    if not entry.is_dir():
        raise BadInput(f"no frozen detector at {entry}; {accepted}")
    if not (entry / DIGESTS).is_file():
        raise BadInput(f"frozen detector {entry} has no {DIGESTS}, so it cannot be checked; {accepted}")
    try:
        check_digests(entry)
        recorded = set(json.loads((entry / DIGESTS).read_text()))
    except (CorruptEntry, ValueError) as error:
        raise BadInput(f"frozen detector {entry} fails its check ({error}); {accepted}") from None
    if NOT_APPLICABLE not in recorded and not set(DETECTOR_FILES) <= recorded:
        raise BadInput(f"frozen detector {entry}: {DIGESTS} does not cover its files; {accepted}")


def load(entry: Path, device: str = "cpu") -> Detector | str:
    """The checked detector of ``entry`` (loaded on the CPU, then moved to ``device``), or the reason
    its method could not run the cell."""
    entry = Path(entry)
    check_entry(entry)
    if (entry / NOT_APPLICABLE).is_file():
        return str(json.loads((entry / NOT_APPLICABLE).read_text())["reason"])
    return load_detector(entry, "cpu").to(device).eval()
