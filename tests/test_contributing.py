"""Adding a method, an attack or a dataset is adding one file (README, "Contributing"): the README's three
examples, each under 30 lines, written as modules of a temporary folder that the packages read beside
their own, run end to end through ``bench run``, and the tests that cover every method (its floor, its
cache key) take the new method up from its own module, with no other file edited."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"methods": "centroid", "attacks": "noise", "datasets": "bars"}

# Runs in a fresh interpreter: the packages import their own modules, then the temporary folder's one file
# each (as ``bench run`` would find it in methods/, attacks/ or datasets/); registries are global, so this
# keeps them out of the rest of the suite.
DRIVER = r"""
import importlib, json, sys
from pathlib import Path
import bench.attacks, bench.datasets, bench.methods
root = Path(sys.argv[1])
for package, module in json.loads(sys.argv[2]).items():
    loaded = importlib.import_module(f"bench.{package}")
    loaded.__path__.append(str(root / package))
    importlib.import_module(f"bench.{package}.{module}")
sys.path.insert(0, sys.argv[3])
from tests import test_code_version, test_detection_floor
assert "centroid" in test_detection_floor.CLEAN_FLOOR and "centroid" in test_code_version.REGISTERED
test_detection_floor.test_every_method_declares_its_floor()
assert test_code_version.USES["bench.methods.training"] >= {"oe", "atom"}
assert all("centroid" not in users for users in test_code_version.USES.values())  # it uses no shared code
from bench.cli import main
main(sys.argv[4:])
"""


def readme_examples() -> dict[str, str]:
    """The README's example modules by package: its Contributing section's three python blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Contributing", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "README Contributing: a method, an attack and a dataset"
    return dict(zip(EXAMPLES, blocks, strict=True))


def test_each_readme_example_is_one_file_under_30_lines():
    for package, code in readme_examples().items():
        assert len(code.strip().splitlines()) < 30, package
        assert f'register_{package[:-1]}("{EXAMPLES[package]}")' in code


def test_a_method_an_attack_and_a_dataset_in_one_file_each_run_end_to_end(tmp_path):
    for package, code in readme_examples().items():
        (tmp_path / package).mkdir()
        (tmp_path / package / f"{EXAMPLES[package]}.py").write_text(code, encoding="utf-8")
    out = tmp_path / "run"
    command = ["run", "--methods", "centroid", "--protocol", "nd", "--dataset", "bars", "--attacks", "clean"]
    command += ["noise", "--cells", "class0", "class1", "--profile", "ci", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), json.dumps(EXAMPLES), str(ROOT), *command],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    auroc = {(r["method"], r["cell"], r["attack"]): r for r in rows if r["metric"] == "auroc"}
    assert set(auroc) == {("centroid", c, a) for c in ("class0", "class1") for a in ("clean", "noise")}
    assert all(r["status"] == "ok" and r["dataset"] == "bars" for r in auroc.values())
    for cell in ("class0", "class1"):  # a bar in another row is far from the inliers' mean
        assert float(auroc[("centroid", cell, "clean")]["value"]) > 0.9
    assert auroc[("centroid", "class0", "noise")]["restarts"] == "1"  # the new attack's budget is recorded
