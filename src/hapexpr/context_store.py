"""The study's Enformer context store: each person's two haplotypes over a wide region centred on
the TSS (196,608 bp by default, Enformer's input), whatever the study window.

Built when Enformer first needs it, not by ``prepare``: a study prepared with ``--fasta`` records
the width (``study.json`` ``context``; ``--context 0`` opts out) and the first ``fit --method
enformer`` or ``embed --model enformer`` builds the store from the VCF and FASTA recorded in
``study.json`` (their sha256 checked) and keeps it in the study. ``prepare`` pays nothing for a
store that only Enformer uses (about 0.2 CPU s a gene). Each gene is built as the window store's
are (``gene_inputs.build_gene`` at width W: the reference over the context plus a margin for indels,
the phased variants there and each person's distinct haplotypes)::

    context/genes/<gene>.npz    a GeneData file (study.write_gene) whose window is the context
    context/genes.tsv           gene_id chrom tss strand width status reason region_start
                                region_end n_variants n_unique_haplotypes

``status`` is ``ok`` or ``none``; a gene with ``none`` has no file, and ``reason`` says why
(:data:`REASONS`). A context running past a whole contig's end is N there, like the window; one
leaving a FASTA *excerpt* (a ``CHR:START-END`` record) is not padded with made-up N: that gene
gets no context. The builder runs under the study lock of the command that needs it (one
writer); each gene file is renamed into place whole and ``genes.tsv`` is written last, so a
killed build resumes where it stopped. Stores written by ``prepare --context`` (hapexpr before
lazy contexts) have the same layout and are read as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import StudyError
from hapexpr.gene_inputs import build_gene
from hapexpr.io.atomic import atomic_open, atomic_path
from hapexpr.io.fasta import Reference
from hapexpr.io.vcf import VcfReader
from hapexpr.progress import console, track_genes
from hapexpr.study import GeneData, Study, gene_file_name, read_gene, write_gene
from hapexpr.windows import merge_identical_windows, region_bounds, window_bounds

CONTEXT_DIR = "context"
DEFAULT_CONTEXT = 196_608  # Enformer's published input length
MAX_CONTEXT = 1_048_576
INDEX_COLUMNS = [
    "gene_id",
    "chrom",
    "tss",
    "strand",
    "width",
    "status",
    "reason",
    "region_start",
    "region_end",
    "n_variants",
    "n_unique_haplotypes",
]
REASONS = {
    "context_outside_fasta_excerpt": "the context leaves the stretch the FASTA excerpt (CHR:START-END record) covers",
}


def context_problem(g, reference, width: int) -> str | None:
    """Why gene row ``g`` can get no context of ``width`` bp from ``reference``, or None."""
    first, last = reference.span(g.fasta_chrom)
    lo, hi = window_bounds(int(g.tss), g.strand, width)
    if reference.is_excerpt(g.fasta_chrom) and (lo < first or hi > last):
        return "context_outside_fasta_excerpt"
    return None


def write_context_store(
    directory: Path,
    genes_df: pd.DataFrame,
    reference,
    width: int,
    *,
    build: Callable[[object, int], GeneData],
    progress: bool = True,
) -> pd.DataFrame:
    """Write (or, after a killed run, reuse) every gene's context file; returns the index table.

    genes_df: prepare's gene rows (``gene_id chrom vcf_chrom fasta_chrom tss strand``);
    build(g, width): prepare's window builder (``build_gene``), run at the context width, so the
    context haplotypes are made exactly as the window's are. The caller holds the study lock.
    """
    (directory / "genes").mkdir(parents=True, exist_ok=True)
    for stale in (directory / "genes").glob(".*.tmp"):  # a killed build's unfinished file
        stale.unlink()
    rows = []
    for g in track_genes(list(genes_df.itertuples(index=False)), "context", enabled=progress):
        start, end = region_bounds(int(g.tss), width)
        row = {"gene_id": g.gene_id, "chrom": g.chrom, "tss": int(g.tss), "strand": g.strand, "width": width}
        row.update(region_start=start, region_end=end)
        reason = context_problem(g, reference, width)
        path = directory / "genes" / gene_file_name(g.gene_id)
        if reason is not None:
            rows.append({**row, "status": "none", "reason": reason, "n_variants": 0, "n_unique_haplotypes": 0})
            continue
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                n_variants, n_unique = len(z["pos"]), len(z["hap_alleles"])
        else:
            gene = build(g, width)
            with atomic_path(path) as tmp:
                write_gene(tmp, gene)
            n_variants, n_unique = len(gene.variants), len(gene.hap_alleles)
        rows.append({**row, "status": "ok", "reason": "", "n_variants": n_variants, "n_unique_haplotypes": n_unique})
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_open(directory / "genes.tsv") as fh:
        index.to_csv(fh, sep="\t", index=False)
    return index


class ContextStore:
    """A study's context store; ``None`` from :meth:`open` when the study has none. :meth:`build`
    fills a store not built yet (the caller holds the study lock); reading one raises."""

    def __init__(self, directory: Path, width: int, study: Study | None = None) -> None:
        self.directory = Path(directory)
        self.width = int(width)
        self.study = study

    @classmethod
    def open(cls, study: Study) -> ContextStore | None:
        """The store of a study with a context width (``study.json`` ``context``: every study
        prepared with a FASTA and without ``--context 0``), built or not; None for a study without
        one (``--context 0``, genotype-only, or prepared before contexts without ``--context``)."""
        meta = study.meta.get("context") or {}
        width = int(meta.get("width") or 0)
        if width <= 0:
            return None
        return cls(study.path / str(meta.get("directory", CONTEXT_DIR)), width, study)

    @property
    def built(self) -> bool:
        return (self.directory / "genes.tsv").exists()

    def build(self, *, progress: bool = True) -> None:
        """Build every study gene's context not built yet (a killed build resumes), from the VCF
        and FASTA recorded in ``study.json``; a no-op once built. The caller holds the study lock."""
        if self.built:
            return
        study = self.study
        vcf, fasta = recorded_input(study, "vcf"), recorded_input(study, "fasta")
        genes = study.genes
        console.print(
            f"enformer: building each person's {self.width:,} bp context haplotypes for {len(genes)} gene(s) "
            f"from {vcf.name} and {fasta.name} (once; kept in {self.directory})"
        )
        reference = Reference(fasta)
        reader = VcfReader(vcf, samples=list(study.sample_ids), allow_unphased=bool(study.params.get("allow_unphased")))
        genes = genes.assign(
            vcf_chrom=genes["chrom"].map(reader.resolve), fasta_chrom=genes["chrom"].map(reference.resolve)
        )

        def build(g, w: int) -> GeneData:
            return build_gene(g, reader, reference, w)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="no intervals found")  # a region without records
            index = write_context_store(self.directory, genes, reference, self.width, build=build, progress=progress)
        self.__dict__.pop("index", None)
        for reason, n in index.loc[index["status"] != "ok", "reason"].value_counts().items():
            shown = ", ".join(index.loc[index["reason"] == reason, "gene_id"].head(3))
            console.print(
                f"[yellow]{n} gene(s) get no {self.width:,} bp Enformer context: {REASONS[reason]} "
                f"({reason}; e.g. {shown})[/]"
            )

    @cached_property
    def index(self) -> pd.DataFrame:
        if not self.built:
            raise StudyError(
                f"this study's {self.width:,} bp Enformer context is not built yet",
                path=self.directory,
                hint="`hapexpr fit STUDY --method enformer` or `hapexpr embed STUDY --model enformer` builds it (once)",
            )
        df = pd.read_csv(
            self.directory / "genes.tsv", sep="\t", dtype={"gene_id": str, "chrom": str}, keep_default_na=False
        )
        return df.set_index("gene_id", drop=False)

    def has(self, gene_id: str) -> bool:
        return gene_id in self.index.index and self.index.at[gene_id, "status"] == "ok"

    def reason(self, gene_id: str) -> str:
        """Why a gene has no context ("" when it has one, "not_in_store" when it is not listed)."""
        if gene_id not in self.index.index:
            return "not_in_store"
        return str(self.index.at[gene_id, "reason"])

    def gene(self, gene_id: str) -> GeneData | None:
        """The gene's context GeneData (``window`` = the context width, TSS at ``width // 2`` of
        every sequence), or None when it has no context."""
        if not self.has(gene_id):
            return None
        return read_gene(self.directory / "genes" / gene_file_name(gene_id), gene_id)

    def missing(self, gene_ids) -> dict[str, str]:
        """gene_id -> reason, for those of ``gene_ids`` without a context."""
        return {g: self.reason(g) or "unknown" for g in gene_ids if not self.has(g)}


def recorded_input(study: Study, name: str) -> Path:
    """The input file ``name`` (``vcf``, ``fasta``) recorded in ``study.json``, checked to be the
    one the study was prepared from (same size and sha256): the context is built from it."""
    rec = (study.meta.get("inputs") or {}).get(name)
    what = {"vcf": "VCF", "fasta": "FASTA"}[name]
    if not rec:
        raise StudyError(f"study.json records no {what}, which the Enformer context is built from", path=study.path)
    path = Path(rec["path"])
    hint = (
        f"put the {what} the study was prepared from back at {path}, or prepare the study again "
        "(or with --context 0: Enformer then reads the study window, N-padded)"
    )
    if not path.is_file():
        raise StudyError(
            f"the {what} this study was prepared from is gone; the Enformer context is built from it",
            path=path,
            hint=hint,
        )
    digest = hashlib.sha256()
    if path.stat().st_size == rec["size"]:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    if digest.hexdigest() != rec["sha256"]:
        raise StudyError(
            f"the {what} changed since the study was prepared (size or sha256 differs from study.json); "
            "the Enformer context is built from it",
            path=path,
            hint=hint,
        )
    return path


def context_input(gene: GeneData, width: int) -> GeneData:
    """A context GeneData whose ``sequences`` are cut ``width`` bp around the TSS (TSS at
    ``width // 2``), from the whole context haplotypes: a model input shorter than the context
    is the context cropped symmetrically, and haplotypes that differ only outside it are one
    sequence (one run of the model, one row of the store). ``in_window`` then marks the records
    touching that input (what ``explain`` mutates)."""
    width = min(int(width), gene.window)
    if width == gene.window:
        return gene
    lo, hi = window_bounds(gene.tss, gene.strand, width)
    v = gene.variants
    ref_end = v["pos"].to_numpy(dtype=np.int64) + v["ref"].str.len().to_numpy(dtype=np.int64) - 1
    v = v.assign(in_window=(ref_end >= lo) & (v["pos"].to_numpy(dtype=np.int64) <= hi))
    return merge_identical_windows(dataclasses.replace(gene, window=width, variants=v))


class ContextStudy:
    """A study seen through its context store, for the embedding machinery: ``gene_ids`` are the
    genes with a context, ``gene(gene_id)`` their context GeneData cut to ``window`` bp (at most
    the context width, see :func:`context_input`); everything else is the study's."""

    def __init__(self, study: Study, store: ContextStore, window: int | None = None) -> None:
        self.study = study
        self.store = store
        self.window = min(int(window or store.width), store.width)

    @property
    def is_context(self) -> bool:
        return True

    @cached_property
    def gene_ids(self) -> list[str]:
        return [g for g in self.study.gene_ids if self.store.has(g)]

    def gene(self, gene_id: str) -> GeneData:
        gene = self.store.gene(gene_id)
        if gene is None:
            raise KeyError(f"gene {gene_id} has no context ({self.store.reason(gene_id)})")
        return context_input(gene, self.window)

    def __getattr__(self, name: str):
        return getattr(self.study, name)
