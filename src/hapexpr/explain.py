"""``hapexpr explain``: the effect of each variant in a gene's window on the final model's
prediction, by in-silico mutagenesis of the study's own haplotypes.

For a sequence method, every distinct haplotype carrying a variant's ALT allele is rebuilt with
that allele removed (the same :func:`hapexpr.windows.window_sequences` path as ``prepare``), the
new sequences are embedded through the study's cache, and each carrier is predicted with one
ALT-carrying haplotype swapped to REF and the other unchanged. A carrier's effect is
``original - swapped`` (averaged over both haplotypes for a homozygote, so it is the effect of
one ALT allele); the table reports its mean and SD over carriers. For the elastic net the same
is done with dosages (one ALT allele less), which by linearity is the variant's weight for every
carrier; the weight is reported too. Columns: ``docs/predict-explain.md``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_open
from hapexpr.study import GeneData, Study, gene_file_name
from hapexpr.train import console

EFFECT_COLUMNS = ["gene_id", "variant_id", "pos", "ref", "alt", "in_window", "n_carriers", "mean_effect", "sd_effect"]


def explain_path(study_path, name: str, gene_id: str) -> Path:
    """Where ``hapexpr report`` finds the table: ``STUDY/explain/<method>/<gene_id>.tsv``."""
    return Path(study_path) / "explain" / name / (gene_file_name(gene_id)[: -len(".npz")] + ".tsv")


def explain_gene(study_path, method: str, gene_id: str, *, out, overwrite: bool = False) -> pd.DataFrame:
    """Per-variant effects of ``gene_id``'s window variants on ``method``'s final model; written
    to ``out`` (refused if it exists, unless ``overwrite``) and to :func:`explain_path`."""
    from hapexpr.final import ensure_final, load_final, split_method

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError("the output file already exists", path=out,
                         hint="pass --overwrite to replace it, or choose another --out")
    study = Study.open(study_path)
    if gene_id not in set(study.gene_ids):
        shown = ", ".join(study.gene_ids[:5]) + (" ..." if len(study.gene_ids) > 5 else "")
        raise InputError(f"gene {gene_id} is not in the study", path=study.path, record=f"--gene {gene_id}",
                         hint=f"use one of the study's genes ({shown}; genes.tsv lists them all)")
    base, _ = split_method(method)
    name = ensure_final(study.path, method)
    gene = study.gene(gene_id)
    est = load_final(study.path, name, gene_id)
    if base == "elastic-net":
        table = linear_effects(study, name, gene, est)
    else:
        table = sequence_effects(study, name, gene, est)
    for path in (out, explain_path(study.path, name, gene_id)):
        with atomic_open(path) as fh:
            table.to_csv(fh, sep="\t", index=False, float_format="%.10g")
    shown = table.dropna(subset=["mean_effect"])
    top = shown.reindex(shown["mean_effect"].abs().sort_values(ascending=False).index).head(3)
    console.print(f"{name}: effects of {len(table)} window variants of {gene_id} -> {out} "
                  f"(and {explain_path(study.path, name, gene_id)})")
    for r in top.itertuples(index=False):
        console.print(f"  {r.variant_id} {r.ref}>{r.alt}: mean effect {r.mean_effect:+.4g} over {r.n_carriers} carriers")
    return table


def _window(gene: GeneData) -> np.ndarray:
    return np.flatnonzero(gene.variants["in_window"].to_numpy(dtype=bool))


def _rows(gene: GeneData, rows, n_carriers, mean, sd) -> pd.DataFrame:
    v = gene.variants.iloc[rows]
    return pd.DataFrame({"gene_id": gene.gene_id, "variant_id": v["variant_id"].to_numpy(), "pos": v["pos"].to_numpy(),
                         "ref": v["ref"].to_numpy(), "alt": v["alt"].to_numpy(), "in_window": v["in_window"].to_numpy(),
                         "n_carriers": np.asarray(n_carriers, dtype=np.int64), "mean_effect": mean, "sd_effect": sd})


def _summarise(changes: list[np.ndarray]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per variant: number of carriers, mean and SD (ddof 1; NaN below 2 carriers) of their effects."""
    n = [len(c) for c in changes]
    mean = np.array([c.mean() if len(c) else np.nan for c in changes])
    sd = np.array([c.std(ddof=1) if len(c) > 1 else np.nan for c in changes])
    return n, mean, sd


