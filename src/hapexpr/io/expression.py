"""Expression and covariate matrices in the QTL world's layouts.

Expression: tensorQTL BED(.gz) (``#chr start end gene_id sample...``), or TSV/parquet with genes
as rows (first column the gene id) and samples as columns. Covariates: tensorQTL layout,
covariates as rows (first column the covariate id) and samples as columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.tables import check_unique, read_tsv, to_numeric_matrix

BED_COLUMNS = ["#chr", "start", "end", "gene_id"]


def read_expression(path: str | Path) -> pd.DataFrame:
    """(genes, samples) float64 with index ``gene_id`` and sample-id columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            raw = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise InputError(f"the expression file is not readable parquet ({exc})", path=path) from None
        raw = raw.astype(str)
        if raw.empty:
            raise InputError("the expression file has no data rows", path=path)
    else:
        raw = read_tsv(path, what="expression")
    header = [str(c) for c in raw.columns]
    if [h.lower() for h in header[:4]] == ["#chr", "start", "end", "gene_id"]:
        ids = raw.iloc[:, 3]
        values = raw.iloc[:, 4:]
    else:
        ids = raw.iloc[:, 0]
        values = raw.iloc[:, 1:]
    if values.shape[1] == 0:
        raise InputError(
            "the expression file has no sample columns", path=path,
            hint="use a tensorQTL BED (#chr start end gene_id sample...) or genes x samples TSV/parquet",
        )
    values.index = pd.Index(ids.astype(str), name="gene_id")
    values.columns = [str(c) for c in values.columns]
    check_unique(values.index, path=path, what="gene id")
    check_unique(values.columns, path=path, what="sample id")
    return to_numeric_matrix(values, path=path, what="expression", row_name="gene")


def read_covariates(path: str | Path) -> pd.DataFrame:
    """(covariates, samples) float64 with index the covariate ids."""
    path = Path(path)
    raw = read_tsv(path, what="covariates")
    values = raw.iloc[:, 1:]
    if values.shape[1] == 0:
        raise InputError(
            "the covariates file has no sample columns", path=path,
            hint="use the tensorQTL layout: first column the covariate id, then one column per sample",
        )
    values.index = pd.Index(raw.iloc[:, 0].astype(str), name="id")
    values.columns = [str(c) for c in values.columns]
    check_unique(values.index, path=path, what="covariate")
    check_unique(values.columns, path=path, what="sample id")
    cov = to_numeric_matrix(values, path=path, what="covariate", row_name="covariate")
    constant = cov.index[np.ptp(cov.to_numpy(), axis=1) == 0]
    if len(constant):
        raise InputError(
            f"covariate {constant[0]!r} is constant across samples", path=path,
            record=f"covariate {constant[0]}", hint="remove constant covariates (an intercept is always added)",
        )
    return cov
