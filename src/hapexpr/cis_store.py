"""The study's cis-window genotype store: ALT dosages of every biallelic variant within
+-``cis_window`` bp of each gene's TSS (PrediXcan's +-1 Mb by default), or of its whole span
(gene start - cis_window to gene end + cis_window, PredictDB's window), for the elastic net.

One file pair per contig rather than one per gene: at +-1 Mb neighbouring genes' windows overlap
so much that per-gene files would repeat each variant a dozen times. Each gene is a contiguous
row range of its contig's arrays (the VCF is sorted), listed in ``cis/genes.tsv``:

    cis/<contig>.dosages.npy    (variants, samples) int8, uncompressed so it is memory-mapped
    cis/<contig>.variants.npz   variant_id, pos, ref, alt (variants,)
    cis/genes.tsv               gene_id chrom file first stop n_variants gene_first gene_stop

``first:stop`` are the rows within +-cis_window of the TSS; ``gene_first:gene_stop`` the rows
from gene_start - cis_window to gene_end + cis_window (a superset: the TSS lies in the gene).

The VCF is read once per contig, in chunks of ``chunk`` bp over the union of the genes' windows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.io.atomic import atomic_open, atomic_path
from hapexpr.study import cis_file_stem

INDEX_COLUMNS = ["gene_id", "chrom", "file", "first", "stop", "n_variants", "gene_first", "gene_stop"]


def merged_windows(start: np.ndarray, end: np.ndarray, cis_window: int) -> list[tuple[int, int]]:
    """Disjoint sorted 1-based inclusive intervals covering every ``[start - w, end + w]``."""
    out: list[list[int]] = []
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    for i in np.argsort(start, kind="stable"):
        lo, hi = max(1, int(start[i]) - cis_window), int(end[i]) + cis_window
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def write_cis_store(
    directory: Path, genes_df: pd.DataFrame, reader, cis_window: int, *, chunk: int = 1_000_000
) -> pd.DataFrame:
    """Write (or, after a killed run, reuse) each contig's arrays; returns the index table.

    genes_df: ``gene_id chrom vcf_chrom tss gene_start gene_end`` rows; reader: a ``VcfReader`` over the study's
    samples in study order (unphased is fine: dosages ignore phase).
    """
    directory.mkdir(exist_ok=True)
    rows = []
    for contig, g in genes_df.groupby("vcf_chrom", sort=False):
        stem = cis_file_stem(contig)
        base = directory / stem
        if not (Path(f"{base}.variants.npz").exists() and Path(f"{base}.dosages.npy").exists()):
            spans = merged_windows(g["gene_start"].to_numpy(), g["gene_end"].to_numpy(), cis_window)
            _write_contig(base, reader, contig, spans, chunk)
        with np.load(f"{base}.variants.npz", allow_pickle=False) as z:
            pos = z["pos"]
        tss = g["tss"].to_numpy(dtype=np.int64)
        first = np.searchsorted(pos, tss - cis_window, side="left")
        stop = np.searchsorted(pos, tss + cis_window, side="right")
        gene_first = np.searchsorted(pos, g["gene_start"].to_numpy(dtype=np.int64) - cis_window, side="left")
        gene_stop = np.searchsorted(pos, g["gene_end"].to_numpy(dtype=np.int64) + cis_window, side="right")
        rows.append(
            pd.DataFrame(
                {
                    "gene_id": g["gene_id"].to_numpy(),
                    "chrom": g["chrom"].to_numpy(),
                    "file": stem,
                    "first": first,
                    "stop": stop,
                    "n_variants": stop - first,
                    "gene_first": gene_first,
                    "gene_stop": gene_stop,
                }
            )
        )
    index = pd.concat(rows, ignore_index=True)[INDEX_COLUMNS]
    with atomic_open(directory / "genes.tsv") as fh:
        index.to_csv(fh, sep="\t", index=False)
    return index


def _write_contig(base: Path, reader, contig: str, intervals: list[tuple[int, int]], chunk: int) -> None:
    n_samples = len(reader.samples)
    ids, pos, ref, alt = [], [], [], []
    raw = Path(f"{base}.dosages.raw")
    n = 0
    with open(raw, "wb") as fh:
        for lo, hi in intervals:
            for start in range(lo, hi + 1, chunk):
                v = reader.fetch(contig, start, min(start + chunk - 1, hi))
                if not len(v.pos):
                    continue
                fh.write(np.ascontiguousarray(v.genotypes.sum(axis=2, dtype=np.int8)).tobytes())
                ids.append(np.asarray(v.ids, dtype=str)), pos.append(v.pos)
                ref.append(np.asarray(v.ref, dtype=str)), alt.append(v.alt.astype(str))
                n += len(v.pos)
    with atomic_path(Path(f"{base}.dosages.npy")) as tmp:
        with open(tmp, "wb") as out, open(raw, "rb") as src:
            header = {"descr": "|i1", "fortran_order": False, "shape": (n, n_samples)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out)
    raw.unlink()

    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    with atomic_path(Path(f"{base}.variants.npz")) as tmp:
        with open(tmp, "wb") as out:  # written last: its presence marks the contig complete
            np.savez_compressed(
                out, variant_id=cat(ids, str), pos=cat(pos, np.int64), ref=cat(ref, str), alt=cat(alt, str)
            )
