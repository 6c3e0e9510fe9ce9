"""``ridge-probe``: ridge regression on mean-pooled embeddings, summed over the two haplotypes.

The cheapest use of the embeddings and a sanity line for the transformer: the feature is
additive in haplotypes like an allele dosage; the penalty is chosen by exact leave-one-out CV
inside the training folds (:class:`hapexpr.estimators.ridge_probe.RidgeProbeModel`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hapexpr.estimators.ridge_probe import RidgeProbeModel
from hapexpr.methods.embedding import EmbeddingMethod
from hapexpr.methods.registry import register
from hapexpr.study import GeneData


@register
class RidgeProbe(EmbeddingMethod):
    name = "ridge-probe"
    summary = "ridge on mean-pooled embeddings summed over the two haplotypes"
    order = 30

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(unique, dim) mean-pooled embeddings."""
        return self.embeddings(gene, sequences)[1]

    def people_features(self, per_hap: np.ndarray, hap_index: np.ndarray) -> np.ndarray:
        """(samples, dim): the sum over each person's two haplotypes."""
        return per_hap[np.asarray(hap_index, dtype=np.int64)].sum(axis=1)

    def estimator(self, seed: int) -> RidgeProbeModel:
        return RidgeProbeModel(seed=seed)

    def load_estimator(self, directory: Path) -> RidgeProbeModel:
        return RidgeProbeModel.load(directory)
