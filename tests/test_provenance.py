"""Trust in a run folder: stale units are refused or recomputed, missing files fail before any write,
dry runs build no data, outputs are shareable, and the report names every commit behind the rows."""

from __future__ import annotations

import csv
import dataclasses
import json
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import config as config_module
from bench import plan as plan_module
from bench.cache import DetectorCache
from bench.contracts import Method
from bench.datasets import oe_sources
from bench.detector import DETECTOR_CLASSES, Detector
from bench.errors import BadInput
from bench.plan import RunSpec, plan_run
from bench.protocols import NoveltyDetection, OpenSetRecognition, OutOfDistribution
from bench.registry import METHODS
from bench.report import write_report
from bench.runner import Runner
from bench.store import COLUMNS, LEGACY_COLUMNS

from .conftest import bench_cmd, bench_env, read_rows


class MeanDetector(Detector):
    """Score = mean pixel (no training, no parameters to speak of): runs in milliseconds."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()), requires_grad=False)

    def config(self):
        return {}

    @classmethod
    def from_config(cls, config):  # reloaded from the detector cache on a resumed run
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)


class MeanMethod(Method):
    def fit(self, task, ctx):
        return MeanDetector()


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registered test method on two nd cells; returns a function that plans and runs into tmp/run."""
    monkeypatch.setattr(
        NoveltyDetection, "cell_ids", lambda self, dataset, profile, seed: ["class0", "class1"]
    )
    monkeypatch.setitem(METHODS._items, "mean", MeanMethod)
    monkeypatch.setitem(DETECTOR_CLASSES, "MeanDetector", MeanDetector)  # reloaded from the cache

    def run(rerun_stale: bool = False, attacks=("clean", "pgd")):
        spec = RunSpec(
            methods=["mean"],
            protocol="nd",
            profile="ci",
            device="cpu",
            attacks=list(attacks),
            out=tmp_path / "run",
            rerun_stale=rerun_stale,
        )
        plan = plan_run(spec)
        manifest = Runner(plan, cache=DetectorCache(tmp_path / "cache")).run()
        return plan, manifest

    return run


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run_dir / "results.csv", run_dir / "manifest.json")}


# ---- stale units -----------------------------------------------------------------------------------------


def test_resume_with_unchanged_code_has_no_stale_unit(tiny):
    plan, manifest = tiny()
    assert manifest["invocations"][-1]["units_pending"] == 4
    plan, manifest = tiny()
    assert plan.stale == [] and manifest["invocations"][-1]["units_pending"] == 0
    hashes = manifest["invocations"][-1]
    rows = read_rows(plan.run_dir)
    assert {r["method_hash"] for r in rows} == {hashes["method_hashes"]["mean"]}
    assert {(r["attack"], r["attack_hash"]) for r in rows} == set(hashes["attack_hashes"].items())


