"""``--model kmer[:K]``: k-mer frequencies per TSS-centred bin, checked against a plain-Python
count, through the same store and methods as a language model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hapexpr.embed import pooling
from hapexpr.embed.kmer import KmerEmbedder
from hapexpr.embed.registry import resolve
from hapexpr.errors import InputError


def naive(seq: bytes, k: int, bins: int, tss: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    edges = pooling.bin_edges(tss, window, bins)
    out = np.zeros((bins, 4**k))
    total = np.zeros(4**k)
    text = seq.decode()
    for start in range(len(text) - k + 1):
        word = text[start : start + k]
        if word not in index or not edges[0] <= start < edges[-1]:
            continue
        b = int(np.searchsorted(edges, start, side="right") - 1)
        out[b, index[word]] += 1
        total[index[word]] += 1
    sums = out.sum(axis=1, keepdims=True)
    return np.divide(out, sums, out=np.zeros_like(out), where=sums > 0), total / max(total.sum(), 1)


def test_frequencies_match_a_plain_count_and_skip_n():
    rng = np.random.default_rng(0)
    seqs = [
        bytes(rng.choice(np.frombuffer(b"ACGTN", np.uint8), 300, p=[0.24, 0.24, 0.24, 0.24, 0.04])) for _ in range(5)
    ]
    emb = KmerEmbedder(k=3, bins=6, window=300)
    bins, mean = emb.compute(seqs)
    assert bins.shape == (5, 6, 64) and mean.shape == (5, 64)
    for s, b, m in zip(seqs, bins, mean):
        want_b, want_m = naive(s, 3, 6, 150, 300)
        np.testing.assert_allclose(b, want_b, atol=1e-6)
        np.testing.assert_allclose(m, want_m, atol=1e-6)
    # order and batch size do not matter
    again, _ = KmerEmbedder(k=3, bins=6, window=300, batch_size=2).compute(seqs[::-1])
    np.testing.assert_array_equal(again[::-1], bins)


def test_spec_resolution_and_errors():
    assert resolve("kmer") is KmerEmbedder and resolve("kmer:5") is KmerEmbedder
    assert KmerEmbedder.source_for("kmer:5")["k"] == 5
    with pytest.raises(InputError, match="whole number"):
        KmerEmbedder.source_for("kmer:x")
    with pytest.raises(InputError, match="between 1 and 6"):
        KmerEmbedder(k=9, bins=4, window=100)
    with pytest.raises(InputError, match="--layer"):
        KmerEmbedder.from_source({"k": 3}, layer=2, bins=4, window=100)


def test_kmer_store_feeds_the_embedding_methods(study_copy):
    from hapexpr.embed import open_embeddings, run_embed
    from hapexpr.fit import run_fit

    summary = run_embed(study_copy, model="kmer:3", bins=4, progress=False)
    store = open_embeddings(study_copy)
    assert store.info["embedder"] == "kmer" and store.dim == 64 and summary["computed"] > 0
    rows = run_fit(study_copy, "ridge-probe", progress=False)
    assert rows["predicted"].notna().all()
