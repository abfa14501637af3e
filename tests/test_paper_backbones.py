"""The papers' backbones on the paper profile (issue 28, item 1): fetch with pinned sha256 (file:// URLs of
files the test builds: nothing is downloaded), the one-line exit 2 of a run without them, the explicit
stand-in switch, and the ``backbone`` column of rows and manifest."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys

import pytest
import torch

from bench.backbones import files as backbone_files_module
from bench.backbones import paper
from bench.errors import BadInput
from bench.plan import RunSpec, plan_run
from bench.store import COLUMNS, PRE_BACKBONE_COLUMNS, ResultStore


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA", str(root))
    return root


def _fake(tmp_path, monkeypatch, content: bytes, pinned: bool = True):
    """A one-file backbone whose file is served from a file:// URL."""
    source = tmp_path / "served" / "weights.bin"
    source.parent.mkdir(parents=True)
    source.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    spec = paper.PaperBackbone(
        name="fake-net",
        kind="ddpm",
        description="a test file",
        files=(paper.RemoteFile("weights.bin", source.as_uri(), digest if pinned else None),),
        loads=("weights.bin",),
    )
    monkeypatch.setitem(paper.PAPER_BACKBONES, "fake-net", spec)
    return source, digest


def test_the_two_registries_of_paper_backbones_agree():
    assert {n: b.kind for n, b in paper.PAPER_BACKBONES.items()} == backbone_files_module.PAPER_BACKBONES
    clip = paper.PAPER_BACKBONES["openai-vit-b-32"].files[0]
    assert clip.sha256 in clip.url  # OpenAI's release URL carries the file's sha256


def test_fetch_downloads_verifies_and_stores(tmp_path, monkeypatch, data_root):
    _, digest = _fake(tmp_path, monkeypatch, b"weights " * 100)
    lines = paper.fetch(["fake-net"])
    stored = data_root / "backbones" / "fake-net" / "weights.bin"
    assert stored.read_bytes() == b"weights " * 100
    assert json.loads((stored.parent / "SHA256SUMS").read_text()) == {"weights.bin": digest}
    assert lines == [f"fake-net: a test file in {stored.parent} (sha256 pinned)"]
    assert paper.missing_files("fake-net") == []
    paper.verify("fake-net")
    stored.write_bytes(b"tampered")
    with pytest.raises(BadInput, match="changed since"):
        paper.verify("fake-net")


def test_fetch_refuses_a_file_whose_sha256_differs(tmp_path, monkeypatch, data_root):
    source, _ = _fake(tmp_path, monkeypatch, b"the real weights")
    source.write_bytes(b"something else")  # the server now serves another file
    with pytest.raises(BadInput, match="sha256 .* is not the expected"):
        paper.fetch(["fake-net"])
    assert not (data_root / "backbones" / "fake-net" / "weights.bin").exists()


def test_an_unpinned_file_is_checked_against_its_first_download(tmp_path, monkeypatch, data_root):
    source, digest = _fake(tmp_path, monkeypatch, b"first", pinned=False)
    assert "not published" in paper.fetch(["fake-net"])[0]
    source.write_bytes(b"second")
    with pytest.raises(BadInput, match="not the expected"):
        paper.fetch(["fake-net"], force=True)


def test_fetch_offline_fails_fast_with_one_line(monkeypatch, data_root):
    def offline(url, timeout):
        raise OSError("[Errno -2] Name or service not known")

    with pytest.raises(BadInput) as error:
        paper.fetch(["openai-vit-b-32"], opener=offline)
    assert "\n" not in str(error.value) and "cannot download https://openaipublic" in str(error.value)
    assert not list((data_root / "backbones").rglob("*.part"))


