"""Digests of tensors and of a detector's weights: which detector produced a row (results.csv
``detector_digest``) and which images a budget check attacked (``bench study budget``).

Nothing here is imported by a method, so the module is outside every method's code hash
(``bench.code_version``): changing how a digest is printed retrains nothing.
"""

from __future__ import annotations

import hashlib

import torch

DIGEST_CHARS = 16


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` in row-major order, whatever its dtype (bfloat16 has no numpy twin)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes, in order (16 hex characters)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:DIGEST_CHARS]


def detector_digest(detector: torch.nn.Module) -> str:
    """sha256 of the detector's state_dict: each entry's name and bytes, in state_dict order (16 hex
    characters; the layout behind the names is fixed by the method's code, which ``method_hash`` covers).
    Two trainings that differ in one bit of one weight differ here; a detector loaded from the cache has
    the digest of the one that was saved. The committed budget checks' restart keys use it: keep it."""
    digest = hashlib.sha256()
    for name, tensor in detector.state_dict().items():
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:DIGEST_CHARS]
