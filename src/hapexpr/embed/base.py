"""What an embedder is: window sequences in, TSS-centred binned and mean vectors out.

Every embedder (a DNA language model, a k-mer counter, ...) subclasses :class:`BaseEmbedder`,
lives in one module and is registered in :mod:`hapexpr.embed.registry`. It computes
``compute(sequences, tss_offset=...) -> ((n, bins, dim), (n, dim))`` float32 and says what its
numbers depend on (``keyed``); the store, the dedup plan, the Ray engine, resume and the
``embed`` through-the-cache path below are shared by all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from hapexpr import __version__
from hapexpr.embed.store import hashes_of
from hapexpr.errors import InputError

STORE_DTYPE = "float16"


class BaseEmbedder:
    """Base class of every embedder.

    bins: number of TSS-centred bins; window: length (bp) of the study's window sequences, the
    TSS at ``window // 2``; cache: an :class:`~hapexpr.embed.store.EmbeddingCache` used by
    :meth:`embed`; source: how to rebuild this embedder (recorded in info.json, see
    :meth:`from_source`).
    """

    name: ClassVar[str]
    layer: int | None = None  # hidden-state layer, for embedders that have layers
    device: str = "cpu"
    store_dtype: ClassVar[str] = STORE_DTYPE  # how the store keeps this embedder's numbers

    def __init__(self, *, bins: int, window: int, batch_size: int = 8, cache=None, source: dict | None = None) -> None:
        self.bins = int(bins)
        self.window = int(window)
        self.tss_offset = self.window // 2
        self.batch_size = int(batch_size)
        self.cache = cache
        self.source = {"embedder": self.name, **(source or {})}

    # -- what a subclass provides -------------------------------------------------------------
    @classmethod
    def accepts(cls, spec: str) -> bool:
        """True when ``--model SPEC`` names this embedder (``tiny``, a path, ``kmer:6`` ...)."""
        return False

    @classmethod
    def source_for(cls, spec: str, *, trust_remote_code: bool = False, **options) -> dict:
        """The info.json record from which :meth:`from_source` rebuilds the embedder; ``options``
        are embedder-specific settings (e.g. Enformer's ``seq_len``)."""
        no_options(cls, options)
        return {"embedder": cls.name, "model_spec": spec}

    @classmethod
    def from_source(
        cls,
        source: dict,
        *,
        layer: int | None,
        bins: int,
        window: int,
        device: str = "cpu",
        batch_size: int = 8,
        cache=None,
    ) -> BaseEmbedder:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def weights_sha256(self) -> str:
        """Hash of whatever learned parameters the numbers depend on ("" when there are none)."""
        return ""

    def keyed(self) -> dict:
        """Everything that changes the stored numbers, and nothing else (hashed into the
        store's fingerprint)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Fields for info.json and the report, over :meth:`info`'s defaults: ``model`` (what
        the report names; default the embedder's name), ``tiny`` (random weights: the report's
        banner; default False), ``layer``."""
        return {}

    def use_study(self, study):
        """The study (or a view of it) whose ``gene_ids``/``gene()`` sequences this embedder
        embeds; called before the store is opened. Default: the study's window sequences."""
        return study

    def compute(
        self,
        sequences: Sequence[bytes],
        *,
        tss_offset: int | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """((n, bins, dim), (n, dim)) float32 for window sequences, without the cache."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def info(self) -> dict:
        """The store's ``info.json`` content; ``fingerprint`` hashes :meth:`keyed`. Every field
        a later stage reads is here whatever the subclass describes: ``model``, ``tiny``,
        ``layer`` and ``weights_sha256`` (checked when ``load_embedder`` rebuilds it)."""
        keyed = self.keyed()
        fingerprint = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "model": self.name,
            "tiny": False,
            "layer": self.layer,
            "weights_sha256": self.weights_sha256,
            "bins": self.bins,
            "window": self.window,
            **keyed,
            **self.source,
            **self.describe(),
            "source": self.source,  # what load_embedder rebuilds it from, whatever its fields
            "fingerprint": fingerprint,
            "dim": self.dim,
            "store_version": 1,
            "hapexpr_version": __version__,
        }

    def embed(self, sequences: Sequence[bytes], *, tss_offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Embed sequences through the store's content-addressed cache.

        Returns ((n, bins, dim), (n, dim)) float32, rounded through float16 like stored rows so a
        cached and a fresh answer are the same. Sequences not yet in the store are computed and
        written as one new group (an atomic rename; no lock needed). A ``tss_offset`` other than
        the store's is computed but not cached, since the cache key assumes the store's.
        """
        if self.cache is None or int(tss_offset) != self.tss_offset:
            b, m = self.compute(sequences, tss_offset=tss_offset)
            return as_stored(b, self.store_dtype), as_stored(m, self.store_dtype)
        hashes = hashes_of(sequences)
        digests = [bytes(h) for h in hashes]
        todo: dict[bytes, int] = {}
        for i, d in enumerate(digests):
            if d not in self.cache.index and d not in todo:
                todo[d] = i
        if todo:
            rows = list(todo.values())
            b, m = self.compute([sequences[i] for i in rows], tss_offset=tss_offset)
            self.cache.add_extra(hashes[rows], b, m)
        return self.cache.index.fetch(digests, bins=self.bins, dim=self.dim)


def no_options(cls, options: dict) -> None:
    """Refuse settings an embedder does not have, naming them."""
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} does not apply to the {cls.name} embedder")


def as_stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded as the store keeps them."""
    return x.astype(dtype).astype(np.float32)
