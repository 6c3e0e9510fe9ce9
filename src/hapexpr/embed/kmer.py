"""``--model kmer[:K]``: k-mer frequencies of each haplotype per TSS-centred bin, no learned weights.

The control that says what a foundation model adds beyond the raw sequence: the same store,
methods and report, with features that are a fixed function of the bases. For each window
sequence every k-mer of unambiguous bases (k-mers with ``N`` are skipped) is assigned to the bin
holding its first base; a bin's vector is the frequency of each of the 4^k k-mers among the
k-mers starting in it (zeros for a bin with none) and the mean vector is their frequency over the
whole window. Bins are those of the language-model embedders (``hapexpr.embed.pooling``),
5'->3' on the gene's strand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hapexpr.embed import pooling
from hapexpr.embed.base import BaseEmbedder, no_options
from hapexpr.embed.registry import register
from hapexpr.errors import InputError

DEFAULT_K = 4
MAX_K = 6  # 4,096 dimensions

_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[ord(chr(_b).lower())] = _i


def kmer_ids(sequence: bytes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ids) of every k-mer of unambiguous bases: start position and base-4 id (ACGT)."""
    codes = _CODE[np.frombuffer(bytes(sequence), dtype=np.uint8)]
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, k)
    valid = (windows < 4).all(axis=1)
    ids = windows[valid] @ (4 ** np.arange(k - 1, -1, -1, dtype=np.int64))
    return np.flatnonzero(valid), ids


@register
class KmerEmbedder(BaseEmbedder):
    name = "kmer"

    def __init__(
        self, *, k: int = DEFAULT_K, bins: int, window: int, batch_size: int = 8, cache=None, source: dict | None = None
    ) -> None:
        if not 1 <= k <= MAX_K:
            raise InputError(f"--model kmer:{k}: k must be between 1 and {MAX_K}")
        if bins < 1 or bins > window:
            raise InputError(f"--bins {bins} must be between 1 and the window ({window} bp)")
        super().__init__(
            bins=bins,
            window=window,
            batch_size=batch_size,
            cache=cache,
            source={"model_spec": f"kmer:{k}", "k": k, **(source or {})},
        )
        self.k = int(k)

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == "kmer" or spec.startswith("kmer:")

    @classmethod
    def source_for(cls, spec: str, *, trust_remote_code: bool = False, **options) -> dict:
        no_options(cls, options)
        _, _, k = spec.partition(":")
        if k and not k.isdigit():
            raise InputError(f"--model {spec}: K must be a whole number (e.g. kmer:4)")
        return {"embedder": cls.name, "model_spec": f"kmer:{int(k or DEFAULT_K)}", "k": int(k or DEFAULT_K)}

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
    ) -> KmerEmbedder:
        if layer is not None:
            raise InputError("--layer does not apply to k-mer counts (they have no layers)")
        return cls(
            k=int(source.get("k", DEFAULT_K)),
            bins=bins,
            window=window,
            batch_size=batch_size,
            cache=cache,
            source=source,
        )

    @property
    def dim(self) -> int:
        return 4**self.k

    def keyed(self) -> dict:
        return {
            "embedder": self.name,
            "k": self.k,
            "bins": self.bins,
            "window": self.window,
            "tss_offset": self.tss_offset,
            "pooling": pooling.POOLING_VERSION,
            "dtype": "float16",
        }

    def describe(self) -> dict:
        return {"model": f"{self.k}-mer frequencies", "tiny": False, "layer": None, "weights_sha256": ""}

    def compute(
        self,
        sequences: Sequence[bytes],
        *,
        tss_offset: int | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        tss = self.tss_offset if tss_offset is None else int(tss_offset)
        n, d = len(sequences), self.dim
        out_bins = np.zeros((n, self.bins, d), dtype=np.float32)
        out_mean = np.zeros((n, d), dtype=np.float32)
        for i, seq in enumerate(sequences):
            span = min(len(seq), self.window)
            edges = pooling.bin_edges(tss, span, self.bins)  # (bins + 1,) base positions
            starts, ids = kmer_ids(seq, self.k)
            inside = (starts >= edges[0]) & (starts < edges[-1])
            starts, ids = starts[inside], ids[inside]
            b = np.searchsorted(edges, starts, side="right") - 1
            counts = np.bincount(b * d + ids, minlength=self.bins * d).reshape(self.bins, d).astype(np.float64)
            totals = counts.sum(axis=1, keepdims=True)
            out_bins[i] = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
            if len(ids):
                out_mean[i] = np.bincount(ids, minlength=d) / len(ids)
            if on_batch is not None and (i + 1) % self.batch_size == 0:
                on_batch(self.batch_size)
        if on_batch is not None and n % self.batch_size:
            on_batch(n % self.batch_size)
        return out_bins, out_mean
