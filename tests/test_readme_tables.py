"""The generated tables of README.md and docs/findings.md (``<!-- paper_table ARGS -->`` blocks: ours
against the papers, where the reference grids stand, per cell) are what ``bench paper-table`` prints from
the committed results.

When this fails after a grid's finished groups were committed, regenerate them:
``bench paper-table --readme README.md`` and ``--readme docs/findings.md`` (``bench study
commit-finished`` does both).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.paper_table import BLOCK, refresh_readme

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("document", "least"), [("README.md", 1), ("docs/findings.md", 3)])
def test_document_tables_match_the_committed_results(document, least):
    text = (ROOT / document).read_text(encoding="utf-8")
    assert len(BLOCK.findall(text)) >= least  # README: the comparison; findings: grid, comparison, cells
    fresh = refresh_readme(text, ROOT)
    stale = [
        old["args"]
        for old, new in zip(BLOCK.finditer(text), BLOCK.finditer(fresh), strict=True)
        if old["body"] != new["body"]
    ]
    assert not stale, f"{document} blocks out of date: {stale}; run bench paper-table --readme {document}"
