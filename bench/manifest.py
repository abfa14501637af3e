"""A run's ``manifest.json`` as a function of its plan: what ran (configuration, profile, data set, the
attacks as resolved), with which code (git sha, method and attack hashes), where and when. One record per
run folder; each invocation of ``bench run`` on it appends an entry to ``invocations``."""

from __future__ import annotations

import platform
import socket
import sys
from typing import Any

from bench.backbones.files import backbone_label
from bench.data_digests import user_data_sha256
from bench.determinism import numerics
from bench.plan import RunPlan
from bench.provenance import cpu_kind, now, package_versions


def new_manifest(plan: RunPlan) -> dict[str, Any]:
    """The record of a run folder's first invocation (``finished`` and the lists filled as it runs)."""
    dataset = plan.dataset
    return {
        "run_id": plan.run_id,
        "command": plan.spec.command,
        "config": plan.config(),
        "profile": dict(plan.profile.__dict__),
        "dataset": {
            "name": dataset.name,
            "origin": dataset.origin,
            "split_version": plan.protocol.split_version(dataset),
            "eps": dataset.eps,
            "notes": dataset.notes,
        },
        "versions": package_versions(),
        "git_sha": plan.git_sha,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_kind(),
        "device": plan.device,
        "started": now(),
        "finished": None,
        "invocations": [],
        "warnings": [],
    }


def invocation(plan: RunPlan, executor: str, n_units: int, n_pending: int) -> dict[str, Any]:
    """One ``bench run`` on the folder: its command, executor, machine, units and code hashes."""
    return {
        "command": plan.spec.command or " ".join(sys.argv),
        "executor": executor,
        "host": socket.gethostname(),
        "cpu": cpu_kind(),  # a resumed run may finish on another machine
        "numerics": numerics(),  # the math libraries' pinned code paths (bench.determinism)
        "started": now(),
        "finished": None,
        "units_total": n_units,
        "units_pending": n_pending,
        "units_rerun_stale": len(plan.stale),
        "cells": plan.spec.cells,  # None: every cell
        "git_sha": plan.git_sha,
        "profile": dict(plan.profile.__dict__),  # as it ran on this data set (for_dataset)
        # paper profile: each method's own training recipe (bench.paper_settings)
        "method_profiles": {
            name: {k: v for k, v in plan.profile_for(name).__dict__.items() if plan.profile.__dict__[k] != v}
            for name in plan.methods
            if plan.profile_for(name) != plan.profile
        },
        "method_hashes": dict(plan.method_hashes),
        # the pre-trained backbones per method ("embedded:..." = a stand-in, not the paper's)
        "backbones": {name: backbone_label(method) for name, method in plan.methods.items()},
        "attack_hashes": dict(plan.attack_hashes),
        # hand-placed data (300K images, tiny-imagenet, folder sets, OOD folders): what this copy held
        "data_sha256": user_data_sha256(plan),
    }


def start_manifest(
    plan: RunPlan, previous: dict[str, Any] | None, executor: str, n_units: int, n_pending: int
) -> dict[str, Any]:
    """The manifest as an invocation starts: the folder's ``previous`` one (or a new one), unfinished,
    with the attacks as this invocation resolves them (every field; rows carry the same hashes) and its
    entry appended."""
    manifest = previous or new_manifest(plan)
    manifest["finished"] = None
    manifest["attacks"] = {name: plan.attack_config(name) for name in plan.attacks}
    manifest["invocations"].append(invocation(plan, executor, n_units, n_pending))
    return manifest
