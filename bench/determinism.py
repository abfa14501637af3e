"""Deterministic execution for the ``ci`` profile (regression tracking, docs/ci.md).

Seeds are already fixed everywhere a run draws randomness (each method seeds its network and its
generators from the task seed, each attack from its own seed). What can still make two CPU runs of the
same grid differ is floating-point summation order, which depends on how many threads split a
reduction, and the few kernels that have nondeterministic variants. For the profiles named in
``DETERMINISTIC_PROFILES`` the runner calls :func:`configure` once before it trains or attacks
anything: a fixed intra-op thread count (``THREADS``, so a 2-core CI machine and a 16-core laptop split
work the same way), ``torch.use_deterministic_algorithms(True)`` and cuDNN's deterministic mode.

On CUDA the same call asks cuBLAS for a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``; it only takes effect
if cuBLAS has not started yet) and only warns about ops without a deterministic kernel instead of failing:
the ci profile is deterministic on CPU, not promised to be bit-identical on GPUs.

The settings are process-wide and stay in force after the run (the CLI runs one grid per process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.errors import BadInput

DETERMINISTIC_PROFILES = frozenset({"ci"})
# The math libraries' code paths for the deterministic profiles, set before torch is imported (the
# libraries read them once): MKL's conditional-numerical-reproducibility AVX2 path, oneDNN's ISA cap at
# AVX2 and PyTorch's own kernels at AVX2. Every x86-64 CPU CI has met has AVX2, so every kind computes the
# same sums in the same order (docs/ci.md "Pinned numerics" has the measurement).
PINNED_NUMERICS = {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
# Intra-op threads for deterministic profiles: the CI machine's core count. Two runs of the ci grid
# with this setting agreed exactly on a 2-core machine (docs/ci.md). ``BENCH_THREADS`` overrides it for a
# process that shares the cores with others (``bench ci run``'s parallel jobs, pytest-xdist workers): 1
# and 2 threads gave the same results on the whole ci grid (docs/ci.md "What it costs").
THREADS = 2
THREADS_VARIABLE = "BENCH_THREADS"
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class Settings:
    """What :func:`configure` set (``None`` when the profile is not deterministic)."""

    threads: int
    deterministic_algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool


def is_deterministic(profile_name: str) -> bool:
    return profile_name in DETERMINISTIC_PROFILES


def configure(profile, device: str = "cpu") -> Settings | None:
    """Make this process deterministic when ``profile`` (a Profile or its name) asks for it."""
    import torch  # here, not at the top: pin_numerics must run before torch is first imported

    name = getattr(profile, "name", profile)
    if not is_deterministic(name):
        return None
    on_cpu = str(device).startswith("cpu")
    if not on_cpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.set_num_threads(threads())
    torch.use_deterministic_algorithms(True, warn_only=not on_cpu)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return current()


def threads() -> int:
    """The intra-op thread count of a deterministic profile: ``BENCH_THREADS`` when set, else ``THREADS``."""
    value = os.environ.get(THREADS_VARIABLE, "")
    if not value:
        return THREADS
    if not value.isdigit() or int(value) < 1:
        raise BadInput(f"{THREADS_VARIABLE}={value!r} is not a thread count; accepted: an integer >= 1")
    return int(value)


def current() -> Settings:
    """The process's present settings (for tests and the manifest)."""
    import torch

    return Settings(
        threads=torch.get_num_threads(),
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
    )


def pin_numerics(profile_name: str) -> bool:
    """Set ``PINNED_NUMERICS`` in this process's environment for a deterministic profile, if torch is not
    imported yet (a variable the user set already is kept); True when the pins are in force."""
    import sys

    if not is_deterministic(profile_name):
        return False
    if "torch" not in sys.modules:
        for name, value in PINNED_NUMERICS.items():
            os.environ.setdefault(name, value)
    return numerics() == PINNED_NUMERICS


def numerics() -> dict[str, str | None]:
    """The code-path variables as this process has them (for the manifest)."""
    return {name: os.environ.get(name) for name in PINNED_NUMERICS}
