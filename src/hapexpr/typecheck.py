"""Checking values read from YAML, JSON or flags against a dataclass field's type."""

from __future__ import annotations

import typing

from hapexpr.errors import InputError


def check_fields(cls, data: dict, where: str, path=None) -> None:
    """Refuse a value whose type does not fit ``cls``'s field (``window: abc``), naming the key
    as ``where.key``; ints pass for floats, bools never pass for numbers."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints[key]
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
        allowed = tuple(typing.get_origin(a) or a for a in allowed)
        if value is None and type(None) in allowed:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
            raise InputError(f"`{where}.{key}` is {value!r}, not a {names}", path=path, record=f"{where}.{key}")
