"""Auxiliary-outlier (OE) sources for real runs, by name: ``load_oe_source(name, pool_size, seed, shape)``.

Every source returns an :class:`bench.contracts.OutlierSource` of ``pool_size`` float32 images in
[0, 1], shape (pool_size, C, H, W) = (pool_size, *shape), drawn deterministically from ``seed``, with
an ``origin`` that says where they come from and what was changed (resizing, gray-scaling, deviations
from the papers).

File-backed sources are manual downloads: nothing here downloads anything. Their files live under a
data root, ``root`` or else ``$BENCH_DATA`` or else ``~/.cache/bench/data``; a missing file raises
:class:`bench.errors.BadInput` with one line that names the expected path and layout.

- ``300k-random-images``: ``<root>/300K_random_images.npy``, the 300K Random Images of the Outlier
  Exposure authors (Hendrycks et al. 2019), a uint8 array (300000, 32, 32, 3). It replaces 80 Million
  Tiny Images, the auxiliary set of OE and ATOM, which its authors withdrew in 2020 (GReg Sec. 6.1
  does the same); ``origin`` records the substitution.
- ``tiny-imagenet``: ``<root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG`` (the official release,
  200 classes x 500 images of 64 x 64), read with PIL; paths are listed and sampled first, and only
  the ``pool_size`` drawn images are decoded. ALOE and ATD use it as OE (RODEO Fig. 1).
- ``imagenet-rc``: ``<root>/imagenet64/train_data_batch_{1..10}.npz``, the Downsampled ImageNet 64x64
  training set in npz form (Chrabaszcz et al. 2017), read with ``allow_pickle=False``, one batch at a
  time; each drawn image is cropped to 32 x 32 at a random place after a padding of 4 (ATOM App. B.1's
  ImageNet-RC, the alternative auxiliary set of ATOM Table 8).
- ``gaussian-noise``: i.i.d. N(0.5, 1) per pixel, clipped to [0, 1] (the isotropic Gaussian noise
  images of the Outlier Exposure paper's noise baselines, Hendrycks et al. 2019).
- ``uniform-noise``: i.i.d. U[0, 1] per pixel.
- ``natural-patches``: :func:`bench.datasets.natural_patches.natural_patch_source` (offline photo crops).

Resizing: area averaging when shrinking (the antialiased downsampler), bilinear when enlarging.
Gray-scaling of RGB sources: ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B (as PIL's ``L`` mode);
a gray source requested with 3 channels is repeated over them.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.contracts import OutlierSource
from bench.errors import BadInput
from bench.files import atomic_path

OESourceFn = Callable[..., OutlierSource]  # fn(pool_size, seed, shape, root) -> OutlierSource
OE_SOURCES: dict[str, OESourceFn] = {}
OE_CHECKS: dict[str, Callable[[Path], None]] = {}  # name -> check(root): the files exist, or BadInput

RANDOM_IMAGES_FILE = "300K_random_images.npy"
TINY_IMAGENET_DIR = "tiny-imagenet-200"
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's RGB -> L conversion


def register_oe_source(
    name: str, check: Callable[[Path], None] | None = None
) -> Callable[[OESourceFn], OESourceFn]:
    """Register ``fn(pool_size, seed, shape, root) -> OutlierSource`` under ``name``. ``check(root)``,
    for sources read from disk, raises BadInput naming the missing file or folder without loading it: a
    run calls it while planning, before it writes anything (and a dry run reports the same error)."""

    def decorator(fn: OESourceFn) -> OESourceFn:
        if name in OE_SOURCES:
            raise ValueError(f"OE source {name!r} is registered twice")
        OE_SOURCES[name] = fn
        if check is not None:
            OE_CHECKS[name] = check
        return fn

    return decorator


def check_oe_source(name: str, root: str | Path | None = None) -> None:
    """Raise BadInput if source ``name`` is unknown or its files are missing (cheap: loads nothing)."""
    if name not in OE_SOURCES:
        raise BadInput(f"unknown OE source {name!r}; accepted: {', '.join(OE_SOURCES)}")
    if name in OE_CHECKS:
        OE_CHECKS[name](Path(root) if root is not None else default_data_root())


def list_oe_sources() -> list[str]:
    return list(OE_SOURCES)


def default_data_root() -> Path:
    """``$BENCH_DATA`` or ``~/.cache/bench/data``: where manually downloaded data sets live."""
    return Path(os.environ.get("BENCH_DATA", Path.home() / ".cache" / "bench" / "data"))


def load_oe_source(
    name: str,
    pool_size: int,
    seed: int,
    shape: tuple[int, int, int],
    root: str | Path | None = None,
) -> OutlierSource:
    """``pool_size`` auxiliary outliers of source ``name`` as (pool_size, *shape) floats in [0, 1]."""
    if name not in OE_SOURCES:
        raise BadInput(f"unknown OE source {name!r}; accepted: {', '.join(OE_SOURCES)}")
    if int(pool_size) < 1:
        raise BadInput(f"OE pool size must be >= 1, not {pool_size}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise BadInput(f"OE image shape must be (C, H, W) with positive sizes, not {shape}")
    data_root = Path(root) if root is not None else default_data_root()
    return OE_SOURCES[name](pool_size=int(pool_size), seed=int(seed), shape=shape, root=data_root)


def to_shape(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C0, H0, W0) floats in [0, 1] -> (N, *shape): gray-scale or repeat channels, then resize."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if channels == 1 and images.shape[1] == 3:
            weights = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        elif images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            raise BadInput(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    if tuple(images.shape[2:]) != (height, width):
        if height <= images.shape[2] and width <= images.shape[3]:
            images = F.interpolate(images, size=(height, width), mode="area")
        else:
            images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0).contiguous().to(torch.float32)


def _uint8_nhwc_to_nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def _draw(rng: np.random.Generator, available: int, pool_size: int, what: str) -> np.ndarray:
    if pool_size > available:
        raise BadInput(f"{what} holds {available} images, fewer than the requested pool of {pool_size}")
    return np.sort(rng.choice(available, size=pool_size, replace=False))


def _check_random_images(root: Path) -> None:
    path = Path(root) / RANDOM_IMAGES_FILE
    if not path.is_file():
        raise BadInput(
            f"300k-random-images: expected {path} (uint8 array N x 32 x 32 x 3); download it from the "
            "Outlier Exposure authors and place it there (or point BENCH_DATA at its folder)"
        )


CONVERT_CHUNK = 10_000  # images converted at a time into the memory-mapped float32 copy


def _converted_memmap(path: Path, array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A float32 (N, *shape) copy of the uint8 NHWC ``array`` in ``<root>/converted/oe/`` (made once, in
    chunks, then renamed into place; remade when the source's size or mtime changes), opened memory-mapped
    copy-on-write: pages are read when a batch touches them and nothing is written back."""
    folder = path.parent / "converted" / "oe"
    target = folder / f"{path.stem}-{'x'.join(map(str, shape))}.f32.npy"
    record_path = target.with_suffix(".json")
    stat = path.stat()
    source = {"file": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "shape": list(shape)}
    try:
        current = json.loads(record_path.read_text()) == source and target.is_file()
    except (OSError, ValueError):
        current = False
    if not current:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            out = np.lib.format.open_memmap(
                temporary, mode="w+", dtype=np.float32, shape=(len(array), *shape)
            )
            for start in range(0, len(array), CONVERT_CHUNK):
                chunk = _uint8_nhwc_to_nchw(array[start : start + CONVERT_CHUNK])
                out[start : start + len(chunk)] = to_shape(chunk, shape).numpy()
            out.flush()
            del out
        record_path.write_text(json.dumps(source))
    mapped = np.load(target, mmap_mode="c", allow_pickle=False)
    if mapped.dtype != np.float32 or mapped.shape != (len(array), *shape):
        raise BadInput(
            f"300k-random-images: {target} is not a float32 {(len(array), *shape)} array; delete it"
        )
    return mapped


