"""The people a method computes features for: the study's own, or those of a new VCF.

A method's ``features(cohort, gene_id)`` reads everything it needs through one of these, so
``fit`` (study people) and ``predict`` (new people) build features by the same code:

- ``gene(gene_id)``: a :class:`~hapexpr.study.GeneData` over the study gene's stored region
  (window plus margin): the cohort's variants there, their phased genotypes and distinct
  haplotypes, with the study's reference, TSS and window;
- ``context_gene(gene_id)``: the same over the gene's Enformer context (``STUDY/context/``), or
  None when the study stores no context for it;
- ``cis(gene_id, window, around=)``: ``(table, dosages)`` of every biallelic variant within
  +-window bp of the TSS (``around="tss"``) or from gene start - window to gene end + window
  (``around="gene"``, PredictDB's window; :func:`cis_bounds`): ``table`` has ``variant_id chrom
  pos ref alt``, ``dosages`` (samples, variants) float32 ALT dosage 0..2.

:class:`GenesCohort` is the people of a new VCF over genes outside the study (an annotation and
a reference FASTA), built by ``prepare``'s own per-gene code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.context_store import ContextStore
from hapexpr.errors import InputError, StudyError
from hapexpr.gene_inputs import build_gene
from hapexpr.haplotypes import unique_haplotypes
from hapexpr.io.fasta import Reference
from hapexpr.io.genes import read_genes
from hapexpr.io.vcf import VcfReader
from hapexpr.prepare import DROP_REASONS, drop_bad_windows
from hapexpr.study import GeneData, Study
from hapexpr.windows import window_bounds

CIS_COLUMNS = ["variant_id", "chrom", "pos", "ref", "alt"]


def variant_keys(pos, ref, alt) -> list[tuple[int, str, str]]:
    """(pos, REF, ALT) upper-cased: how variants of two VCFs are matched (ids may differ)."""
    return [(int(p), str(r).upper(), str(a).upper()) for p, r, a in zip(pos, ref, alt)]


def window_dosages(gene: GeneData) -> tuple[pd.DataFrame, np.ndarray]:
    """(table, (samples, variants) float32 dosages) of the variants that touch the window."""
    v = gene.variants
    if "in_window" in v.columns:
        inside = v["in_window"].to_numpy(dtype=bool)
    else:  # a GeneData built without ``in_window``: the REF span overlaps the window
        lo, hi = window_bounds(gene.tss, gene.strand, gene.window)
        pos = v["pos"].to_numpy(dtype=np.int64)
        inside = (pos + v["ref"].str.len().to_numpy(dtype=np.int64) - 1 >= lo) & (pos <= hi)
    table = v.loc[inside, CIS_COLUMNS].reset_index(drop=True)
    return table, np.ascontiguousarray(gene.dosages[inside].T)


class StudyCohort:
    """The study's own people, from what ``prepare`` stored (the last gene read is kept)."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self.sample_ids = study.sample_ids
        self._gene: GeneData | None = None

    @property
    def is_study(self) -> bool:
        return True

    def gene(self, gene_id: str) -> GeneData:
        if self._gene is None or self._gene.gene_id != gene_id:
            self._gene = self.study.gene(gene_id)
        return self._gene

    def context_gene(self, gene_id: str) -> GeneData | None:
        store = _context_store(self)
        return None if store is None else store.gene(gene_id)

    def cis(self, gene_id: str, window: int, *, around: str = "tss") -> tuple[pd.DataFrame, np.ndarray]:
        stored = self.study.cis_window
        if stored is None or window > stored:
            raise StudyError(
                f"this study stores cis genotypes out to {'no distance' if stored is None else f'+-{stored:,} bp'}, "
                f"not the +-{window:,} bp asked for (studies prepared before hapexpr stored them have none)",
                path=self.study.path,
                hint=f"prepare the study again with --cis-window {window}, or fit with a smaller --cis-window",
            )
        lo, hi = cis_bounds(self.study, gene_id, window, around)
        cis = self.study.cis_genotypes(gene_id, around=around)
        pos = cis.variants["pos"].to_numpy(dtype=np.int64)
        keep = (pos >= lo) & (pos <= hi)
        dosages = np.asarray(cis.dosages[keep], dtype=np.float32).T  # (samples, variants)
        return cis.variants[keep].reset_index(drop=True), np.ascontiguousarray(dosages)


def _context_store(cohort) -> ContextStore | None:
    """The study's context store, opened once per cohort."""
    if "_context" not in cohort.__dict__:
        cohort._context = ContextStore.open(cohort.study)
    return cohort._context


