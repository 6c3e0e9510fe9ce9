"""Expression and covariate matrices in the QTL world's layouts.

Expression layouts, told apart by the header (docs/study-directory.md, "Input layouts"):

- ``tensorqtl-bed``: ``#chr start end phenotype_id sample...`` (tensorQTL; any 4th column name);
- ``qtltools-bed``: ``#chr start end pid gid strand sample...`` or ``#chr start end gene length
  strand sample...`` (QTLtools/FastQTL; the 6th column is named ``strand``);
- ``gct``: GTEx GCT, a ``#1.2`` line, a dimensions line, then ``Name Description sample...``;
- ``matrix``: TSV/parquet with genes as rows, the first column the gene id, then samples.

Text files may be tab- or whitespace-separated. A BED with a strand column carries each gene's TSS
(``tss_table``), so no separate annotation is needed. Covariates: covariates as rows (first
column the covariate id, with or without a name over it), samples as columns.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.tables import check_unique, read_matrix_text, to_numeric_matrix

BED_COLUMNS = ["#chr", "start", "end", "gene_id"]
LAYOUTS = {
    "tensorqtl-bed": "#chr start end phenotype_id sample...",
    "qtltools-bed": "#chr start end pid gid strand sample... (or #chr start end gene length strand sample...)",
    "gct": "#1.2 / ROWS COLS / Name Description sample...",
    "matrix": "gene_id sample... (genes as rows)",
}


@dataclass(frozen=True)
class ExpressionTable:
    """An expression file as read.

    values: (genes, samples) float64, index ``gene_id``, sample-id columns, file order.
    layout: one of ``LAYOUTS``.
    tss: ``gene_id gene_name chrom tss strand gene_start gene_end`` (1-based TSS, the BED interval
    as the gene's span) when the file carries strands, else None.
    names: gene_id -> gene name where the file names genes beside their ids (a GCT's
        ``Description``; blank or id-equal entries left out), else None.
    """

    values: pd.DataFrame
    layout: str
    tss: pd.DataFrame | None
    names: pd.Series | None = None


def read_expression(path: str | Path) -> pd.DataFrame:
    """(genes, samples) float64 with index ``gene_id`` and sample-id columns."""
    return read_expression_table(path).values


def read_expression_table(path: str | Path) -> ExpressionTable:
    """Read any of ``LAYOUTS``, detected from the header."""
    path = Path(path)
    if path.suffix == ".parquet":
        raw = _read_parquet(path)
    elif _first_line(path).startswith("#1.2"):
        raw = read_matrix_text(path, what="expression (GTEx GCT)", skip=2, tabs_only=True)
    else:
        raw = read_matrix_text(path, what="expression")
    header = [str(c) for c in raw.columns]
    layout = _layout(header, path)
    n_id = {"tensorqtl-bed": 4, "qtltools-bed": 6, "gct": 2, "matrix": 1}[layout]
    id_col = {"tensorqtl-bed": 3, "qtltools-bed": 3, "gct": 0, "matrix": 0}[layout]
    values = raw.iloc[:, n_id:]
    if values.shape[1] == 0:
        raise InputError(
            f"the expression file has no sample columns (read as {layout}: {LAYOUTS[layout]})",
            path=path,
            hint="use a tensorQTL/QTLtools BED, a GTEx GCT, or a genes x samples TSV/parquet",
        )
    values.index = pd.Index(raw.iloc[:, id_col].astype(str), name="gene_id")
    values.columns = [str(c) for c in values.columns]
    check_unique(values.index, path=path, what="gene id")
    check_unique(values.columns, path=path, what="sample id")
    try:
        numeric = to_numeric_matrix(values, path=path, what="expression", row_name="gene")
    except InputError as exc:
        exc.message += f" (the file was read as {layout}: {LAYOUTS[layout]})"
        raise
    tss = _tss_table(raw, path) if layout == "qtltools-bed" else None
    names = _names(values.index, raw.iloc[:, 1]) if layout == "gct" else None
    return ExpressionTable(numeric, layout, tss, names)


def _names(ids: pd.Index, described: pd.Series) -> pd.Series | None:
    """gene_id -> name from an id column's neighbour (GCT ``Description``), blank and id-equal
    entries left out; None when nothing is left."""
    names = pd.Series(described.astype(str).str.strip().to_numpy(), index=ids)
    names = names[(names != "") & (names != "nan") & (names != names.index)]
    return names if len(names) else None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"the expression file is not readable parquet ({exc})", path=path) from None
    if raw.empty:
        raise InputError("the expression file has no data rows", path=path)
    return raw.astype(str)


def _first_line(path: Path) -> str:
    if not path.exists():
        raise InputError("the expression file does not exist", path=path)
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rt") if gz else open(path) as fh:
            return fh.readline()
    except (OSError, EOFError, UnicodeDecodeError, zlib.error):
        return ""  # the table reader names the problem


def _layout(header: list[str], path: Path) -> str:
    low = [h.lower() for h in header]
    if low[:2] == ["name", "description"] and path.suffix != ".parquet" and _first_line(path).startswith("#1.2"):
        return "gct"
    if low and low[0].startswith("#"):
        if low[1:3] != ["start", "end"] or len(low) < 4:
            raise InputError(
                f"the header starts like a BED ({header[0]!r}) but columns 2-3 are {header[1:3]}, not start end",
                path=path,
                record="header",
                hint=f"expected tensorQTL {LAYOUTS['tensorqtl-bed']!r} or QTLtools {LAYOUTS['qtltools-bed']!r}",
            )
        return "qtltools-bed" if len(low) > 5 and low[5] == "strand" else "tensorqtl-bed"
    return "matrix"


def _tss_table(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """1-based TSS per gene from a QTLtools BED: the 1 bp interval ``start end`` is the TSS
    (start = TSS-1, end = TSS, on either strand, as QTLtools and tensorQTL write it); a longer
    interval is the gene body, whose 5' end is start+1 on + and end on -."""
    start = pd.to_numeric(raw.iloc[:, 1], errors="coerce")
    end = pd.to_numeric(raw.iloc[:, 2], errors="coerce")
    strand = raw.iloc[:, 5].astype(str)
    for name, col in (("start", start), ("end", end)):
        if col.isna().any():
            i = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise InputError(
                f"{name} {raw.iloc[i, 1 if name == 'start' else 2]!r} is not an integer",
                path=path,
                record=f"gene {raw.iloc[i, 3]}",
            )
    bad = ~strand.isin(["+", "-"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"strand {strand.iloc[i]!r} is not + or -",
            path=path,
            record=f"gene {raw.iloc[i, 3]}",
            hint="the 6th column of a QTLtools BED is the gene's strand",
        )
    one_base = (end - start) == 1
    tss = np.where(one_base | (strand == "+"), start + 1, end).astype(np.int64)
    ids = raw.iloc[:, 3].astype(str)
    return pd.DataFrame(
        {"gene_id": ids, "gene_name": ids, "chrom": raw.iloc[:, 0].astype(str), "tss": tss, "strand": strand}
        | {"gene_start": (start + 1).astype(np.int64), "gene_end": np.maximum(end, start + 1).astype(np.int64)}
    ).reset_index(drop=True)


def read_covariates(path: str | Path) -> pd.DataFrame:
    """(covariates, samples) float64 with index the covariate ids."""
    path = Path(path)
    raw = read_matrix_text(path, what="covariates")
    values = raw.iloc[:, 1:]
    if values.shape[1] == 0:
        raise InputError(
            "the covariates file has no sample columns",
            path=path,
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
            f"covariate {constant[0]!r} is constant across samples",
            path=path,
            record=f"covariate {constant[0]}",
            hint="remove constant covariates (an intercept is always added)",
        )
    return cov
