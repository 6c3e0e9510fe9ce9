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

Beside the database goes what S-PrediXcan needs with it, the SNP covariance file in PredictDB's
layout: gzipped, space-separated ``GENE RSID1 RSID2 VALUE``, per gene the upper triangle (with the
diagonal) of the sample covariance (R's ``cov``, n-1) of the dosages of its model's SNPs over the
study's individuals, SNPs named as in the weights' ``rsid`` column.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import oof_path, options_key
from hapexpr.engines import run_genes
from hapexpr.errors import InputError
from hapexpr.estimators.elastic_net import _pearson
from hapexpr.final import FINAL_FORMAT, final_dir, load_final
from hapexpr.fit_records import fitted_or_default
from hapexpr.io.atomic import atomic_path
from hapexpr.methods.elastic_net import strand_ambiguous
from hapexpr.methods.registry import build
from hapexpr.preflight import output_file
from hapexpr.progress import track_genes
from hapexpr.study import Study

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
COVARIANCE_COLUMNS = ["GENE", "RSID1", "RSID2", "VALUE"]
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


def predictdb_tables(
    study,
    method,
    *,
    all_genes: bool = False,
    genes=None,
    engine: str = "local",
    jobs: int = 1,
    ray_address=None,
    progress: bool = False,
):
    """(weights, extra, covariance, summary) for a study: ``weights`` and ``extra`` DataFrames
    with the PredictDB columns, ``covariance`` (:func:`snp_covariance` of each written gene, SNPs
    named by varID: ``GENE varID1 varID2 VALUE``), ``summary`` counts. ``study`` is a
    :class:`hapexpr.study.Study`.

    The outer loop is ``hapexpr fit``'s own (:func:`hapexpr.crossval.cross_validate_gene`: the
    study's folds, covariates residualised inside the training folds, estimator seed
    ``seed + fold``) and the final fit is ``hapexpr fit-final``'s (every individual, seed
    ``seed``), so the database agrees with both. When the study already holds a complete fit
    and final fit of ``method`` with the same options, their files are read instead of fitting
    again (``summary["reused"]`` says which); whatever is missing is computed here, on
    ``engine`` with ``jobs`` workers (:mod:`hapexpr.engines`), without writing into the study.
    ``method``: a bound dosage method (its features are named dosage columns and it has
    ``variant_table``), e.g. ``elastic-net``.
    """
    from scipy.stats import false_discovery_control

    cohort = StudyCohort(study)
    gene_table = study.genes.set_index("gene_id")
    gene_ids = list(study.gene_ids if genes is None else genes)
    folds = np.asarray(study.folds)
    ks = np.unique(folds)
    reused = []
    finals = _reuse_final(study, method, gene_ids)
    if finals is None:
        record = {"format": FINAL_FORMAT, **method.fit_record(), "name": method.fit_name}
        record["key"] = options_key(record)
        results = run_genes(
            study, method, record, gene_ids, engine=engine, jobs=jobs, ray_address=ray_address, kind="final"
        )
        finals = dict(track_genes(results, "export: fit on all individuals", enabled=progress, total=len(gene_ids)))
    else:
        reused.append("fit-final")
    with_model = [g for g in gene_ids if finals.get(g) is not None and np.any(finals[g].coef_ != 0)]
    oof = _reuse_oof(study, method, with_model)
    if oof is None:
        record = {**method.fit_record(), "models_used": method.models_used(), "name": method.fit_name}
        record["key"] = options_key(record)
        results = run_genes(study, method, record, with_model, engine=engine, jobs=jobs, ray_address=ray_address)
        oof = {
            g: (obs, pred)
            for g, obs, pred in track_genes(
                results, "export: nested cross-validation", enabled=progress, total=len(with_model)
            )
        }
    else:
        reused.append("fit")
    weights, extra, covariance = [], [], []
    for gid in with_model:
        final = finals[gid]
        names = method.variant_table(cohort, gid)
        nz = np.flatnonzero(final.coef_)
        dosages = method.features(cohort, gid).to_numpy(dtype=np.float64)[:, nz]  # (samples, model SNPs)
        ids = [
            var_id(names["chrom"].iloc[j], int(names["pos"].iloc[j]), names["ref"].iloc[j], names["alt"].iloc[j])
            for j in nz
        ]
        covariance.append(snp_covariance(gid, dosages, ids))
        observed, predicted = oof[gid]
        perf = nested_perf(
            np.array([_pearson(predicted[folds == k], observed[folds == k]) for k in ks]),
            np.array([int(np.sum(folds == k)) for k in ks]),
        )
        for j in nz:
            row = names.iloc[j]
            vid = var_id(row["chrom"], int(row["pos"]), row["ref"], row["alt"])
            rsid = str(row["variant_id"])
            weights.append(
                (gid, vid if rsid in ("", ".") else rsid, vid, row["ref"], row["alt"], float(final.coef_[j]))
            )
        name = gene_table.loc[gid, "gene_name"] if "gene_name" in gene_table.columns else gid
        extra.append((gid, gid if pd.isna(name) else str(name), len(nz), perf.r2, perf.pval, np.nan, perf.rho_avg))
    extra_df = pd.DataFrame(extra, columns=EXTRA_COLUMNS + ["rho_avg"])
    if len(extra_df):
        extra_df["pred.perf.qval"] = false_discovery_control(extra_df["pred.perf.pval"].to_numpy(), method="bh")
    weights_df = pd.DataFrame(weights, columns=WEIGHTS_COLUMNS)
    summary = {"genes": len(gene_ids), "genes_with_model": len(extra_df), "reused": reused}
    if not all_genes and len(extra_df):
        keep = (extra_df["rho_avg"] > MIN_RHO) & (extra_df["pred.perf.pval"] < MAX_PVAL)
        extra_df = extra_df[keep]
        weights_df = weights_df[weights_df["gene"].isin(set(extra_df["gene"]))]
    cov_df = pd.concat(covariance, ignore_index=True) if covariance else snp_covariance("", np.zeros((0, 0)), [])
    cov_df = cov_df[cov_df["GENE"].isin(set(extra_df["gene"]))]
    summary["genes_written"] = len(extra_df)
    summary["weights_written"] = len(weights_df)
    summary["covariances_written"] = len(cov_df)
    return (
        weights_df.reset_index(drop=True),
        extra_df[EXTRA_COLUMNS].reset_index(drop=True),
        cov_df.reset_index(drop=True),
        summary,
    )


def snp_covariance(gene_id: str, dosages: np.ndarray, ids: list[str]) -> pd.DataFrame:
    """PredictDB's covariance rows of one gene: ``GENE RSID1 RSID2 VALUE`` for every pair
    i <= j of its model's SNPs (upper triangle with the diagonal, in model order).

    dosages: (samples, snps) ALT dosages 0..2 of the study's individuals; VALUE is their sample
    covariance with the n-1 denominator, as R's ``cov`` in PredictDB's ``do_covariance``.
    """
    k = len(ids)
    cov = np.atleast_2d(np.cov(dosages, rowvar=False, ddof=1)) if k else np.zeros((0, 0))
    i, j = np.triu_indices(k)
    names = np.asarray(ids, dtype=object)
    return pd.DataFrame({"GENE": gene_id, "RSID1": names[i], "RSID2": names[j], "VALUE": cov[i, j]})


def name_covariance(covariance: pd.DataFrame, weights: pd.DataFrame) -> pd.DataFrame:
    """``covariance`` (SNPs named by varID) with each SNP named by its ``rsid`` in ``weights``
    for the same gene, so that S-PrediXcan finds every model SNP in the covariance."""
    rsid = dict(zip(zip(weights["gene"], weights["varID"]), weights["rsid"]))
    genes = covariance["GENE"].to_numpy()
    return covariance.assign(
        RSID1=[rsid[g, v] for g, v in zip(genes, covariance["RSID1"])],
        RSID2=[rsid[g, v] for g, v in zip(genes, covariance["RSID2"])],
    )


def write_covariance(covariance: pd.DataFrame, out: Path, *, overwrite: bool = False) -> None:
    """Write the covariance rows gzipped and space-separated, with a header, atomically (the
    layout PredictDB ships and MetaXcan's ``load_matrix_manager`` reads: whitespace, genes
    contiguous)."""
    output_file(out, overwrite=overwrite, flag="--covariance", what="covariance file")
    with atomic_path(out) as tmp:
        with gzip.open(tmp, "wt") as fh:
            covariance[COVARIANCE_COLUMNS].to_csv(fh, sep=" ", index=False, float_format="%.10g")


def covariance_path(out: str | Path) -> Path:
    """Default covariance file beside database ``out``: ``weights.db`` -> ``weights.covariances.txt.gz``."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.db' else out.name}.covariances.txt.gz")


def _complete_with_key(path: Path, key: str) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(record.get("complete")) and record.get("key") == key


def _reuse_final(study, method, gene_ids) -> dict | None:
    """gene -> estimator (None: no model) from a complete ``fit-final`` of ``method`` made with
    the same options, or None when the study holds none."""
    key = options_key({"format": FINAL_FORMAT, **method.fit_record(), "name": method.fit_name})
    if not _complete_with_key(final_dir(study, method.fit_name) / "final.json", key):
        return None
    return {g: load_final(study, method, g) for g in gene_ids}


def _reuse_oof(study, method, gene_ids) -> dict | None:
    """gene -> (observed, predicted) out of fold from a complete ``fit`` of ``method`` made with
    the same options (its per-gene files, in study sample order), or None when there is none."""
    key = options_key({**method.fit_record(), "models_used": method.models_used()})
    if not _complete_with_key(study.path / "models" / method.fit_name / "fit.json", key):
        return None
    out = {}
    for g in gene_ids:
        path = oof_path(study, method.fit_name, g)
        if not path.exists():  # the fit found no model where the final fit did: fit again
            return None
        df = pd.read_csv(path, sep="\t", dtype={"sample_id": str})
        if list(df["sample_id"]) != list(study.sample_ids):
            return None
        out[g] = (df["observed"].to_numpy(dtype=np.float64), df["predicted"].to_numpy(dtype=np.float64))
    return out


RSID = re.compile(r"^rs\d+$")
RSID_MAP_COLUMNS = ["chrom", "pos", "ref", "alt", "rsid"]


def read_rsid_map(path: str | Path) -> dict[tuple[str, int, str, str], str]:
    """(chrom without ``chr``, pos, REF, ALT) -> rsid from a TSV with columns chrom pos ref alt
    rsid (a header line naming them is optional), e.g. ``bcftools query -f '%CHROM\\t%POS\\t%REF\\t%ALT\\t%ID\\n'``
    on a dbSNP VCF."""
    path = Path(path)
    if not path.exists():
        raise InputError("the rsid map does not exist", path=path)
    first = path.open().readline().split()
    header = 0 if [c.lower() for c in first[:5]] == RSID_MAP_COLUMNS else None
    try:
        df = pd.read_csv(path, sep=r"\s+", header=header, usecols=range(5), dtype=str, comment="#")
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"the rsid map is not a table of {' '.join(RSID_MAP_COLUMNS)} ({exc})", path=path) from None
    df.columns = RSID_MAP_COLUMNS
    bad = ~df["pos"].str.fullmatch(r"\d+")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"position {df['pos'].iloc[i]!r} is not a whole number", path=path, record=f"row {i + 1}")
    return {
        (_chrom(c), int(p), r.upper(), a.upper()): rs for c, p, r, a, rs in df[RSID_MAP_COLUMNS].itertuples(index=False)
    }


def _chrom(chrom: str) -> str:
    return str(chrom).removeprefix("chr")


def apply_rsid_map(weights: pd.DataFrame, mapping: dict | None) -> tuple[pd.DataFrame, int]:
    """``weights`` with ``rsid`` from ``mapping`` (by chrom, pos, ref, alt) where it has one;
    returns the table and how many rsids still are not rsIDs."""
    if mapping is not None and len(weights):
        keys = [tuple(v.rsplit("_", 3)) for v in weights["varID"]]
        looked = [mapping.get((_chrom(c), int(p), r.upper(), a.upper())) for c, p, r, a in keys]
        weights = weights.assign(rsid=[m if m is not None else old for m, old in zip(looked, weights["rsid"])])
    not_rs = int((~weights["rsid"].astype(str).str.match(RSID)).sum()) if len(weights) else 0
    return weights, not_rs


def write_predictdb(weights: pd.DataFrame, extra: pd.DataFrame, out: Path, *, overwrite: bool = False) -> None:
    """Write the two tables as a new SQLite database at ``out``, atomically."""
    out = Path(out)
    output_file(out, overwrite=overwrite)
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
        yield tuple(
            None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v) for v in row
        )


def export_predictdb(
    study_path: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    method: str = "elastic-net",
    options: dict | None = None,
    all_genes: bool = False,
    rsid_map: str | Path | None = None,
    covariance: str | Path | None = None,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Fit the elastic net on every individual of a study and write a PredictDB database, and
    beside it the SNP covariance file S-PrediXcan reads with it (``covariance``; default
    :func:`covariance_path` of ``out``).

    Returns counts: ``genes``, ``genes_with_model``, ``genes_written``, ``weights_written``,
    ``covariances_written`` (rows), ``covariance`` (its path), and ``reused``: which of the study's own ``fit`` / ``fit-final`` were read (same options)
    instead of fitting again; ``engine``/``jobs`` run what had to be fitted.
    ``method`` is a fit of the study by name (its options, as ``hapexpr fit`` used them) or a
    dosage method to use with its defaults; ``options`` are put over them. With the same options
    the weights equal ``hapexpr fit-final``'s.
    """
    out = Path(out)
    cov_out = covariance_path(out) if covariance is None else Path(covariance)
    if cov_out.resolve() == out.resolve():
        raise InputError(
            "the covariance file and the database are the same file", path=out, hint="give another --covariance"
        )
    # refused before the (long) fitting, and again before writing
    output_file(out, overwrite=overwrite)
    output_file(cov_out, overwrite=overwrite, flag="--covariance", what="covariance file")
    mapping = read_rsid_map(rsid_map) if rsid_map is not None else None
    study = Study.open(study_path)
    m = fitted_or_default(study, method)
    if options:
        m = build(m.name, {**m.options.to_dict(), **options}, fit_name=m.fit_name).bind(study)
    if not hasattr(m, "variant_table"):
        raise InputError(
            f"{m.fit_name} is not a model of allele dosages; PredictDB holds dosage weights",
            hint="export an elastic-net fit (`--method elastic-net`)",
        )
    weights, extra, cov, summary = predictdb_tables(
        study, m, all_genes=all_genes, engine=engine, jobs=jobs, ray_address=ray_address, progress=progress
    )
    weights, summary["not_rsid"] = apply_rsid_map(weights, mapping)
    summary["ambiguous_kept"] = (
        0 if m.options.drop_ambiguous else int(strand_ambiguous(weights["ref_allele"], weights["eff_allele"]).sum())
    )
    # The covariance first: a database is never left without the covariance it was written with.
    write_covariance(name_covariance(cov, weights), cov_out, overwrite=overwrite)
    write_predictdb(weights, extra, out, overwrite=overwrite)
    summary["covariance"] = str(cov_out)
    return summary
