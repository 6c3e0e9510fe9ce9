"""``hapexpr prepare``: read the user's files once and write a study directory.

The study is built in a sibling ``.NAME.partial`` directory, one gene file at a time (atomic
renames), and moved into place only when complete; a killed run restarted with the same command
picks up the finished genes. An existing study is replaced only with ``overwrite``, and only after
the new one is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hapexpr import __version__
from hapexpr.errors import InputError, StudyError
from hapexpr.io.atomic import atomic_open, atomic_path, study_lock, write_json
from hapexpr.io.expression import read_covariates, read_expression
from hapexpr.io.genes import read_genes
from hapexpr.progress import console, track_genes
from hapexpr.study import FORMAT_VERSION, GENE_COLUMNS, GeneData, gene_file_name, write_gene
from hapexpr.windows import region_bounds, window_bounds, window_sequences


@dataclass(frozen=True)
class PrepareParams:
    window: int = 6000
    folds: int = 5
    seed: int = 0
    residualised: bool = False
    allow_unphased: bool = False


def prepare_study(
    *,
    vcf: Path,
    fasta: Path,
    genes: Path,
    expression: Path,
    out: Path,
    covariates: Path | None = None,
    window: int = 6000,
    folds: int = 5,
    seed: int = 0,
    residualised: bool = False,
    allow_unphased: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Validate the inputs, then write the study directory ``out``; returns its path."""
    from hapexpr.io.fasta import Reference
    from hapexpr.io.vcf import VcfReader

    out = Path(out)
    params = PrepareParams(window, folds, seed, residualised, allow_unphased)
    if window < 12 or window > 196_608:
        raise InputError(f"window {window} bp is outside 12..196,608 bp")
    _check_destination(out, overwrite)

    expr_df = read_expression(expression)
    cov_df = read_covariates(covariates) if covariates is not None and not residualised else None
    genes_df = read_genes(genes)
    reference = Reference(fasta)
    vcf_all = VcfReader(vcf, allow_unphased=allow_unphased)

    samples = _intersect_samples(vcf, vcf_all.samples, expression, list(expr_df.columns), covariates, cov_df)
    if len(samples) < 2 * folds:
        raise InputError(
            f"only {len(samples)} samples are shared by the inputs, too few for {folds} folds",
            path=vcf, hint="check that the sample ids match across the VCF, expression and covariates",
        )
    reader = VcfReader(vcf, samples=samples, allow_unphased=allow_unphased)
    genes_df = _select_genes(genes_df, genes, expr_df, expression, reader, vcf, reference, fasta)
    fold = _assign_folds(len(samples), folds=folds, seed=seed)

    inputs = {name: fingerprint_file(p) for name, p in
              [("vcf", vcf), ("fasta", fasta), ("genes", genes), ("expression", expression), ("covariates", covariates)]
              if p is not None}
    meta = {
        "format_version": FORMAT_VERSION,
        "hapexpr_version": __version__,
        "params": {**params.__dict__, "covariates": cov_df is not None},
        "inputs": inputs,
        "n_samples": len(samples),
        "n_genes": len(genes_df),
    }
    key = hashlib.sha256(json.dumps({"params": meta["params"], "inputs": inputs}, sort_keys=True).encode()).hexdigest()
    partial = out.parent / f".{out.name}.partial"
    with study_lock(partial, "prepare"):
        _start_or_resume(partial, key)
        pd.DataFrame({"sample_id": samples, "fold": fold}).to_csv(partial / "samples.tsv", sep="\t", index=False)
        with atomic_open(partial / "expression.tsv") as fh:
            expr_df.loc[genes_df["gene_id"], samples].to_csv(fh, sep="\t", index_label="gene_id", float_format="%.8g")
        if cov_df is not None:
            with atomic_open(partial / "covariates.tsv") as fh:
                cov_df.loc[:, samples].to_csv(fh, sep="\t", index_label="id", float_format="%.8g")
        rows = _write_genes(partial, genes_df, reader, reference, window, progress=progress)
        with atomic_open(partial / "genes.tsv") as fh:
            pd.DataFrame(rows, columns=GENE_COLUMNS).to_csv(fh, sep="\t", index=False)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(partial / "study.json", meta)
        (partial / ".prepare.json").unlink()
    (partial / ".lock").unlink(missing_ok=True)
    _move_into_place(partial, out)
    console.print(f"prepared {len(samples)} samples x {len(genes_df)} genes -> {out}")
    return out


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise StudyError("the output path exists and is not a directory", path=out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / "study.json").exists():
            raise StudyError(
                "the output directory exists, is not empty and is not a hapexpr study", path=out,
                hint="choose another --out; hapexpr never deletes directories it did not write",
            )
        if not overwrite:
            raise StudyError(
                "a study already exists here", path=out,
                hint="pass --overwrite to replace it (it is kept until the new study is complete), or choose another --out",
            )