@register_oe_source("300k-random-images", check=_check_random_images)
def random_images_300k(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    _check_random_images(root)
    path = Path(root) / RANDOM_IMAGES_FILE
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise BadInput(
            f"300k-random-images: {path} holds a {array.dtype} array of shape {array.shape}; "
            "expected uint8 N x 32 x 32 x 3"
        )
    if pool_size == len(array):  # the whole set (the paper profile): memory-mapped, no RAM copy
        images = torch.from_numpy(_converted_memmap(path, array, tuple(shape)))
    else:
        rows = _draw(np.random.default_rng(seed), len(array), pool_size, str(path))
        images = to_shape(_uint8_nhwc_to_nchw(array[rows]), shape)
    origin = (
        f"300K Random Images of the Outlier Exposure authors ({path}, {len(array)} images): {pool_size} "
        f"rows drawn with seed {seed}, resized to {tuple(shape)}. Deviation: replaces 80 Million Tiny "
        "Images (withdrawn in 2020), the auxiliary set of the OE and ATOM papers"
    )
    return OutlierSource(name="300k-random-images", images=images, origin=origin)


def _tiny_imagenet_paths(train: Path) -> list[Path]:
    paths: list[Path] = []
    for wnid in sorted(p for p in train.iterdir() if p.is_dir()):
        folder = wnid / "images"
        if folder.is_dir():
            paths.extend(sorted(p for p in folder.iterdir() if p.suffix == ".JPEG"))
    return paths


def _tiny_imagenet_layout(root: Path) -> str:
    train = Path(root) / TINY_IMAGENET_DIR / "train"
    return (
        f"tiny-imagenet: expected the folder {train} laid out as <wnid>/images/*.JPEG (the official "
        f"tiny-imagenet-200 release); download and unzip it under {Path(root)} (or set BENCH_DATA)"
    )


def _check_tiny_imagenet(root: Path) -> None:
    train = Path(root) / TINY_IMAGENET_DIR / "train"
    has_images = train.is_dir() and any(
        folder.is_dir() and any(p.suffix == ".JPEG" for p in folder.iterdir())
        for folder in (wnid / "images" for wnid in train.iterdir())
    )
    if not has_images:
        raise BadInput(_tiny_imagenet_layout(root))


@register_oe_source("tiny-imagenet", check=_check_tiny_imagenet)
def tiny_imagenet(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    from PIL import Image

    _check_tiny_imagenet(root)
    train = Path(root) / TINY_IMAGENET_DIR / "train"
    paths = _tiny_imagenet_paths(train)
    chosen = _draw(np.random.default_rng(seed), len(paths), pool_size, str(train))
    images = torch.empty((pool_size, *shape), dtype=torch.float32)
    for i, index in enumerate(chosen):
        with Image.open(paths[index]) as image:
            pixels = np.array(image.convert("RGB"), dtype=np.uint8)
        images[i] = to_shape(_uint8_nhwc_to_nchw(pixels[None]), shape)[0]
    origin = (
        f"Tiny ImageNet train split ({train}, {len(paths)} JPEGs): {pool_size} images drawn with seed "
        f"{seed}, read with PIL, resized to {tuple(shape)}"
    )
    return OutlierSource(name="tiny-imagenet", images=images, origin=origin)


IMAGENET64_DIR = "imagenet64"
IMAGENET64_SIDE = 64
IMAGENET_RC_CROP, IMAGENET_RC_PADDING = 32, 4  # ATOM App. B.1: 32 x 32 crops with a padding of 4


def _imagenet64_batches(root: Path) -> list[Path]:
    """The batch files in numeric order (batch_2 before batch_10)."""
    found = (Path(root) / IMAGENET64_DIR).glob("train_data_batch_*.npz")
    return sorted((p for p in found if p.stem.rpartition("_")[2].isdigit()), key=lambda p: int(p.stem[17:]))


def _check_imagenet64(root: Path) -> None:
    if not _imagenet64_batches(root):
        folder = Path(root) / IMAGENET64_DIR
        raise BadInput(
            f"imagenet-rc: expected {folder}/train_data_batch_1.npz ... train_data_batch_10.npz, the "
            "Downsampled ImageNet 64x64 training set in npz form (Chrabaszcz et al. 2017; image-net.org, "
            f"Imagenet64_train_part1_npz.zip and part2); unzip both under {folder} (or set BENCH_DATA)"
        )


def _batch_rows(path: Path) -> int:
    """Rows of the ``data`` array of one batch, read from its npy header (the array is not loaded)."""
    import zipfile

    with zipfile.ZipFile(path) as archive, archive.open("data.npy") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read_header(handle)
    return int(shape[0])


def random_crops(images: torch.Tensor, size: int, padding: int, rng: np.random.Generator) -> torch.Tensor:
    """One ``size`` x ``size`` window per image of the zero-padded images, at a position drawn from
    ``rng`` (torchvision's ``RandomCrop(size, padding)``, drawn once per image)."""
    padded = F.pad(images, (padding,) * 4)
    span = padded.shape[-1] - size + 1
    tops, lefts = rng.integers(0, span, size=len(images)), rng.integers(0, span, size=len(images))
    rows = torch.as_tensor(tops)[:, None] + torch.arange(size)[None, :]  # (N, size)
    cols = torch.as_tensor(lefts)[:, None] + torch.arange(size)[None, :]
    index = torch.arange(len(images))[:, None, None, None]
    channel = torch.arange(images.shape[1])[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]


@register_oe_source("imagenet-rc", check=_check_imagenet64)
def imagenet_rc(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    """ATOM App. B.1's ImageNet-RC: Downsampled ImageNet 64x64 (1,281,167 images), randomly cropped to
    32 x 32 with a padding of 4. Each batch's ``data`` is (N, 3 x 64 x 64) uint8, channel-major."""
    _check_imagenet64(root)
    batches = _imagenet64_batches(root)
    sizes = [_batch_rows(path) for path in batches]
    rng = np.random.default_rng(seed)
    chosen = _draw(rng, sum(sizes), pool_size, str(Path(root) / IMAGENET64_DIR))
    parts, start = [], 0
    for path, size in zip(batches, sizes, strict=True):
        rows = chosen[(chosen >= start) & (chosen < start + size)] - start
        if len(rows):
            with np.load(path, allow_pickle=False) as archive:  # one batch in memory at a time
                data = archive["data"]
                parts.append(torch.from_numpy(np.ascontiguousarray(data[rows])))
        start += size
    side = IMAGENET64_SIDE
    images = torch.cat(parts).view(-1, 3, side, side).to(torch.float32) / 255.0
    images = to_shape(random_crops(images, IMAGENET_RC_CROP, IMAGENET_RC_PADDING, rng), shape)
    origin = (
        f"ImageNet-RC (ATOM App. B.1): Downsampled ImageNet 64x64 ({Path(root) / IMAGENET64_DIR}, "
        f"{len(batches)} batches, {sum(sizes)} images): {pool_size} drawn with seed {seed}, each cropped "
        f"once to 32 x 32 at a random place after a padding of 4, resized to {tuple(shape)}. Deviation: "
        "the paper crops anew at every epoch; here the crops are fixed with the pool"
    )
    return OutlierSource(name="imagenet-rc", images=images, origin=origin)


@register_oe_source("gaussian-noise")
def gaussian_noise(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    generator = torch.Generator().manual_seed(seed)
    images = (torch.randn((pool_size, *shape), generator=generator) + 0.5).clamp_(0.0, 1.0)
    origin = f"{pool_size} images of i.i.d. N(0.5, 1) pixels clipped to [0, 1] (OE's noise), seed {seed}"
    return OutlierSource(name="gaussian-noise", images=images, origin=origin)


@register_oe_source("uniform-noise")
def uniform_noise(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((pool_size, *shape), generator=generator)
    origin = f"{pool_size} images of i.i.d. U[0, 1] pixels, seed {seed}"
    return OutlierSource(name="uniform-noise", images=images, origin=origin)


@register_oe_source("natural-patches")
def natural_patches(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    from bench.datasets.natural_patches import natural_patch_source

    if shape[0] not in (1, 3):
        raise BadInput(f"natural-patches: 1 or 3 channels, not {shape[0]}")
    return natural_patch_source(pool_size, seed, shape)


@register_oe_source("glyph-letters")
def glyph_letters(pool_size: int, seed: int, shape: tuple[int, int, int], root: Path) -> OutlierSource:
    return _glyph_letters(pool_size, seed, tuple(shape))


@functools.lru_cache(maxsize=2)
def _glyph_letters(pool_size: int, seed: int, shape: tuple[int, int, int]) -> OutlierSource:
    """Rendered once per (pool, seed, shape) in a process: every cell of a run shares the pool."""
    from bench.datasets.glyph_corpus import SIZES, glyph_corpus

    side = max(shape[1], shape[2])
    size = next((s for s in SIZES if s >= side), SIZES[-1])
    corpus = glyph_corpus("train", pool_size, seed=seed, size=size, kinds=("letter", "symbol"))
    images = to_shape(corpus.images, shape)
    images.requires_grad_(False)
    origin = (
        f"glyph corpus (bench.datasets.glyph_corpus), train split, seed {seed}: {pool_size} Latin letters "
        f"and symbols rendered from matplotlib's DejaVu/STIXGeneral fonts at {size} x {size} (20% damaged), "
        f"no digits; resized to {tuple(shape)}"
    )
    return OutlierSource(name="glyph-letters", images=images, origin=origin)
