"""One gene's data read from the user's VCF and FASTA: the step that ``prepare`` (each gene's
window), the Enformer context store (each gene's context, built on first use) and ``predict``
on genes outside the study (:class:`hapexpr.cohort.GenesCohort`) share, so all three build
haplotypes by the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hapexpr.haplotypes import unique_haplotypes
from hapexpr.study import GeneData
from hapexpr.windows import merge_identical_windows, region_bounds, window_bounds


def build_gene(g, reader, reference, window: int) -> GeneData:
    """One gene's variants, genotypes and distinct window haplotypes (``g``: a genes row)."""
    tss = int(g.tss)
    start, end = region_bounds(tss, window)
    if reference is not None:
        ref_bytes = reference.fetch(g.fasta_chrom, start, end)
        first, last = reference.span(g.fasta_chrom)
    else:  # genotype-only study: no sequence to store or check REF against
        ref_bytes, first, last = b"", 1, end
    variants = reader.fetch(g.vcf_chrom, max(start, first), min(end, last), reference=reference)
    lo, hi = window_bounds(tss, g.strand, window)
    ref_end = variants.pos + np.array([len(r) for r in variants.ref], dtype=np.int64) - 1
    table = pd.DataFrame(
        {
            "variant_id": variants.ids.astype(object),
            "chrom": g.chrom,
            "pos": variants.pos,
            "ref": variants.ref.astype(object),
            "alt": variants.alt.astype(object),
            "in_window": (ref_end >= lo) & (variants.pos <= hi),
        }
    )
    alleles, index = unique_haplotypes(variants.genotypes)
    gene = GeneData(
        gene_id=g.gene_id,
        chrom=g.chrom,
        tss=tss,
        strand=g.strand,
        window=window,
        region_start=start,
        reference=ref_bytes,
        variants=table,
        genotypes=variants.genotypes,
        hap_index=index,
        hap_alleles=alleles,
    )
    return merge_identical_windows(gene) if reference is not None else gene