def _intersect_samples(vcf, vcf_samples, expression, expr_samples, covariates, cov_df) -> list[str]:
    """Samples in every input, in VCF order; says who was dropped and why."""
    keep = set(expr_samples) & set(vcf_samples)
    sources = [(vcf, vcf_samples), (expression, expr_samples)]
    if cov_df is not None:
        keep &= set(cov_df.columns)
        sources.append((covariates, list(cov_df.columns)))
    if not keep:
        raise InputError(
            "no sample is in both the genotypes and the expression"
            + (" and the covariates" if cov_df is not None else ""),
            path=expression, record=f"samples {', '.join(expr_samples[:3])}...",
            hint=f"the VCF {vcf} has samples {', '.join(vcf_samples[:3])}...; the ids must match exactly",
        )
    for path, ids in sources:
        dropped = [s for s in ids if s not in keep]
        if dropped:
            shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
            console.print(f"[yellow]dropped {len(dropped)} sample(s) of {path} missing from another input:[/] {shown}")
    return [s for s in vcf_samples if s in keep]


def _select_genes(genes_df, genes_path, expr_df, expr_path, reader, vcf, reference, fasta) -> pd.DataFrame:
    """Genes with both an annotation and expression, on contigs present in the VCF and FASTA."""
    in_expr = genes_df["gene_id"].isin(expr_df.index)
    missing_annot = expr_df.index[~expr_df.index.isin(genes_df["gene_id"])]
    if len(missing_annot):
        console.print(
            f"[yellow]dropped {len(missing_annot)} gene(s) of {expr_path} with no annotation in {genes_path}:[/] "
            + ", ".join(missing_annot[:5]) + (" ..." if len(missing_annot) > 5 else "")
        )
    df = genes_df[in_expr].copy()
    if df.empty:
        raise InputError(
            "no gene id of the expression file is in the annotation", path=expr_path,
            record=f"gene {expr_df.index[0]}", hint=f"use an annotation ({genes_path}) with the same gene ids",
        )
    contigs = {c: (reader.resolve(c), reference.resolve(c)) for c in df["chrom"].unique()}
    bad = [c for c, (v, f) in contigs.items() if v is None or f is None]
    for c in bad:
        where = fasta if contigs[c][1] is None else vcf
        console.print(f"[yellow]dropped the genes on contig {c!r}: no such contig in {where}[/]")
    df = df[~df["chrom"].isin(bad)]
    if df.empty:
        raise InputError(
            f"no gene lies on a contig found in both the VCF and the FASTA (annotation contigs: {', '.join(map(str, contigs))})",
            path=genes_path, hint="use an annotation, VCF and FASTA of the same assembly (chr1 and 1 are matched automatically)",
        )
    df["vcf_chrom"] = df["chrom"].map(lambda c: contigs[c][0])
    df["fasta_chrom"] = df["chrom"].map(lambda c: contigs[c][1])
    # Sorted by position so consecutive genes read neighbouring stretches of the VCF.
    return df.sort_values(["chrom", "tss", "gene_id"], kind="stable").reset_index(drop=True)


