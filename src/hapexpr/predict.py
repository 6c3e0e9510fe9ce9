"""``hapexpr predict``: expression of new people from a study's final fits (``hapexpr.final``).

The new VCF is a :class:`hapexpr.cohort.NewCohort`: for every gene its records over the gene's
stored region are read on its own name for the contig (``chr7`` and ``7`` are matched), every
REF is checked against the study's reference bases, and each new person's two haplotypes are
built exactly as ``prepare`` builds the study's. The method then computes the new people's
features with the very code it used for the study's people (``Method.features``): a study
variant absent from the new VCF is REF in the sequences (and at the study's mean dosage for a
dosage model), a variant the study never saw is part of the person's sequence (and has no weight
in a dosage model). Both counts are reported per gene. Columns: ``docs/predict-explain.md``.

Genes outside the study (``--genes ANNOTATION --fasta REF``) are built by
:class:`hapexpr.cohort.GenesCohort` and predicted by a model shared across genes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hapexpr.cohort import GenesCohort, NewCohort, variant_keys
from hapexpr.errors import InputError
from hapexpr.final import ensure_final, final_or_fitted, load_final, load_final_new_gene
from hapexpr.io.atomic import atomic_open
from hapexpr.preflight import new_people_vcf, output_file
from hapexpr.progress import console, track_genes
from hapexpr.study import Study

PRED_COLUMNS = [
    "method",
    "gene_id",
    "sample_id",
    "predicted",
    "n_study_variants_missing",
    "n_new_variants",
    "in_study",
    "gene_name",
]


def predict_new(
    study_path,
    method: str,
    *,
    vcf,
    out,
    genes=None,
    fasta=None,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every gene's expression for every sample of ``vcf`` with the final fit of
    ``method`` (a fit name); writes ``out`` (TSV, columns ``PRED_COLUMNS``) atomically.

    genes, fasta: an annotation of genes outside the study and a reference FASTA covering them;
    those genes are predicted too (after the study's), by a method whose final model is shared
    by every gene (:func:`hapexpr.final.load_final_new_gene`)."""
    # Every input is checked before the final fit, which can take hours on real data.
    out = output_file(out, overwrite=overwrite)
    if (genes is None) != (fasta is None):
        raise InputError(
            "genes outside the study need both an annotation and a reference FASTA",
            hint="pass both --genes ANNOTATION and --fasta REF.fa, or neither",
        )
    study = Study.open(study_path)
    fitted = final_or_fitted(study, method)
    phased = "sequence" in fitted.needs  # dosages need no phase
    new_people_vcf(study, vcf, phased=phased)
    new_genes = None
    if genes is not None:
        if not fitted.shared_final:
            raise InputError(
                f"{fitted.fit_name} has one model per study gene; it cannot predict genes outside the study",
                path=genes,
                hint="fit a model shared across genes (`hapexpr fit STUDY --method nt-transformer --multi-gene`, "
                "then `hapexpr fit-final`), or drop --genes/--fasta",
            )
        new_genes = GenesCohort(study, vcf, genes, fasta)
    m = ensure_final(study.path, method)
    m.for_new_people = True
    cohort = NewCohort(study, vcf, phased=phased)
    in_study = np.isin(cohort.sample_ids, study.sample_ids)
    parts, counts, skipped, no_model = [], [], [], []
    for gene_id in track_genes(study.gene_ids, f"predict {m.fit_name}", enabled=progress):
        if not cohort.has_gene(gene_id):
            skipped.append(gene_id)
            continue
        est = load_final(study, m, gene_id)
        if est is None:
            no_model.append(gene_id)
            continue
        new = cohort.variants(gene_id)
        n_new = int(np.count_nonzero(new.table["in_window"].to_numpy() & ~new.in_study))
        X = m.features(cohort, gene_id)
        pred = est.predict(X)
        n_missing = _missing(study.gene(gene_id).variants, new.table, est, X)
        counts.append((gene_id, n_missing, n_new))
        parts.append(_rows(m, gene_id, study.gene_names[gene_id], cohort.sample_ids, pred, n_missing, n_new, in_study))
    if new_genes is not None:
        parts += _predict_outside(study, m, new_genes, progress=progress)
    if not parts:
        raise InputError(
            f"the VCF has no contig of any study gene ({', '.join(sorted(set(study.genes['chrom'])))})",
            path=vcf,
            hint="use a VCF of the same genome build and chromosomes as the study",
        )
    table = pd.concat(parts, ignore_index=True)[PRED_COLUMNS]
    with atomic_open(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.10g")
    _summary(m, table, counts, skipped, no_model, in_study, out)
    return table


def _predict_outside(study: Study, m, cohort: GenesCohort, *, progress: bool) -> list[pd.DataFrame]:
    """Rows for the genes of ``cohort`` (outside the study): every window variant is new
    (``n_new_variants``) and no study variant can be missing."""
    in_study = np.isin(cohort.sample_ids, study.sample_ids)
    parts = []
    for gene_id in track_genes(cohort.gene_ids, f"predict {m.fit_name} (genes outside the study)", enabled=progress):
        pred = load_final_new_gene(study, m, gene_id).predict(m.features(cohort, gene_id))
        n_new = int(np.count_nonzero(cohort.gene(gene_id).variants["in_window"].to_numpy()))
        name = cohort.genes.loc[gene_id].get("gene_name", gene_id)
        name = gene_id if pd.isna(name) or not str(name) else str(name)
        parts.append(_rows(m, gene_id, name, cohort.sample_ids, pred, 0, n_new, in_study))
    console.print(
        f"{m.fit_name}: {len(cohort.gene_ids)} gene(s) outside the study predicted with the neutral head"
        + (f"; {len(cohort.skipped)} annotation gene(s) are study genes, predicted as such" if cohort.skipped else "")
    )
    return parts


def _rows(m, gene_id: str, gene_name: str, samples, pred, n_missing: int, n_new: int, in_study) -> pd.DataFrame:
    """One gene's rows of the output (columns ``PRED_COLUMNS``)."""
    return pd.DataFrame(
        {
            "method": m.fit_name,
            "gene_id": gene_id,
            "sample_id": samples,
            "predicted": np.asarray(pred, dtype=np.float64),
            "n_study_variants_missing": n_missing,
            "n_new_variants": n_new,
            "in_study": in_study,
            "gene_name": gene_name,
        }
    )[PRED_COLUMNS]


def _missing(study_variants: pd.DataFrame, new_table: pd.DataFrame, est, X) -> int:
    """Study variants the new VCF lacks: the model's weighted ones for a model that says (a
    dosage model), else the study's window variants."""
    if hasattr(est, "missing"):
        return est.missing(X)
    have = set(variant_keys(new_table["pos"], new_table["ref"], new_table["alt"]))
    v = study_variants[study_variants["in_window"]]
    return sum(k not in have for k in variant_keys(v["pos"], v["ref"], v["alt"]))


def _summary(m, table, counts, skipped, no_model, in_study, out) -> None:
    n_missing = sum(c[1] for c in counts)
    genes_missing = sum(c[1] > 0 for c in counts)
    n_new = sum(c[2] for c in counts)
    console.print(f"{m.fit_name}: predicted {table['sample_id'].nunique()} people x {len(counts)} genes -> {out}")
    sequence = "sequence" in m.needs
    filled = "taken as REF in the sequences" if sequence else "filled with the study's mean dosage"
    console.print(f"  study variants missing from the new VCF: {n_missing} in {genes_missing} gene(s) ({filled})")
    used = "part of the people's sequences" if sequence else "ignored: the model has no weight for them"
    console.print(f"  new variants (in the VCF, not in the study) in the windows: {n_new} ({used})")
    if in_study.any():
        console.print(
            f"  [yellow]{int(in_study.sum())} sample(s) are study individuals (in_study = True); "
            "their predictions are not out-of-sample[/]"
        )
    if no_model:
        console.print(f"  {len(no_model)} gene(s) have no model (nothing to learn from): " + ", ".join(no_model[:5]))
    if skipped:
        console.print(
            f"  [yellow]{len(skipped)} gene(s) skipped, their contig is not in the VCF:[/] "
            + ", ".join(skipped[:5])
            + (" ..." if len(skipped) > 5 else "")
        )
