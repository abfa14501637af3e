"""The papers' backbones (issue 28): their names, pinned files, ``bench backbones fetch`` and loading.

- ``openai-vit-b-32``: OpenAI's CLIP ViT-B/32, the CLIP of EOE (Sec. 3.3, App. G.2: zero-shot CLIP and
  BCE-CLIP) and the nearest loadable relative of GLIDE's noise-aware CLIP that RODEO guides and filters
  with (Sec. 4.1 "Model Selection", Table 10). Fetched from OpenAI's release URL, whose path segment is
  the file's sha256 (pinned below). The release is a TorchScript archive: ``fetch`` verifies it, reads its
  tensors once (``torch.jit.load``) and stores them as ``ViT-B-32.safetensors`` under open_clip's key
  names, so a run never unpickles anything. open_clip builds the architecture as ``ViT-B-32-quickgelu``
  (OpenAI trained with QuickGELU; open_clip's plain ``ViT-B-32`` uses GELU).
- ``ddpm-cifar10-32``: ``google/ddpm-cifar10-32`` (Ho et al. 2020), the generator the harness uses in
  place of GLIDE (RODEO Table 10). Why this one, and how it differs: docs/design.md "Papers' backbones".
  Its files' sha256 are not published anywhere this code could read when it was written (the Hugging
  Face API is unreachable from the development machine), so ``fetch`` records the sha256 of the first
  download in ``SHA256SUMS`` and every later fetch and load checks the files against that record; the
  fetch line says that the files are not pinned.

Files live under ``$BENCH_DATA/backbones/<name>/`` (default ``~/.cache/bench/data``). Downloads use a
short socket timeout, so an offline fetch fails within seconds with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BadInput

FETCH_TIMEOUT_S = 10.0
SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # where it is stored, relative to the backbone's folder
    url: str
    sha256: str | None  # None: not published; recorded at the first download (trust on first use)


@dataclass(frozen=True)
class PaperBackbone:
    name: str
    kind: str  # "clip" or "ddpm"
    description: str  # what a reader sees in the dry run and the rows' ``backbone`` column
    files: tuple[RemoteFile, ...]
    loads: tuple[str, ...]  # the files a load reads (after conversion), relative to the folder
    convert: str = ""  # "" or "openai-jit": TorchScript release -> safetensors (open_clip key names)
    model_name: str = ""  # open_clip model name of a CLIP


OPENAI_VIT_B_32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
DDPM_REPO = "https://huggingface.co/google/ddpm-cifar10-32/resolve/main"

PAPER_BACKBONES: dict[str, PaperBackbone] = {
    "openai-vit-b-32": PaperBackbone(
        name="openai-vit-b-32",
        kind="clip",
        description="OpenAI CLIP ViT-B/32 (open_clip ViT-B-32-quickgelu)",
        files=(
            RemoteFile(
                "ViT-B-32.pt",
                f"https://openaipublic.azureedge.net/clip/models/{OPENAI_VIT_B_32_SHA256}/ViT-B-32.pt",
                OPENAI_VIT_B_32_SHA256,
            ),
        ),
        loads=("ViT-B-32.safetensors",),
        convert="openai-jit",
        model_name="ViT-B-32-quickgelu",
    ),
    "ddpm-cifar10-32": PaperBackbone(
        name="ddpm-cifar10-32",
        kind="ddpm",
        description="google/ddpm-cifar10-32 (Ho et al. 2020 DDPM, diffusers UNet2DModel, 32 px)",
        files=(
            RemoteFile("config.json", f"{DDPM_REPO}/config.json", None),
            RemoteFile(
                "diffusion_pytorch_model.safetensors",
                f"{DDPM_REPO}/diffusion_pytorch_model.safetensors",
                None,
            ),
            RemoteFile("scheduler_config.json", f"{DDPM_REPO}/scheduler_config.json", None),
        ),
        loads=("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"),
    ),
}
PAPER_CLIP = "openai-vit-b-32"
PAPER_DDPM = "ddpm-cifar10-32"


def data_root() -> Path:
    return Path(os.environ.get("BENCH_DATA", Path.home() / ".cache" / "bench" / "data"))


def folder(name: str) -> Path:
    return data_root() / "backbones" / name


def is_paper_backbone(name) -> bool:
    return isinstance(name, str) and name in PAPER_BACKBONES


def missing_files(name: str) -> list[Path]:
    """The files a load of ``name`` reads that are not on disk."""
    base = folder(name)
    return [base / path for path in PAPER_BACKBONES[name].loads if not (base / path).is_file()]


def fetch_command(names) -> str:
    return "bench backbones fetch " + " ".join(sorted(set(names)))


def check_present(name: str) -> None:
    """BadInput naming the fetch command when a file of ``name`` is missing; loads nothing."""
    missing = missing_files(name)
    if missing:
        raise BadInput(
            f"the weights of {name} ({PAPER_BACKBONES[name].description}) are not in {folder(name)}: run "
            f"`{fetch_command([name])}`"
        )


def backbone_files(name: str) -> list[Path]:
    """The files a load of ``name`` reads, as far as they exist (their digests go into cache keys)."""
    base = folder(name)
    return [base / path for path in PAPER_BACKBONES[name].loads if (base / path).is_file()]


def plan_check(methods: dict, dry_run: bool) -> list[str]:
    """Planning (``bench.plan.plan_run``): the paper backbones the planned methods name and lack. A run
    stops here (BadInput, one line: the fetch command and the explicit stand-in switch) before any work;
    a dry run gets the same line back as a note."""
    from bench.backbones.files import method_backbones

    lacking: dict[str, list[str]] = {}
    for method_name, method in methods.items():
        for backbone in method_backbones(method):
            if is_paper_backbone(backbone) and missing_files(backbone):
                lacking.setdefault(method_name, []).append(backbone)
    notes = []
    if lacking:
        names = sorted({b for backbones in lacking.values() for b in backbones})
        switches = " ".join(f"--set {m}.backbones=embedded" for m in lacking)
        line = (
            f"the papers' backbones {', '.join(names)} are not in {data_root() / 'backbones'}: run "
            f"`{fetch_command(names)}`, or run the embedded stand-ins (not the papers' methods) with "
            f"{switches}"
        )
        if not dry_run:
            raise BadInput(line)
        notes.append(line)
    rodeo = methods.get("rodeo")
    if rodeo is not None and rodeo.tau_image is None and is_paper_backbone(rodeo.clip_backbone):
        from bench.methods.rodeo import check_imagenet_validation

        try:
            check_imagenet_validation()
        except BadInput as error:
            if not dry_run:
                raise
            notes.append(str(error))
    return notes


# ---- fetch -------------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded(base: Path) -> dict[str, str]:
    sums = base / SUMS
    return json.loads(sums.read_text()) if sums.is_file() else {}


def _download(url: str, dest: Path, opener: Callable, timeout: float) -> None:
    tmp = dest.with_name(dest.name + ".part")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with opener(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except Exception as error:  # URLError, socket timeouts, HTTP errors: one line, exit 2
        tmp.unlink(missing_ok=True)
        reason = " ".join(str(getattr(error, "reason", error)).split())[:160]
        raise BadInput(f"cannot download {url}: {reason or type(error).__name__}") from None
    tmp.replace(dest)


def fetch(
    names, *, opener: Callable = urllib.request.urlopen, timeout: float = FETCH_TIMEOUT_S, force: bool = False
) -> list[str]:
    """Download, verify and store each of ``names``; one line per backbone. BadInput (one line) on an
    unknown name, an unreachable URL or a sha256 mismatch (the bad file is removed)."""
    unknown = [n for n in names if n not in PAPER_BACKBONES]
    if unknown:
        raise BadInput(f"unknown backbone {unknown[0]!r}; accepted: {', '.join(PAPER_BACKBONES)}")
    lines = []
    for name in dict.fromkeys(names):
        spec, base = PAPER_BACKBONES[name], folder(name)
        recorded = _recorded(base)
        pinned = True
        for remote in spec.files:
            dest = base / remote.path
            expected = remote.sha256 or recorded.get(remote.path)
            pinned = pinned and remote.sha256 is not None
            if dest.is_file() and not force and (expected is None or sha256_of(dest) == expected):
                recorded.setdefault(remote.path, sha256_of(dest))
                continue
            _download(remote.url, dest, opener, timeout)
            actual = sha256_of(dest)
            if expected is not None and actual != expected:
                dest.unlink()
                raise BadInput(
                    f"{remote.url}: sha256 {actual[:16]}... is not the expected {expected[:16]}...; removed"
                )
            recorded[remote.path] = actual
        if spec.convert:
            convert(spec, base)
            for path in spec.loads:
                recorded[path] = sha256_of(base / path)
        base.mkdir(parents=True, exist_ok=True)
        (base / SUMS).write_text(json.dumps(recorded, indent=1, sort_keys=True))
        how = "sha256 pinned" if pinned else "sha256 not published: recorded at the first download"
        lines.append(f"{name}: {spec.description} in {base} ({how})")
    return lines


def verify(name: str) -> None:
    """BadInput when a stored file of ``name`` no longer has the sha256 recorded (or pinned) for it."""
    base, recorded = folder(name), _recorded(folder(name))
    for path in PAPER_BACKBONES[name].loads:
        expected = recorded.get(path)
        if expected is not None and sha256_of(base / path) != expected:
            raise BadInput(
                f"{base / path} changed since `{fetch_command([name])}`; fetch it again with --force"
            )


def convert(spec: PaperBackbone, base: Path) -> None:
    """OpenAI's TorchScript release -> safetensors with open_clip's key names (the same as OpenAI's for the
    ViT CLIPs; the three scalar attributes open_clip does not keep are dropped)."""
    if spec.convert != "openai-jit":
        raise ValueError(f"unknown conversion {spec.convert!r}")
    import torch
    from safetensors.torch import save_file

    source = base / spec.files[0].path
    try:
        state = torch.jit.load(str(source), map_location="cpu").state_dict()
    except Exception as error:
        raise BadInput(
            f"{source} is not a TorchScript archive: {' '.join(str(error).split())[:120]}"
        ) from None
    tensors = {
        key: value.detach().float().contiguous()
        for key, value in state.items()
        if key not in ("input_resolution", "context_length", "vocab_size")
    }
    tmp = base / (spec.loads[0] + ".part")
    save_file(tensors, str(tmp))
    tmp.replace(base / spec.loads[0])


# ---- loading -----------------------------------------------------------------------------------------------


def clip_from_model(name: str, model, model_name: str, info: dict | None = None):
    """A :class:`bench.backbones.ClipBackbone` around an open_clip model (random or loaded weights)."""
    import open_clip

    from bench.backbones import ClipBackbone

    preprocess = open_clip.get_model_preprocess_cfg(model)
    return ClipBackbone(
        name=name,
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        image_size=model.visual.image_size,
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        embed_dim=int(model.visual.output_dim),
        source="paper",
        info={"model_name": model_name, **(info or {})},
    )


def load_paper_clip(name: str):
    import open_clip
    from safetensors.torch import load_file

    check_present(name)
    verify(name)
    spec = PAPER_BACKBONES[name]
    path = folder(name) / spec.loads[0]
    model = open_clip.create_model(spec.model_name, pretrained=None, device="cpu")
    model.load_state_dict(load_file(str(path)), strict=True)
    return clip_from_model(name, model, spec.model_name, {"weights_sha256": sha256_of(path)})


def load_paper_ddpm(name: str):
    from bench.backbones.hub import load_hub_ddpm

    check_present(name)
    verify(name)
    backbone = load_hub_ddpm(f"hub-ddpm:{folder(name)}")
    backbone.name = name
    backbone.source = "paper"
    weights = folder(name) / "diffusion_pytorch_model.safetensors"
    backbone.info["weights_sha256"] = _recorded(folder(name)).get(weights.name) or sha256_of(weights)
    return backbone


# DDPM (Ho et al. 2020, App. B) CIFAR-10 network in diffusers' vocabulary: 128 channels x (1, 2, 2, 2), two
# residual blocks per resolution, self-attention at 16 x 16, linear betas 1e-4 .. 0.02 over T = 1000. Used to
# build the generator with random weights (tests, smoke runs); a fetched folder's own config.json wins.
DDPM_CIFAR10_UNET = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
}
DDPM_CIFAR10_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "variance_type": "fixed_large",
    "clip_sample": True,
}


def random_paper_backbone(name: str, seed: int = 0):
    """``name``'s architecture with random weights (nothing read or downloaded): for tests and smoke runs."""
    import torch

    torch.manual_seed(seed)
    spec = PAPER_BACKBONES[name]
    if spec.kind == "clip":
        import open_clip

        model = open_clip.create_model(spec.model_name, pretrained=None, device="cpu")
        return clip_from_model(name, model, spec.model_name, {"random_weights": seed}).eval()
    from diffusers import DDPMScheduler, UNet2DModel

    from bench.backbones import DiffusionBackbone

    unet = UNet2DModel(**DDPM_CIFAR10_UNET)
    scheduler = DDPMScheduler(**DDPM_CIFAR10_SCHEDULER)
    return DiffusionBackbone(name, unet, scheduler, source="paper", info={"random_weights": seed}).eval()


__all__ = [
    "PAPER_BACKBONES",
    "PAPER_CLIP",
    "PAPER_DDPM",
    "check_present",
    "fetch",
    "is_paper_backbone",
    "load_paper_clip",
    "load_paper_ddpm",
    "random_paper_backbone",
]
