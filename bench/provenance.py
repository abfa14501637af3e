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


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The CPU's vendor from /proc/cpuinfo ("intel", "amd", another vendor_id lowercased, or "unknown")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return "unknown"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and value.strip():
            return CPU_VENDORS.get(value.strip(), value.strip().lower())
    return "unknown"


def cpu_kind() -> str:
    """The CPU code path a run's floats depend on: architecture, vendor and PyTorch's kernel level.

    E.g. ``x86_64-intel-avx512`` or ``x86_64-amd-avx2``. The vendor is part of it because MKL, which does
    PyTorch's matrix products on x86, picks its kernels by vendor as well as by instruction set; the
    level is what PyTorch dispatches its own kernels to (``ATEN_CPU_CAPABILITY`` lowers it). Runs of the
    deterministic ``ci`` profile agree bit for bit within a kind, not across kinds (README "Regression
    baseline").
    """
    import torch

    level = torch.backends.cpu.get_cpu_capability().lower().replace(" ", "-")
    return f"{platform.machine().lower() or 'unknown'}-{cpu_vendor()}-{level}"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
