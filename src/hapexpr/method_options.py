"""Command-line flags of ``hapexpr fit`` and ``fit-final``, derived from the methods' Options.

Every field of every registered method's ``Options`` becomes one ``--flag`` (``cis_window`` ->
``--cis-window``); a flag left out means "the method's default". Fields that several methods
share (``seed``, ``fingerprint``, ``device``) are one flag, whose help says what it is and its
default for each method that has it. A value is passed only to the methods whose Options have
that field; giving a flag the chosen method does not have is an error. ``hapexpr methods X``
and ``hapexpr fit --method X --help`` show X's own options (:func:`method_option_rows`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperCommand

from hapexpr.errors import InputError
from hapexpr.methods import registry
from hapexpr.methods.base import flag_type


@dataclass(frozen=True)
class Owner:
    """One method's option behind a flag: its default and help text."""

    method: str
    default: Any
    help: str


def option_fields() -> dict[str, tuple[Any, list[Owner]]]:
    """flag field name -> (type, the methods that have it), over every method, in report order."""
    out: dict[str, tuple[Any, list[Owner]]] = {}
    for cls in registry.methods():
        hints = typing.get_type_hints(cls.Options)
        for f in dataclasses.fields(cls.Options):
            owner = Owner(cls.name, f.default, f.metadata.get("help", ""))
            out.setdefault(f.name, (flag_type(hints[f.name]), []))[1].append(owner)
    return out


def show_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def flag_help(owners: list[Owner], n_methods: int) -> str:
    """A shared flag's help: each distinct help text once, with the methods it belongs to and
    their defaults (``(ridge-probe, nt-transformer) Which store ... (default: none)``); brackets
    would be read as rich markup."""
    groups: dict[str, list[Owner]] = {}
    for o in owners:
        groups.setdefault(o.help, []).append(o)
    parts = []
    for text, group in groups.items():
        who = "all methods" if len(group) == n_methods else ", ".join(o.method for o in group)
        defaults = {show_default(o.default) for o in group}
        if len(defaults) == 1:
            default = f"(default: {defaults.pop()})"
        else:
            default = "(defaults: " + "; ".join(f"{o.method} {show_default(o.default)}" for o in group) + ")"
        parts.append(f"({who}) {text} {default}")
    return " | ".join(parts)


def method_option_rows(method: str) -> list[tuple[str, str, str, str]]:
    """(flag, type, default, help) of each option of ``method``, in its Options' order."""
    cls = registry.get(method)
    hints = typing.get_type_hints(cls.Options)
    rows = []
    for f in dataclasses.fields(cls.Options):
        name = f.name.replace("_", "-")
        kind = flag_type(hints[f.name])
        flag = f"--{name}/--no-{name}" if kind is bool else f"--{name}"
        tname = "list" if typing.get_origin(_unwrap(hints[f.name])) is tuple else kind.__name__
        rows.append((flag, tname, show_default(f.default), f.metadata.get("help", "")))
    return rows


PANEL = "Method options (`--method X --help` shows X's alone)"


class MethodCommand(TyperCommand):
    """``fit``/``fit-final``: with ``--method X --help`` the help lists, besides the command's
    own options, X's options alone with X's help and defaults."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in ctx.help_option_names for a in args):
            method = _method_arg(args)
            if method is not None:
                ctx.meta[_HELP_FOR] = method
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        cls = _method_class(ctx.meta.get(_HELP_FOR))
        if cls is None:
            return params
        own = {f.name: f for f in dataclasses.fields(cls.Options)}
        shared = option_fields()
        out = []
        for p in params:
            if p.name not in shared:
                out.append(p)
            elif p.name in own:
                q = copy.copy(p)
                f = own[p.name]
                q.help = f.metadata.get("help", "")
                q.default, q.show_default = f.default, True
                q.rich_help_panel = f"Options of {cls.name}"
                out.append(q)
        return out


_HELP_FOR = "hapexpr.help_for_method"


def _method_arg(args: list[str]) -> str | None:
    """The value of ``--method`` among raw command-line arguments, if given."""
    for i, a in enumerate(args):
        if a == "--method" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return None


def _method_class(name: str | None):
    """The method class of ``--method NAME`` (a method, or a default fit name such as
    ``enformer-ridge``), or None when it names neither."""
    if name is None:
        return None
    if name in registry.method_names():
        return registry.get(name)
    default = registry.from_default_name(name)
    return None if default is None else default[0]


def add_option_parameters(func, *, skip: tuple[str, ...] = ()):
    """Give ``func`` (which takes ``**options``) one keyword parameter per option field, so typer
    shows and parses them; returns the wrapped function."""
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # the function's own names resolved
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    extra = []
    n_methods = len(registry.methods())
    for name, (kind, owners) in option_fields().items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        decl = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        opt = typer.Option(*decl, help=flag_help(owners, n_methods), show_default=False, rich_help_panel=PANEL)
        extra.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[kind], opt]
            )
        )
    new_sig = sig.replace(parameters=[*params, *extra])

    def wrapper(**kwargs):
        return func(**kwargs)

    wrapper.__signature__ = new_sig
    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    wrapper.__annotations__ = {**{p.name: p.annotation for p in new_sig.parameters.values()}, "return": None}
    return wrapper


def options_for(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The given flags (not None) that ``method`` has, as Options values; a flag the method does
    not have is refused, naming the methods that have it."""
    cls = registry.get(method)
    hints = typing.get_type_hints(cls.Options)
    names = {f.name for f in dataclasses.fields(cls.Options)}
    owners = option_fields()
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in names:
            have = [o.method for o in owners.get(key, (None, []))[1]]
            raise InputError(
                f"--{key.replace('_', '-')} is not an option of {method}",
                hint=f"it belongs to {', '.join(have) or 'no method'}; `hapexpr methods {method}` lists {method}'s",
            )
        if typing.get_origin(_unwrap(hints[key])) is tuple and isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)
        out[key] = value
    return out


def _unwrap(hint: Any) -> Any:
    """``X`` of ``X | None`` (or ``Optional[X]``); any other hint as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and args else hint
