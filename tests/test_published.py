"""The published numbers (results/published/*.csv): schema, known values, a seeded sample checked against
the paper text (when ../shared/papers is there), and the site's loader and comparison on them."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.results.published import load_published, published_comparison
from bench.store import COLUMNS as RESULT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "published"
PAPERS = Path(__file__).resolve().parents[1].parent / "shared" / "papers"

COLUMNS = ["method", "protocol", "dataset", "cell", "attack", "metric", "value", "source"]
COLUMNS += ["paper", "table", "row", "column"]
KEY = ("method", "protocol", "dataset", "cell", "attack", "metric", "paper", "table")
PROTOCOLS = {"nd", "osr", "ood"}
METRICS = {"auroc", "fpr95", "aupr_in", "aupr_out", "id_acc"}
ATTACKS = {"clean", "pgd", "aa", "a3", "blackbox", "corruption", "compositional"}
TITLES = {"rodeo": "RODEO", "atom": "ATOM", "eoe": "EOE", "greg": "GReg"}
ROW_COUNTS = {"rodeo": 1323, "atom": 143, "eoe": 658, "greg": 290}
NAME = re.compile(r"[a-z0-9][a-z0-9+_-]*")
NUMBER = re.compile(r"\d+(\.\d+)?")


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def published() -> dict[str, list[dict[str, str]]]:
    files = sorted(PUBLISHED.glob("*.csv"))
    assert {p.stem for p in files} == set(TITLES)
    return {p.stem: read(p)[1] for p in files}


# --- (1) schema ------------------------------------------------------------------------------------------


def test_schema(published):
    for path in sorted(PUBLISHED.glob("*.csv")):
        header, _ = read(path)
        assert header == COLUMNS, path.name
    for paper, rows in published.items():
        assert len(rows) == ROW_COUNTS[paper], paper
        seen = set()
        for r in rows:
            where = f"{paper}: {r}"
            assert r["paper"] == paper, where
            assert r["protocol"] in PROTOCOLS, where
            assert r["metric"] in METRICS, where
            assert r["attack"] in ATTACKS, where
            for field in ("method", "dataset", "cell", "table"):
                assert NAME.fullmatch(r[field]), where
            assert NUMBER.fullmatch(r["value"]) and 0.0 <= float(r["value"]) <= 100.0, where
            assert r["row"] and r["column"], where
            source = f"{TITLES[paper]} Table {r['table']}, row {r['row']}, column {r['column']}"
            assert r["source"] == source, where
            key = tuple(r[k] for k in KEY)
            assert key not in seen, f"duplicate key {key}"
            seen.add(key)


# --- (2) known values, checked by hand against the papers ------------------------------------------------

KNOWN = {
    # (paper, table, method, protocol, dataset, cell, attack, metric): value as printed
    # RODEO Table 1a (nd) and 1b (osr), RODEO's clean / PGD / AA / A3
    **{
        ("rodeo", table, "rodeo", protocol, ds, "mean", att, "auroc"): v
        for table, protocol, ds, values in (
            ("1a", "nd", "mnist", ("99.4", "94.6", "95.2", "94.0")),
            ("1a", "nd", "fmnist", ("95.6", "87.2", "87.6", "87.0")),
            ("1b", "osr", "mnist", ("97.2", "85.0", "86.4", "84.1")),
            ("1b", "osr", "fmnist", ("87.7", "65.3", "66.8", "62.9")),
        )
        for att, v in zip(("clean", "pgd", "aa", "a3"), values, strict=True)
    },
    ("rodeo", "1b", "atom", "osr", "mnist", "mean", "clean", "auroc"): "74.8",
    ("rodeo", "1b", "atom", "osr", "mnist", "mean", "pgd", "auroc"): "4.1",
    ("rodeo", "1b", "aloe", "osr", "mnist", "mean", "clean", "auroc"): "79.5",
    ("rodeo", "1b", "aloe", "osr", "mnist", "mean", "pgd", "auroc"): "37.3",
    ("rodeo", "1a", "rodeo", "nd", "all", "mean", "pgd", "auroc"): "63.5",
    ("rodeo", "1c", "atd", "ood", "cifar10", "mean", "pgd", "auroc"): "69.1",
    ("rodeo", "3c", "rodeo", "nd", "mnist", "class3", "pgd", "auroc"): "92.0",
    ("rodeo", "3b", "rodeo", "nd", "cifar100", "class19", "aa", "auroc"): "57.1",
    ("rodeo", "4a", "atd", "ood", "cifar10", "mnist", "pgd", "auroc"): "89.3",
    ("rodeo", "4b", "rodeo", "ood", "cifar100", "cifar10", "pgd", "auroc"): "29.0",
    ("rodeo", "5", "deep-svdd", "nd", "mnist", "mean", "blackbox", "auroc"): "65.7",
    ("atom", "1", "atom", "ood", "cifar10", "mean", "clean", "fpr95"): "1.69",
    ("atom", "1", "atom", "ood", "cifar10", "mean", "pgd", "auroc"): "88.94",
    ("atom", "1", "acet", "ood", "cifar100", "mean", "compositional", "auroc"): "38.63",
    ("atom", "1", "msp", "ood", "cifar100", "mean", "pgd", "auroc"): "2.25",
    ("eoe", "1", "hsc", "nd", "cifar10", "mean", "clean", "auroc"): "95.9",
    ("eoe", "1", "bce", "nd", "imagenet-30", "mean", "clean", "auroc"): "97.7",
    ("eoe", "2", "clip", "nd", "mnist", "mean", "clean", "auroc"): "59.0",
    ("eoe", "2", "bce-clip", "nd", "cifar10", "mean", "clean", "auroc"): "99.6",
    ("eoe", "11", "hsc", "nd", "mnist", "class8", "clean", "auroc"): "96.6",
    ("eoe", "15", "clip", "nd", "mnist", "class6", "clean", "auroc"): "24.7",
    ("eoe", "12-right", "bce-clip", "nd", "cifar10", "class9", "clean", "auroc"): "99.90",
    ("greg", "1-densenet", "greg", "ood", "cifar10", "mean", "clean", "fpr95"): "7.93",
    ("greg", "1-densenet", "greg", "ood", "cifar10", "mean", "clean", "auroc"): "98.12",
    ("greg", "2-resnet", "greg+", "ood", "cifar100", "mean", "clean", "fpr95"): "50.78",
    ("greg", "3", "greg+", "ood", "imagenet-10", "mean", "clean", "fpr95"): "35.08",
    ("greg", "6-wrn", "dos", "ood", "cifar10", "mean", "clean", "id_acc"): "78.90",
}


def test_known_values(published):
    rows = [r for paper_rows in published.values() for r in paper_rows]
    index = {(r["paper"], r["table"], *(r[k] for k in KEY[:6])): r["value"] for r in rows}
    for key, value in KNOWN.items():
        assert index.get(key) == value, key
    # What the extraction lost is not made up: ATOM Table 1, MSP on CIFAR-100, Comp. OOD AUROC.
    assert ("atom", "1", "msp", "ood", "cifar100", "mean", "compositional", "auroc") not in index


# --- (3) a seeded sample against the paper text -----------------------------------------------------------

PAPER_FILES = {"rodeo": "000", "atom": "001", "eoe": "002", "greg": "004"}
# (paper, table) -> strings found one after the other; the table is the text up to the next caption.
ANCHORS = {
    ("rodeo", "1a"): ["(a) In this table, we assess ND"],
    ("rodeo", "1b"): ["(b) Comparison of OSR"],
    ("rodeo", "1c"): ["(c) Comparison of OOD"],
    **{
        ("rodeo", f"3{s}"): ["Table 3. The detailed", f"({s}) {name}"]
        for s, name in zip("abcd", ("CIFAR10", "CIFAR100", "MNIST", "Fashion-MNIST"), strict=True)
    },
    ("rodeo", "4a"): ["Table 4. OOD detailed", "(a) CIFAR10"],
    ("rodeo", "4b"): ["Table 4. OOD detailed", "(b) CIFAR100"],
    ("rodeo", "5"): ["Table 5. AUROC scores"],
    ("atom", "1"): ["Table 1: Comparison with competitive"],
    **{("eoe", t): [f"Table {t}: Mean AUC"] for t in ("1", "2", "7", "8", "9", "10", "11", "13", "14", "15")},
    ("eoe", "12-left"): ["Table 12: Left"],
    ("eoe", "12-right"): ["Table 12: Left"],
    **{("greg", f"{t}-{a}"): [f"Table {t}: Comparison"] for t in "12" for a in ("resnet", "wrn", "densenet")},
    ("greg", "3"): ["Table 3: Comparison on the ImageNet"],
    ("greg", "4"): ["Table 4: Ablation Study"],
    ("greg", "5"): ["Table 5: Ablation Study"],
    ("greg", "6-wrn"): ["Table 6: Ablation Study"],
    ("greg", "6-densenet"): ["Table 6: Ablation Study"],
}
NEXT_CAPTION = re.compile(r"\n(?:\([a-d]\) |Table \d+[.:])")


def table_lines(text: str, anchors: list[str]) -> list[list[str]]:
    """The table's lines after its caption, each split into cells (HTML tags removed)."""
    pos = 0
    for anchor in anchors:
        pos = text.index(anchor, pos)
    end = NEXT_CAPTION.search(text, pos + 1)
    block = text[pos : end.start() if end else len(text)]
    return [[re.sub(r"</?[a-z]+>", "", c).strip() for c in line.split("\t")] for line in block.splitlines()]


