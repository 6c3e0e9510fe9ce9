"""``hapexpr export-predictdb``: elastic-net weights in the PredictDB SQLite format.

S-PrediXcan / MetaXcan read a model database with two tables (PredictDB's schema, exactly)::

    weights(gene TEXT, rsid TEXT, varID TEXT, ref_allele TEXT, eff_allele TEXT, weight REAL)
    extra(gene TEXT, genename TEXT, "n.snps.in.model" INTEGER, "pred.perf.R2" REAL,
          "pred.perf.pval" REAL, "pred.perf.qval" REAL)

The weights come from one elastic net per gene fit on ALL the study's individuals (lambda by
inner 10-fold CV); ``pred.perf.*`` follow PredictDB's nested CV: the study's own K folds are the
outer folds, a full elastic net (with its own inner CV) is fit on K-1 of them and predicts the
held-out fold; R2 is the squared mean of the per-fold Pearson r, the p-value Stouffer's
combination of the per-fold Fisher z (two-sided), the q-value Benjamini-Hochberg over every gene
that got a model. As in PredictDB's published databases, only models with mean r > 0.1 and
p < 0.05 are written unless ``all_genes=True``. Columns in ``docs/elastic-net.md``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_path
from hapexpr.normalise import transform_in_fold
from hapexpr.models.elastic_net import ElasticNetMethod, _pearson

WEIGHTS_COLUMNS = ["gene", "rsid", "varID", "ref_allele", "eff_allele", "weight"]
EXTRA_COLUMNS = ["gene", "genename", "n.snps.in.model", "pred.perf.R2", "pred.perf.pval", "pred.perf.qval"]
SCHEMA = """
CREATE TABLE weights (gene TEXT, rsid TEXT, varID TEXT, ref_allele TEXT, eff_allele TEXT, weight REAL);
CREATE TABLE extra (gene TEXT, genename TEXT, "n.snps.in.model" INTEGER, "pred.perf.R2" REAL,
                    "pred.perf.pval" REAL, "pred.perf.qval" REAL);
CREATE INDEX weights_rsid ON weights (rsid);
CREATE INDEX weights_gene ON weights (gene);
CREATE INDEX weights_rsid_gene ON weights (rsid, gene);
CREATE INDEX gene_model_summary ON extra (gene);
"""
# PredictDB's filter for its published databases.
MIN_RHO = 0.1
MAX_PVAL = 0.05


@dataclass(frozen=True)
class GenePerf:
    """PredictDB's nested-CV summary of one gene: per-fold r averaged, Stouffer-combined z."""

    rho_avg: float
    r2: float
    zscore: float
    pval: float


def nested_perf(fold_r: np.ndarray, fold_n: np.ndarray) -> GenePerf:
    """fold_r: (folds,) Pearson r of predicted vs observed in each held-out fold (0 for a
    constant prediction); fold_n: (folds,) held-out individuals per fold."""
    from scipy.stats import norm

    r = np.clip(np.asarray(fold_r, dtype=np.float64), -0.999999, 0.999999)
    z = np.arctanh(r) * np.sqrt(np.maximum(np.asarray(fold_n) - 3, 1))
    zscore = float(z.sum() / np.sqrt(len(z)))
    rho = float(np.mean(fold_r))
    return GenePerf(rho_avg=rho, r2=rho**2, zscore=zscore, pval=float(2 * norm.sf(abs(zscore))))


def var_id(chrom: str, pos: int, ref: str, alt: str) -> str:
    return f"{chrom}_{pos}_{ref}_{alt}"


