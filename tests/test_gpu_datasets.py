"""cifar10, cifar100, svhn (torchvision's on-disk formats) and the folder-backed high-resolution sets,
built from tiny fixtures written here and read through the real loaders. No network: every fetch runs
with ``download=False``."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision import datasets as tv

from bench.config import get_profile
from bench.datasets import catalog, folder_sets, torchvision_sets
from bench.errors import BadInput
from bench.registry import DATASETS, PROTOCOLS
from tests.conftest import bench_cmd, bench_env

# The coarse label of each fine label (fine labels in the meta file's alphabetical order), as the
# official CIFAR-100 pickles store it in ``coarse_labels``: an independent transcription of the table.
KNOWN_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


@pytest.fixture
def root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA", str(data))
    return data


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_pickle(path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(payload, handle)


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR's layout (R plane, G plane, B plane of a 32 x 32 image)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root, monkeypatch, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Five training batches, a test batch and the meta file; torchvision's md5 pins patched to them."""
    folder = root / "torchvision" / tv.CIFAR10.base_folder
    written = {}
    train_list = []
    for i in range(1, 6):
        data, labels = cifar_images(per_batch, i), [(i + j) % 10 for j in range(per_batch)]
        write_pickle(folder / f"data_batch_{i}", {"data": data, "labels": labels})
        train_list.append([f"data_batch_{i}", md5(folder / f"data_batch_{i}")])
        written[f"data_batch_{i}"] = (data, labels)
    test = cifar_images(10, 9), list(range(10))
    write_pickle(folder / "test_batch", {"data": test[0], "labels": test[1]})
    written["test_batch"] = test
    write_pickle(folder / "batches.meta", {"label_names": torchvision_sets.CIFAR10_CLASSES})
    monkeypatch.setattr(tv.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(tv.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tv.CIFAR10, "meta", {**tv.CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return written


def test_cifar10_converts_through_torchvision_and_builds(root, monkeypatch):
    written = write_cifar10(root, monkeypatch)
    record = torchvision_sets.fetch("cifar10", download=False)
    assert record["status"] == "converted" and record["split_version"] == "cifar10-official-v1"
    assert record["counts"]["train"] == 20 and record["counts"]["test"] == 10
    assert len(record["source"]["files"]) == 7  # 5 training batches, the test batch, the meta file
    dataset = DATASETS.get("cifar10")()
    assert dataset.train_images.shape == (20, 3, 32, 32) and dataset.test_images.shape == (10, 3, 32, 32)
    assert dataset.eps == pytest.approx(8 / 255) and dataset.class_names[9] == "truck"
    # the first training image, pixel (row 0, col 1) of the green plane: CIFAR row index 1024 + 1
    data, labels = written["data_batch_1"]
    assert dataset.train_images[0, 1, 0, 1].item() == pytest.approx(data[0, 1025] / 255)
    assert dataset.train_labels[:4].tolist() == labels
    assert torchvision_sets.verify_one("cifar10").startswith("cifar10: ok")
    assert torchvision_sets.fetch("cifar10", download=False)["status"] == "present"


def test_a_cifar_file_that_fails_its_md5_is_refused_and_nothing_is_converted(root, monkeypatch):
    write_cifar10(root, monkeypatch)
    batch = root / "torchvision" / tv.CIFAR10.base_folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BadInput) as error:
        torchvision_sets.fetch("cifar10", download=False)
    message = str(error.value)
    assert "cifar-10-python.tar.gz" in message and str(root / "torchvision") in message
    assert not (root / "converted" / "cifar10.npz").exists()


def test_a_converted_file_changed_afterwards_fails_verify(root, monkeypatch):
    write_cifar10(root, monkeypatch)
    torchvision_sets.fetch("cifar10", download=False)
    npz = root / "converted" / "cifar10.npz"
    npz.write_bytes(npz.read_bytes() + b"x")
    with pytest.raises(BadInput, match="does not match its record"):
        torchvision_sets.verify_one("cifar10")


def test_the_superclass_table_is_a_partition_that_matches_the_official_coarse_labels():
    members = [fine for group in torchvision_sets.CIFAR100_SUPERCLASSES.values() for fine in group]
    assert len(torchvision_sets.CIFAR100_SUPERCLASSES) == 20 and len(members) == len(set(members)) == 100
    assert torchvision_sets.coarse_of_fine(torchvision_sets.CIFAR100_FINE_CLASSES).tolist() == KNOWN_COARSE


def test_cifar100_coarse_and_fine_labels(root, monkeypatch):
    folder = root / "torchvision" / tv.CIFAR100.base_folder
    fine_names = torchvision_sets.CIFAR100_FINE_CLASSES
    train_fine, test_fine = list(range(100)), [99, 0, 55, 30, 72]
    for name, fine in (("train", train_fine), ("test", test_fine)):
        coarse = [KNOWN_COARSE[f] for f in fine]
        payload = {"data": cifar_images(len(fine), len(fine)), "fine_labels": fine, "coarse_labels": coarse}
        write_pickle(folder / name, payload)
    write_pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": []})
    monkeypatch.setattr(tv.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(tv.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(tv.CIFAR100, "meta", {**tv.CIFAR100.meta, "md5": md5(folder / "meta")})
    torchvision_sets.fetch("cifar100", download=False)
    torchvision_sets.fetch("cifar100-fine", download=False)
    coarse, fine = DATASETS.get("cifar100")(), DATASETS.get("cifar100-fine")()
    assert coarse.num_classes == 20 and fine.num_classes == 100
    assert coarse.train_labels.tolist() == KNOWN_COARSE and fine.train_labels.tolist() == train_fine
    assert (
        coarse.test_labels.tolist() == [KNOWN_COARSE[f] for f in test_fine] == [13, 4, 0, 0, 0]
    )  # worm, apple, otter, dolphin, seal
    assert coarse.class_names[0] == "aquatic_mammals" and fine.class_names[55] == "otter"
    cells = PROTOCOLS.get("nd")().cell_ids(coarse, get_profile("ci"), 0)
    assert len(cells) == 20  # RODEO Table 3b: one nd cell per superclass


def test_svhn_reads_the_mat_files_and_maps_label_10_to_digit_0(root, monkeypatch):
    folder = root / "torchvision"
    folder.mkdir(parents=True)
    split_list = {}
    for part, n in (("train", 6), ("test", 4)):
        images = np.random.default_rng(n).integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        labels = np.array([[10], [1], [2], [3], [4], [5]][:n], dtype=np.uint8)
        filename = f"{part}_32x32.mat"
        scipy.io.savemat(folder / filename, {"X": images, "y": labels})
        split_list[part] = ["offline", filename, md5(folder / filename)]
    monkeypatch.setattr(tv.SVHN, "split_list", split_list)
    torchvision_sets.fetch("svhn", download=False)
    svhn = DATASETS.get("svhn")()
    assert svhn.train_labels.tolist() == [0, 1, 2, 3, 4, 5] and svhn.test_images.shape == (4, 3, 32, 32)


def write_png(path, size=(12, 10), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)


def write_mvtec(root) -> None:
    for k, category in enumerate(folder_sets.MVTEC_CATEGORIES):
        base = root / "mvtec" / category
        for i in range(2):
            write_png(base / "train" / "good" / f"{i:03d}.png", value=k)
        write_png(base / "test" / "good" / "000.png", value=k)
        write_png(base / "test" / "good" / "001.png", value=k)
        write_png(base / "test" / "crack" / "000.png", value=200)
        write_png(base / "test" / "scratch" / "000.png", value=250)


def test_mvtec_nd_cells_test_a_categorys_good_images_against_its_defects(root):
    write_mvtec(root)
    assert catalog.catalog()["mvtec"].present
    mvtec = DATASETS.get("mvtec")()
    assert mvtec.train_images.shape == (30, 3, 224, 224) and mvtec.eps == pytest.approx(2 / 255)
    nd = PROTOCOLS.get("nd")()
    profile = get_profile("ci")
    sizes = dict((cell, rest) for cell, *rest in nd.cell_sizes(mvtec, profile))
    assert len(sizes) == 15 and sizes["class3"] == [2, 2, 2]
    cell = next(c for c in nd.cells(mvtec, profile, seed=0) if c.cell_id == "class3")
    test = cell.evalsets[0]
    assert test.is_outlier.tolist() == [False, False, True, True]
    # the inliers are category 3's good images (value 3), the outliers its defects (200 and 250)
    assert (test.images[:2] * 255).round().unique().tolist() == [3.0]
    assert sorted((test.images[2:, 0, 0, 0] * 255).round().tolist()) == [200.0, 250.0]
    assert cell.task.images.shape[0] == 2 and set(cell.task.labels.tolist()) == {0}
    with pytest.raises(BadInput, match="accepted: --protocol nd"):
        PROTOCOLS.get("osr")().cell_ids(mvtec, profile, 0)


def test_imagenet30_reads_nested_class_folders(root):
    for part in ("train", "test"):
        for k, name in enumerate(folder_sets.IMAGENET30_CLASSES):
            write_png(root / "imagenet30" / part / name / "n0" / f"{part}.jpg", value=k)
    dataset = DATASETS.get("imagenet30")()
    assert dataset.num_classes == 30 and dataset.test_labels.tolist() == list(range(30))
    assert (dataset.test_images[7] * 255).round().unique().tolist() == [7.0]


def test_an_incomplete_tree_names_the_missing_folder_the_layout_and_the_source(root):
    write_mvtec(root)
    for path in (root / "mvtec" / "screw" / "test" / "crack").iterdir():
        path.unlink()
    for path in (root / "mvtec" / "screw" / "test" / "scratch").iterdir():
        path.unlink()
    with pytest.raises(BadInput) as error:
        DATASETS.get("mvtec").preflight()
    message = str(error.value)
    assert "mvtec/screw/test/<finding>" in message and "train/good" in message and "mvtec.com" in message


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("mvtec", "mvtec/bottle/train/good"), ("cifar10", "bench data fetch cifar10")],
)
def test_a_run_on_a_missing_data_set_exits_2_before_writing(tmp_path, dataset, expected):
    out = tmp_path / "run"
    env = {"BENCH_DATA": str(tmp_path / "data"), "BENCH_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--methods", "msp", "--protocol", "nd", "--dataset", dataset]
        + ["--profile", "ci", "--attacks", "clean", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "data").exists()


def test_bench_list_datasets_shows_every_set_with_resolution_classes_licence_and_presence(root):
    lines = catalog.dataset_lines(DATASETS.names())
    assert len(lines) == len(DATASETS.names())
    shown = {line.split()[0]: line for line in lines}
    expected = {
        "cifar10",
        "cifar100",
        "svhn",
        "mvtec",
        "headct",
        "brainmri",
        "tumor",
        "covid19",
        "imagenet30",
    }
    assert expected <= set(shown)
    assert "3x32x32  classes=20" in shown["cifar100"] and "absent" in shown["cifar100"]
    assert "3x224x224  classes=15" in shown["mvtec"] and "CC BY-NC-SA 4.0" in shown["mvtec"]
    assert shown["digits"].startswith("digits  present")


def test_bench_data_fetch_refuses_a_manual_set_with_its_layout(root):
    with pytest.raises(BadInput, match="manual download: put it at .*headct/train/good"):
        catalog.fetch(["headct"])
    with pytest.raises(BadInput, match="accepted: mnist, fmnist, cifar10"):
        catalog.fetch(["cifar11"])


def test_images_are_resized_to_224_in_rgb(tmp_path):
    path = tmp_path / "x.png"
    write_png(path, size=(40, 30), value=90)
    images = folder_sets.read_images([path], 224)
    assert images.shape == (1, 3, 224, 224) and images.dtype == torch.float32
    assert torch.allclose(images, torch.full_like(images, 90 / 255), atol=1e-6)


# 7 sets of 10,000 (mnist, tinyimagenet, places365, lsun, cifar100, lsun-crop, lsun-resize), isun 8,925,
# birds 5,794, flowers 6,149, coil100 7,200, svhn 26,032, textures 5,640
OOD_TOTAL = 7 * 10_000 + 8_925 + 5_794 + 6_149 + 7_200 + 26_032 + 5_640


@pytest.mark.parametrize(
    ("protocol", "cells", "first"),
    [
        ("nd", 10, ("class0", 5000, 1000, 9000)),
        ("osr", 5, None),
        ("ood", 1, ("all", 50000, 10000, OOD_TOTAL)),
    ],
)
def test_a_dry_run_plans_cifar10_from_the_official_counts_before_the_data_is_fetched(
    root, protocol, cells, first
):
    from bench.plan import RunSpec, plan_run

    spec = RunSpec(methods=["atom"], protocol=protocol, dataset="cifar10", profile="paper", dry_run=True)
    plan = plan_run(spec)
    sizes = PROTOCOLS.get(protocol)().cell_sizes(plan.dataset, plan.profile)
    assert len(sizes) == cells and "bench data fetch cifar10" in plan.dataset.notes["absent"]
    if first is not None:
        assert tuple(sizes[0]) == first  # ood: the 13 sets of RODEO Table 4 and ATOM, official sizes
    assert all(n_in + n_out > 0 for _, _, n_in, n_out in sizes)
    with pytest.raises(BadInput, match="bench data fetch cifar10"):
        plan_run(RunSpec(methods=["atom"], protocol=protocol, dataset="cifar10", profile="paper"))


def test_the_dry_run_prints_an_estimate_from_a_measured_step_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    env = {"BENCH_DATA": str(tmp_path / "data"), "BENCH_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--methods", "rodeo", "atom", "--protocol", "nd"]
        + ["--dataset", "cifar10", "--profile", "paper", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "400"},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "estimate: " in done.stdout and "CPU-hours (this CPU; not a GPU figure)" in done.stdout
    assert (
        "at 3x32x32 measured on cpu" in done.stdout and "wrn40_4 " in done.stdout and "class9" in done.stdout
    )
    assert not out.exists() and not (tmp_path / "data").exists()


def test_training_passes_count_exposure_and_train_time_attack_steps():
    from bench.estimate import training_passes
    from bench.registry import METHODS

    paper = get_profile("paper")  # 100 epochs, batches 64 ID / 128 OOD
    assert training_passes(METHODS.get("atom")(), paper, 5000) == 100 * (5000 + 10000) * (1 + 5)
    assert training_passes(METHODS.get("rodeo")(), paper, 5000) == 100 * (5000 + 5000) * (1 + 10)
    assert training_passes(METHODS.get("msp")(), paper, 5000) == 100 * 5000


def test_folder_ood_sets_load_resized_and_a_missing_one_names_its_folder_and_source(root):
    from bench.datasets import ood_sets

    write_png(root / "ood" / "coil100" / "obj1" / "a.png", size=(64, 48), value=30)
    write_png(root / "ood" / "coil100" / "b.png", size=(300, 300), value=60)
    suite = ood_sets.ood_suite(0, ("coil100",), (3, 32, 32))
    assert [name for name, _ in suite] == ["coil100"] and suite[0][1].shape == (2, 3, 32, 32)
    assert sorted((suite[0][1][:, 0, 0, 0] * 255).round().tolist()) == [30.0, 60.0]
    with pytest.raises(BadInput, match=r"OOD set isun: .*ood/isun/ is missing .*iSUN"):
        ood_sets.ood_suite(0, ("coil100", "isun"), (3, 32, 32))
    assert ood_sets.default_suite("svhn") == (
        "cifar10",
        "textures",
        "places365",
        "lsun-crop",
        "lsun-resize",
        "isun",
    )
    assert "cifar10" not in ood_sets.default_suite("cifar10") and "cifar100" in ood_sets.default_suite(
        "cifar10"
    )


def write_jpg(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 36), color=(value, value, value)).save(path)


def test_textures_flowers_and_places365_are_read_through_torchvision_in_their_layouts(root, monkeypatch):
    from bench.datasets import ood_sets

    tv_root = root / "torchvision"
    # DTD: dtd/dtd/images/<class>/<file>.jpg, dtd/dtd/labels/{train,val,test}1.txt
    dtd = tv_root / "dtd" / "dtd"
    for split, value in (("train", 10), ("val", 20), ("test", 30)):
        write_jpg(dtd / "images" / "banded" / f"{split}.jpg", value)
        (dtd / "labels").mkdir(parents=True, exist_ok=True)
        (dtd / "labels" / f"{split}1.txt").write_text(f"banded/{split}.jpg\n")
    # Flowers-102: flowers-102/jpg/image_%05d.jpg, imagelabels.mat, setid.mat (md5 pins patched)
    flowers = tv_root / "flowers-102"
    for image_id in (1, 2, 3):
        write_jpg(flowers / "jpg" / f"image_{image_id:05d}.jpg", 100 + image_id)
    scipy.io.savemat(flowers / "imagelabels.mat", {"labels": np.array([[1, 2, 3]])})
    scipy.io.savemat(flowers / "setid.mat", {"trnid": [[1]], "valid": [[2]], "tstid": [[2, 3]]})
    pins = {
        "label": ("imagelabels.mat", md5(flowers / "imagelabels.mat")),
        "setid": ("setid.mat", md5(flowers / "setid.mat")),
    }
    monkeypatch.setattr(tv.Flowers102, "_file_dict", {**tv.Flowers102._file_dict, **pins})
    # Places365: categories_places365.txt, places365_test.txt, test_256/<file>.jpg (md5 pins patched)
    (tv_root / "categories_places365.txt").write_text("/a/abbey 0\n/b/bakery 1\n")
    names = [f"Places365_test_{i:08d}.jpg" for i in range(1, 6)]
    (tv_root / "places365_test.txt").write_text("".join(f"{n}\n" for n in names))
    for i, name in enumerate(names):
        write_jpg(tv_root / "test_256" / name, 200 + i)
    monkeypatch.setattr(
        tv.Places365,
        "_CATEGORIES_META",
        ("categories_places365.txt", md5(tv_root / "categories_places365.txt")),
    )
    test_list = ("places365_test.txt", md5(tv_root / "places365_test.txt"))
    monkeypatch.setattr(tv.Places365, "_FILE_LIST_META", {**tv.Places365._FILE_LIST_META, "test": test_list})
    monkeypatch.setitem(ood_sets.OOD_SETS, "places365", replace(ood_sets.OOD_SETS["places365"], size=3))

    suite = dict(ood_sets.ood_suite(0, ("textures", "flowers", "places365"), (3, 32, 32)))
    gray = {name: sorted((images[:, 0, 0, 0] * 255).round().tolist()) for name, images in suite.items()}
    assert gray["textures"] == [10.0, 20.0, 30.0]  # all of DTD: train + val + test
    assert gray["flowers"] == [102.0, 103.0]  # the test split (tstid)
    assert len(gray["places365"]) == 3 and set(gray["places365"]) <= {200.0, 201.0, 202.0, 203.0, 204.0}
    again = ood_sets._torchvision_paths("places365", root)
    assert again == ood_sets._torchvision_paths("places365", root)  # a fixed sample
    (flowers / "setid.mat").write_bytes(b"corrupted")
    with pytest.raises(BadInput, match="bench data fetch flowers"):
        ood_sets.check_ood_set("flowers")


def test_the_default_oe_set_is_needed_only_by_methods_that_use_oe(root, monkeypatch):
    from bench.plan import RunSpec, plan_run

    write_cifar10(root, monkeypatch)
    torchvision_sets.fetch("cifar10", download=False)
    plan = plan_run(RunSpec(methods=["msp"], protocol="nd", dataset="cifar10", profile="ci"))
    assert plan.dataset.oe_source is None  # 300K Random Images absent, and msp needs no OE
    with pytest.raises(BadInput, match="300k-random-images: expected .*300K_random_images.npy"):
        plan_run(RunSpec(methods=["msp", "atom"], protocol="nd", dataset="cifar10", profile="ci"))
    with pytest.raises(BadInput, match="300K_random_images.npy"):  # a dry run reports the run's error
        plan_run(RunSpec(methods=["atom"], protocol="nd", dataset="cifar10", profile="ci", dry_run=True))
    np.save(root / "300K_random_images.npy", np.zeros((300, 32, 32, 3), dtype=np.uint8))
    plan = plan_run(RunSpec(methods=["atom"], protocol="nd", dataset="cifar10", profile="ci"))
    assert plan.dataset.oe_source is not None and "absent" not in plan.dataset.notes


def test_bench_list_datasets_also_shows_every_ood_set_and_oe_source_with_licence_and_presence(root):
    from bench.datasets import oe_sources, ood_sets

    write_png(root / "ood" / "coil100" / "a.png", size=(40, 40), value=10)
    lines = catalog.auxiliary_lines(root)
    shown = {(line.split("  ")[0], line.split("  ")[2]): line for line in lines}
    assert set(shown) == {(n, "ood set") for n in ood_sets.OOD_SETS} | {
        (n, "oe source") for n in oe_sources.list_oe_sources()
    }
    assert shown["coil100", "ood set"].startswith("coil100  present")
    assert "licence=non-commercial research" in shown["coil100", "ood set"]
    assert shown["isun", "ood set"].startswith("isun  absent") and "ood/isun/" in shown["isun", "ood set"]
    assert "bench data fetch textures" in shown["textures", "ood set"]
    assert shown["300k-random-images", "oe source"].startswith("300k-random-images  absent")
    assert "300K_random_images.npy" in shown["300k-random-images", "oe source"]
    assert shown["gaussian-noise", "oe source"].startswith("gaussian-noise  present")
    assert all("licence=" in line and "licence=  " not in line for line in lines)
    listed = subprocess.run(
        bench_cmd("list", "datasets"), capture_output=True, text=True, env=bench_env(root.parent / "cache")
    )
    assert listed.returncode == 0 and "isun  absent  ood set" in listed.stdout


def test_the_measured_step_stops_timing_once_its_time_is_spent(monkeypatch):
    """One warm-up pass, then timed passes while they sum to less than MEASURE_SECONDS (at least one)."""
    from bench import estimate
    from bench.methods import networks

    passes = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            passes.append(len(x))
            return self.linear(x.flatten(1))

    monkeypatch.setattr(networks, "build_network", lambda *args, **kwargs: Counting())
    monkeypatch.setattr(estimate, "MEASURE_SECONDS", 0.0)
    cost = estimate.measure_step("any", (3, 4, 4), 2, "cpu")
    assert passes == [2, 2] and cost.batch == 2 and cost.seconds_per_image > 0
    passes.clear()
    monkeypatch.setattr(estimate, "MEASURE_SECONDS", 60.0)
    estimate.measure_step("any", (3, 4, 4), 2, "cpu")
    assert len(passes) == estimate.WARMUP + estimate.REPEATS