@pytest.mark.parametrize("which", ["method_hash", "attack_hash"])
def test_changed_code_is_refused_then_rerun_stale_replaces_exactly_those_units(tiny, monkeypatch, which):
    plan, _ = tiny()
    before = _snapshot(plan.run_dir)
    rows_before = read_rows(plan.run_dir)
    original = getattr(plan_module, which)

    def changed(plan, name):  # the code of pgd (or of the method) changed since
        value = original(plan, name)
        return "changed00000" if which == "method_hash" or name == "pgd" else value

    monkeypatch.setattr(plan_module, which, changed)
    with pytest.raises(BadInput, match=r"finished unit\(s\) computed by other code .*--rerun-stale"):
        tiny()
    assert _snapshot(plan.run_dir) == before  # refused before any write

    plan, manifest = tiny(rerun_stale=True)
    expected_stale = 4 if which == "method_hash" else 2
    assert len(plan.stale) == expected_stale
    assert manifest["invocations"][-1]["units_rerun_stale"] == expected_stale
    assert manifest["invocations"][-1]["units_pending"] == expected_stale
    rows = read_rows(plan.run_dir)
    assert len(rows) == len(rows_before)  # replaced, not appended
    changed_rows = [r for r in rows if r[which] == "changed00000"]
    assert len(changed_rows) == (len(rows) if which == "method_hash" else len(rows) // 2)
    untouched = [r for r in rows_before if r["attack"] == "clean"]
    if which == "attack_hash":  # the clean units were not recomputed: same rows, same timestamps
        assert [r for r in rows if r["attack"] == "clean"] == untouched
    assert tiny()[0].stale == []  # and now the folder is consistent


def test_rows_without_attack_hash_count_as_stale(tiny):
    plan, _ = tiny()
    path = plan.run_dir / "results.csv"
    rows = read_rows(plan.run_dir)
    with path.open("w", newline="") as handle:  # the results.csv of an older bench
        writer = csv.DictWriter(handle, fieldnames=LEGACY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(BadInput, match="4 finished unit"):
        tiny()
    tiny(rerun_stale=True)
    header = path.read_text().splitlines()[0]
    assert header.split(",") == COLUMNS


def test_rerun_stale_flag_on_the_command_line(tmp_path):
    result = subprocess.run(
        bench_cmd("run", "--methods", "oe", "--protocol", "nd", "--rerun-stale", "--dry-run"),
        capture_output=True,
        text=True,
        env=bench_env(tmp_path / "cache"),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "results").exists()


# ---- files a run needs: found while planning ---------------------------------------------------------


MISSING = [
    (["--oe", "300k-random-images"], "300K_random_images.npy"),
    (["--oe", "tiny-imagenet"], "tiny-imagenet-200"),
    (["--set", "rodeo.clip_backbone=hub-clip:ViT-B-32@/nonexistent/model.bin"], "/nonexistent/model.bin"),
    (["--set", "rodeo.ddpm_backbone=hub-ddpm:/nonexistent/ddpm"], "/nonexistent/ddpm"),
]


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(("extra", "named"), MISSING)
def test_missing_files_exit_2_before_anything_is_written(tmp_path, extra, named, dry_run):
    out = tmp_path / "out"
    env = bench_env(tmp_path / "cache")
    env["BENCH_DATA"] = str(tmp_path / "empty-data")
    args = ["run", "--methods", "rodeo", "--protocol", "nd", "--out", str(out), *extra]
    result = subprocess.run(
        bench_cmd(*args, *(["--dry-run"] if dry_run else [])),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ") and named in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_plan_checks_the_oe_folder_without_loading_it(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA", str(data))
    spec = RunSpec(methods=["oe"], protocol="nd", profile="ci", oe="tiny-imagenet", out=tmp_path / "run")
    with pytest.raises(BadInput, match="tiny-imagenet-200"):
        plan_run(spec)
    (data / "tiny-imagenet-200" / "train" / "n01" / "images").mkdir(parents=True)
    with pytest.raises(BadInput, match="tiny-imagenet-200"):  # a folder without images is no source
        plan_run(spec)
    (data / "tiny-imagenet-200" / "train" / "n01" / "images" / "a.JPEG").write_bytes(b"")
    plan_run(spec)  # planning reads no image: the empty file is not opened
    assert not (tmp_path / "run").exists()


# ---- dry run ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["nd", "osr", "ood"])
@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_dry_run_builds_no_cell_and_no_oe_pool(protocol, profile, monkeypatch, capsys):
    from bench.cli import print_dry_run

    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run built data")

    for cls in (NoveltyDetection, OpenSetRecognition, OutOfDistribution):
        monkeypatch.setattr(cls, "cells", forbidden)
    for name in list(oe_sources.OE_SOURCES):
        monkeypatch.setitem(oe_sources.OE_SOURCES, name, forbidden)
    plan = plan_run(RunSpec(methods=["rodeo", "atom"], protocol=protocol, profile=profile, dry_run=True))
    print_dry_run(plan)
    out = capsys.readouterr().out
    assert "attack budget" in out and "pgd" in out  # how fast: tests/test_speed.py (make bench-speed)


# ---- shareable outputs and the report's provenance -------------------------------------------------------


def test_results_manifest_and_scores_are_world_readable(tiny):
    plan, _ = tiny()
    paths = [plan.run_dir / "results.csv", plan.run_dir / "manifest.json"]
    paths += list((plan.run_dir / "scores").rglob("*.npz"))
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_manifest_records_the_attacks_as_run(tiny):
    plan, manifest = tiny(attacks=("clean", "a3"))
    assert manifest["attacks"]["a3"]["search_fraction"] == plan.attack("a3", 0).search_fraction
    assert "seed" not in manifest["attacks"]["a3"]


def test_report_names_every_commit_and_flags_mixed_rows(tiny):
    plan, _ = tiny()
    path = plan.run_dir / "results.csv"
    rows = read_rows(plan.run_dir)
    for row in rows[: len(rows) // 2]:
        row["git_sha"] = "0123456789ab"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    html = write_report(plan.run_dir).read_text()
    assert "0123456789ab" in html and rows[-1]["git_sha"] in html
    assert "come from 2 git commits" in html
    assert "Test images per cell" in html and "Metric conventions" in html
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    assert manifest["invocations"][0]["git_sha"] == rows[-1]["git_sha"]


class BareDetector(Detector):
    """An analytic score with no parameter and no buffer (the runner must not ask for its device)."""

    classifies = True

    def config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], dim=1)


class BareMethod(Method):
    def fit(self, task, ctx):
        return BareDetector()


def test_a_parameterless_detector_runs_through_the_runner(monkeypatch, tmp_path):
    monkeypatch.setattr(OpenSetRecognition, "cell_ids", lambda self, dataset, profile, seed: ["split0"])
    monkeypatch.setitem(METHODS._items, "bare", BareMethod)
    monkeypatch.setitem(DETECTOR_CLASSES, "BareDetector", BareDetector)
    spec = RunSpec(
        methods=["bare"], protocol="osr", profile="ci", attacks=["clean", "pgd"], out=tmp_path / "r"
    )
    Runner(plan_run(spec), cache=DetectorCache(tmp_path / "cache")).run()
    rows = read_rows(tmp_path / "r")
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["metric"] for r in rows} >= {"auroc", "id_acc"}


def test_an_edited_profile_makes_finished_units_stale(tiny, monkeypatch):
    """The profile's training fields enter method_hash: a resumed folder never mixes two recipes."""
    tiny()
    edited = dataclasses.replace(config_module.PROFILES["ci"], epochs=5)
    monkeypatch.setitem(config_module.PROFILES, "ci", edited)
    with pytest.raises(BadInput, match=r"4 finished unit\(s\) computed by other code"):
        tiny()
    plan, manifest = tiny(rerun_stale=True)
    assert len(plan.stale) == 4 and manifest["invocations"][-1]["profile"]["epochs"] == 5


def test_a_new_default_of_a_method_is_a_stale_unit_not_another_configuration(tiny, monkeypatch):
    """A field added to a method (or a changed default) changes its resolved hyperparameters but not the
    command: the resume names the stale units instead of refusing the folder."""
    tiny()
    original = MeanMethod.hyperparameters

    monkeypatch.setattr(MeanMethod, "hyperparameters", lambda self: {**original(self), "new_field": 0.0})
    with pytest.raises(BadInput, match=r"4 finished unit\(s\) computed by other code"):
        tiny()
    plan, _ = tiny(rerun_stale=True)
    assert len(plan.stale) == 4
