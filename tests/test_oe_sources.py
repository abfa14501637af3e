"""Auxiliary-outlier sources for real runs: fake 300K-Random-Images file and Tiny-ImageNet folder in
tmp_path (nothing is downloaded), known answers for sampling, resizing, gray-scaling and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.datasets import natural_patches, oe_sources
from bench.datasets.oe_sources import check_oe_source, list_oe_sources, load_oe_source, random_crops
from bench.errors import BadInput

N_FAKE = 50
TINY_COLORS = {  # wnid -> solid RGB colour of each of its 3 JPEGs
    "n00000001": [(250, 10, 10), (10, 250, 10), (10, 10, 250)],
    "n00000002": [(200, 200, 200), (40, 40, 40), (120, 60, 180)],
}


@pytest.fixture
def random_images_root(tmp_path) -> tuple[Path, np.ndarray]:
    array = np.random.default_rng(123).integers(0, 256, size=(N_FAKE, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "300K_random_images.npy", array)
    return tmp_path, array


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    for wnid, colours in TINY_COLORS.items():
        folder = tmp_path / "tiny-imagenet-200" / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (64, 64), colour).save(folder / f"{wnid}_{i}.JPEG", quality=95)
        (folder.parent / f"{wnid}_boxes.txt").write_text("")  # the official layout has these too
    return tmp_path


def _luma(rgb) -> float:
    r, g, b = (c / 255 for c in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


# ---- registry -------------------------------------------------------------------------------------------


def test_registry_lists_the_sources_and_rejects_unknown_names(tmp_path):
    assert set(list_oe_sources()) >= {
        "300k-random-images",
        "tiny-imagenet",
        "gaussian-noise",
        "uniform-noise",
        "natural-patches",
    }
    with pytest.raises(BadInput, match="unknown OE source 'tiny-images'.*accepted: .*300k-random-images"):
        load_oe_source("tiny-images", 10, 0, (3, 32, 32), root=tmp_path)
    with pytest.raises(BadInput, match="pool size"):
        load_oe_source("uniform-noise", 0, 0, (3, 32, 32))


def test_default_root_comes_from_bench_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    assert oe_sources.default_data_root() == tmp_path
    monkeypatch.delenv("BENCH_DATA")
    assert oe_sources.default_data_root() == Path.home() / ".cache" / "bench" / "data"


# ---- 300K Random Images ---------------------------------------------------------------------------------


def test_random_images_draws_exact_rows_deterministically(random_images_root):
    root, array = random_images_root
    source = load_oe_source("300k-random-images", 20, seed=7, shape=(3, 32, 32), root=root)
    assert source.name == "300k-random-images"
    assert source.images.shape == (20, 3, 32, 32) and source.images.dtype == torch.float32
    rows = np.sort(np.random.default_rng(7).choice(N_FAKE, size=20, replace=False))
    expected = torch.from_numpy(array[rows]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(source.images, expected)
    assert float(source.images.min()) >= 0.0 and float(source.images.max()) <= 1.0
    again = load_oe_source("300k-random-images", 20, seed=7, shape=(3, 32, 32), root=root)
    assert torch.equal(again.images, source.images)
    other = load_oe_source("300k-random-images", 20, seed=8, shape=(3, 32, 32), root=root)
    assert not torch.equal(other.images, source.images)
    assert "80 Million Tiny Images" in source.origin and "withdrawn" in source.origin


def test_random_images_gray_and_resized_to_8x8(random_images_root, monkeypatch):
    root, array = random_images_root
    monkeypatch.setenv("BENCH_DATA", str(root))  # root from the environment
    source = load_oe_source("300k-random-images", 5, seed=0, shape=(1, 8, 8))
    assert source.images.shape == (5, 1, 8, 8)
    rows = np.sort(np.random.default_rng(0).choice(N_FAKE, size=5, replace=False))
    luma = (array[rows].astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])  # (5, 32, 32)
    blocks = luma.reshape(5, 8, 4, 8, 4).mean(axis=(2, 4))  # area downsampling 32 -> 8
    np.testing.assert_allclose(source.images[:, 0].numpy(), blocks, atol=1e-5)


def test_random_images_missing_or_malformed_file_is_bad_input(tmp_path):
    expected = tmp_path / "300K_random_images.npy"
    with pytest.raises(BadInput) as info:
        load_oe_source("300k-random-images", 10, 0, (3, 32, 32), root=tmp_path)
    message = str(info.value)
    assert str(expected) in message and "\n" not in message
    assert "uint8" in message and "32 x 32 x 3" in message
    np.save(expected, np.zeros((4, 32, 32), dtype=np.float32))
    with pytest.raises(BadInput, match="expected uint8"):
        load_oe_source("300k-random-images", 2, 0, (3, 32, 32), root=tmp_path)


def test_random_images_pool_larger_than_file_is_bad_input(random_images_root):
    root, _ = random_images_root
    with pytest.raises(BadInput, match="holds 50 images, fewer than the requested pool of 51"):
        load_oe_source("300k-random-images", 51, 0, (3, 32, 32), root=root)


# ---- Tiny ImageNet ---------------------------------------------------------------------------------------


def test_tiny_imagenet_shapes_values_and_determinism(tiny_root):
    source = load_oe_source("tiny-imagenet", 4, seed=3, shape=(3, 16, 16), root=tiny_root)
    assert source.name == "tiny-imagenet"
    assert source.images.shape == (4, 3, 16, 16) and source.images.dtype == torch.float32
    assert float(source.images.min()) >= 0.0 and float(source.images.max()) <= 1.0
    again = load_oe_source("tiny-imagenet", 4, seed=3, shape=(3, 16, 16), root=tiny_root)
    assert torch.equal(again.images, source.images)
    # solid JPEGs: every image is (nearly) one of the six colours, each at most once
    colours = [c for cs in TINY_COLORS.values() for c in cs]
    mean_rgb = source.images.mean(dim=(2, 3)) * 255
    matched = [int(np.argmin([np.abs(np.array(c) - m.numpy()).max() for c in colours])) for m in mean_rgb]
    assert len(set(matched)) == 4
    for m, index in zip(mean_rgb, matched, strict=True):
        assert np.abs(np.array(colours[index]) - m.numpy()).max() < 6  # JPEG rounding
    everything = load_oe_source("tiny-imagenet", 6, seed=0, shape=(3, 8, 8), root=tiny_root)
    assert len({tuple(np.round(m.numpy(), 1)) for m in everything.images.mean(dim=(2, 3))}) == 6


def test_tiny_imagenet_gray_scale_is_luma(tiny_root):
    source = load_oe_source("tiny-imagenet", 6, seed=1, shape=(1, 8, 8), root=tiny_root)
    assert source.images.shape == (6, 1, 8, 8)
    lumas = sorted(_luma(c) for cs in TINY_COLORS.values() for c in cs)
    got = sorted(float(v) for v in source.images.mean(dim=(1, 2, 3)))
    np.testing.assert_allclose(got, lumas, atol=0.02)


def test_tiny_imagenet_missing_folder_is_bad_input(tmp_path):
    expected = tmp_path / "tiny-imagenet-200" / "train"
    with pytest.raises(BadInput) as info:
        load_oe_source("tiny-imagenet", 4, 0, (3, 32, 32), root=tmp_path)
    message = str(info.value)
    assert str(expected) in message and "<wnid>/images/*.JPEG" in message and "\n" not in message
    expected.mkdir(parents=True)  # the folder without images is no better
    with pytest.raises(BadInput, match="<wnid>/images"):
        load_oe_source("tiny-imagenet", 4, 0, (3, 32, 32), root=tmp_path)


def test_tiny_imagenet_pool_larger_than_folder_is_bad_input(tiny_root):
    with pytest.raises(BadInput, match="holds 6 images"):
        load_oe_source("tiny-imagenet", 7, 0, (3, 8, 8), root=tiny_root)


# ---- noise and natural patches ---------------------------------------------------------------------------


def test_gaussian_noise_is_clipped_n_half_one():
    source = load_oe_source("gaussian-noise", 2000, seed=0, shape=(1, 8, 8))
    x = source.images
    assert x.shape == (2000, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    p_clip = 0.3085375387259869  # P(N(0.5, 1) < 0) = P(N(0.5, 1) > 1) = Phi(-0.5)
    assert abs(float((x == 0).float().mean()) - p_clip) < 0.01
    assert abs(float((x == 1).float().mean()) - p_clip) < 0.01
    assert abs(float(x.mean()) - 0.5) < 0.01  # symmetric around 0.5
    assert torch.equal(load_oe_source("gaussian-noise", 2000, seed=0, shape=(1, 8, 8)).images, x)
    assert not torch.equal(load_oe_source("gaussian-noise", 2000, seed=1, shape=(1, 8, 8)).images, x)


def test_uniform_noise_statistics():
    x = load_oe_source("uniform-noise", 2000, seed=0, shape=(3, 4, 4)).images
    assert x.shape == (2000, 3, 4, 4)
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    assert abs(float(x.mean()) - 0.5) < 0.01
    assert abs(float(x.var()) - 1 / 12) < 0.003
    assert torch.equal(load_oe_source("uniform-noise", 2000, seed=0, shape=(3, 4, 4)).images, x)


def test_natural_patches_wraps_the_existing_source():
    source = load_oe_source("natural-patches", 30, seed=2, shape=(1, 8, 8))
    reference = natural_patches.natural_patch_source(30, 2, (1, 8, 8))
    assert source.name == "natural-patches"
    assert torch.equal(source.images, reference.images)


def test_the_whole_300k_set_is_memory_mapped_and_equals_the_in_memory_conversion(tmp_path):
    import numpy as np

    from bench.datasets.oe_sources import RANDOM_IMAGES_FILE, _uint8_nhwc_to_nchw, load_oe_source, to_shape

    array = np.random.default_rng(0).integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / RANDOM_IMAGES_FILE, array)
    source = load_oe_source("300k-random-images", 50, seed=3, shape=(3, 16, 16), root=tmp_path)
    expected = to_shape(_uint8_nhwc_to_nchw(array), (3, 16, 16))
    assert torch.allclose(source.images, expected, atol=1e-6)
    mapped = tmp_path / "converted" / "oe" / "300K_random_images-3x16x16.f32.npy"
    assert mapped.is_file() and _file_backed(source.images.data_ptr(), mapped)  # no RAM copy
    first = mapped.stat().st_mtime_ns
    again = load_oe_source("300k-random-images", 50, seed=4, shape=(3, 16, 16), root=tmp_path)
    assert mapped.stat().st_mtime_ns == first and torch.equal(again.images, source.images)  # reused
    array[0] = 255 - array[0]
    np.save(tmp_path / RANDOM_IMAGES_FILE, array)  # a changed source: the copy is made again
    changed = load_oe_source("300k-random-images", 50, seed=3, shape=(3, 16, 16), root=tmp_path)
    assert not torch.equal(changed.images[0], source.images[0]) and torch.equal(
        changed.images[1:], source.images[1:]
    )
    # a smaller pool still draws rows into memory, as before
    assert (
        load_oe_source("300k-random-images", 20, seed=3, shape=(3, 16, 16), root=tmp_path).images.shape[0]
        == 20
    )


def test_tensor_fingerprint_hashes_the_same_bytes_without_copying():
    import hashlib

    from bench.contracts import tensor_fingerprint

    t = torch.arange(12, dtype=torch.float32).view(3, 4)
    digest = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode() + t.numpy().tobytes()).hexdigest()[:16]
    assert tensor_fingerprint(t) == digest
    assert tensor_fingerprint(t.t()) != digest  # a transposed (non-contiguous) view is another content


def _file_backed(address: int, path) -> bool:
    """Whether ``address`` lies in a memory mapping of ``path`` (Linux /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[-1] == str(path):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= address < end:
                    return True
    return False


def _imagenet64_root(tmp_path, sizes=(5, 7)):
    """Batches in the Downsampled ImageNet npz form: ``data`` (N, 3 x 64 x 64) uint8, channel-major, plus
    ``labels`` and ``mean``. Every pixel of image k (counted over all batches) is 10 + k, so a crop shows
    which image it came from."""
    folder = tmp_path / "imagenet64"
    folder.mkdir(parents=True)
    start = 0
    for number, size in enumerate(sizes, start=1):
        values = np.arange(start, start + size, dtype=np.uint8) + 10
        data = np.repeat(values[:, None], 3 * 64 * 64, axis=1)
        np.savez(folder / f"train_data_batch_{number}.npz", data=data, labels=np.ones(size), mean=np.zeros(3))
        start += size
    return tmp_path


def test_imagenet_rc_draws_across_batches_and_crops_32_with_padding_4(tmp_path):
    root = _imagenet64_root(tmp_path)
    source = load_oe_source("imagenet-rc", 8, seed=1, shape=(3, 32, 32), root=root)
    assert source.name == "imagenet-rc" and source.images.shape == (8, 3, 32, 32)
    assert "ATOM App. B.1" in source.origin and "12 images" in source.origin
    seen = set()
    for image in source.images:
        values = torch.unique((image * 255).round())
        inside = values[values > 0]
        assert len(inside) == 1  # one source image (and, at most, the zero padding)
        seen.add(int(inside) - 10)
        # a crop within [0, 72 - 32] of the 72-pixel padded image: at most 4 padded rows / columns
        rows_zero = (image == 0).all(dim=0).all(dim=1).sum()
        assert rows_zero <= 4
    assert len(seen) == 8 and seen <= set(range(12)) and seen & set(range(5)) and seen & set(range(5, 12))
    again = load_oe_source("imagenet-rc", 8, seed=1, shape=(3, 32, 32), root=root)
    assert torch.equal(source.images, again.images)
    other = load_oe_source("imagenet-rc", 8, seed=2, shape=(1, 28, 28), root=root)
    assert other.images.shape == (8, 1, 28, 28)


def test_random_crops_are_windows_of_the_padded_image():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    crops = random_crops(images, 4, 1, np.random.default_rng(0))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for crop, full in zip(crops, padded, strict=True):
        windows = [full[:, r : r + 4, c : c + 4] for r in range(5) for c in range(5)]
        assert any(torch.equal(crop, w) for w in windows)


def test_imagenet_rc_missing_files_or_too_small_pool_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"imagenet-rc: expected .*imagenet64/train_data_batch_1.npz"):
        check_oe_source("imagenet-rc", tmp_path)
    root = _imagenet64_root(tmp_path / "data")
    with pytest.raises(BadInput, match="holds 12 images, fewer than the requested pool of 13"):
        load_oe_source("imagenet-rc", 13, seed=0, shape=(3, 32, 32), root=root)
