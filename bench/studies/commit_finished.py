"""Commit the reference grids' finished groups, and the document tables made from them, while grids run.

    bench study commit-finished "reference grids: ..."   # stage and commit
    bench study commit-finished --dry                    # say what it would do

A group is (method, cell, seed): the fit and every attack the folder's manifest plans. For each
``results/reference/*-reference`` folder it stages results.csv holding only the rows of finished groups
(written to git's index, not to the file, which the running grid keeps appending to), the manifest, and
the scores and artifacts (their data files: CSV, JSON, npz; pictures are built, never committed) of
finished groups; a group in flight stays out, so a commit never holds half a group
(results/reference/README.md, "The machines"). Then it rewrites the ``<!-- paper_table -->`` blocks of
README.md and docs/findings.md from exactly what it staged (``bench paper-table --readme``;
tests/test_readme_tables.py checks them) and commits the index. It refuses to start when anything else
is staged, so nothing else goes in. Never ``git commit -a`` beside a running grid: it would commit the
group in flight.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GRIDS = "results/reference"
DOCUMENTS = ("README.md", "docs/findings.md")  # the files whose paper_table blocks the grids feed
DATA_SUFFIXES = {".csv", ".json", ".npz"}  # what results/ holds; pictures are built


def _git(root: Path, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=root, input=data, capture_output=True, check=True)
    return done.stdout.decode()


def finished(folder: Path) -> tuple[list[str], list[dict], set[tuple], set[tuple]]:
    """(columns, rows of finished groups, finished groups, groups in flight) of one grid folder."""
    from bench.paper_table import finished_groups
    from bench.store import unit_of

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    planned = set(manifest["config"]["attacks"])
    with (folder / "results.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    keys = [(r["method"], unit_of(r["cell"]), r["seed"]) for r in rows]
    done = finished_groups(
        ((key, r["attack"], r["status"]) for key, r in zip(keys, rows, strict=True)), lambda key: planned
    )
    kept = [r for key, r in zip(keys, rows, strict=True) if key in done]
    return columns, kept, done, set(keys) - done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench study commit-finished", description=__doc__.split("\n\n")[0])
    parser.add_argument("message", nargs="?", help="the commit message")
    parser.add_argument("--dry", action="store_true", help="print what would be committed; touch nothing")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
    args = parser.parse_args(argv)
    if not args.dry and not args.message:
        parser.error("a commit message is required (or --dry)")
    root = args.root
    staged = _git(root, "diff", "--cached", "--name-only").split()
    if staged and not args.dry:
        print(
            f"bench study commit-finished: error: already staged: {' '.join(staged)}; "
            "commit or unstage them first",
            file=sys.stderr,
        )
        return 2
    from bench.paper_table import refresh_readme

    snapshot = Path(tempfile.mkdtemp(prefix="grids-"))
    paths, summary = [], []
    try:
        shutil.copytree(root / "results" / "published", snapshot / "results" / "published")
        for folder in sorted((root / GRIDS).glob("*-reference")):
            columns, kept, done, in_flight = finished(folder)
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            rel = folder.relative_to(root)
            (snapshot / rel).mkdir(parents=True)
            (snapshot / rel / "results.csv").write_text(text.getvalue(), encoding="utf-8")
            shutil.copy(folder / "manifest.json", snapshot / rel / "manifest.json")
            summary.append(
                f"{rel.name}: {len(done)} groups finished"
                + (f"; in flight, left out: {sorted(in_flight)}" if in_flight else "")
            )
            if args.dry:
                continue
            blob = _git(root, "hash-object", "-w", "--stdin", data=text.getvalue().encode()).strip()
            _git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel / 'results.csv'}")
            paths += [str(rel / "results.csv"), str(rel / "manifest.json")]
            for method, cell, seed in sorted(done):
                for path in (
                    folder / "scores" / method / cell,
                    folder / "artifacts" / method / f"{cell}-seed{seed}",
                ):
                    paths += [
                        str(file.relative_to(root))
                        for file in sorted(path.rglob("*"))
                        if file.suffix in DATA_SUFFIXES and file.is_file()
                    ]
        documents = {
            name: (root / name).read_text(encoding="utf-8") for name in DOCUMENTS if (root / name).is_file()
        }
        fresh = {name: refresh_readme(text, snapshot) for name, text in documents.items()}
    finally:
        shutil.rmtree(snapshot)
    print("\n".join(summary))
    for name, text in documents.items():
        print(f"{name} tables: " + ("unchanged" if fresh[name] == text else "rewritten"))
    if args.dry:
        return 0
    for name, text in fresh.items():
        (root / name).write_text(text, encoding="utf-8")
    _git(root, "add", "--", *documents, *(p for p in paths if not p.endswith("results.csv")))
    _git(root, "commit", "-q", "-m", args.message)  # the index: the filtered results.csv blobs, not the files
    print(_git(root, "log", "--oneline", "-1").strip())
    return 0
