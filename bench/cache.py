"""Content-addressed cache of trained detectors and networks (safetensors + JSON, never pickle).

Root: ``$BENCH_CACHE`` or ``~/.cache/bench``. A key is the SHA-256 of a JSON payload: method,
hyperparameters, task fingerprint, seed and the version (source hash) of the code that trains it, so
a new attack on a finished run retrains nothing and a code change retrains what it touches.

Every entry is published whole (written into a temporary folder, then renamed into place), so a reader on
another process or node never sees half of one, and carries ``digests.json``, the sha256 of each of its
files. An entry that fails its check (a truncated safetensors file, a JSON whose recorded key or digest
does not match its content) is never loaded: it is deleted with a warning and the caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bench.detector import Detector, load_detector


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def payload_hash(payload: dict[str, Any], length: int = 24) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@cache
def code_version(*module_names: str) -> str:
    """Hash of the source files of the named modules (the "method code version")."""
    digest = hashlib.sha256()
    for name in module_names:
        module = importlib.import_module(name)
        digest.update(name.encode())
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


DIGESTS = "digests.json"  # sha256 of every other file of a cache entry


class CorruptEntry(Exception):
    """A cache entry whose files do not match their digests or cannot be read."""


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != DIGESTS
    }


def check_digests(directory: Path) -> None:
    """Raise CorruptEntry when ``digests.json`` lists a file that is missing or has another sha256
    (entries written before digests existed are checked by loading them only)."""
    path = directory / DIGESTS
    if not path.exists():
        return
    try:
        expected = json.loads(path.read_text())
    except ValueError as error:
        raise CorruptEntry(f"unreadable {DIGESTS}: {error}") from None
    actual = file_digests(directory)
    for name, digest in expected.items():
        if name not in actual:
            raise CorruptEntry(f"{name} is missing")
        if actual[name] != digest:
            raise CorruptEntry(f"{name} does not match its sha256 in {DIGESTS}")


def publish_entry(target: Path, write, replace: bool = False) -> None:
    """``write(folder)`` into a temporary folder beside ``target``, add its digests, then rename it into
    place (atomic). An existing ``target`` wins (another process published the same key first) unless
    ``replace``, which moves the old one aside first and deletes it once the new one is in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    aside = target.with_name(f".old-{target.name}-{os.getpid()}")
    try:
        write(staging)
        (staging / DIGESTS).write_text(json.dumps(file_digests(staging), indent=2, sort_keys=True))
        if replace and target.exists():
            target.rename(aside)
        try:
            staging.rename(target)
        except OSError:  # another process published the same key first
            if not target.exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if aside.exists():
            shutil.rmtree(aside, ignore_errors=True)


class DetectorCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.recovered: list[str] = []  # one line per corrupt entry deleted (for the run's manifest)

    def _discard(self, directory: Path, reason: str) -> None:
        """Delete a corrupt entry (moved aside first, so no reader sees it half-deleted) and warn."""
        message = f"corrupt cache entry {directory} ({reason}): deleted, rebuilding it"
        self.recovered.append(message)
        warnings.warn(message, stacklevel=3)
        aside = directory.with_name(f".corrupt-{directory.name}-{os.getpid()}")
        try:
            directory.rename(aside)
        except OSError:  # another process moved it first
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _load_checked(self, directory: Path, load):
        """``load(directory)`` after the entry's digests check out; None, with the entry deleted, when
        they do not or loading fails."""
        try:
            check_digests(directory)
            return load(directory)
        except FileNotFoundError:
            if not directory.exists():
                return None  # deleted meanwhile by another process
            self._discard(directory, "a file is missing")
        except Exception as error:  # noqa: BLE001 - any failure to read an entry means: rebuild it
            self._discard(
                directory, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )
        return None

    def detector_dir(self, key: str) -> Path:
        return self.root / "detectors" / key

    def load_detector(self, key: str, device: str = "cpu") -> Detector | None:
        directory = self.detector_dir(key)
        if not directory.exists():
            return None

        def load(entry: Path) -> Detector:
            detector = load_detector(entry, device)
            if detector.meta.get("cache_key", key) != key:
                raise CorruptEntry(f"its detector.json records key {detector.meta['cache_key']!r}")
            return detector

        return self._load_checked(directory, load)

    def save_detector(self, key: str, detector: Detector) -> None:
        directory = self.detector_dir(key)
        if not directory.exists():
            publish_entry(directory, detector.save)

    def load_weights(self, payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict] | None:
        hit = self.load_tensors("networks", payload)
        if hit is None:
            return None
        tensors, meta = hit
        return tensors, meta.get("summary", {})

    def save_weights(self, payload: dict[str, Any], state: dict[str, torch.Tensor], summary: dict) -> None:
        self.save_tensors("networks", payload, state, {"summary": summary})

    def load_tensors(self, kind: str, payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Tensors and metadata saved under ``kind``/hash(payload), or None (safetensors + JSON only)."""
        directory = self.root / kind / payload_hash(payload)
        if not directory.exists():
            return None

        def load(entry: Path):
            meta = json.loads((entry / "meta.json").read_text())
            recorded = payload_hash(meta["payload"]) if "payload" in meta else entry.name
            if recorded != entry.name:
                raise CorruptEntry(f"its meta.json payload hashes to {recorded}")
            return load_file(str(entry / "weights.safetensors")), meta

        return self._load_checked(directory, load)

    def save_tensors(
        self, kind: str, payload: dict[str, Any], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> None:
        """Publish tensors and JSON metadata atomically under ``kind``/hash(payload) (first writer wins)."""
        directory = self.root / kind / payload_hash(payload)
        if directory.exists():
            return

        def write(staging: Path) -> None:
            arrays = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            save_file(arrays, str(staging / "weights.safetensors"))
            record = {"payload": payload, **meta}
            (staging / "meta.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))

        publish_entry(directory, write)
