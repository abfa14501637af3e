"""What the site says of each method, read from its module: the paper (the docstring's first paragraph)
and the comment beside each field's default, which cites the paper's section."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path
from typing import Any


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def method_sources() -> dict[str, dict[str, Any]]:
    """Per registered method, read from its module's source without importing it (no torch): the paper
    (the module docstring's first paragraph), the summary (the class docstring's first paragraph) and
    the comment beside each field's default (where the papers' values are cited)."""
    import importlib.util

    spec = importlib.util.find_spec("bench.methods")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (OSError, SyntaxError, UnicodeDecodeError):
                continue
            paper = _first_paragraph(ast.get_docstring(tree))
            comments = _line_comments(text)
            classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
            for node in classes.values():
                for deco in node.decorator_list:
                    if (
                        isinstance(deco, ast.Call)
                        and getattr(deco.func, "id", "") == "register_method"
                        and deco.args
                        and isinstance(deco.args[0], ast.Constant)
                    ):
                        found[str(deco.args[0].value)] = {
                            "paper": paper,
                            "summary": _first_paragraph(ast.get_docstring(node)),
                            "module": f"bench.methods.{path.stem}",
                            "fields": _field_comments(node, classes, comments),
                        }
    return found


def _line_comments(text: str) -> dict[int, str]:
    out = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def _field_comments(node: ast.ClassDef, classes: dict[str, ast.ClassDef], comments: dict[int, str]) -> dict:
    """field name -> its comment (the one on its line, after the comment lines right above it); fields
    inherited from classes of the same module included."""
    out: dict[str, str] = {}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes and base.id != node.name:
            out.update(_field_comments(classes[base.id], classes, comments))
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            above = []
            line = stmt.lineno - 1
            while line in comments and line not in {s.end_lineno for s in node.body if s is not stmt}:
                above.insert(0, comments[line])
                line -= 1
            parts = [*above, comments.get(stmt.lineno, "")]
            text = " ".join(p for p in parts if p)
            if text:
                out[stmt.target.id] = text
    return out
