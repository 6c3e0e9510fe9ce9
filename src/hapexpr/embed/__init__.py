"""Embedding haplotype windows with genomic foundation models (Nucleotide Transformer).

Each distinct haplotype window of a study is embedded once and stored, content-addressed, in
``STUDY/embeddings/<fingerprint>/`` (see ``docs/embeddings.md``)::

    summary = run_embed("study", model="tiny")          # or model="/path/to/checkpoint"
    store = open_embeddings("study")
    x = store.sample_bins(study.gene(gene_id))          # (samples, 2, bins, dim) float32
    embedder = load_embedder("study")                   # same model, for new sequences
    bins, mean = embedder.embed(sequences, tss_offset=gene.tss_offset)

Importing this package is cheap: torch, transformers and ray load only when a model is built.
"""

from __future__ import annotations

from pathlib import Path

from hapexpr.embed.base import BaseEmbedder
from hapexpr.embed.registry import build_embedder
from hapexpr.embed.run import run_embed
from hapexpr.embed.store import EmbeddingCache, EmbeddingStore, list_stores, open_embeddings
from hapexpr.errors import StudyError

__all__ = [
    "BaseEmbedder",
    "EmbeddingStore",
    "list_stores",
    "load_embedder",
    "open_embeddings",
    "run_embed",
]


def load_embedder(
    study_path: str | Path, fingerprint: str | None = None, *, device: str = "cpu", batch_size: int = 8
) -> BaseEmbedder:
    """Rebuild the embedder a store was made with, whose ``embed`` reads and extends that
    store's cache. Fails if the checkpoint's weights changed since."""
    store = open_embeddings(study_path, fingerprint)
    info = store.info
    source = info.get("source") or {  # stores written before info.json kept the source whole
        k: info[k]
        for k in ("embedder", "model_spec", "seed", "trust_remote_code", "k", "seq_len", "input", "context")
        if k in info
    }
    embedder = build_embedder(
        source,
        layer=None if info.get("layer") is None else int(info["layer"]),
        bins=int(info["bins"]),
        window=int(info["window"]),
        device=device,
        batch_size=batch_size,
        cache=None,
    )
    embedder.cache = EmbeddingCache(store.root, store.genes_dir, dtype=embedder.store_dtype)
    # Stores written before info() always recorded it hold no hash: an embedder without weights.
    if embedder.weights_sha256 != info.get("weights_sha256", ""):
        raise StudyError(
            f"the model at {info.get('model_spec', info.get('model'))} is not the one store {store.fingerprint} was made "
            "with (its weights changed)",
            path=store.root / "info.json",
            hint="restore that checkpoint, or run `hapexpr embed` again with the current one",
        )
    return embedder
