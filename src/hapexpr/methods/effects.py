"""Per-variant effects on a prediction (``hapexpr explain``), shared by every method.

A carrier's effect is ``original - swapped``: the prediction with one ALT-carrying haplotype
swapped to REF at that variant and everything else unchanged (averaged over both haplotypes for
a homozygote, so it is the effect of one ALT allele). The table reports its mean and SD over
carriers. :func:`haplotype_effects` does this for any method whose features are built from the
haplotype sequences (:class:`hapexpr.methods.haplotype.HaplotypeMethod`): every distinct
haplotype carrying a variant is rebuilt without it (the same path as ``prepare``) and its
features recomputed, through the method's own code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from hapexpr.study import GeneData

EFFECT_COLUMNS = ["gene_id", "variant_id", "pos", "ref", "alt", "in_window", "n_carriers", "mean_effect", "sd_effect"]


def window_rows(gene: GeneData) -> np.ndarray:
    return np.flatnonzero(gene.variants["in_window"].to_numpy(dtype=bool))


def summarise_effects(gene: GeneData, changes: list[np.ndarray]) -> pd.DataFrame:
    """The effect table of the window variants (in order) from each one's per-carrier changes:
    number of carriers, mean and SD (ddof 1; NaN below 2 carriers)."""
    rows = window_rows(gene)
    v = gene.variants.iloc[rows]
    mean = np.array([c.mean() if len(c) else np.nan for c in changes])
    sd = np.array([c.std(ddof=1) if len(c) > 1 else np.nan for c in changes])
    return pd.DataFrame(
        {
            "gene_id": gene.gene_id,
            "variant_id": v["variant_id"].to_numpy(),
            "pos": v["pos"].to_numpy(),
            "ref": v["ref"].to_numpy(),
            "alt": v["alt"].to_numpy(),
            "in_window": v["in_window"].to_numpy(),
            "n_carriers": np.asarray([len(c) for c in changes], dtype=np.int64),
            "mean_effect": mean,
            "sd_effect": sd,
        }
    )


def haplotype_effects(method, gene: GeneData, est) -> pd.DataFrame:
    """In-silico mutagenesis of ``gene``'s window variants through ``method``'s
    ``haplotype_features`` / ``people_features`` and the fitted ``est``."""
    alleles = np.asarray(gene.hap_alleles, dtype=bool)  # (unique, variants)
    index = np.asarray(gene.hap_index, dtype=np.int64)  # (samples, 2)
    rows = window_rows(gene)
    # Every (distinct haplotype, variant) pair to rebuild, as one batch of swapped haplotypes.
    pairs = [(u, i) for i in rows for u in np.flatnonzero(alleles[:, i])]
    swapped = alleles[[u for u, _ in pairs]].copy() if pairs else np.zeros((0, alleles.shape[1]), bool)
    for r, (_, i) in enumerate(pairs):
        swapped[r, i] = False
    sequences = list(gene.sequences) + list(dataclasses.replace(gene, hap_alleles=swapped).sequences)
    per_hap = method.haplotype_features(gene, sequences)  # (unique + pairs, ...)
    slot = {pair: len(alleles) + r for r, pair in enumerate(pairs)}
    base = np.asarray(est.predict(method.people_features(per_hap, index)), dtype=np.float64)
    changes = []
    for i in rows:
        people, haps = np.nonzero(alleles[index, i])  # carriers and which haplotype carries ALT
        if len(people) == 0:
            changes.append(np.zeros(0))
            continue
        idx = index[people].copy()
        idx[np.arange(len(people)), haps] = [slot[(int(index[s, h]), i)] for s, h in zip(people, haps)]
        delta = base[people] - np.asarray(est.predict(method.people_features(per_hap, idx)), dtype=np.float64)
        carriers, inverse = np.unique(people, return_inverse=True)
        changes.append(np.bincount(inverse, weights=delta) / np.bincount(inverse))
    return summarise_effects(gene, changes)
