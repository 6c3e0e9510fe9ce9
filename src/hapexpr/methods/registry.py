"""The method registry: every command asks it, none compares method names.

Built-in methods live one per module in :data:`BUILTIN`; they are imported the first time the
registry is asked, so ``hapexpr --help`` stays fast and no module imports the method modules
(which import the registry) at load time. Another package adds a method by registering it
(``@register`` on its class, e.g. from a test file or a notebook) or through the entry-point
group ``hapexpr.methods``.
"""

from __future__ import annotations

from hapexpr.errors import InputError
from hapexpr.methods.base import Method
from hapexpr.registry import Registry

BUILTIN = (
    "hapexpr.methods.nt_transformer",
    "hapexpr.methods.elastic_net",
    "hapexpr.methods.ridge_probe",
    "hapexpr.methods.enformer",
    "hapexpr.methods.stack",
)

_METHODS: Registry[type[Method]] = Registry("method", BUILTIN, "hapexpr.methods")
register = _METHODS.register
unregister = _METHODS.unregister


def methods() -> list[type[Method]]:
    """Every registered method class, in report order."""
    return sorted(_METHODS.items(), key=lambda c: (c.order, c.name))


def method_names() -> list[str]:
    return [c.name for c in methods()]


def get(name: str) -> type[Method]:
    """The method class registered as ``name``, or an InputError listing the known ones."""
    cls = _METHODS.lookup(name)
    if cls is None:
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(method_names())}")
    return cls


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
