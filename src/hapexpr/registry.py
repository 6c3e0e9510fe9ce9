"""A registry of named plugins (methods, embedders): one module each, registered in one place.

Built-in plugins live in the modules listed as ``builtin``; they are imported the first time the
registry is asked (so importing the package stays cheap and no module imports the plugins, which
import the registry). Other packages add theirs with ``register`` or through an entry-point group.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtin: tuple[str, ...], group: str) -> None:
        self.kind, self.builtin, self.group = kind, builtin, group
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under ``cls.name`` (a later registration replaces it)."""
        if not getattr(cls, "name", None):
            raise TypeError(f"{cls!r} has no `name`")
        self._items[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def items(self) -> list[T]:
        """Every registered class, in registration order."""
        if not self._loaded:
            self._loaded = True
            for module in self.builtin:  # plugin loading: importing a module registers its classes
                importlib.import_module(module)
            for ep in entry_points(group=self.group):
                ep.load()
        return list(self._items.values())

    def lookup(self, name: str) -> T | None:
        self.items()
        return self._items.get(name)
