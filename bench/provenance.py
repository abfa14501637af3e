"""Where a run's rows came from: the git commit of the source tree, package versions, the CPU kind,
timestamps."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import bench

PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "pandas", "safetensors", "bench")


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


# /proc/cpuinfo's vendor_id -> the short name in a CPU kind
CPU_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The CPU's vendor from /proc/cpuinfo ("intel", "amd", another vendor_id lowercased, or "unknown")."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and value.strip():
            return CPU_VENDORS.get(value.strip(), value.strip().lower())
    return "unknown"


# oneDNN's AVX-512 ladder (avx512_core < _vnni < _bf16 < _fp16 < _amx), as /proc/cpuinfo flags, highest
# first: oneDNN (PyTorch's convolutions) and MKL dispatch to a different kernel on each rung.
AVX512_TIERS = (
    ("amx_tile", "amx"),
    ("avx512_fp16", "fp16"),
    ("avx512_bf16", "bf16"),
    ("avx512_vnni", "vnni"),
)


def _flags(cpuinfo: str) -> list[str]:
    """The first ``flags`` line of /proc/cpuinfo's text (empty without one)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value.split()
    return []


def avx512_tier(cpuinfo: str | None = None) -> str:
    """The highest rung of :data:`AVX512_TIERS` the CPU has ("" for plain AVX-512 or no flags line)."""
    flags = set(_flags(_cpuinfo() if cpuinfo is None else cpuinfo))
    return next((tier for flag, tier in AVX512_TIERS if flag in flags), "")


def cpu_kind(cpuinfo: str | None = None, capability: str | None = None) -> str:
    """The CPU code path a run's floats depend on: architecture, vendor, PyTorch's kernel level and, on
    AVX-512, oneDNN's rung.

    E.g. ``x86_64-intel-avx512-amx`` or ``x86_64-amd-avx2``. The vendor is part of it because MKL, which
    does PyTorch's matrix products on x86, picks its kernels by vendor as well as by instruction set; the
    level is what PyTorch dispatches its own kernels to (``ATEN_CPU_CAPABILITY`` lowers it); the rung
    (:func:`avx512_tier`) what oneDNN and MKL dispatch to among AVX-512 CPUs. Runs of the deterministic
    ``ci`` profile agree bit for bit within a kind, not across kinds (docs/ci.md).
    """
    if capability is None:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    level = capability.lower().replace(" ", "-")
    tier = avx512_tier(cpuinfo) if level == "avx512" else ""
    machine = platform.machine().lower() or "unknown"
    return f"{machine}-{cpu_vendor(cpuinfo)}-{level}" + (f"-{tier}" if tier else "")


def isa_level(cpuinfo: str | None = None) -> str:
    """The highest of PyTorch's kernel levels the CPU's flags allow (``avx512``, ``avx2`` or ``default``),
    whatever ``ATEN_CPU_CAPABILITY`` pins the process to."""
    flags = set(_flags(_cpuinfo() if cpuinfo is None else cpuinfo))
    return "avx512" if {"avx512f", "avx512bw"} <= flags else "avx2" if "avx2" in flags else "default"


def hardware_kind(cpuinfo: str | None = None) -> str:
    """``cpu_kind`` of the hardware (its highest level), not of the code path a pinned process runs:
    what the regression baseline's provenance lists as the kinds that reproduced it."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return cpu_kind(cpuinfo, isa_level(cpuinfo))


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