def cis_bounds(study: Study, gene_id: str, window: int, around: str = "tss") -> tuple[int, int]:
    """1-based inclusive (lo, hi) of a gene's cis window: TSS +- window (``around="tss"``), or
    gene start - window to gene end + window (``around="gene"``)."""
    info = study.gene_info(gene_id)
    if around == "tss":
        return int(info["tss"]) - window, int(info["tss"]) + window
    if around != "gene":
        raise ValueError(f"around must be 'tss' or 'gene', not {around!r}")
    if "gene_start" not in info.index or pd.isna(info["gene_start"]):
        raise StudyError(
            "this study's genes.tsv has no gene spans (gene_start, gene_end): it was prepared before "
            "hapexpr stored them",
            path=study.path / "genes.tsv",
            hint="prepare the study again with this version of hapexpr, or fit with --cis-from tss",
        )
    return int(info["gene_start"]) - window, int(info["gene_end"]) + window


def read_cis(reader: VcfReader, chrom: str, lo: int, hi: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(table, (samples, variants) float32 dosages) of ``reader``'s records at 1-based positions
    lo..hi (inclusive)."""
    v = reader.fetch(chrom, max(1, lo), hi)
    dos = np.asarray(v.genotypes).sum(axis=2, dtype=np.int16).astype(np.float32)  # (variants, samples)
    table = pd.DataFrame(
        {
            "variant_id": np.asarray(v.ids, dtype=object),
            "chrom": chrom,
            "pos": np.asarray(v.pos, dtype=np.int64),
            "ref": np.asarray(v.ref, dtype=object),
            "alt": np.asarray(v.alt, dtype=object),
        }
    )
    return table, np.ascontiguousarray(dos.T)


@dataclass(frozen=True)
class NewVariants:
    """A new VCF's records over one study gene's region.

    table: ``variant_id chrom pos ref alt in_window`` like ``GeneData.variants``;
    genotypes: (variants, samples, 2) int8; in_study: (variants,) bool, also a study variant.
    """

    table: pd.DataFrame
    genotypes: np.ndarray
    in_study: np.ndarray


class NewCohort:
    """The people of a new VCF, over the study's genes: REF checked against the study's
    reference, contig names matched (``chr7`` and ``7``)."""

    def __init__(self, study: Study, vcf: str | Path, *, phased: bool = True) -> None:
        self.study = study
        self.reader = VcfReader(vcf, allow_unphased=not phased)
        self.sample_ids = list(self.reader.samples)
        self._cache: tuple[str, NewVariants | None, GeneData | None] | None = None

    @property
    def is_study(self) -> bool:
        return False

    def has_gene(self, gene_id: str) -> bool:
        return self.reader.resolve(self.study.gene(gene_id).chrom) is not None

    def variants(self, gene_id: str) -> NewVariants:
        """The new records over the study gene's region (cached for the last gene)."""
        if self._cache is None or self._cache[0] != gene_id:
            study_gene = self.study.gene(gene_id)
            new = read_new_variants(self.reader, study_gene)
            if new is None:
                raise InputError(f"the VCF has no contig {study_gene.chrom} (gene {gene_id})", path=self.reader.path)
            alleles, index = unique_haplotypes(new.genotypes)
            people = dataclasses.replace(
                study_gene, variants=new.table, genotypes=new.genotypes, hap_index=index, hap_alleles=alleles
            )
            self._cache = (gene_id, new, people)
        return self._cache[1]

    def gene(self, gene_id: str) -> GeneData:
        self.variants(gene_id)
        return self._cache[2]

    def context_gene(self, gene_id: str) -> GeneData | None:
        """The new people's haplotypes over the study gene's context: the new VCF's records there
        (REF checked against the stored context reference) on the study's context reference."""
        store = _context_store(self)
        study_gene = None if store is None else store.gene(gene_id)
        if study_gene is None:
            return None
        new = read_new_variants(self.reader, study_gene)
        if new is None:
            raise InputError(f"the VCF has no contig {study_gene.chrom} (gene {gene_id})", path=self.reader.path)
        alleles, index = unique_haplotypes(new.genotypes)
        return dataclasses.replace(
            study_gene, variants=new.table, genotypes=new.genotypes, hap_index=index, hap_alleles=alleles
        )

    def cis(self, gene_id: str, window: int, *, around: str = "tss") -> tuple[pd.DataFrame, np.ndarray]:
        gene = self.study.gene(gene_id)
        chrom = self.reader.resolve(gene.chrom)
        table, dosages = read_cis(self.reader, chrom, *cis_bounds(self.study, gene_id, window, around))
        table["chrom"] = gene.chrom
        return table, dosages


def read_new_variants(reader: VcfReader, gene: GeneData) -> NewVariants | None:
    """Records of ``reader`` over ``gene``'s stored region, REF checked against the study's
    reference bases; None when the VCF has no contig for the gene."""
    chrom = reader.resolve(gene.chrom)
    if chrom is None:
        return None
    start, end = gene.region_start, gene.region_start + len(gene.reference) - 1
    v = reader.fetch(chrom, max(start, 1), end)
    _check_ref(reader.path, gene, v)
    w_lo, w_hi = window_bounds(gene.tss, gene.strand, gene.window)
    ref_end = v.pos + np.array([len(r) for r in v.ref], dtype=np.int64) - 1
    table = pd.DataFrame(
        {
            "variant_id": np.asarray(v.ids, dtype=object),
            "chrom": gene.chrom,
            "pos": v.pos,
            "ref": np.asarray(v.ref, dtype=object),
            "alt": np.asarray(v.alt, dtype=object),
            "in_window": (ref_end >= w_lo) & (v.pos <= w_hi),
        }
    )
    study_keys = set(variant_keys(gene.variants["pos"], gene.variants["ref"], gene.variants["alt"]))
    in_study = np.array([k in study_keys for k in variant_keys(v.pos, v.ref, v.alt)], dtype=bool)
    return NewVariants(table=table, genotypes=np.asarray(v.genotypes, dtype=np.int8), in_study=in_study)


def _check_ref(vcf_path, gene: GeneData, v) -> None:
    """REF of records inside the stored region must equal the study's reference bases there."""
    start, n = gene.region_start, len(gene.reference)
    for p, r, a in zip(v.pos.tolist(), v.ref, v.alt):
        o = p - start
        if o < 0 or o >= n:
            continue
        have = gene.reference[o : o + len(r)]
        if have != str(r).upper().encode()[: len(have)]:
            raise InputError(
                f"REF does not match the study's reference for gene {gene.gene_id} (which has {have.decode()} there)",
                path=vcf_path,
                record=f"{v.chrom}:{p} {r}>{a}",
                hint="the new VCF must use the genome build and FASTA of the study; check it with "
                "`bcftools norm --check-ref e -f REF.fa NEW.vcf.gz`",
            )


class GenesCohort:
    """The people of a new VCF over genes outside the study: each gene of ``genes`` (a GTF/GFF3,
    BED or TSV of TSSs, as ``prepare --genes`` reads) gets its people's haplotypes over the
    study's window around its TSS from ``fasta``, by ``prepare``'s own code
    (:func:`hapexpr.gene_inputs.build_gene`). A gene whose contig is missing from the FASTA or the
    VCF, or whose window the FASTA does not cover, is an InputError naming it. Genes of the
    study in the annotation are left out (``skipped``): they are predicted as study genes."""

    def __init__(self, study: Study, vcf: str | Path, genes: str | Path, fasta: str | Path) -> None:
        self.study = study
        self.reference = Reference(fasta)
        self.reader = VcfReader(vcf)
        self.sample_ids = list(self.reader.samples)
        table = read_genes(genes)
        study_genes = table["gene_id"].isin(study.gene_ids)
        self.skipped = table.loc[study_genes, "gene_id"].tolist()
        table = table[~study_genes].reset_index(drop=True)
        for g in table.itertuples(index=False):
            if self.reference.resolve(g.chrom) is None or self.reader.resolve(g.chrom) is None:
                where, path = ("FASTA", fasta) if self.reference.resolve(g.chrom) is None else ("VCF", vcf)
                raise InputError(
                    f"gene {g.gene_id} lies on contig {g.chrom}, which the {where} does not have",
                    path=path,
                    record=f"gene {g.gene_id}",
                    hint="give a FASTA and VCF of the annotation's assembly, or drop the gene from the annotation",
                )
        table["vcf_chrom"] = table["chrom"].map(self.reader.resolve)
        table["fasta_chrom"] = table["chrom"].map(self.reference.resolve)
        kept, dropped = drop_bad_windows(table, self.reference, self.reader, study.window)
        if dropped:
            gene_id, reason = dropped[0]
            raise InputError(
                f"the reference does not cover gene {gene_id}'s {study.window:,} bp window "
                f"({DROP_REASONS.get(reason, reason)})"
                + (f"; {len(dropped) - 1} more gene(s) too" if len(dropped) > 1 else ""),
                path=fasta,
                record=f"gene {gene_id}",
                hint="give a FASTA that covers the window around each gene's TSS, or drop the gene from the annotation",
            )
        self.genes = kept.set_index("gene_id", drop=False)
        self.gene_ids = kept["gene_id"].tolist()
        self._gene: GeneData | None = None

    @property
    def is_study(self) -> bool:
        return False

    def gene(self, gene_id: str) -> GeneData:
        """The new people's haplotypes around ``gene_id``'s TSS (the last gene read is kept)."""
        if self._gene is None or self._gene.gene_id != gene_id:
            row = next(self.genes.loc[[gene_id]].itertuples(index=False))
            self._gene = build_gene(row, self.reader, self.reference, self.study.window)
        return self._gene