def _assign_folds(n: int, *, folds: int, seed: int) -> np.ndarray:
    """(samples,) fold of each sample: a seeded permutation dealt round-robin into K folds."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


def fingerprint_file(path: Path) -> dict:
    """Absolute path, size and sha256 of an input file (study.json records them)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def _start_or_resume(partial: Path, key: str) -> None:
    """Resume a partial study written with the same inputs and parameters; discard any other."""
    state = partial / ".prepare.json"
    if state.exists():
        try:
            same = json.loads(state.read_text()).get("key") == key
        except json.JSONDecodeError:
            same = False
        if same:
            done = len(list((partial / "genes").glob("*.npz")))
            console.print(f"resuming an interrupted prepare ({done} gene(s) already written)")
            return
        console.print("discarding an interrupted prepare made with other inputs or parameters")
    for child in partial.iterdir():
        if child.name == ".lock":
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    (partial / "genes").mkdir()
    write_json(state, {"key": key})


def _write_genes(partial: Path, genes_df: pd.DataFrame, reader, reference, window: int, *, progress: bool) -> list[dict]:

    rows = []
    for g in track_genes(list(genes_df.itertuples(index=False)), "prepare", enabled=progress):
        path = partial / "genes" / gene_file_name(g.gene_id)
        if path.exists():
            n_variants, n_unique = _gene_counts(path)
        else:
            gene = build_gene(g, reader, reference, window)
            with atomic_path(path) as tmp:
                write_gene(tmp, gene)
            n_variants, n_unique = len(gene.variants), len(gene.hap_alleles)
        lo, hi = window_bounds(int(g.tss), g.strand, window)
        rows.append(
            {"gene_id": g.gene_id, "gene_name": g.gene_name, "chrom": g.chrom, "tss": int(g.tss),
             "strand": g.strand, "window_start": lo, "window_end": hi,
             "n_variants": n_variants, "n_unique_haplotypes": n_unique}
        )
    return rows


def _gene_counts(path: Path) -> tuple[int, int]:
    with np.load(path, allow_pickle=False) as z:
        return len(z["pos"]), len(z["hap_alleles"])


def build_gene(g, reader, reference, window: int) -> GeneData:
    """One gene's variants, genotypes and distinct window haplotypes (``g``: a genes row)."""
    from hapexpr.haplotypes import unique_haplotypes

    tss = int(g.tss)
    start, end = region_bounds(tss, window)
    ref_bytes = reference.fetch(g.fasta_chrom, start, end)
    contig_len = reference.contigs[g.fasta_chrom]
    variants = reader.fetch(g.vcf_chrom, max(start, 1), min(end, contig_len), reference=reference)
    lo, hi = window_bounds(tss, g.strand, window)
    ref_end = variants.pos + np.array([len(r) for r in variants.ref], dtype=np.int64) - 1
    table = pd.DataFrame(
        {"variant_id": variants.ids.astype(object), "chrom": g.chrom, "pos": variants.pos,
         "ref": variants.ref.astype(object), "alt": variants.alt.astype(object),
         "in_window": (ref_end >= lo) & (variants.pos <= hi)}
    )
    alleles, index = unique_haplotypes(variants.genotypes)
    gene = GeneData(
        gene_id=g.gene_id, chrom=g.chrom, tss=tss, strand=g.strand, window=window, region_start=start,
        reference=ref_bytes, variants=table, genotypes=variants.genotypes, hap_index=index, hap_alleles=alleles,
    )
    return _merge_identical_windows(gene)


def _merge_identical_windows(gene: GeneData) -> GeneData:
    """Haplotypes that differ only outside the window give the same window sequence: keep one."""
    first: dict[bytes, int] = {}
    remap = np.empty(len(gene.hap_alleles), dtype=np.int32)
    for i, seq in enumerate(gene.sequences):
        remap[i] = first.setdefault(seq, len(first))
    if len(first) == len(remap):
        return gene
    keep = np.array([int(np.flatnonzero(remap == u)[0]) for u in range(len(first))])
    return dataclasses.replace(gene, hap_alleles=gene.hap_alleles[keep], hap_index=remap[gene.hap_index])


def _move_into_place(partial: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)
