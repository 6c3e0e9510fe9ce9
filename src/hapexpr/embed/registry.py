"""The embedder registry: ``--model SPEC`` is resolved by asking each registered embedder.

Built-in embedders live one per module in :data:`BUILTIN`, imported the first time the registry
is asked; another package registers its own with ``@register`` or the entry-point group
``hapexpr.embedders`` (``docs/embeddings.md``: writing a plugin embedder).
"""

from __future__ import annotations

from hapexpr.embed.base import BaseEmbedder
from hapexpr.errors import InputError, PluginError
from hapexpr.registry import Registry

BUILTIN = ("hapexpr.embed.kmer", "hapexpr.embed.enformer", "hapexpr.embed.engine")
DEFAULT = "nucleotide-transformer"  # stores written before the registry name no embedder


def check_embedder_class(cls: type) -> None:
    """Refuse (PluginError) a class that does not subclass :class:`BaseEmbedder`."""
    if not issubclass(cls, BaseEmbedder):
        raise PluginError(
            f"embedder class {cls.__module__}.{cls.__qualname__} does not subclass hapexpr.embed.BaseEmbedder"
        )


_EMBEDDERS: Registry[type[BaseEmbedder]] = Registry("embedder", BUILTIN, "hapexpr.embedders", check_embedder_class)
register = _EMBEDDERS.register
unregister = _EMBEDDERS.unregister
lookup = _EMBEDDERS.lookup  # the class registered under a name, or None


def embedders() -> list[type[BaseEmbedder]]:
    return _EMBEDDERS.items()


def get(name: str) -> type[BaseEmbedder]:
    cls = _EMBEDDERS.lookup(name)
    if cls is None:
        raise InputError(f"unknown embedder {name!r}", hint=f"known: {', '.join(c.name for c in embedders())}")
    return cls


def resolve(spec: str) -> type[BaseEmbedder]:
    """The embedder that accepts ``--model SPEC`` (the most recently registered first)."""
    for cls in reversed(embedders()):
        if cls.accepts(spec):
            return cls
    raise InputError(
        f"--model {spec} names no embedder: it is not `tiny`, a checkpoint directory or `kmer[:K]`",
        path=spec,
        hint="save a checkpoint locally first (see docs/embeddings.md); nothing is downloaded",
    )


def build_embedder(
    source: dict, *, layer: int | None, bins: int, window: int, device: str = "cpu", batch_size: int = 8, cache=None
) -> BaseEmbedder:
    """Rebuild an embedder from its info.json ``source`` record."""
    cls = get(source.get("embedder") or DEFAULT)
    return cls.from_source(
        source, layer=layer, bins=bins, window=window, device=device, batch_size=batch_size, cache=cache
    )