def predictdb_tables(study, method: ElasticNetMethod, *, seed: int = 0, all_genes: bool = False, genes=None):
    """(weights, extra, summary) for a study: ``weights`` and ``extra`` DataFrames with the
    PredictDB columns, ``summary`` counts. ``study`` is a :class:`hapexpr.study.Study`.

    The outer loop is ``hapexpr fit``'s own (:func:`hapexpr.train.cross_validate_gene`: the
    study's folds, covariates residualised inside the training folds, estimator seed
    ``seed + fold``) and the final fit is ``hapexpr fit-final``'s (every individual, seed
    ``seed``), so the database agrees with both.
    """
    from scipy.stats import false_discovery_control

    from hapexpr.train import cross_validate_gene, residualise, study_targets

    gene_table = study.genes.set_index("gene_id")
    gene_ids = list(study.gene_ids if genes is None else genes)
    folds = np.asarray(study.folds)
    expr, cov = study_targets(study)
    everyone = np.ones(len(folds), dtype=bool)
    weights, extra = [], []
    for gid in gene_ids:
        gene = study.gene(gid)
        X = np.asarray(method.features(study, gene), dtype=np.float64)
        names = method.feature_names(study, gene)
        y = expr.loc[gid].to_numpy(dtype=np.float64)
        final = method.estimator(seed).fit(X, residualise(transform_in_fold(y, everyone, study.normalise), cov, everyone))
        nz = np.flatnonzero(final.coef_)
        if len(nz) == 0:
            continue
        observed, predicted = cross_validate_gene(X, y, cov, folds, method.estimator, seed=seed, normalise=study.normalise)
        ks = np.unique(folds)
        perf = nested_perf(
            np.array([_pearson(predicted[folds == k], observed[folds == k]) for k in ks]),
            np.array([int(np.sum(folds == k)) for k in ks]),
        )
        for j in nz:
            row = names.iloc[j]
            vid = var_id(row["chrom"], int(row["pos"]), row["ref"], row["alt"])
            rsid = str(row["variant_id"])
            weights.append((gid, vid if rsid in ("", ".") else rsid, vid, row["ref"], row["alt"], float(final.coef_[j])))
        name = gene_table.loc[gid, "gene_name"] if "gene_name" in gene_table.columns else gid
        extra.append((gid, gid if pd.isna(name) else str(name), len(nz), perf.r2, perf.pval, np.nan, perf.rho_avg))
    extra_df = pd.DataFrame(extra, columns=EXTRA_COLUMNS + ["rho_avg"])
    if len(extra_df):
        extra_df["pred.perf.qval"] = false_discovery_control(extra_df["pred.perf.pval"].to_numpy(), method="bh")
    weights_df = pd.DataFrame(weights, columns=WEIGHTS_COLUMNS)
    summary = {"genes": len(gene_ids), "genes_with_model": len(extra_df)}
    if not all_genes and len(extra_df):
        keep = (extra_df["rho_avg"] > MIN_RHO) & (extra_df["pred.perf.pval"] < MAX_PVAL)
        extra_df = extra_df[keep]
        weights_df = weights_df[weights_df["gene"].isin(set(extra_df["gene"]))]
    summary["genes_written"] = len(extra_df)
    summary["weights_written"] = len(weights_df)
    return weights_df.reset_index(drop=True), extra_df[EXTRA_COLUMNS].reset_index(drop=True), summary


def write_predictdb(weights: pd.DataFrame, extra: pd.DataFrame, out: Path, *, overwrite: bool = False) -> None:
    """Write the two tables as a new SQLite database at ``out``, atomically."""
    out = Path(out)
    _check_out(out, overwrite)
    with atomic_path(out) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(SCHEMA)
            con.executemany("INSERT INTO weights VALUES (?, ?, ?, ?, ?, ?)", _rows(weights[WEIGHTS_COLUMNS]))
            con.executemany("INSERT INTO extra VALUES (?, ?, ?, ?, ?, ?)", _rows(extra[EXTRA_COLUMNS]))
            con.commit()
        finally:
            con.close()


def _rows(df: pd.DataFrame):
    for row in df.itertuples(index=False, name=None):
        yield tuple(None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v) for v in row)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise InputError("the output is a directory", path=out, hint="give a file name such as weights.db")
    if out.exists() and not overwrite:
        raise InputError(
            "the output database already exists", path=out,
            hint="pass --overwrite to replace it, or choose another --out",
        )


def export_predictdb(
    study_path: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    cis_window: int | None = None,
    vcf: Path | None = None,
    alpha: float = 0.5,
    maf: float = 0.01,
    inner_folds: int = 10,
    seed: int = 0,
    all_genes: bool = False,
) -> dict:
    """Fit the elastic net on every individual of a study and write a PredictDB database.

    Returns counts: ``genes``, ``genes_with_model``, ``genes_written``, ``weights_written``.
    ``seed`` is ``hapexpr fit``'s ``--seed`` (inner-CV folds); with the same seed the weights
    equal ``hapexpr fit-final --method elastic-net``'s.
    """
    from hapexpr.study import Study

    out = Path(out)
    _check_out(out, overwrite)  # refuse before the (long) fitting, and again before writing
    study = Study.open(study_path)
    method = ElasticNetMethod(cis_window=cis_window, vcf=vcf, alpha=alpha, maf=maf, inner_folds=inner_folds)
    weights, extra, summary = predictdb_tables(
        study, method, seed=seed, all_genes=all_genes
    )
    write_predictdb(weights, extra, out, overwrite=overwrite)
    return summary