def linear_effects(study: Study, name: str, gene: GeneData, est) -> pd.DataFrame:
    """Elastic net: weight of each window variant, and each carrier's change in prediction when
    one of their ALT alleles is removed (computed through the model, not assumed)."""
    from hapexpr.final import final_method
    from hapexpr.predict import variant_keys

    method, _ = final_method(study, name)
    X = np.asarray(method.features(study, gene), dtype=np.float64)  # (samples, model variants)
    feats = est.feature_variants_
    column = {k: j for j, k in enumerate(variant_keys(feats["pos"], feats["ref"], feats["alt"]))}
    if X.shape[1] != len(feats):
        raise InputError(f"the final elastic net of {gene.gene_id} has {len(feats)} variants but the study "
                         f"gives {X.shape[1]}", hint="refit it: `hapexpr fit-final --method elastic-net --overwrite`")
    base = est.predict(X)
    rows = _window(gene)
    v = gene.variants.iloc[rows]
    weights, changes = [], []
    for i, key in zip(rows, variant_keys(v["pos"], v["ref"], v["alt"])):
        j = column.get(key)
        carriers = np.flatnonzero(gene.genotypes[i].sum(axis=1) > 0)
        weights.append(0.0 if j is None else float(est.coef_[j]))
        if j is None:
            changes.append(np.zeros(len(carriers)))
            continue
        swapped = X[carriers].copy()
        swapped[:, j] -= 1.0  # one ALT allele back to REF
        changes.append(base[carriers] - est.predict(swapped))
    n, mean, sd = _summarise(changes)
    table = _rows(gene, rows, n, mean, sd)
    table["weight"] = weights
    return table


def sequence_effects(study: Study, name: str, gene: GeneData, est) -> pd.DataFrame:
    """Sequence methods: swap each window variant's ALT to REF in every distinct haplotype
    carrying it, re-embed, and predict each carrier with the swapped haplotype."""
    from hapexpr.predict import SequenceFeatures

    features = SequenceFeatures(study, name)
    alleles = np.asarray(gene.hap_alleles, dtype=bool)  # (unique, variants)
    index = np.asarray(gene.hap_index, dtype=np.int64)  # (samples, 2)
    rows = _window(gene)
    # Every (distinct haplotype, variant) pair to rebuild, as one batch of swapped haplotypes.
    pairs = [(u, i) for i in rows for u in np.flatnonzero(alleles[:, i])]
    swapped = alleles[[u for u, _ in pairs]].copy() if pairs else np.zeros((0, alleles.shape[1]), bool)
    for r, (_, i) in enumerate(pairs):
        swapped[r, i] = False
    sequences = list(gene.sequences) + list(dataclasses.replace(gene, hap_alleles=swapped).sequences)
    per_hap = features.haplotypes(gene, sequences)  # (unique + pairs, ...)
    slot = {pair: len(alleles) + r for r, pair in enumerate(pairs)}
    base = np.asarray(est.predict(features.people(per_hap, index)), dtype=np.float64)
    changes = []
    for i in rows:
        carry = alleles[index, i]  # (samples, 2): this haplotype carries ALT
        people, haps = np.nonzero(carry)
        if len(people) == 0:
            changes.append(np.zeros(0))
            continue
        idx = index[people].copy()
        idx[np.arange(len(people)), haps] = [slot[(int(index[s, h]), i)] for s, h in zip(people, haps)]
        delta = base[people] - np.asarray(est.predict(features.people(per_hap, idx)), dtype=np.float64)
        # One number per carrier: a homozygote's two single swaps are averaged (effect per allele).
        carriers, inverse = np.unique(people, return_inverse=True)
        changes.append(np.bincount(inverse, weights=delta) / np.bincount(inverse))
    n, mean, sd = _summarise(changes)
    return _rows(gene, rows, n, mean, sd)
