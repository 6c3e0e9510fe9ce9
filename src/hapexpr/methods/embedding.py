"""Methods over a study's stored foundation-model embeddings (any registered embedder).

The embeddings of a haplotype are looked up by the hash of its sequence in the store the fit
resolved (``fingerprint``; by default the most recently updated store). Sequences the store
lacks — a new person's haplotypes in ``predict``, the rebuilt haplotypes of ``explain`` — are
embedded on request with the model the store was made with (its weights are checked) and added
to the store, so the study's people and new people get their features by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hapexpr.embed import load_embedder, open_embeddings
from hapexpr.embed.store import EmbeddingStore
from hapexpr.methods.base import Options, option
from hapexpr.methods.haplotype import HaplotypeMethod
from hapexpr.study import GeneData


@dataclass(frozen=True)
class EmbeddingOptions(Options):
    fingerprint: str | None = option(
        None,
        "Which embedding store to use when the study holds several: its "
        "fingerprint (a unique prefix) or the --model it was made with "
        "(e.g. kmer:4); default the most recently updated.",
    )


class EmbeddingMethod(HaplotypeMethod):
    """Base of methods whose per-haplotype features are stored embeddings."""

    needs = ("sequence", "embeddings")
    Options = EmbeddingOptions

    def resolve(self, study) -> dict:
        store = open_embeddings(study.path, fingerprint=self.options.fingerprint)
        return {"fingerprint": store.fingerprint}

    @property
    def store(self) -> EmbeddingStore:
        fp = self.resolved["fingerprint"]
        if getattr(self, "_store", None) is None or self._store.fingerprint != fp:
            self._store = open_embeddings(self.study.path, fingerprint=fp)
            self._embedder = None
        return self._store

    def models_used(self) -> list[dict]:
        info = self.store.info
        tiny = bool(info.get("tiny"))
        kind = f"tiny randomly initialised {info.get('embedder', 'NT')}" if tiny else str(info.get("model", "?"))
        return [
            {
                # fit.json's key hashes this text: keep it as it was (", layer None" included)
                "description": f"embeddings {self.store.fingerprint} ({kind}, layer {info.get('layer', '?')})",
                "tiny": tiny,
                "fingerprint": self.store.fingerprint,
            }
        ]

    def embeddings(self, gene: GeneData, sequences: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """((n, bins, dim), (n, dim)) float32 embeddings of ``sequences``, rounded as the store keeps them."""
        compute = None
        if self.for_new_people:  # embed what the store lacks with the store's own model

            def compute(seqs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
                if getattr(self, "_embedder", None) is None:
                    self._embedder = load_embedder(self.study.path, fingerprint=self.store.fingerprint)
                return self._embedder.embed(seqs, tss_offset=gene.tss_offset)

        return self.store.sequence_rows(gene, sequences, compute=compute)
