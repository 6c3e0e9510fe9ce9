"""Gene annotations: GENCODE GTF/GFF3, or a BED/TSV of TSSs -> one TSS per gene.

The result is a table ``gene_id gene_name chrom tss strand gene_start gene_end`` with a 1-based
``tss``: the gene's start on the + strand and its end on the - strand, as GENCODE defines the
gene's 5' end; ``gene_start``/``gene_end`` are the gene's 1-based inclusive span on the reference
(PredictDB's cis window is gene_start - 1 Mb to gene_end + 1 Mb). A source that gives only the
TSS (a one-base BED interval, a TSS table without those columns) has gene_start = gene_end = tss.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import pandas as pd

from hapexpr.errors import InputError
from hapexpr.io.tables import check_unique, read_tsv

COLUMNS = ["gene_id", "gene_name", "chrom", "tss", "strand", "gene_start", "gene_end"]
_GTF_ATTR = re.compile(r'\s*([^\s=]+)[\s=]+"?([^";]*)"?')


def read_genes(path: str | Path) -> pd.DataFrame:
    """Read a GTF/GFF3 (``gene`` records, else ``transcript`` records) or a BED/TSV of TSSs."""
    path = Path(path)
    if not path.exists():
        raise InputError("the gene annotation file does not exist", path=path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".gtf", ".gff", ".gff3")):
        genes = _read_gff(path, gff3=not name.endswith(".gtf"))
    elif name.endswith(".bed"):
        genes = _read_bed(path)
    else:
        genes = _read_tss_table(path)
    check_unique(genes["gene_id"], path=path, what="gene id")
    return genes.reset_index(drop=True)


def _open_text(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path)


def _read_gff(path: Path, *, gff3: bool) -> pd.DataFrame:
    rows: dict[str, list[dict]] = {"gene": [], "transcript": []}
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                f = line.rstrip("\n").split("\t")
                if len(f) != 9:
                    raise InputError(
                        f"expected 9 tab-separated fields, found {len(f)}",
                        path=path,
                        record=f"line {lineno}",
                        hint="GTF/GFF3 lines have 9 tab-separated columns",
                    )
                if f[2] not in rows:
                    continue
                try:
                    start, end = int(f[3]), int(f[4])
                except ValueError:
                    raise InputError("start/end are not integers", path=path, record=f"line {lineno}") from None
                if f[6] not in "+-" or len(f[6]) != 1:
                    raise InputError(
                        f"strand {f[6]!r} is not + or -",
                        path=path,
                        record=f"line {lineno}",
                        hint="every gene needs a strand to place its TSS",
                    )
                attrs = _attributes(f[8], gff3=gff3)
                gene_id = attrs.get("gene_id") or (attrs.get("ID") if f[2] == "gene" else attrs.get("Parent"))
                if not gene_id:
                    raise InputError("the record has no gene_id attribute", path=path, record=f"line {lineno}")
                gene_id = gene_id.removeprefix("gene:")
                rows[f[2]].append(
                    {
                        "gene_id": gene_id,
                        "gene_name": attrs.get("gene_name") or attrs.get("Name") or gene_id,
                        "chrom": f[0],
                        "tss": start if f[6] == "+" else end,
                        "strand": f[6],
                        "gene_start": start,
                        "gene_end": end,
                    }
                )
    except (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise InputError(f"the annotation file is truncated or corrupt ({exc})", path=path) from None
    if rows["gene"]:
        return pd.DataFrame(rows["gene"], columns=COLUMNS)
    if rows["transcript"]:
        # No gene lines: a gene's TSS is the 5'-most transcript start, its span their union.
        t = pd.DataFrame(rows["transcript"], columns=COLUMNS)
        first = t.groupby("gene_id", sort=False).agg(
            gene_name=("gene_name", "first"),
            chrom=("chrom", "first"),
            strand=("strand", "first"),
            tss_min=("tss", "min"),
            tss_max=("tss", "max"),
            gene_start=("gene_start", "min"),
            gene_end=("gene_end", "max"),
        )
        first["tss"] = first["tss_min"].where(first["strand"] == "+", first["tss_max"])
        return first.reset_index()[COLUMNS]
    raise InputError(
        "no gene or transcript records found",
        path=path,
        hint="give a GENCODE-style GTF/GFF3, or a BED/TSV of TSSs",
    )


def _attributes(text: str, *, gff3: bool) -> dict[str, str]:
    out = {}
    for part in text.strip().strip(";").split(";"):
        if not part.strip():
            continue
        if gff3 and "=" in part:
            key, _, value = part.strip().partition("=")
            out[key] = value
        else:
            m = _GTF_ATTR.match(part)
            if m:
                out.setdefault(m.group(1), m.group(2))
    return out


def _read_bed(path: Path) -> pd.DataFrame:
    """BED with at least ``chrom start end name``; strand in column 6 (default +). A one-base
    interval is the TSS itself; a longer one is the gene body and the TSS is its 5' end."""
    raw = read_tsv(path, what="TSS BED", header=None, comment="#")
    if raw.shape[1] < 4:
        raise InputError(
            f"a BED of TSSs needs at least 4 columns (chrom start end gene_id), found {raw.shape[1]}",
            path=path,
            record="line 1",
        )
    strand = raw[5] if raw.shape[1] >= 6 else pd.Series("+", index=raw.index)
    rows = []
    for i, r in raw.iterrows():
        try:
            start, end = int(r[1]), int(r[2])
        except ValueError:
            raise InputError("start/end are not integers", path=path, record=f"data line {i + 1}") from None
        s = strand[i] if strand[i] in ("+", "-") else None
        if s is None:
            raise InputError(f"strand {strand[i]!r} is not + or -", path=path, record=f"data line {i + 1}")
        tss = start + 1 if (s == "+" or end - start == 1) else end
        rows.append(
            {"gene_id": r[3], "gene_name": r[3], "chrom": r[0], "tss": tss, "strand": s}
            | {"gene_start": start + 1, "gene_end": end}
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _read_tss_table(path: Path) -> pd.DataFrame:
    """TSV with a header holding ``gene_id chrom tss strand`` (1-based tss), optional gene_name
    and ``gene_start gene_end`` (1-based inclusive; else both the tss)."""
    raw = read_tsv(path, what="TSS table")
    missing = [c for c in ("gene_id", "chrom", "tss", "strand") if c not in raw.columns]
    if missing:
        raise InputError(
            f"the TSS table lacks the column(s) {', '.join(missing)}",
            path=path,
            record="header",
            hint="a TSS table needs a header with gene_id, chrom, tss (1-based) and strand",
        )
    out = raw.copy()
    if "gene_name" not in out:
        out["gene_name"] = out["gene_id"]
    tss = pd.to_numeric(out["tss"], errors="coerce")
    if tss.isna().any():
        i = int(tss.isna().to_numpy().nonzero()[0][0])
        raise InputError(f"tss {out['tss'].iloc[i]!r} is not an integer", path=path, record=f"data line {i + 1}")
    out["tss"] = tss.astype(int)
    bad = ~out["strand"].isin(["+", "-"])
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(f"strand {out['strand'].iloc[i]!r} is not + or -", path=path, record=f"data line {i + 1}")
    for col in ("gene_start", "gene_end"):
        value = pd.to_numeric(out[col], errors="coerce") if col in out else out["tss"]
        if value.isna().any():
            i = int(value.isna().to_numpy().nonzero()[0][0])
            raise InputError(f"{col} {out[col].iloc[i]!r} is not an integer", path=path, record=f"data line {i + 1}")
        out[col] = value.astype(int)
    return with_gene_span(out[COLUMNS], path=path)


def with_gene_span(genes: pd.DataFrame, *, path=None) -> pd.DataFrame:
    """``genes`` with ``gene_start``/``gene_end`` (the tss where absent), checked to contain the tss."""
    out = genes.copy()
    for col in ("gene_start", "gene_end"):
        if col not in out:
            out[col] = out["tss"]
    bad = (out["gene_start"] > out["tss"]) | (out["gene_end"] < out["tss"])
    if bad.any():
        g = out[bad].iloc[0]
        raise InputError(
            f"gene {g['gene_id']}: its span {g['gene_start']}-{g['gene_end']} does not contain its TSS {g['tss']}",
            path=path,
            hint="gene_start <= tss <= gene_end (1-based, inclusive)",
        )
    return out


def fill_gene_names(genes: pd.DataFrame, names: pd.Series | None) -> pd.DataFrame:
    """``genes`` (``COLUMNS``) with ``gene_name`` taken from ``names`` (gene_id -> name, e.g. a
    GTEx GCT's Description) where the annotation gave none (an empty name or the id itself)."""
    if names is None or not len(names):
        return genes
    own = genes["gene_name"].where(genes["gene_name"].notna() & (genes["gene_name"] != genes["gene_id"]))
    return genes.assign(gene_name=own.fillna(genes["gene_id"].map(names)).fillna(genes["gene_id"]))
