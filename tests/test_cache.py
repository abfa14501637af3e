"""The detector / network cache: safetensors + JSON round trips, reuse across attacks and methods."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from bench.cache import DetectorCache, code_version, payload_hash
from bench.config import get_profile
from bench.contracts import RunContext
from bench.datasets import load_dataset
from bench.detector import load_detector
from bench.methods import msp as msp_module
from bench.methods import oe as oe_module
from bench.methods import training
from bench.methods.classifier import ClassifierDetector
from bench.methods.energy import Energy
from bench.methods.msp import MSP
from bench.methods.oe import OutlierExposure
from bench.plan import RunSpec, method_code_version, plan_run
from bench.protocols import get_protocol
from bench.runner import Runner

from .conftest import read_rows

NETWORK = {"name": "small_cnn", "in_channels": 1, "num_outputs": 4, "mean": [0.3], "std": [0.4]}
ALLOWED_SUFFIXES = {".safetensors", ".json"}


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _random_detector(score: str = "energy") -> ClassifierDetector:
    torch.manual_seed(3)
    detector = ClassifierDetector(NETWORK, score=score, num_inlier_classes=4)
    detector.meta = {"method": "energy", "training": {"epochs": 2, "final_loss": 0.5}}
    return detector.eval()


@pytest.fixture(scope="module")
def ci_cells():
    dataset, ci = load_dataset("digits"), get_profile("ci")
    return {
        "nd": next(iter(get_protocol("nd").cells(dataset, ci, 0))),
        "osr": next(iter(get_protocol("osr").cells(dataset, ci, 0))),
    }


@pytest.fixture
def stub_training(monkeypatch):
    """Replace the training loop by a no-op that records its calls (the network keeps its init)."""
    calls = []

    def fake_train(network, task, loss_fn, uses_oe, epoch_outliers=None, optimizer_factory=None):
        calls.append((task.fingerprint(), uses_oe))
        network.eval()
        return {"epochs": 0, "steps": 0, "final_loss": 0.0, "train_seconds": 0.0}

    monkeypatch.setattr(training, "train_network", fake_train)
    return calls


# ---- round trips ----------------------------------------------------------------------------------------


def test_detector_round_trip_gives_identical_scores(tmp_path):
    cache = DetectorCache(tmp_path)
    detector = _random_detector()
    cache.save_detector("key1", detector)
    loaded = cache.load_detector("key1")
    assert isinstance(loaded, ClassifierDetector)
    assert loaded.config() == detector.config()
    assert loaded.meta == detector.meta
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.score(x), detector.score(x))
    assert torch.equal(loaded.classify(x), detector.classify(x))
    assert not loaded.training


def test_detector_files_are_safetensors_and_json_only(tmp_path):
    cache = DetectorCache(tmp_path)
    cache.save_detector("key1", _random_detector())
    directory = cache.detector_dir("key1")
    assert sorted(p.name for p in directory.iterdir()) == [
        "detector.json",
        "detector.safetensors",
        "digests.json",  # sha256 of the other two: a corrupt entry is found and rebuilt
    ]
    record = json.loads((directory / "detector.json").read_text())
    assert record["class"] == "ClassifierDetector" and record["config"]["score"] == "energy"
    # only the cache's folders remain: no staging folders or temporary files
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "detectors",
        "detectors/key1",
        "detectors/key1/detector.json",
        "detectors/key1/detector.safetensors",
        "detectors/key1/digests.json",
    ]
    # the weights load without pickle
    assert {k for k in load_detector(directory).state_dict()} == set(_random_detector().state_dict())


def test_missing_key_loads_nothing_and_saving_twice_keeps_the_first(tmp_path):
    cache = DetectorCache(tmp_path)
    assert cache.load_detector("absent") is None
    first = _random_detector("energy")
    cache.save_detector("k", first)
    torch.manual_seed(99)
    second = ClassifierDetector(NETWORK, score="msp", num_inlier_classes=4)
    cache.save_detector("k", second)
    assert cache.load_detector("k").config()["score"] == "energy"


def test_weights_round_trip(tmp_path):
    cache = DetectorCache(tmp_path)
    payload = {"recipe": {"name": "r"}, "task": "abc"}
    assert cache.load_weights(payload) is None
    state = _random_detector().network.state_dict()
    cache.save_weights(payload, state, {"epochs": 3})
    loaded, summary = cache.load_weights(payload)
    assert summary == {"epochs": 3}
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert {p.suffix for p in _files(tmp_path)} == ALLOWED_SUFFIXES
    assert (tmp_path / "networks" / payload_hash(payload)).is_dir()


def test_default_cache_dir_follows_bench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "elsewhere"))
    assert DetectorCache().root == tmp_path / "elsewhere"


@pytest.mark.parametrize("run", ["nd_run", "ood_run"])
def test_real_runs_cache_only_safetensors_and_json(run, request):
    root = request.getfixturevalue(run).cache_root
    files = _files(root)
    assert files
    assert {p.suffix for p in files} == ALLOWED_SUFFIXES
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp")]


# ---- reuse ----------------------------------------------------------------------------------------------


def test_another_attack_on_a_finished_run_retrains_nothing(nd_run, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a detector was trained again")

    monkeypatch.setattr(OutlierExposure, "fit", refuse)
    monkeypatch.setattr(training, "train_network", refuse)
    detectors = sorted(p.name for p in (nd_run.cache_root / "detectors").iterdir())
    networks = sorted(p.name for p in (nd_run.cache_root / "networks").iterdir())
    spec = RunSpec(
        methods=["oe"],
        protocol="nd",
        attacks=["pgd"],
        profile="ci",
        device="cpu",
        settings=["pgd.steps=2"],
        out=tmp_path / "another-attack",
    )
    manifest = Runner(plan_run(spec), cache=DetectorCache(nd_run.cache_root)).run()
    assert manifest["invocations"][-1]["units_pending"] == 10
    rows = [r for r in read_rows(tmp_path / "another-attack") if r["metric"] == "auroc"]
    assert len(rows) == 10 and {r["status"] for r in rows} == {"ok"}
    assert {r["steps"] for r in rows} == {"2"}
    assert sorted(p.name for p in (nd_run.cache_root / "detectors").iterdir()) == detectors
    assert sorted(p.name for p in (nd_run.cache_root / "networks").iterdir()) == networks


def _recipes(cache_root: Path) -> list[str]:
    return sorted(
        json.loads((d / "meta.json").read_text())["payload"]["recipe"]["name"]
        for d in (cache_root / "networks").iterdir()
    )


def test_msp_and_energy_share_one_network_in_a_real_run(ood_run):
    # one OOD cell: one cross-entropy classifier (msp + energy) and one OE network
    assert _recipes(ood_run.cache_root) == ["cross_entropy_classifier", "oe_multiclass"]
    detectors = [load_detector(d) for d in (ood_run.cache_root / "detectors").iterdir()]
    by_method = {d.meta["method"]: d for d in detectors}
    assert sorted(by_method) == ["energy", "msp", "oe"] and len(detectors) == 3
    msp, energy = by_method["msp"].network.state_dict(), by_method["energy"].network.state_dict()
    assert all(torch.equal(msp[k], energy[k]) for k in msp)
    assert by_method["msp"].score_name == "msp" and by_method["energy"].score_name == "energy"
    assert (
        sum(bool(d.meta["training"].get("cached_network")) for d in (by_method["msp"], by_method["energy"]))
        == 1
    )


def test_msp_and_energy_train_one_network_per_cell(tmp_path, stub_training):
    cache_root = tmp_path / "cache"
    spec = RunSpec(
        methods=["msp", "energy"],
        protocol="osr",
        attacks=["clean"],
        profile="ci",
        device="cpu",
        out=tmp_path / "r",
    )
    Runner(plan_run(spec), cache=DetectorCache(cache_root)).run()
    n_cells = get_profile("ci").osr_splits
    assert len(stub_training) == n_cells
    assert _recipes(cache_root) == ["cross_entropy_classifier"] * n_cells
    assert len(list((cache_root / "detectors").iterdir())) == 2 * n_cells


def test_fit_reuses_the_shared_network(tmp_path, ci_cells, stub_training):
    ctx = RunContext(device="cpu", cache=DetectorCache(tmp_path))
    task = ci_cells["osr"].task
    msp = MSP().fit(task, ctx)
    energy = Energy().fit(task, ctx)
    assert len(stub_training) == 1
    assert energy.meta["training"]["cached_network"] is True
    state = msp.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in energy.network.state_dict().items())
    OutlierExposure().fit(task, ctx)  # a different recipe trains its own network
    OutlierExposure(lam=1.0).fit(task, ctx)  # and a different lam another one
    assert len(stub_training) == 3


# ---- code versions: an edit to the code that trains a detector must retrain it -------------------------


@contextlib.contextmanager
def _edited(module, tmp_path: Path):
    """While active, ``module``'s source reads as edited (code_version hashes the module's file)."""
    path = tmp_path / f"edited_{Path(module.__file__).name}"
    path.write_text(Path(module.__file__).read_text() + "\n# an edit to this module\n")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "__file__", str(path))
            code_version.cache_clear()
            yield
    finally:
        code_version.cache_clear()  # after the undo, so no edited hash outlives the block


def test_editing_a_method_module_changes_its_code_version(tmp_path):
    msp_before, oe_before = method_code_version("msp"), method_code_version("oe")
    with _edited(msp_module, tmp_path):
        assert method_code_version("msp") != msp_before
        assert method_code_version("oe") == oe_before  # oe does not depend on msp.py
    assert method_code_version("msp") == msp_before


def test_editing_the_training_loop_retrains_the_network(tmp_path, ci_cells, stub_training):
    ctx = RunContext(device="cpu", cache=DetectorCache(tmp_path / "cache"))
    task = ci_cells["nd"].task
    OutlierExposure().fit(task, ctx)
    OutlierExposure().fit(task, ctx)
    assert len(stub_training) == 1
    with _edited(training, tmp_path):
        OutlierExposure().fit(task, ctx)
    assert len(stub_training) == 2


def test_editing_msp_module_changes_the_energy_code_version(tmp_path):
    before = method_code_version("energy")
    with _edited(msp_module, tmp_path):
        after = method_code_version("energy")
    assert after != before


def test_editing_the_oe_loss_retrains_the_oe_network(tmp_path, ci_cells, stub_training):
    ctx = RunContext(device="cpu", cache=DetectorCache(tmp_path / "cache"))
    task = ci_cells["nd"].task
    OutlierExposure().fit(task, ctx)
    assert len(stub_training) == 1
    with _edited(oe_module, tmp_path):
        detector = OutlierExposure().fit(task, ctx)
    assert len(stub_training) == 2
    assert not detector.meta["training"].get("cached_network")
