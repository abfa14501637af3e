"""The README's generated tables (``<!-- paper_table ARGS -->`` blocks: where the reference grids stand and
ours against the papers) are what ``python -m bench.paper_table`` prints from the committed results.

When this fails after a grid's finished groups were committed, regenerate them:
``python -m bench.paper_table --readme README.md`` (``results/reference/commit_finished.py`` does both).
"""

from __future__ import annotations

from pathlib import Path

from bench.paper_table import BLOCK, refresh_readme

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_the_committed_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(BLOCK.findall(text)) >= 2  # the grid and the comparison
    fresh = refresh_readme(text, ROOT)
    stale = [
        old["args"]
        for old, new in zip(BLOCK.finditer(text), BLOCK.finditer(fresh), strict=True)
        if old["body"] != new["body"]
    ]
    assert not stale, (
        f"README blocks out of date: {stale}; run python -m bench.paper_table --readme README.md"
    )