def test_openai_release_is_converted_to_safetensors_with_open_clip_names(tmp_path, monkeypatch, data_root):
    """The conversion step on a small TorchScript archive the test writes (the release is one)."""

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.positional_embedding = torch.nn.Parameter(torch.arange(6.0).view(2, 3))
            self.register_buffer("input_resolution", torch.tensor(224))

        def forward(self, x):
            return x + self.positional_embedding

    archive = tmp_path / "served" / "ViT-B-32.pt"
    archive.parent.mkdir(parents=True)
    torch.jit.save(torch.jit.script(Tiny()), str(archive))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    spec = paper.PaperBackbone(
        "fake-clip",
        "clip",
        "tiny",
        (paper.RemoteFile("ViT-B-32.pt", archive.as_uri(), digest),),
        loads=("ViT-B-32.safetensors",),
        convert="openai-jit",
    )
    monkeypatch.setitem(paper.PAPER_BACKBONES, "fake-clip", spec)
    paper.fetch(["fake-clip"])
    from safetensors.torch import load_file

    tensors = load_file(str(data_root / "backbones" / "fake-clip" / "ViT-B-32.safetensors"))
    assert set(tensors) == {"positional_embedding"}  # input_resolution dropped, as open_clip does
    assert torch.equal(tensors["positional_embedding"], torch.arange(6.0).view(2, 3))


def test_paper_profile_defaults_to_the_papers_backbones_and_the_switch_is_explicit(data_root):
    spec = RunSpec(methods=["rodeo", "clip", "bce-clip"], protocol="nd", profile="paper", dry_run=True)
    plan = plan_run(spec)
    assert (plan.methods["rodeo"].clip_backbone, plan.methods["rodeo"].ddpm_backbone) == (
        "openai-vit-b-32",
        "ddpm-cifar10-32",
    )
    assert plan.methods["clip"].backbone == plan.methods["bce-clip"].backbone == "openai-vit-b-32"
    assert any("bench backbones fetch ddpm-cifar10-32 openai-vit-b-32" in n for n in plan.backbone_notes)
    switched = plan_run(
        RunSpec(
            methods=["rodeo", "clip"],
            protocol="nd",
            profile="paper",
            dry_run=True,
            settings=["rodeo.backbones=embedded", "clip.backbones=embedded"],
        )
    )
    assert (switched.methods["rodeo"].clip_backbone, switched.methods["rodeo"].ddpm_backbone) == (
        "glyph-clip",
        "glyph-ddpm",
    )
    assert switched.methods["clip"].backbone == "glyph-clip"
    assert switched.backbone_notes == []
    quick = plan_run(RunSpec(methods=["rodeo"], protocol="nd", profile="quick", dry_run=True))
    assert quick.methods["rodeo"].clip_backbone == "glyph-clip"  # only the paper profile changes


def test_paper_run_without_weights_exits_2_with_one_line_and_writes_nothing(tmp_path, data_root):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--methods",
            "clip",
            "--protocol",
            "nd",
            "--profile",
            "paper",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "BENCH_DATA": str(data_root), "BENCH_CACHE": str(tmp_path / "c")},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bench backbones fetch openai-vit-b-32" in lines[0]
    assert "--set clip.backbones=embedded" in lines[0]
    assert not out.exists() and not data_root.exists()


def test_backbone_labels_mark_stand_ins():
    from bench.backbones.files import backbone_label
    from bench.registry import METHODS

    assert backbone_label(METHODS.get("rodeo")()) == "embedded:glyph-clip+glyph-ddpm"
    assert backbone_label(METHODS.get("clip")(backbones="paper")) == "openai-vit-b-32"
    assert backbone_label(METHODS.get("rodeo")(backbones="paper")) == "openai-vit-b-32+ddpm-cifar10-32"
    assert backbone_label(METHODS.get("msp")()) == ""
    with pytest.raises(BadInput, match="unknown backbones"):
        METHODS.get("clip")(backbones="glide")


def test_results_without_the_backbone_column_still_load(tmp_path):
    store = ResultStore(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    with store.results_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PRE_BACKBONE_COLUMNS)
        writer.writeheader()
        writer.writerow({c: "x" for c in PRE_BACKBONE_COLUMNS})
    (row,) = store.read_rows()
    assert list(row) == COLUMNS and row["backbone"] == ""
