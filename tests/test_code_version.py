"""Cache keys cover every dependency: the import closure of a method's module and the files it loads."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import code_version
from bench.backbones import backbone_files
from bench.backbones import files as backbone_files_module
from bench.code_version import file_digest, method_dependencies, module_closure, source_version
from bench.config import get_profile
from bench.plan import detector_key, method_hash
from bench.registry import METHODS

REGISTERED = frozenset(METHODS.names())  # discovered: a new method declares what it needs in its module
# Which registered methods use each module: each method declares the shared modules its detector depends
# on (``Method.shared_code``), and editing one must change exactly the keys of those that declare it.
# clip and bce-clip reach tiny_ddpm and glyph_corpus through bench.backbones -> tiny_clip, whose training
# and evaluation helpers import them lazily: the closure is per module, so it over-approximates (a
# retrain, never a stale detector). An attack's module is used by no detector.
SHARED = sorted({module for name in REGISTERED for module in METHODS.get(name).shared_code})
USES = {
    **{module: {n for n in REGISTERED if module in METHODS.get(n).shared_code} for module in SHARED},
    "bench.attacks.pgd": set(),  # an attack: no detector retrains
}


class _Task:
    def fingerprint(self) -> str:
        return "a-task"


def _keys(methods: dict) -> dict[str, tuple[str, str]]:
    """(detector key, method_hash) of every method instance, computed now."""
    profile = get_profile("ci")
    plan = SimpleNamespace(methods=methods, profile=profile, profile_for=lambda name: profile)
    return {name: (detector_key(name, m, _Task()), method_hash(plan, name)) for name, m in methods.items()}


def _changed(before: dict, after: dict) -> set[str]:
    """Methods whose detector key changed; their method_hash must have changed with it, and only theirs."""
    keys = {name for name in before if before[name][0] != after[name][0]}
    hashes = {name for name in before if before[name][1] != after[name][1]}
    assert keys == hashes
    return keys


@pytest.fixture(scope="module")
def methods() -> dict:
    return {name: METHODS.get(name)() for name in METHODS.names()}


def _edit_source(monkeypatch, tmp_path: Path, module: str) -> None:
    """From now on ``module``'s source reads as an edited copy (the real file is untouched)."""
    original = code_version._source_file
    path = original(module)
    edited = tmp_path / f"edited_{path.name}"
    edited.write_text(path.read_text() + "\n# an edit\n")
    monkeypatch.setattr(code_version, "_source_file", lambda m: edited if m == module else original(m))


@pytest.mark.parametrize("module", sorted(set(USES) - {"bench.methods.training"}))
def test_editing_a_module_changes_the_keys_of_exactly_its_users(module, methods, tmp_path, monkeypatch):
    before = _keys(methods)
    _edit_source(monkeypatch, tmp_path, module)
    assert _changed(before, _keys(methods)) == USES[module]
    monkeypatch.undo()
    assert _keys(methods) == before


def test_editing_the_training_loop_changes_every_trained_method(methods, tmp_path, monkeypatch):
    before = _keys(methods)
    _edit_source(monkeypatch, tmp_path, "bench.methods.training")  # every method but zero-shot clip
    assert _changed(before, _keys(methods)) == USES["bench.methods.training"]


