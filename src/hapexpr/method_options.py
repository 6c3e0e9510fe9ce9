"""Command-line flags of ``hapexpr fit`` and ``fit-final``, derived from the methods' Options.

Every field of every registered method's ``Options`` becomes one ``--flag`` (``cis_window`` ->
``--cis-window``); a flag left out means "the method's default". Fields that several methods
share (``seed``, ``model``, ``device``) are one flag. A value is passed only to the methods
whose Options have that field; giving a flag the chosen method does not have is an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Annotated, Any, Optional

import typer

from hapexpr.errors import InputError
from hapexpr.methods import registry


def _flag_type(hint: Any) -> Any:
    """The click-friendly type of a field: Optional[...] unwrapped, tuples as comma strings."""
    base = _unwrap(hint)
    if typing.get_origin(base) is tuple:
        return str
    return base


def option_fields() -> dict[str, tuple[Any, str, list[str]]]:
    """flag field name -> (type, help, names of the methods that have it), over every method."""
    out: dict[str, tuple[Any, str, list[str]]] = {}
    for cls in registry.methods():
        hints = typing.get_type_hints(cls.Options)
        for f in dataclasses.fields(cls.Options):
            kind = _flag_type(hints[f.name])
            if f.name in out:
                out[f.name][2].append(cls.name)
            else:
                out[f.name] = (kind, f.metadata.get("help", ""), [cls.name])
    return out


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
    for name, (kind, help_text, owners) in option_fields().items():
        if name in skip:
            continue
        owners_text = "all methods" if len(owners) == len(registry.methods()) else ", ".join(owners)
        flag = "--" + name.replace("_", "-")
        decl = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        opt = typer.Option(*decl, help=f"({owners_text}) {help_text}", show_default=False)
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
            raise InputError(
                f"--{key.replace('_', '-')} is not an option of {method}",
                hint=f"it belongs to {', '.join(owners.get(key, ('?', '', []))[2])}",
            )
        if typing.get_origin(_unwrap(hints[key])) is tuple and isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)
        out[key] = value
    return out


def _unwrap(hint: Any) -> Any:
    """``X`` of ``X | None`` (or ``Optional[X]``); any other hint as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and args else hint
