"""The method registry: every command asks it, none compares method names.

Built-in methods live one per module in :data:`BUILTIN`; they are imported the first time the
registry is asked, so ``hapexpr --help`` stays fast and no module imports the method modules
(which import the registry) at load time. Another package adds a method by registering it
(``@register`` on its class, e.g. from a test file or a notebook) or through the entry-point
group ``hapexpr.methods``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from hapexpr.errors import InputError
from hapexpr.methods.base import Method

BUILTIN = (
    "hapexpr.methods.nt_transformer",
    "hapexpr.methods.elastic_net",
    "hapexpr.methods.ridge_probe",
    "hapexpr.methods.enformer",
    "hapexpr.methods.stack",
)

_REGISTRY: dict[str, type[Method]] = {}
_loaded = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method under ``cls.name`` (a later registration replaces it)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no `name`")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Plugin loading, as pytest and HuggingFace do: importing a module registers its methods.
    for module in BUILTIN:
        importlib.import_module(module)
    for ep in entry_points(group="hapexpr.methods"):
        ep.load()


def methods() -> list[type[Method]]:
    """Every registered method class, in report order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))


def method_names() -> list[str]:
    return [c.name for c in methods()]


def get(name: str) -> type[Method]:
    """The method class registered as ``name``, or an InputError listing the known ones."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(method_names())}") from None


def from_default_name(name: str) -> tuple[type[Method], dict] | None:
    """(method class, options) whose default fit name is ``name`` (e.g. ``enformer-ridge``)."""
    for cls in methods():
        options = cls.options_for_name(name)
        if options is not None:
            return cls, options
    return None


def build(name: str, options: dict | None = None, *, fit_name: str | None = None, where: str = "options") -> Method:
    """A method instance from its registry name and a dict of options (unknown keys refused)."""
    cls = get(name)
    return cls(cls.Options.from_dict(options or {}, where=where), name=fit_name)
