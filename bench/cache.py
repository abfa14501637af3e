"""Content-addressed cache of trained detectors and networks (safetensors + JSON, never pickle).

Root: ``$BENCH_CACHE`` or ``~/.cache/bench``. A key is the SHA-256 of a JSON payload: method,
hyperparameters, task fingerprint, seed and the version (source hash) of the code that trains it, so
a new attack on a finished run retrains nothing and a code change retrains what it touches.

Every entry is published whole (written into a temporary folder, then renamed into place), so a reader on
another process or node never sees half of one, and carries ``digests.json``, the sha256 of each of its
files. An entry that fails its check (no ``digests.json``, a file that does not match it, a truncated
safetensors file, a JSON whose recorded key does not match its content, weights whose digest is not the
one the run's rows record) is never loaded: it is deleted with a warning and the caller rebuilds it. Any
other failure (building the detector, moving it to the device) leaves the entry alone and passes through.
A save that fails (an unwritable or full cache) is a warning: the detector in hand is used all the same.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.detector import DETECTOR_CLASSES, Detector
from bench.digests import detector_digest


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
    """Raise CorruptEntry unless ``digests.json`` lists exactly the entry's files, each with its sha256 (an
    entry without digests, e.g. one whose ``digests.json`` was deleted, is not trusted)."""
    path = directory / DIGESTS
    if not path.exists():
        raise CorruptEntry(f"no {DIGESTS}: an entry without digests is not trusted")
    expected = read_json(path)
    actual = file_digests(directory)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise CorruptEntry(f"{name} is missing")
        if actual[name] != expected.get(name):
            raise CorruptEntry(f"{name} does not match its sha256 in {DIGESTS}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; CorruptEntry when it cannot be parsed or is not an object."""
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise CorruptEntry(f"unreadable {path.name}: {error}") from None
    if not isinstance(record, dict):
        raise CorruptEntry(f"{path.name} is not a JSON object")
    return record


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU; CorruptEntry when it cannot be read."""
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise CorruptEntry(f"unreadable {path.name}: {error}") from None


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
        self.recovered: list[str] = []  # one line per corrupt entry deleted or failed save (for the manifest)

    def _note(self, message: str) -> None:
        self.recovered.append(message)
        warnings.warn(message, stacklevel=3)

    def _discard(self, directory: Path, reason: str) -> None:
        """Delete a corrupt entry (moved aside first, so no reader sees it half-deleted) and warn."""
        self._note(f"corrupt cache entry {directory} ({reason}): deleted, rebuilding it")
        aside = directory.with_name(f".corrupt-{directory.name}-{os.getpid()}")
        try:
            directory.rename(aside)
        except OSError:  # another process moved it first
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _load_checked(self, directory: Path, load):
        """``load(directory)`` after the entry's digests check out; None, with the entry deleted, when
        they do not or ``load`` finds it corrupt (CorruptEntry). Other errors pass through and leave the
        entry alone: they say nothing about its files."""
        try:
            check_digests(directory)
            return load(directory)
        except FileNotFoundError:
            if not directory.exists():
                return None  # deleted meanwhile by another process
            self._discard(directory, "a file is missing")
        except CorruptEntry as error:
            self._discard(directory, str(error).splitlines()[0] if str(error) else "CorruptEntry")
        return None

    def _save(self, directory: Path, write) -> None:
        """Publish an entry; a failure to write (unwritable or full cache) is a warning, not an error."""
        if directory.exists():
            return
        try:
            publish_entry(directory, write)
        except OSError as error:
            self._note(f"could not save cache entry {directory} ({error.strerror or error}); continuing")

    def detector_dir(self, key: str) -> Path:
        return self.root / "detectors" / key

    def load_detector(self, key: str, device: str = "cpu", expected_digest: str = "") -> Detector | None:
        """The cached detector of ``key`` on ``device``, or None. Read and checked on the CPU; built and
        moved to ``device`` outside the check, so a failure there (no GPU, out of memory) deletes nothing.
        ``expected_digest`` (the ``detector_digest`` of the run's rows) refuses an entry with other
        weights."""
        directory = self.detector_dir(key)
        if not directory.exists():
            return None

        def read(entry: Path):
            record = read_json(entry / "detector.json")
            meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
            if meta.get("cache_key", key) != key:
                raise CorruptEntry(f"its detector.json records key {meta['cache_key']!r}")
            return record, read_tensors(entry / "detector.safetensors")

        found = self._load_checked(directory, read)
        if found is None:
            return None
        record, state = found
        import bench.methods  # noqa: F401  (registers the detector classes)

        detector = DETECTOR_CLASSES[record["class"]].from_config(record["config"])
        detector.load_state_dict(state)
        detector.meta = record.get("meta", {})
        digest = detector_digest(detector)
        if expected_digest and digest != expected_digest:
            self._discard(
                directory, f"its weights' digest {digest} is not {expected_digest} of the run's rows"
            )
            return None
        return detector.to(device).eval()

    def save_detector(self, key: str, detector: Detector) -> None:
        self._save(self.detector_dir(key), detector.save)

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
            meta = read_json(entry / "meta.json")
            recorded = payload_hash(meta["payload"]) if "payload" in meta else entry.name
            if recorded != entry.name:
                raise CorruptEntry(f"its meta.json payload hashes to {recorded}")
            return read_tensors(entry / "weights.safetensors"), meta

        return self._load_checked(directory, load)

    def save_tensors(
        self, kind: str, payload: dict[str, Any], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> None:
        """Publish tensors and JSON metadata atomically under ``kind``/hash(payload) (first writer wins)."""
        directory = self.root / kind / payload_hash(payload)

        def write(staging: Path) -> None:
            arrays = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
            save_file(arrays, str(staging / "weights.safetensors"))
            record = {"payload": payload, **meta}
            (staging / "meta.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))

        self._save(directory, write)
