"""Pooling per-token hidden states into TSS-centred bins of equal length in base pairs.

Tokens are mapped back to the bases they cover (a 6-mer covers 6, a single base or ``N`` one,
``<cls>`` none), and each bin is the average of the tokens' hidden states weighted by how many of
the bin's bases each token covers; so a 6-mer straddling a bin edge contributes to both bins in
proportion. The mean row is the plain average over all sequence tokens (``<cls>`` excluded).

Coordinates are 0-based positions in the window sequence; the pooled span is ``span`` bp centred
on ``tss_offset`` (the whole window, or the central part that fits the model's context).
"""

from __future__ import annotations

import numpy as np

POOLING_VERSION = "tss-bins-v1"
"""Name of this pooling scheme; part of the store fingerprint, bump it when pooling changes."""


def span_start(tss_offset: int, span: int) -> int:
    """0-based first base of the pooled span: ``span`` bp with the TSS at its centre."""
    return int(tss_offset) - int(span) // 2


def crop_bounds(length: int, tss_offset: int, span: int) -> tuple[int, int]:
    """Half-open part of a ``length`` bp sequence that is tokenized: the pooled span, clipped to
    the sequence (a sequence shorter than the span is taken whole)."""
    lo = max(0, span_start(tss_offset, span))
    hi = min(length, lo + span)
    return lo, hi


def bin_edges(tss_offset: int, span: int, bins: int) -> np.ndarray:
    """(bins + 1,) int64 bin boundaries in window coordinates, equal widths to within 1 bp."""
    lo = span_start(tss_offset, span)
    return lo + np.round(np.linspace(0, span, bins + 1)).astype(np.int64)


def pool_weights(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(bins + 1, tokens) float32 pooling matrix: rows 0..bins-1 the bins, the last row the mean.

    starts, ends: (tokens,) half-open base spans in window coordinates; special tokens have
    ``start == end`` and get weight 0 everywhere. A bin no token reaches gets an all-zero row.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lo = np.maximum(starts[None, :], edges[:-1, None])
    hi = np.minimum(ends[None, :], edges[1:, None])
    overlap = np.clip(hi - lo, 0, None).astype(np.float64)  # (bins, tokens) bases shared
    totals = overlap.sum(axis=1, keepdims=True)
    binned = np.divide(overlap, totals, out=np.zeros_like(overlap), where=totals > 0)
    real = (ends > starts).astype(np.float64)
    mean = real / max(real.sum(), 1.0)
    return np.vstack([binned, mean[None, :]]).astype(np.float32)


def pool(hidden: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool (tokens, dim) hidden states with a (bins + 1, tokens) matrix into
    ((bins, dim), (dim,)); the reference path for one sequence (the engine batches it)."""
    out = weights.astype(np.float64) @ np.asarray(hidden, dtype=np.float64)
    return out[:-1].astype(np.float32), out[-1].astype(np.float32)
