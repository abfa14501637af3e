"""What a trained detector depends on: the source of every bench module its method imports, and the
weight and data files it loads (cache keys and ``method_hash``; docs/design.md "Detector cache").

The closure of a module is found statically: every ``import`` / ``from ... import`` anywhere in its
source (module level, inside functions, relative or absolute) that names a ``bench.*`` module is
followed, transitively. ``from pkg import name`` means module ``pkg.name`` when that is a module, else
``pkg``. The root module is always part of its closure, so a method registered from outside the package
is covered too; modules outside ``bench`` are not followed. Parent packages are not added unless they
are imported by name. Sources are located without importing them (``find_spec`` through the import
system's finders, which know the package-dir mapping); a loaded module is read from its ``__file__``.

Two kinds of import are skipped, which keeps a key to the code that its method really runs:

- imports under ``if TYPE_CHECKING:`` (they never run);
- the registry's plugin packages (``bench.registry.PLUGINS``: ``bench.methods``, ``bench.attacks``,
  ``bench.datasets``, ``bench.protocols``), which ``_load_plugins`` imports by name, with ``importlib``,
  only so that every module registers itself (that function is skipped should it ever import them
  directly). Followed, they would put every module into every key (every method imports
  ``bench.registry``), and editing ``attacks/pgd.py`` would retrain every detector.

Other imports of those packages are followed like any other: ``bench.methods`` imports its modules with
``importlib`` (invisible here), so ``bench.detector``'s ``import bench.methods`` adds only its
``__init__``; ``from bench.datasets import X`` follows what ``datasets/__init__.py`` imports.

The closure is per module, so it over-approximates: a method that imports ``bench.backbones`` depends
on everything its loaders import lazily (the CLIP methods on ``tiny_ddpm`` and ``glyph_corpus``, which
``tiny_clip``'s training helpers use). That costs a retrain, never a stale detector.

Parsing and hashing are memoised per process on each file's (path, size, mtime, inode), so repeated
keys cost a ``stat`` per module and an edited file is seen at once. No heavy imports here.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

from bench.files import sha256_file

FOLLOWED = ("bench",)  # top-level packages whose modules are followed
SKIPPED_FUNCTIONS = {
    "bench.registry": frozenset({"_load_plugins"}),
    # planning only (a run's missing paper backbones and ImageNet folder): no fit runs through it
    "bench.backbones.paper": frozenset({"plan_check"}),
    # which backbone files a method loads: their digests enter the key themselves (method_dependencies),
    # and a method with backbones imports the backbone code it runs
    "bench.contracts": frozenset({"data_files"}),
}
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds bench/

_specs: dict[str, ModuleSpec] = {}
_parsed: dict[tuple, tuple[str, tuple[str, ...]]] = {}
_digests: dict[tuple, str] = {}


def _followed(name: str) -> bool:
    return name.partition(".")[0] in FOLLOWED


def _find_spec(name: str) -> ModuleSpec | None:
    """The spec of ``name`` from the meta path finders, without importing it or its parents."""
    if name in _specs:
        return _specs[name]
    parent = name.rpartition(".")[0]
    path = None
    if parent:
        parent_spec = _find_spec(parent)
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None
        path = list(parent_spec.submodule_search_locations)
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(name, path) if find is not None else None
        if spec is not None:
            _specs[name] = spec  # found specs only: a module created later is still found
            return spec
    return None


def _source_file(name: str) -> Path | None:
    """The source file of module ``name``: the loaded module's ``__file__``, else its spec's origin."""
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None:
        spec = _find_spec(name)
        file = spec.origin if spec is not None and spec.has_location else None
    if file is None or not str(file).endswith(".py"):
        return None
    return Path(file)


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's content, memoised on (resolved path, size, mtime, inode)."""
    key = _stat_key(Path(path).resolve())
    if key not in _digests:
        _digests[key] = sha256_file(Path(key[0]))
    return _digests[key]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, skipped_functions: frozenset[str]) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, anywhere, except under ``if TYPE_CHECKING:`` and in skipped functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in skipped_functions:
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _resolve(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    """The module names an import statement of module ``name`` refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        is_module = alias.name != "*" and _followed(submodule) and _find_spec(submodule) is not None
        targets.append(submodule if is_module else base)
    return targets


def _parse(name: str, path: Path) -> tuple[str, tuple[str, ...]]:
    """(sha256 of the source, the bench modules it imports), memoised on the file's stat."""
    key = (name, *_stat_key(path))
    if key not in _parsed:
        source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
        nodes = _import_nodes(tree, SKIPPED_FUNCTIONS.get(name, frozenset()))
        is_package = path.name == "__init__.py"
        imports = {target for node in nodes for target in _resolve(node, name, is_package)}
        _parsed[key] = hashlib.sha256(source).hexdigest(), tuple(sorted(t for t in imports if _followed(t)))
    return _parsed[key]


def _closure(module_names: tuple[str, ...]) -> dict[str, str]:
    """{module name: source sha256} of the union of the closures of ``module_names``."""
    found: dict[str, str] = {}
    stack = list(module_names)
    while stack:
        name = stack.pop()
        if name in found:
            continue
        path = _source_file(name)
        if path is None:
            if name in module_names:
                raise ValueError(f"no Python source found for module {name!r}")
            continue
        found[name], imports = _parse(name, path)
        stack.extend(imports)
    return found


def module_closure(module_name: str) -> tuple[str, ...]:
    """Sorted names of the module and every bench module in its static import closure."""
    return tuple(sorted(_closure((module_name,))))


def source_version(*module_names: str) -> str:
    """Hash of the names and sources of every module in the union of the closures of ``module_names``."""
    digest = hashlib.sha256()
    for name, sha in sorted(_closure(tuple(module_names)).items()):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()[:16]


def _shown_path(path: Path) -> str:
    """Relative to the folder that holds ``bench/`` when inside it (the same in every checkout)."""
    absolute = Path(path).resolve()
    if absolute.is_relative_to(PACKAGE_ROOT):
        return absolute.relative_to(PACKAGE_ROOT).as_posix()
    return str(path)


def method_dependencies(method_name: str, method: Any = None) -> dict[str, Any]:
    """The modules, code version and data files (path -> sha256) a fit of ``method`` depends on.

    ``method`` is a method instance (the registered class with its defaults when None): its
    ``data_files()`` are the weight and data files it will load.
    """
    if method is None:
        from bench.registry import METHODS

        method = METHODS.get(method_name)()
    module = type(method).__module__
    files = {_shown_path(path): file_digest(path) for path in method.data_files() if Path(path).is_file()}
    return {
        "modules": list(module_closure(module)),
        "code": source_version(module),
        "files": dict(sorted(files.items())),
    }


__all__ = ["file_digest", "method_dependencies", "module_closure", "source_version"]