def numbers(cells: list[str]) -> set[str]:
    return set(re.findall(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.])", " ".join(cells)))


def test_sample_matches_paper_text(published):
    if not PAPERS.is_dir():
        pytest.skip("../shared/papers not found: a user's clone has no copy of the papers")
    rng = random.Random(20260412)
    for paper, rows in published.items():
        text = next(PAPERS.glob(f"{PAPER_FILES[paper]}_*.txt")).read_text(encoding="utf-8")
        tables: dict[str, list[list[str]]] = {}
        for r in rng.sample(rows, min(40, len(rows))):
            lines = tables.setdefault(r["table"], table_lines(text, ANCHORS[(paper, r["table"])]))
            # A row label "A, B" is the line with cell B at or after the first line with cell A.
            parts = r["row"].split(", ")
            first = next(i for i, cells in enumerate(lines) if parts[0] in cells)
            line = next(cells for cells in lines[first:] if parts[-1] in cells)
            assert r["value"] in numbers(line), f"{r['source']}: {r['value']} not in {line}"


# --- (4) the site reads the files and compares ours with them ---------------------------------------------


def test_site_loads_and_compares(published):
    loaded = load_published(PUBLISHED)
    assert loaded.groupby("file").size().to_dict() == {f"{p}.csv": n for p, n in ROW_COUNTS.items()}
    pick = loaded[
        (loaded["source"] == "RODEO Table 1a, row RODEO (OURS), Clean / PGD, column MNIST PGD")
        | (loaded["source"] == "RODEO Table 3c, row Ours, PGD-1000, column 1")
    ]
    assert len(pick) == 2
    ours = []
    for cell, value in (("class0", 0.9), ("class1", 0.95)):
        r = dict.fromkeys(RESULT_COLUMNS, "")
        r.update(method="rodeo", protocol="nd", dataset="mnist", cell=cell, seed=0, attack="pgd")
        r.update(metric="auroc", value=value, status="ok", profile="quick", _entry="rodeo")
        ours.append(r)
    rows = published_comparison(pd.DataFrame(ours), pick)
    assert [(r["cell"], r["published"], r["diff"]) for r in rows] == [
        ("mean", "94.6", "-2.1"),  # ours (90 + 95) / 2 = 92.5
        ("class1", "96.1", "-1.1"),
    ]


def test_small_percentages_stay_percent():
    loaded = load_published(PUBLISHED)
    row = loaded[loaded["source"] == "ATOM Table 1, row CIFAR-10, SOFL [37], column L∞ OOD AUROC"]
    assert float(row["value"].iloc[0]) == pytest.approx(0.0101)
