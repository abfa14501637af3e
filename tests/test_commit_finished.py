"""bench study commit-finished: a commit beside a running grid holds its finished groups only (their data
files: results/ holds no pictures or pages), and document tables made from exactly those."""

from __future__ import annotations

import json
import subprocess

from bench.studies import commit_finished
from tests.test_paper_table import PUBLISHED
from tests.test_site import make_run, unit_rows


def _git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _repo(tmp_path):
    root = tmp_path / "repo"
    rows = []
    for attack, value in (("clean", 0.9), ("pgd", 0.6)):
        rows += unit_rows("atom", "class0", 0, attack, value, dataset="digits")
    rows += unit_rows("atom", "class1", 0, "clean", 0.5, dataset="digits")  # its pgd is running
    run = make_run(root / "results" / "reference" / "digits-nd-reference", rows)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"].update(dataset="digits", protocol="nd", seeds=[0], attacks={"clean": {}, "pgd": {}})
    manifest["invocations"] = [{"units_total": 20}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    for cell in ("class0", "class1"):
        (run / "scores" / "atom" / cell).mkdir(parents=True)
        (run / "scores" / "atom" / cell / "seed0-clean.npz").write_bytes(b"scores")
    (root / "results" / "published").mkdir()
    (root / "results" / "published" / "rodeo.csv").write_text(PUBLISHED, encoding="utf-8")
    (root / "README.md").write_text(
        "<!-- paper_table --grid results/reference/*-reference -->\n<!-- /paper_table -->\n", encoding="utf-8"
    )
    _git(root.parent, "init", "-q", str(root))
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start")
    return root, run


def test_commits_finished_groups_and_their_readme_table_only(tmp_path, capsys):
    root, run = _repo(tmp_path)
    module = commit_finished
    assert module.main(["--dry", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "1 groups finished; in flight, left out: [('atom', 'class1', '0')]" in out
    assert _git(root, "status", "--porcelain", "--untracked-files=no") == ""  # --dry touched nothing
    _git(root, "config", "user.name", "t")
    _git(root, "config", "user.email", "t@t")
    assert module.main(["grids", "--root", str(root)]) == 0
    committed = _git(root, "show", "HEAD:results/reference/digits-nd-reference/results.csv")
    assert ",class0," in committed and ",class1," not in committed
    assert ",class1," in (run / "results.csv").read_text()  # the running grid's file is left alone
    files = _git(root, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "results/reference/digits-nd-reference/scores/atom/class0/seed0-clean.npz" in files
    assert not any("class1" in f for f in files)
    readme = _git(root, "show", "HEAD:README.md")
    assert "| digits class0 | 90.0 / 60.0 |" in readme and "class1" not in readme
    assert not [f for f in files if f.endswith((".html", ".png"))]  # pages and plots are built, not committed


def test_refuses_when_something_else_is_staged(tmp_path, capsys):
    root, _ = _repo(tmp_path)
    (root / "other.txt").write_text("x")
    _git(root, "add", "other.txt")
    assert commit_finished.main(["grids", "--root", str(root)]) == 2
    assert "already staged: other.txt" in capsys.readouterr().err
