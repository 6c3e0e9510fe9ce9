"""``hapexpr explain``: the effect of each variant in a gene's window on the final model's
prediction, by in-silico mutagenesis of the study's own people.

Each method computes the effects itself (``Method.explain``): methods built on haplotype
sequences rebuild every distinct haplotype carrying a variant without it and recompute its
features (:mod:`hapexpr.methods.effects`); the elastic net removes one ALT dosage, which by
linearity is the variant's weight for every carrier (reported too). Columns:
``docs/predict-explain.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.errors import InputError
from hapexpr.final import ensure_final, final_or_fitted, load_final
from hapexpr.io.atomic import atomic_open
from hapexpr.methods.effects import EFFECT_COLUMNS
from hapexpr.preflight import output_file
from hapexpr.progress import console
from hapexpr.study import Study, gene_file_name

__all__ = ["EFFECT_COLUMNS", "explain_gene", "explain_path"]


def explain_path(study_path, name: str, gene_id: str) -> Path:
    """Where ``hapexpr report`` finds the table: ``STUDY/explain/<method>/<gene_id>.tsv``."""
    return Path(study_path) / "explain" / name / (gene_file_name(gene_id)[: -len(".npz")] + ".tsv")


def explain_gene(study_path, method: str, gene_id: str, *, out, overwrite: bool = False) -> pd.DataFrame:
    """Per-variant effects of ``gene_id``'s window variants on the final fit of ``method``;
    written to ``out`` (refused if it exists, unless ``overwrite``) and to :func:`explain_path`."""
    out = output_file(out, overwrite=overwrite)  # every input is checked before the final fit
    study = Study.open(study_path)
    if gene_id not in set(study.gene_ids):
        shown = ", ".join(study.gene_ids[:5]) + (" ..." if len(study.gene_ids) > 5 else "")
        raise InputError(
            f"gene {gene_id} is not in the study",
            path=study.path,
            record=f"--gene {gene_id}",
            hint=f"use one of the study's genes ({shown}; genes.tsv lists them all)",
        )
    final_or_fitted(study, method)  # the fit exists (or is a method), before fitting it
    m = ensure_final(study.path, method)
    m.for_new_people = True  # the rebuilt haplotypes are new sequences
    est = load_final(study, m, gene_id)
    if est is None:
        raise InputError(f"{m.fit_name} has no model for gene {gene_id} (nothing to learn from, e.g. no variant)")
    table = m.explain(StudyCohort(study), gene_id, est)
    for path in (out, explain_path(study.path, m.fit_name, gene_id)):
        with atomic_open(path) as fh:
            table.to_csv(fh, sep="\t", index=False, float_format="%.10g")
    shown = table.dropna(subset=["mean_effect"])
    top = shown.reindex(shown["mean_effect"].abs().sort_values(ascending=False).index).head(3)
    console.print(
        f"{m.fit_name}: effects of {len(table)} window variants of {gene_id} -> {out} "
        f"(and {explain_path(study.path, m.fit_name, gene_id)})"
    )
    for r in top.itertuples(index=False):
        console.print(
            f"  {r.variant_id} {r.ref}>{r.alt}: mean effect {r.mean_effect:+.4g} over {r.n_carriers} carriers"
        )
    return table
