"""A registry of named plugins (methods, embedders): one module each, registered in one place.

Built-in plugins live in the modules listed as ``builtin``; they are imported the first time the
registry is asked (so importing the package stays cheap and no module imports the plugins, which
import the registry). Other packages add theirs with ``register`` (a class decorator) or through an
entry-point group, whose entry points name either the class itself (registered on load) or a
module whose import registers it; the entry point's name must be the class's ``name``.

A name is held by one class: registering another class under a taken name is refused (a
built-in cannot be replaced). An entry point that fails to import or to register is skipped with
one :class:`PluginWarning` naming its distribution, the entry point and the error, and whatever
it had registered before failing is taken back, so one broken plugin never costs another
command.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points, packages_distributions, version
from typing import Generic, TypeVar

from hapexpr.errors import PluginError

T = TypeVar("T")


class PluginWarning(UserWarning):
    """A plugin entry point that could not be loaded or registered; it was skipped."""


class Registry(Generic[T]):
    """Classes of one kind by ``name``.

    kind: what they are ("method"); builtin: modules that register the built-ins; group: the
    entry-point group of other packages' plugins; check: raises :class:`PluginError` for a class
    that is not a valid one of this kind.
    """

    def __init__(self, kind: str, builtin: tuple[str, ...], group: str, check: Callable[[type], None]) -> None:
        self.kind, self.builtin, self.group, self.check = kind, builtin, group, check
        self._items: dict[str, T] = {}
        self._dists: dict[str, dict] = {}  # name -> {"distribution", "version"} of entry-point plugins
        self._loading: dict | None = None  # the distribution of the entry point being loaded
        self._builtins_loaded = self._plugins_loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under ``cls.name``; a name already held by another class
        is refused (re-registering the same class, or the same class reloaded, is a no-op)."""
        if not isinstance(cls, type) or not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise PluginError(f"{cls!r} is not a {self.kind} class with a `name`")
        self._load_builtins()
        self.check(cls)
        held = self._items.get(cls.name)
        if held is not None and _qualname(held) != _qualname(cls):
            raise PluginError(
                f"the {self.kind} name {cls.name!r} is already held by {_qualname(held)}; "
                f"{_qualname(cls)} cannot replace it",
                hint=f"give {cls.__name__} another `name`",
            )
        self._items[cls.name] = cls
        if self._loading is not None:
            self._dists[cls.name] = self._loading
        return cls

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)
        self._dists.pop(name, None)

    def items(self) -> list[T]:
        """Every registered class, in registration order (built-ins, then plugins)."""
        self._load_builtins()
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for ep in entry_points(group=self.group):
                self._load_plugin(ep)
        return list(self._items.values())

    def lookup(self, name: str) -> T | None:
        self.items()
        return self._items.get(name)

    def provider(self, name: str) -> dict:
        """``{"distribution", "version"}`` of the package that provides ``name`` (the entry
        point's distribution, else the installed distribution of the class's top-level
        module); ``{"module": ...}`` alone when no installed package holds it (a test file,
        a notebook)."""
        if name in self._dists:
            return dict(self._dists[name])
        cls = self.lookup(name)
        module = cls.__module__
        dists = _distributions_of_modules().get(module.split(".")[0], [])
        if not dists:
            return {"module": module}
        return {"distribution": dists[0], "version": version(dists[0])}

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True  # set first: the modules' own @register calls come back here
            for module in self.builtin:
                importlib.import_module(module)

    def _load_plugin(self, ep: EntryPoint) -> None:
        dist = {"distribution": ep.dist.name, "version": ep.dist.version} if ep.dist else {"distribution": "?"}
        before_items, before_dists = dict(self._items), dict(self._dists)
        self._loading = dist
        try:
            target = ep.load()
            if isinstance(target, type):
                if getattr(target, "name", None) != ep.name:
                    raise PluginError(
                        f"the entry point is named {ep.name!r} but its class {target.__qualname__} is named "
                        f"{getattr(target, 'name', None)!r}"
                    )
                self.register(target)
            else:
                held = self._items.get(ep.name)
                if held is None or not held.__module__.startswith(getattr(target, "__name__", "?")):
                    raise PluginError(f"importing {ep.value} registered no {self.kind} named {ep.name!r}")
            self._dists[ep.name] = dist
        except Exception as exc:  # a plugin's failure of any kind costs a warning, not the tool
            self._items, self._dists = before_items, before_dists
            warnings.warn(
                f"skipped the {self.kind} plugin {ep.name!r} ({self.group} entry point {ep.name} = {ep.value}) "
                f"of {dist['distribution']} {dist.get('version', '')}: {type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
        finally:
            self._loading = None


@functools.cache
def _distributions_of_modules() -> dict[str, list[str]]:
    """Top-level module -> installed distributions (scanning them all takes about a second)."""
    return packages_distributions()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
