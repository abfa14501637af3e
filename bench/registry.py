"""Name -> factory registries, filled by decorators (the timm pattern).

Each registry maps a name to an object (a Method dataclass, an Attack class, a dataset builder, a
Protocol). ``@register_method("atom")`` next to the definition is all it takes to add one; an unknown
name raises :class:`bench.errors.BadInput` listing what exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bench.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> object mapping with a decorator and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            with contextlib.suppress(AttributeError, TypeError):
                obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        _load_plugins()
        if name not in self._items:
            raise BadInput(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        _load_plugins()
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        _load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


METHODS: Registry = Registry("method")
ATTACKS: Registry = Registry("attack")
DATASETS: Registry = Registry("dataset")
PROTOCOLS: Registry = Registry("protocol")
CONVERTED: Registry = Registry("converted data set")  # datasets.base.ConvertedSet per name

register_method = METHODS.register
register_attack = ATTACKS.register
register_dataset = DATASETS.register
register_protocol = PROTOCOLS.register
register_converted = CONVERTED.register

# The modules whose definitions register themselves, imported by name the first time a registry is read:
# the registry sits below them (they import it to register), so it names them instead of importing them.
PLUGINS = ("bench.attacks", "bench.datasets", "bench.methods", "bench.protocols")
_loaded = False


def _load_plugins() -> None:
    """Import the :data:`PLUGINS` (once, lazily)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PLUGINS:
        importlib.import_module(name)


def list_methods() -> list[str]:
    return METHODS.names()


def field_defaults(cls) -> dict[str, Any]:
    """The default of every dataclass field of ``cls`` (a method's are its paper's; None: resolved
    from the task or the profile at run time)."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def _shown(value: Any) -> str:
    """A default as ``--set`` would take it: floats to 6 significant digits, strings with spaces quoted."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str) and (" " in value or not value):
        return repr(value)
    return str(value)


def describe_method(name: str) -> str:
    """One line for ``bench list methods``: the name, its protocols, what it needs and its defaults."""
    cls = METHODS.get(name)
    needs = ",".join(sorted(cls.requires)) or "-"
    defaults = " ".join(f"{k}={_shown(v)}" for k, v in field_defaults(cls).items())
    return f"{name}  protocols={','.join(cls.protocols)}  needs={needs}  {defaults}".rstrip()


def describe_attack(name: str) -> str:
    """One line for ``bench list attacks``: the name and its defaults (the paper profile's budget)."""
    defaults = " ".join(f"{k}={_shown(v)}" for k, v in field_defaults(ATTACKS.get(name)).items())
    return f"{name}  {defaults}".rstrip()


def list_attacks() -> list[str]:
    return ATTACKS.names()


def list_datasets() -> list[str]:
    return DATASETS.names()


def list_protocols() -> list[str]:
    return PROTOCOLS.names()
