"""TSS-anchored, strand-aware windows cut out of personal haplotypes.

Every window sequence is exactly ``window`` bp long, reads 5'->3' on the gene's strand (minus
strand genes are reverse-complemented) and has the TSS at index ``window // 2``. Indels shift
bases, never the TSS: a haplotype is built over the window plus a margin, then cut around the
TSS's position in that haplotype, so an upstream deletion pulls in more upstream sequence and an
upstream insertion pushes the far end out. Positions beyond the contig (or beyond the margin) are N.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hapexpr.haplotypes import build_haplotypes

_COMPLEMENT = bytes.maketrans(b"ACGTNacgtn", b"TGCANtgcan")


def reverse_complement(seq: bytes) -> bytes:
    return seq.translate(_COMPLEMENT)[::-1]


def region_bounds(tss: int, window: int) -> tuple[int, int]:
    """1-based inclusive reference region to build haplotypes over: the window plus a margin
    wide enough that indels cannot leave the window short (wider windows, wider margins)."""
    margin = 1_000 + window // 20
    return tss - window // 2 - margin, tss + window - window // 2 + margin


def window_bounds(tss: int, strand: str, window: int) -> tuple[int, int]:
    """1-based inclusive reference coordinates the window spans on the reference itself."""
    if strand == "+":
        return tss - window // 2, tss + window - window // 2 - 1
    return tss - (window - window // 2) + 1, tss + window // 2


def cut_window(sequence: bytes, tss_offset: int, strand: str, window: int) -> bytes:
    """Cut ``window`` bp around 0-based ``tss_offset`` of a haplotype; pad with N past its ends."""
    if strand == "+":
        lo, hi = tss_offset - window // 2, tss_offset + window - window // 2
    else:
        lo, hi = tss_offset - (window - window // 2) + 1, tss_offset + window // 2 + 1
    left = b"N" * max(0, -lo)
    right = b"N" * max(0, hi - len(sequence))
    cut = left + sequence[max(lo, 0) : min(hi, len(sequence))] + right
    return cut if strand == "+" else reverse_complement(cut)


def window_sequences(gene) -> list[bytes]:
    """(unique,) window sequences of a gene's distinct haplotypes (``GeneData``)."""
    v = gene.variants
    haps = build_haplotypes(
        gene.reference,
        gene.region_start,
        v["pos"].to_numpy(),
        v["ref"].to_numpy(),
        v["alt"].to_numpy(),
        np.asarray(gene.hap_alleles, dtype=bool),
    )
    return [cut_window(h.sequence, h.offset_of(gene.tss), gene.strand, gene.window) for h in haps]


def merge_identical_windows(gene):
    """``gene`` (a ``GeneData``) with one row of ``hap_alleles`` per distinct window sequence:
    haplotypes that differ only outside the window give the same window sequence."""
    sequences = gene.sequences
    first: dict[bytes, int] = {}
    remap = np.empty(len(gene.hap_alleles), dtype=np.int32)
    for i, seq in enumerate(sequences):
        remap[i] = first.setdefault(seq, len(first))
    if len(first) == len(remap):
        return gene
    keep = np.array([int(np.flatnonzero(remap == u)[0]) for u in range(len(first))])
    merged = dataclasses.replace(gene, hap_alleles=gene.hap_alleles[keep], hap_index=remap[gene.hap_index])
    # The sequences are already built (at 196,608 bp that is the expensive part): hand them to
    # the merged gene's cached property rather than building them again.
    merged.__dict__["sequences"] = [sequences[k] for k in keep.tolist()]
    return merged
