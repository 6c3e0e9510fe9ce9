"""Methods whose features are computed per distinct haplotype sequence.

``haplotype_features(gene, sequences)`` maps (unique,) window sequences to (unique, ...)
features; ``people_features(per_hap, hap_index)`` maps those to each person's (samples, ...)
input through (samples, 2) ``hap_index``. A person's features thus depend only on their own two
sequences, for the study's people and for new ones alike, and per-variant effects come from
rebuilding sequences without the variant (:func:`hapexpr.methods.effects.haplotype_effects`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hapexpr.methods.base import Method
from hapexpr.methods.effects import haplotype_effects
from hapexpr.study import GeneData


class HaplotypeMethod(Method):
    needs = ("sequence",)
    # Set by predict and explain: sequences the study never had are expected (compute them,
    # do not cache them as the study's own).
    for_new_people = False

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(unique, ...) features of window sequences (5'->3', TSS at ``gene.tss_offset``)."""
        raise NotImplementedError

    def people_features(self, per_hap: np.ndarray, hap_index: np.ndarray) -> np.ndarray:
        """(samples, 2, ...) by default: each person's two haplotypes' features."""
        return per_hap[np.asarray(hap_index, dtype=np.int64)]

    def features(self, cohort, gene_id: str) -> np.ndarray:
        gene = cohort.gene(gene_id)
        return self.people_features(self.haplotype_features(gene, gene.sequences), gene.hap_index)

    def explain(self, cohort, gene_id: str, est) -> pd.DataFrame:
        return haplotype_effects(self, cohort.gene(gene_id), est)
