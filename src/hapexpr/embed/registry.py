"""The embedder registry: ``--model SPEC`` is resolved by asking each registered embedder.

Built-in embedders live one per module in :data:`BUILTIN`, imported the first time the registry
is asked; another package registers its own with ``@register`` or the entry-point group
``hapexpr.embedders``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from hapexpr.embed.base import BaseEmbedder
from hapexpr.errors import InputError

BUILTIN = ("hapexpr.embed.kmer", "hapexpr.embed.engine")
DEFAULT = "nucleotide-transformer"  # stores written before the registry name no embedder

_REGISTRY: dict[str, type[BaseEmbedder]] = {}
_loaded = False


def register(cls: type[BaseEmbedder]) -> type[BaseEmbedder]:
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN:  # plugin loading: importing a module registers its embedders
        importlib.import_module(module)
    for ep in entry_points(group="hapexpr.embedders"):
        ep.load()


def embedders() -> list[type[BaseEmbedder]]:
    _load()
    return list(_REGISTRY.values())


def get(name: str) -> type[BaseEmbedder]:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown embedder {name!r}", hint=f"known: {', '.join(_REGISTRY)}") from None


def resolve(spec: str) -> type[BaseEmbedder]:
    """The embedder that accepts ``--model SPEC`` (the most recently registered first)."""
    for cls in reversed(embedders()):
        if cls.accepts(spec):
            return cls
    raise InputError(
        f"--model {spec} names no embedder: it is not `tiny`, a checkpoint directory or `kmer[:K]`",
        path=spec, hint="save a checkpoint locally first (see docs/embeddings.md); nothing is downloaded")


def build_embedder(source: dict, *, layer: int | None, bins: int, window: int, device: str = "cpu",
                   batch_size: int = 8, cache=None) -> BaseEmbedder:
    """Rebuild an embedder from its info.json ``source`` record."""
    cls = get(source.get("embedder") or DEFAULT)
    return cls.from_source(source, layer=layer, bins=bins, window=window, device=device,
                           batch_size=batch_size, cache=cache)
