"""Backbones: the embedded tiny CLIP and DDPM load from the package with the network disabled and do their
jobs (zero-shot digits, denoising); builds are byte-for-byte deterministic; hub backbones load from local
files only, with one-line errors naming the missing files; the ``bench backbones`` CLI."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from bench.backbones import (
    EMBEDDED_CLIP,
    EMBEDDED_DDPM,
    WEIGHTS_DIR,
    ClipBackbone,
    DiffusionBackbone,
    list_backbones,
    load_clip,
    load_ddpm,
)
from bench.errors import BadInput

from .conftest import bench_cmd, bench_env

# Measured on the shipped weights with exactly these test sets: zero-shot accuracy 0.98 on 200 held-out corpus
# digits (chance 0.1); mean denoising loss 0.153 at t = 50, 200, 500, 800 (a random UNet: about 1.09).
MIN_ZERO_SHOT_GLYPH_DIGITS = 0.9
MAX_HELDOUT_DDPM_LOSS = 0.18
HELDOUT_TIMESTEPS = (50, 200, 500, 800)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small models run fastest on one thread, and a busy shared 2-core machine makes 2 threads
    several times slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _refuse(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


@pytest.fixture(scope="module")
def clip() -> ClipBackbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket, "create_connection", _refuse)
        return load_clip()


@pytest.fixture(scope="module")
def ddpm() -> DiffusionBackbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket, "create_connection", _refuse)
        return load_ddpm()


@pytest.fixture(scope="module")
def heldout_digits():
    from bench.backbones.tiny_clip import heldout_glyph_digits

    return heldout_glyph_digits(count=200, seed=7)


# ---- embedded backbones -----------------------------------------------------------------------------------


def test_embedded_clip_loads_offline_and_encodes(no_network, clip, heldout_digits):
    assert clip.name == EMBEDDED_CLIP and clip.source == "embedded"
    assert (clip.image_size, clip.embed_dim) == (16, 128)
    assert 1.0 < clip.logit_scale <= 100.0 + 1e-3
    images = heldout_digits[0][:6].clone().requires_grad_(True)
    features = clip.encode_image(images)
    assert features.shape == (6, 128)
    assert torch.allclose(features.norm(dim=1), torch.ones(6), atol=1e-5)
    features[:, 0].sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # any size, gray or RGB: 8 x 8 RGB is resized and matched to the model's channels
    rgb = torch.rand(3, 3, 8, 8)
    assert clip.encode_image(rgb).shape == (3, 128)
    text = clip.encode_text(["a photo of the digit seven", "a photo of a broken digit seven"])
    assert text.shape == (2, 128) and torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    assert all(p.requires_grad for p in clip.model.visual.parameters())  # trainable for fine-tuning


def test_embedded_clip_zero_shot_digits_well_above_chance(clip, heldout_digits):
    from bench.backbones.tiny_clip import digit_prompts, zero_shot_accuracy

    images, labels = heldout_digits
    accuracy = zero_shot_accuracy(clip, images, labels, digit_prompts())
    assert accuracy >= MIN_ZERO_SHOT_GLYPH_DIGITS, accuracy


def test_embedded_ddpm_loads_offline_and_denoises(no_network, ddpm):
    from bench.backbones.tiny_ddpm import denoising_loss, heldout_images, make_scheduler, make_unet

    assert ddpm.name == EMBEDDED_DDPM and (ddpm.image_size, ddpm.channels) == (16, 1)
    assert ddpm.num_train_timesteps == 1000
    assert ddpm.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    images = heldout_images(count=200, seed=7)
    losses = denoising_loss(ddpm, images, HELDOUT_TIMESTEPS, seed=3)
    mean_loss = sum(losses.values()) / len(losses)
    assert mean_loss <= MAX_HELDOUT_DDPM_LOSS, losses
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_unet = DiffusionBackbone("random", make_unet(), make_scheduler(), "embedded").eval()
    random_losses = denoising_loss(random_unet, images, HELDOUT_TIMESTEPS, seed=3)
    assert mean_loss < 0.5 * sum(random_losses.values()) / len(random_losses), (losses, random_losses)


def test_model_space_round_trip(ddpm):
    images = torch.rand(4, 1, 16, 16)
    x = ddpm.to_model_space(images)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(ddpm.from_model_space(x), images, atol=1e-6)
    assert ddpm.to_model_space(torch.rand(2, 3, 8, 8)).shape == (2, 1, 16, 16)
    assert ddpm.from_model_space(x, size=8, channels=3).shape == (4, 3, 8, 8)
    assert ddpm.from_model_space(torch.full((1, 1, 2, 2), 3.0), clamp=False).max() == 2.0
    noise = torch.randn_like(x)
    t = torch.tensor([0, 10, 500, 999])
    assert torch.allclose(ddpm.add_noise(x, noise, t), ddpm.scheduler.add_noise(x, noise, t), atol=1e-5)


def test_word_tokenizer_layout_fits_open_clip_pooling(clip):
    tokenizer = clip.tokenizer
    tokens = tokenizer(["a photo of the digit seven", "a photo of the zorblax", " ".join(["digit"] * 40)])
    assert tokens.shape == (3, 16)
    assert (tokens.argmax(-1) == torch.tensor([7, 6, 15])).all()  # argmax pooling finds <end_of_text>
    assert tokens[0, 0] == tokenizer.sot_id and tokens[0, 7] == tokenizer.eot_id and tokens[0, 8:].eq(0).all()
    assert tokens[1, 5] == tokenizer.unk_id and tokenizer.unknown_words("the zorblax") == ["zorblax"]
    assert tokens[2, -1] == tokenizer.eot_id  # cut to the context, still ended
    meta = json.loads((WEIGHTS_DIR / f"{EMBEDDED_CLIP}.json").read_text())
    assert meta["vocabulary"] == tokenizer.words


def test_bad_names_and_missing_weights(tmp_path):
    with pytest.raises(BadInput, match="unknown CLIP backbone 'nope'; accepted: glyph-clip, hub-clip:"):
        load_clip("nope")
    with pytest.raises(
        BadInput, match="unknown DDPM backbone 'glyph-clip'; accepted: glyph-ddpm, glyph-ddpm-32, hub-ddpm:"
    ):
        load_ddpm("glyph-clip")
    with pytest.raises(BadInput, match="bench backbones build"):
        load_clip(weights_dir=tmp_path)
    with pytest.raises(BadInput, match="bench backbones build"):
        load_ddpm(weights_dir=tmp_path)


def test_list_backbones_reads_the_shipped_files():
    rows = {row["name"]: row for row in list_backbones()}
    for name, kind in ((EMBEDDED_CLIP, "clip"), (EMBEDDED_DDPM, "ddpm")):
        row = rows[name]
        assert row["kind"] == kind and row["source"] == "embedded" and row["status"] == "ok"
        assert row["size_bytes"] == (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size
        assert row["params"] > 100_000 and row["metrics"]
    assert {row["source"] for row in rows.values()} == {"embedded", "hub"}


# ---- build ---------------------------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path):
    from bench.backbones.build import build_backbones

    first = build_backbones(tmp_path / "a", steps=3, log=None, evaluate=False)
    second = build_backbones(tmp_path / "b", steps=3, log=None, evaluate=False)
    for name in (EMBEDDED_CLIP, EMBEDDED_DDPM):
        a = (tmp_path / "a" / f"{name}.safetensors").read_bytes()
        b = (tmp_path / "b" / f"{name}.safetensors").read_bytes()
        assert a == b, name
        assert first[name]["weights_sha256"] == second[name]["weights_sha256"]
        assert first[name]["training"]["steps"] == 3
    built = load_clip(weights_dir=tmp_path / "a")
    assert built.encode_text(["a photo of the digit one"]).shape == (1, 128)
    assert load_ddpm(weights_dir=tmp_path / "b").image_size == 16
    with pytest.raises(BadInput, match="accepted: clip, ddpm"):
        build_backbones(tmp_path / "c", only="nonsense")
    assert not (tmp_path / "c").exists()


def test_build_at_32_writes_glyph_ddpm_32_that_generates_at_32(tmp_path):
    """--size 32: the DDPM (only) trains on 32x32 glyphs under its own name and loads at that size."""
    from bench.backbones.build import build_backbones

    built = build_backbones(tmp_path / "d", only="ddpm", steps=2, log=None, evaluate=False, size=32)
    assert list(built) == ["glyph-ddpm-32"] and built["glyph-ddpm-32"]["training"]["corpus"]["size"] == 32
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "glyph-ddpm-32.json",
        "glyph-ddpm-32.safetensors",
    ]
    ddpm = load_ddpm("glyph-ddpm-32", weights_dir=tmp_path / "d")
    assert ddpm.image_size == 32 and ddpm.to_model_space(torch.rand(2, 1, 28, 28)).shape == (2, 1, 32, 32)
    for kwargs, needle in (
        ({"only": "ddpm", "size": 28}, "bad --size 28; accepted: 16, 32"),
        ({"size": 32}, "--only ddpm"),
    ):
        with pytest.raises(BadInput, match=needle):
            build_backbones(tmp_path / "e", log=None, **kwargs)
    assert not (tmp_path / "e").exists()


# ---- hub ---------------------------------------------------------------------------------------------------

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_open_clip_name(tmp_path):
    """A tiny architecture registered with open_clip under a test-only name (unregistered afterwards)."""
    from open_clip import factory

    name = "bench-test-tiny-clip"
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    factory.add_model_config(config)
    yield name
    factory._MODEL_CONFIG_PATHS.remove(config)
    factory._MODEL_CONFIGS.pop(name, None)


def test_hub_clip_loads_a_local_checkpoint_offline(tmp_path, tiny_open_clip_name, no_network):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    original = open_clip.create_model(tiny_open_clip_name).eval()
    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(original.state_dict(), checkpoint)
    backbone = load_clip(f"hub-clip:{tiny_open_clip_name}@{checkpoint}")
    assert backbone.source == "hub" and backbone.image_size == 32 and backbone.embed_dim == 32
    images = torch.rand(2, 1, 20, 20)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    resized = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear")
    with torch.no_grad():
        expected_image = original.encode_image((resized - mean) / std, normalize=True)
        texts = ["a photo of a cat", "a photo of the digit seven"]
        expected_text = original.encode_text(
            open_clip.get_tokenizer(tiny_open_clip_name)(texts), normalize=True
        )
        assert torch.allclose(backbone.encode_image(images), expected_image, atol=1e-5)
        assert torch.allclose(backbone.encode_text(texts), expected_text, atol=1e-5)
    # a safetensors checkpoint loads too
    safetensors_checkpoint = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(safetensors_checkpoint))
    again = load_clip(f"hub-clip:{tiny_open_clip_name}@{safetensors_checkpoint}")
    with torch.no_grad():
        assert torch.allclose(again.encode_image(images), expected_image, atol=1e-5)


def test_hub_clip_errors_name_the_files(tmp_path, tiny_open_clip_name):
    missing = tmp_path / "missing.bin"
    with pytest.raises(
        BadInput, match=f"{re.escape(str(missing))} does not exist: put the open_clip checkpoint"
    ):
        load_clip(f"hub-clip:{tiny_open_clip_name}@{missing}")
    with pytest.raises(BadInput, match="unknown open_clip model 'NoSuchNet'.*open_clip.list_models"):
        load_clip(f"hub-clip:NoSuchNet@{missing}")
    with pytest.raises(BadInput, match="accepted: hub-clip:<open_clip model name>@<path"):
        load_clip("hub-clip:ViT-B-32")
    wrong = tmp_path / "wrong.bin"
    torch.save({"not": torch.zeros(1)}, wrong)
    with pytest.raises(BadInput, match="does not load into open_clip model") as error:
        load_clip(f"hub-clip:{tiny_open_clip_name}@{wrong}")
    assert "\n" not in str(error.value)


def _tiny_unet_and_scheduler():
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    return unet, DDPMScheduler(num_train_timesteps=100, beta_schedule="linear")


@pytest.mark.parametrize("layout", ["flat", "pipeline"])
def test_hub_ddpm_loads_a_local_folder_offline(tmp_path, no_network, layout):
    unet, scheduler = _tiny_unet_and_scheduler()
    folder = tmp_path / "ddpm"
    unet.save_pretrained(folder / "unet" if layout == "pipeline" else folder)
    scheduler.save_pretrained(folder / "scheduler")
    backbone = load_ddpm(f"hub-ddpm:{folder}")
    assert backbone.source == "hub" and (backbone.image_size, backbone.channels) == (8, 3)
    assert backbone.num_train_timesteps == 100
    assert torch.allclose(backbone.alphas_cumprod, scheduler.alphas_cumprod.float())
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([3, 70])
    with torch.no_grad():
        assert torch.allclose(backbone.predict_noise(x, t), unet(x, t).sample, atol=1e-6)
    assert backbone.to_model_space(torch.rand(2, 1, 16, 16)).shape == (2, 3, 8, 8)


def test_hub_ddpm_missing_files_one_line_naming_them(tmp_path):
    files = (
        re.escape("config.json + diffusion_pytorch_model.safetensors")
        + ".*"
        + re.escape("and scheduler/scheduler_config.json there")
    )
    nope = tmp_path / "nope"
    with pytest.raises(BadInput, match=f"hub DDPM folder {re.escape(str(nope))} does not exist.*{files}"):
        load_ddpm(f"hub-ddpm:{nope}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        BadInput, match=f"hub DDPM folder {re.escape(str(empty))} has no unet config: put {files}"
    ):
        load_ddpm(f"hub-ddpm:{empty}")
    unet, _ = _tiny_unet_and_scheduler()
    unet.save_pretrained(tmp_path / "no_scheduler")
    with pytest.raises(BadInput, match="has no scheduler config") as error:
        load_ddpm(f"hub-ddpm:{tmp_path / 'no_scheduler'}")
    assert "\n" not in str(error.value)


# ---- CLI -----------------------------------------------------------------------------------------------


def test_cli_backbones_list_and_bad_build(tmp_path):
    commands = {"list": ["backbones", "list"], "bad": ["backbones", "build", "--only", "nonsense"]}

    def run(args):
        return subprocess.run(
            bench_cmd(*args), cwd=tmp_path, env=bench_env(tmp_path / "cache"), capture_output=True, text=True
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        listed, bad = pool.map(run, commands.values())
    assert listed.returncode == 0, listed.stderr
    assert EMBEDDED_CLIP in listed.stdout and EMBEDDED_DDPM in listed.stdout
    assert "hub-clip:" in listed.stdout and "params=" in listed.stdout
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ")
    assert "nonsense" in lines[0] and "accepted: clip, ddpm" in lines[0]
    assert list(tmp_path.iterdir()) == []


def _fake_hub_cache(monkeypatch, tmp_path, repo_id: str) -> Path:
    """An empty snapshot of ``repo_id`` in a private Hugging Face cache (refs/main -> one commit), the
    layout huggingface_hub writes; returns the snapshot folder."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_hub_ddpm_resolves_a_repo_id_in_the_hugging_face_cache(tmp_path, monkeypatch, no_network):
    unet, scheduler = _tiny_unet_and_scheduler()
    snapshot = _fake_hub_cache(monkeypatch, tmp_path, "bench-test/tiny-ddpm")
    unet.save_pretrained(snapshot)  # the flat layout of e.g. google/ddpm-cifar10-32
    scheduler.save_pretrained(snapshot)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    for spec in ("hub-ddpm:bench-test/tiny-ddpm", "hub-ddpm:bench-test/tiny-ddpm@main"):
        backbone = load_ddpm(spec)
        assert backbone.info["folder"] == str(snapshot) and backbone.num_train_timesteps == 100
    with pytest.raises(
        BadInput, match="neither a local folder nor in the Hugging Face cache.*snapshot_download"
    ):
        load_ddpm("hub-ddpm:bench-test/absent-ddpm")


def test_hub_clip_loads_a_pretrained_tag_from_the_hugging_face_cache(
    tmp_path, monkeypatch, tiny_open_clip_name, no_network
):
    import open_clip
    from open_clip import pretrained

    monkeypatch.setitem(
        pretrained._PRETRAINED, tiny_open_clip_name, {"tiny": {"hf_hub": "bench-test/tiny-clip/"}}
    )
    snapshot = _fake_hub_cache(monkeypatch, tmp_path, "bench-test/tiny-clip")
    torch.manual_seed(0)
    original = open_clip.create_model(tiny_open_clip_name).eval()
    torch.save(original.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    backbone = load_clip(f"hub-clip:{tiny_open_clip_name}@tiny")
    assert backbone.info["pretrained_tag"] == "tiny"
    with torch.no_grad():
        expected = original.encode_text(
            open_clip.get_tokenizer(tiny_open_clip_name)(["a cat"]), normalize=True
        )
        assert torch.allclose(backbone.encode_text(["a cat"]), expected, atol=1e-5)
    (snapshot / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(
        BadInput, match=r"weights bench-test-tiny-clip@tiny are not in the Hugging Face cache"
    ):
        load_clip(f"hub-clip:{tiny_open_clip_name}@tiny")