@pytest.mark.skipif(
    not all(backbone_files(name) for name in ("glyph-clip", "glyph-ddpm")),
    reason="embedded backbone weights absent: run `bench backbones build`",
)
def test_a_rebuilt_backbone_changes_the_keys_of_the_methods_that_load_it(methods, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(backbone_files_module.WEIGHTS_DIR, weights)
    monkeypatch.setattr(backbone_files_module, "WEIGHTS_DIR", weights)
    assert set(methods["rodeo"].data_files()) == {
        weights / f"{name}.{ext}" for name in ("glyph-clip", "glyph-ddpm") for ext in ("safetensors", "json")
    }

    def rebuild(name: str) -> None:  # as `bench backbones build` does: a new file renamed over the old one
        path = weights / f"{name}.safetensors"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(bytes(data))
        os.replace(temporary, path)

    before = _keys(methods)
    rebuild("glyph-clip")
    after_clip = _keys(methods)
    assert _changed(before, after_clip) == {"rodeo", "clip", "bce-clip"}
    rebuild("glyph-ddpm")
    assert _changed(after_clip, _keys(methods)) == {"rodeo"}


def test_method_dependencies_lists_modules_code_and_files(methods):
    rodeo = method_dependencies("rodeo", methods["rodeo"])
    assert {"bench.methods.rodeo", "bench.methods.adversarial", "bench.backbones.tiny_ddpm"} <= set(
        rodeo["modules"]
    )
    assert rodeo["code"] == source_version("bench.methods.rodeo")
    # paths relative to the checkout: the same keys in every one
    shipped = {f"{name}.{ext}" for name in ("glyph-clip", "glyph-ddpm") for ext in ("safetensors", "json")}
    assert set(rodeo["files"]) == {f"bench/backbones/weights/{file}" for file in shipped}
    msp = method_dependencies("msp")  # the registered class with its defaults
    assert msp["files"] == {} and "bench.methods.adversarial" not in msp["modules"]


def test_registration_imports_are_not_followed():
    msp = set(module_closure("bench.methods.msp"))
    assert {"bench.methods.msp", "bench.methods.training", "bench.methods.networks", "bench.registry"} <= msp
    assert "bench.methods" in msp  # bench.detector imports it to find detector classes (importlib inside)
    assert not any(m.startswith(("bench.attacks", "bench.datasets", "bench.protocols")) for m in msp)
    assert not {"bench.methods.oe", "bench.methods.rodeo", "bench.backbones"} & msp
    assert "bench.cli" not in set(module_closure("bench.backbones.build"))  # no circle through the CLI


def test_module_closure_resolves_relative_and_lazy_imports(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg"
    (package / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": """
            from typing import TYPE_CHECKING

            from . import b
            from .sub.c import helper
            from fakepkg.e import CONSTANT

            if TYPE_CHECKING:
                from fakepkg import never

            def later():
                import fakepkg.d
                from bench.methods import oe
        """,
        "b.py": "from .sub import c\n",
        "d.py": "",
        "e.py": "CONSTANT = 1\n",
        "never.py": "",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import d\nfrom ..e import CONSTANT\n\ndef helper():\n    pass\n",
    }
    for name, text in sources.items():
        (package / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(code_version, "FOLLOWED", ("bench", "fakepkg"))
    monkeypatch.setattr(code_version, "_specs", {})
    closure = module_closure("fakepkg.a")
    fake = {m for m in closure if m.startswith("fakepkg")}
    assert fake == {"fakepkg.a", "fakepkg.b", "fakepkg.d", "fakepkg.e", "fakepkg.sub.c"}
    assert {"bench.methods.oe", "bench.methods.training"} <= set(closure)  # lazy, inside a function
    assert "fakepkg.a" not in sys.modules  # found by reading sources, nothing imported


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A method registered from a module outside the package (imports bench.methods.oe)."""
    METHODS.names()  # the registry is complete before the plugin adds to it
    module = "bench_test_plugin_method"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent("""
            from dataclasses import dataclass

            from bench.contracts import Method
            from bench.methods.oe import binary_oe_loss
            from bench.registry import register_method


            @register_method("test-plugin")
            @dataclass
            class PluginMethod(Method):
                lam: float = 0.5

                def fit(self, task, ctx):
                    return binary_oe_loss
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module(module)
    finally:
        METHODS._items.pop("test-plugin", None)
        sys.modules.pop(module, None)


def test_a_method_registered_elsewhere_gets_its_closure_without_a_list(plugin, tmp_path, monkeypatch):
    method = METHODS.get("test-plugin")()
    dependencies = method_dependencies("test-plugin", method)
    modules = set(dependencies["modules"])
    assert {plugin.__name__, "bench.methods.oe", "bench.methods.training", "bench.contracts"} <= modules
    assert "bench.methods.adversarial" not in modules
    key = detector_key("test-plugin", method, _Task())
    _edit_source(monkeypatch, tmp_path, "bench.methods.oe")
    assert detector_key("test-plugin", method, _Task()) != key
    monkeypatch.undo()
    Path(plugin.__file__).write_text(Path(plugin.__file__).read_text() + "\n# its own edit\n")
    assert detector_key("test-plugin", method, _Task()) != key


def test_file_digest_follows_the_content(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"one")
    first = file_digest(path)
    assert file_digest(path) == first == file_digest(tmp_path / "." / "weights.bin")
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"two")
    os.replace(replacement, path)
    assert file_digest(path) != first


def test_backbone_files_of_every_name_form(tmp_path):
    checkpoint = tmp_path / "a@b" / "open_clip_model.bin"
    checkpoint.parent.mkdir()
    assert backbone_files(f"hub-clip:ViT-B-32@{checkpoint}") == []  # missing: not listed
    checkpoint.write_bytes(b"weights")
    assert backbone_files(f"hub-clip:ViT-B-32@{checkpoint}") == [checkpoint]  # the name ends at the first @
    folder = tmp_path / "ddpm"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.bin", "scheduler/scheduler_config.json"):
        (folder / name).write_text("{}")
    assert backbone_files(f"hub-ddpm:{folder}") == [
        folder / "unet/config.json",
        folder / "unet/diffusion_pytorch_model.bin",
        folder / "scheduler/scheduler_config.json",
    ]
    (folder / "unet/diffusion_pytorch_model.safetensors").write_text("{}")  # preferred by diffusers
    assert folder / "unet/diffusion_pytorch_model.safetensors" in backbone_files(f"hub-ddpm:{folder}")
    assert backbone_files(f"hub-ddpm:{tmp_path / 'absent'}") == []
    assert backbone_files("no-such-backbone") == []


def test_hub_specs_name_their_cached_files(tmp_path, monkeypatch):
    """A pretrained tag's weights and a repo id's snapshot in the HF cache are data files of the method
    (their digests enter its hash), found without loading anything."""
    import huggingface_hub.constants as constants
    from open_clip import pretrained

    from bench.backbones.files import backbone_files

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setitem(pretrained._PRETRAINED, "RN50", {"benchtest": {"hf_hub": "bench-test/clip/"}})
    commit = "0" * 40
    for repo, files in (
        ("clip", ["open_clip_pytorch_model.bin"]),
        ("ddpm", ["config.json", "diffusion_pytorch_model.bin", "scheduler_config.json"]),
    ):
        snapshot = tmp_path / f"models--bench-test--{repo}" / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (tmp_path / f"models--bench-test--{repo}" / "refs").mkdir()
        (tmp_path / f"models--bench-test--{repo}" / "refs" / "main").write_text(commit)
        for name in files:
            (snapshot / name).write_text(name)
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in backbone_files("hub-clip:RN50@benchtest")] == ["open_clip_pytorch_model.bin"]
    assert [p.name for p in backbone_files("hub-ddpm:bench-test/ddpm")] == [
        "config.json",
        "diffusion_pytorch_model.bin",
        "scheduler_config.json",
    ]
    assert backbone_files("hub-ddpm:bench-test/absent") == [] and backbone_files("hub-clip:RN50@absent") == []
