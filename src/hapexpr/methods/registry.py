"""The method registry: every command asks it, none compares method names.

Built-in methods live one per module in :data:`BUILTIN`; they are imported the first time the
registry is asked, so ``hapexpr --help`` stays fast and no module imports the method modules
(which import the registry) at load time. Another package adds a method by registering it
(``@register`` on its class, e.g. from a test file or a notebook) or through the entry-point
group ``hapexpr.methods`` (``docs/methods.md``: writing a plugin). A class is checked when it is
registered (:func:`check_method_class`), so a malformed plugin is refused with a message instead
of breaking the command line that is built from every method's options.
"""

from __future__ import annotations

import dataclasses
import typing

from hapexpr.errors import InputError, PluginError
from hapexpr.methods.base import NEEDS, Method, Options, flag_type
from hapexpr.registry import Registry

BUILTIN = (
    "hapexpr.methods.nt_transformer",
    "hapexpr.methods.elastic_net",
    "hapexpr.methods.ridge_probe",
    "hapexpr.methods.enformer",
    "hapexpr.methods.stack",
)


def check_method_class(cls: type) -> None:
    """Refuse (PluginError) a class that is not a usable method: not a :class:`Method`, Options
    not a frozen dataclass of :class:`Options` with a default for every field, needs outside
    :data:`NEEDS`, an option whose type the command line cannot take (bool, int, float, str,
    a tuple of them, or None), or one whose type differs from another method's option of the
    same name (they share one ``--flag``)."""
    where = f"method class {cls.__module__}.{cls.__qualname__}"
    if not issubclass(cls, Method):
        raise PluginError(f"{where} does not subclass hapexpr.methods.Method")
    opts = cls.Options
    if not (isinstance(opts, type) and issubclass(opts, Options) and dataclasses.is_dataclass(opts)):
        raise PluginError(f"{where}: its Options is not a dataclass subclassing hapexpr.methods.Options")
    if "__dataclass_params__" not in vars(opts) and vars(opts).get("__annotations__"):
        # fields declared without the decorator would be no options at all, silently
        raise PluginError(f"{where}: its Options class is not decorated with @dataclass(frozen=True)")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise PluginError(f"{where} needs {', '.join(sorted(unknown))}: not one of {', '.join(NEEDS)}")
    hints = typing.get_type_hints(opts)
    for f in dataclasses.fields(opts):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise PluginError(f"{where}: option {f.name!r} has no default")
        kind = flag_type(hints[f.name])
        if kind not in (bool, int, float, str):
            raise PluginError(f"{where}: option {f.name!r} is a {hints[f.name]}, which no --flag can carry")
        # One --flag per option name across methods: its type must be the same in all of them.
        for other in _METHODS._items.values():
            theirs = {g.name: g for g in dataclasses.fields(other.Options)}
            if other.name != cls.name and f.name in theirs:
                other_kind = flag_type(typing.get_type_hints(other.Options)[f.name])
                if other_kind is not kind:
                    raise PluginError(
                        f"{where}: option {f.name!r} is a {kind.__name__}, but {other.name}'s "
                        f"--{f.name.replace('_', '-')} is a {other_kind.__name__}",
                        hint="rename the option or give it the same type",
                    )


_METHODS: Registry[type[Method]] = Registry("method", BUILTIN, "hapexpr.methods", check_method_class)
register = _METHODS.register
unregister = _METHODS.unregister
lookup = _METHODS.lookup  # the class registered under a name, or None


def methods() -> list[type[Method]]:
    """Every registered method class, in report order."""
    return sorted(_METHODS.items(), key=lambda c: (c.order, c.name))


def method_names() -> list[str]:
    return [c.name for c in methods()]


def get(name: str, *, provider: dict | None = None) -> type[Method]:
    """The method class registered as ``name``, or an InputError listing the known ones;
    ``provider`` (a fit record's) turns it into which package to install."""
    cls = _METHODS.lookup(name)
    if cls is None:
        if provider and provider.get("distribution"):
            dist, ver = provider["distribution"], provider.get("version")
            raise InputError(
                f"method {name!r} is not installed: it was provided by the package {dist}" + (f" {ver}" if ver else ""),
                hint=f"install it (`pip install '{dist}=={ver}'`)" if ver else f"install it (`pip install {dist}`)",
            )
        if provider and provider.get("module"):
            raise InputError(
                f"method {name!r} is not registered: it was registered by the module {provider['module']}",
                hint="import that module (it registers the method) before this command",
            )
        raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(method_names())}")
    return cls


def provider(name: str) -> dict:
    """The package that provides method ``name``: ``{"distribution", "version"}`` (recorded in
    fit.json), or ``{"module"}`` for a method registered outside any installed package."""
    get(name)
    return _METHODS.provider(name)


def from_default_name(name: str) -> tuple[type[Method], dict] | None:
    """(method class, options) whose default fit name is ``name`` (e.g. ``enformer-ridge``)."""
    for cls in methods():
        options = cls.options_for_name(name)
        if options is not None:
            return cls, options
    return None


def build(
    name: str,
    options: dict | None = None,
    *,
    fit_name: str | None = None,
    where: str = "options",
    provider: dict | None = None,
) -> Method:
    """A method instance from its registry name and a dict of options (unknown keys refused);
    ``provider``: the package a recorded fit's method came from, named if it is missing."""
    cls = get(name, provider=provider)
    return cls(cls.Options.from_dict(options or {}, where=where), name=fit_name)
