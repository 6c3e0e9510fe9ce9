"""``hapexpr prepare``: read the user's files once and write a study directory.

The study is built in a sibling ``.NAME.partial`` directory, one gene file at a time (atomic
renames), and moved into place only when complete; a killed run restarted with the same command
picks up the finished genes. An existing study is replaced only with ``overwrite``, and only after
the new one is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr import __version__
from hapexpr.cis_store import write_cis_store
from hapexpr.context_store import CONTEXT_DIR, DEFAULT_CONTEXT, MAX_CONTEXT
from hapexpr.errors import InputError, StudyError
from hapexpr.gene_inputs import build_gene
from hapexpr.io.atomic import atomic_open, atomic_path, study_lock, write_json
from hapexpr.io.expression import read_covariates, read_expression_table
from hapexpr.io.fasta import Reference
from hapexpr.io.genes import fill_gene_names, read_genes, with_gene_span
from hapexpr.io.tables import check_unique, read_matrix_text
from hapexpr.io.vcf import VcfReader
from hapexpr.normalise import check_normalise, looks_unnormalised
from hapexpr.progress import console, track_genes
from hapexpr.study import FORMAT_VERSION, GENE_COLUMNS, gene_file_name, write_gene
from hapexpr.windows import window_bounds


@dataclass(frozen=True)
class PrepareParams:
    window: int = 6000
    folds: int = 5
    seed: int = 0
    residualised: bool = False
    allow_unphased: bool = False
    normalise: str = "none"
    cis_window: int = 1_000_000
    folds_by: dict | None = None
    context: int = 0


# A window is "mostly N" when more than this share of its reference bases is N.
MAX_N_FRACTION = 0.5
DROP_REASONS = {
    "no_annotation": "no TSS in the annotation",
    "contig_not_in_vcf": "contig not in the VCF",
    "contig_not_in_fasta": "contig not in the FASTA",
    "tss_past_contig_end": "TSS beyond the contig's end (another assembly?)",
    "window_outside_fasta_excerpt": "window not inside the stretch the FASTA excerpt covers",
    "mostly_n": f"window more than {MAX_N_FRACTION:.0%} N in the reference",
    "no_cis_variant": "no variant within the cis window",
}


def prepare_study(
    *,
    vcf: Path,
    expression: Path,
    out: Path,
    fasta: Path | None = None,
    genes: Path | None = None,
    covariates: Path | None = None,
    window: int = 6000,
    folds: int = 5,
    seed: int = 0,
    residualised: bool = False,
    allow_unphased: bool = False,
    normalise: str = "none",
    cis_window: int = 1_000_000,
    folds_by: tuple[str, Path] | None = None,
    context: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Validate the inputs, then write the study directory ``out``; returns its path.

    Without ``fasta`` the study is genotype-only (``study.json`` ``has_sequence: false``).
    Without ``genes`` the TSSs and strands come from the expression file (QTLtools BED).
    ``folds_by`` = (COLUMN, FILE): one fold per distinct value of COLUMN in the sample table FILE.
    ``context``: width (bp) of each gene's Enformer context haplotypes (``STUDY/context/``, built
    when Enformer first needs it); None: 196,608 with a FASTA, else 0; 0: none.
    """
    began = time.time()
    out = Path(out)
    if window < 12 or window > 196_608:
        raise InputError(f"window {window} bp is outside 12..196,608 bp")
    if cis_window < 0:
        raise InputError(f"--cis-window {cis_window} must be >= 0")
    context = resolve_context(context, fasta=fasta, window=window)
    _check_destination(out, overwrite)

    table = read_expression_table(expression)
    expr_df = table.values
    check_normalise(normalise, expr_df.to_numpy(), path=expression)
    if normalise == "none" and (why := looks_unnormalised(expr_df.to_numpy())):
        console.print(
            f"[yellow]warning: {expression} looks like raw counts or RPKM/TPM ({why}); "
            "consider --normalise inverse-normal (or log2)[/]"
        )
    cov_df = read_covariates(covariates) if covariates is not None and not residualised else None
    genes_df = _gene_table(genes, table, expression)
    reference = Reference(fasta) if fasta is not None else None
    vcf_all = VcfReader(vcf, allow_unphased=allow_unphased)

    samples = _intersect_samples(vcf, vcf_all.samples, expression, list(expr_df.columns), covariates, cov_df)
    if folds_by is not None:
        fold, groups = folds_from_column(samples, *folds_by)
        folds = len(groups)
        folds_meta = {"column": folds_by[0], "file": str(Path(folds_by[1]).resolve()), "groups": groups}
    else:
        if len(samples) < 2 * folds:
            raise InputError(
                f"only {len(samples)} samples are shared by the inputs, too few for {folds} folds",
                path=vcf,
                hint="check that the sample ids match across the VCF, expression and covariates",
            )
        fold, folds_meta = _assign_folds(len(samples), folds=folds, seed=seed), None
    params = PrepareParams(
        window, folds, seed, residualised, allow_unphased, normalise, cis_window, folds_meta, context=context
    )
    reader = VcfReader(vcf, samples=samples, allow_unphased=allow_unphased)
    dosage_reader = VcfReader(vcf, samples=samples, allow_unphased=True)  # dosages ignore phase
    genes_df, dropped = _select_genes(genes_df, genes or expression, expr_df, expression, reader, vcf, reference, fasta)
    genes_df, more = drop_bad_windows(genes_df, reference, reader, window)
    dropped += more
    inputs_by_reason = {
        "no_annotation": genes or expression,
        "contig_not_in_vcf": vcf,
        "no_cis_variant": vcf,
        "contig_not_in_fasta": fasta,
        "window_outside_fasta_excerpt": fasta,
        "mostly_n": fasta,
        "tss_past_contig_end": fasta or vcf,
    }
    _stop_if_empty(genes_df, dropped, inputs_by_reason)

    inputs = {
        name: fingerprint_file(p)
        for name, p in [
            ("vcf", vcf),
            ("fasta", fasta),
            ("genes", genes),
            ("expression", expression),
            ("covariates", covariates),
            ("folds_by", None if folds_by is None else folds_by[1]),
        ]
        if p is not None
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "hapexpr_version": __version__,
        "params": {**dataclasses.asdict(params), "covariates": cov_df is not None},
        "inputs": inputs,
        "has_sequence": reference is not None,
        "expression_layout": table.layout,
    }
    key = hashlib.sha256(json.dumps({"params": meta["params"], "inputs": inputs}, sort_keys=True).encode()).hexdigest()
    partial = out.parent / f".{out.name}.partial"
    with study_lock(partial, "prepare"), _captured_warnings() as caught:
        _start_or_resume(partial, key)
        cis_index = write_cis_store(partial / "cis", genes_df, dosage_reader, cis_window)
        no_cis = set(cis_index.loc[cis_index["n_variants"] == 0, "gene_id"])
        dropped += [(g, "no_cis_variant") for g in genes_df["gene_id"] if g in no_cis]
        genes_df = genes_df[~genes_df["gene_id"].isin(no_cis)].reset_index(drop=True)
        _stop_if_empty(genes_df, dropped, inputs_by_reason)
        _report_drops(dropped, partial)
        cis_index = cis_index[cis_index["gene_id"].isin(genes_df["gene_id"])]
        with atomic_open(partial / "cis" / "genes.tsv") as fh:
            cis_index.to_csv(fh, sep="\t", index=False)
        pd.DataFrame({"sample_id": samples, "fold": fold}).to_csv(partial / "samples.tsv", sep="\t", index=False)
        with atomic_open(partial / "expression.tsv") as fh:
            expr_df.loc[genes_df["gene_id"], samples].to_csv(fh, sep="\t", index_label="gene_id", float_format="%.8g")
        if cov_df is not None:
            with atomic_open(partial / "covariates.tsv") as fh:
                cov_df.loc[:, samples].to_csv(fh, sep="\t", index_label="id", float_format="%.8g")
        rows = _write_genes(partial, genes_df, reader, reference, window, progress=progress)
        with atomic_open(partial / "genes.tsv") as fh:
            pd.DataFrame(rows, columns=GENE_COLUMNS).to_csv(fh, sep="\t", index=False)
        if context:  # built when Enformer first needs it (context_store.ContextStore.build)
            meta["context"] = {"width": context, "directory": CONTEXT_DIR}
        copied = _copy_truth(Path(expression).parent, partial)
        meta.update(
            n_samples=len(samples),
            n_genes=len(genes_df),
            truth=copied,
            dropped_genes=dict(Counter(r for _, r in dropped)),
        )
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(partial / "study.json", meta)
        (partial / ".prepare.json").unlink()
    _summarise_warnings(caught, vcf)
    (partial / ".lock").unlink(missing_ok=True)
    _move_into_place(partial, out)
    console.print(
        f"prepared {len(samples)} samples x {len(genes_df)} genes ({len(dropped)} dropped) "
        f"in {time.time() - began:.1f} s -> {out}" + ("" if reference is not None else " (genotype-only: no --fasta)")
    )
    return out


def resolve_context(context: int | None, *, fasta, window: int) -> int:
    """The Enformer context width to record (0: none). None: 196,608 bp with a FASTA, else 0.
    Recording costs nothing: the context is built when Enformer first needs it."""
    if context is None:
        return DEFAULT_CONTEXT if fasta is not None else 0
    context = int(context)
    if context and fasta is None:
        raise InputError(
            f"--context {context} needs --fasta (the context is reference sequence)",
            hint="pass --fasta, or leave out --context (no Enformer context)",
        )
    if context and not window <= context <= MAX_CONTEXT:
        raise InputError(
            f"--context {context} bp must be 0 (none) or between the window ({window:,} bp) and {MAX_CONTEXT:,} bp",
            hint=f"Enformer's input is {DEFAULT_CONTEXT:,} bp",
        )
    return context


def _gene_table(genes: Path | None, table, expression: Path) -> pd.DataFrame:
    """The annotation, or the TSSs the expression BED carries when no --genes is given."""
    if genes is not None:
        return fill_gene_names(with_gene_span(read_genes(genes), path=genes), table.names)
    if table.tss is None:
        raise InputError(
            f"--genes is needed: this expression file ({table.layout}) carries no gene strands",
            path=expression,
            hint="pass --genes (GTF/GFF3 or a BED/TSV of TSSs), or use a QTLtools BED (#chr start end pid gid strand ...)",
        )
    return with_gene_span(table.tss, path=expression)


def folds_from_column(samples: list[str], column: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """(samples,) fold of each sample = index of its ``column`` value among the sorted distinct
    values of the sample table ``path`` (first column: sample id); and those values."""
    path = Path(path)
    raw = read_matrix_text(path, what="sample annotation")
    if column not in raw.columns[1:]:
        raise InputError(
            f"the sample annotation has no column {column!r} (it has {', '.join(map(str, raw.columns[1:]))})",
            path=path,
            record="header",
            hint="name a column of the file after --folds-by",
        )
    ids = raw.iloc[:, 0].astype(str)
    check_unique(ids, path=path, what="sample id")
    value = dict(zip(ids, raw[column].astype(str)))
    missing = [s for s in samples if s not in value]
    if missing:
        raise InputError(
            f"{len(missing)} sample(s) of the study have no row: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else ""),
            path=path,
            hint="the first column must hold every study sample's id",
        )
    groups = sorted({value[s] for s in samples})
    if len(groups) < 2:
        raise InputError(
            f"column {column!r} has a single value ({groups[0]!r}) among the study's samples, so there is "
            "nothing to hold out",
            path=path,
            hint="--folds-by needs a column with at least two values",
        )
    return np.array([groups.index(value[s]) for s in samples], dtype=np.int64), groups


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise StudyError("the output path exists and is not a directory", path=out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / "study.json").exists():
            raise StudyError(
                "the output directory exists, is not empty and is not a hapexpr study",
                path=out,
                hint="choose another --out; hapexpr never deletes directories it did not write",
            )
        if not overwrite:
            raise StudyError(
                "a study already exists here",
                path=out,
                hint="pass --overwrite to replace it (it is kept until the new study is complete), or choose another --out",
            )


def _intersect_samples(vcf, vcf_samples, expression, expr_samples, covariates, cov_df) -> list[str]:
    """Samples in every input, in VCF order; says who was dropped, from which file, and why."""
    sources = [(vcf, vcf_samples), (expression, expr_samples)]
    kinds = {vcf: "VCF", expression: "expression file", covariates: "covariates file"}
    if cov_df is not None:
        sources.append((covariates, list(cov_df.columns)))
    keep = set(vcf_samples)
    for path, ids in sources[1:]:
        shared = keep & set(ids)
        if not shared:
            others = " and ".join(f"the {kinds[p]} {p}" for p, _ in sources if p != path)
            raise InputError(
                f"no sample of this {kinds[path]} ({', '.join(ids[:3])}...) is in {others}",
                path=path,
                record="header",
                hint=f"the VCF {vcf} has samples {', '.join(vcf_samples[:3])}...; the ids must match exactly",
            )
        keep = shared
    for path, ids in sources:
        dropped = [s for s in ids if s not in keep]
        if dropped:
            lacking = [str(p) for p, other in sources if p != path and not set(dropped) <= set(other)]
            shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
            console.print(
                f"[yellow]dropped {len(dropped)} sample(s) of {path} missing from {' or '.join(lacking)}:[/] {shown}"
            )
    return [s for s in vcf_samples if s in keep]


def _select_genes(genes_df, genes_path, expr_df, expr_path, reader, vcf, reference, fasta) -> tuple[pd.DataFrame, list]:
    """Genes with both an annotation and expression, on contigs present in the VCF (and FASTA);
    returns them sorted by position, and (gene_id, reason) of those dropped."""
    dropped = [(g, "no_annotation") for g in expr_df.index[~expr_df.index.isin(genes_df["gene_id"])]]
    df = genes_df[genes_df["gene_id"].isin(expr_df.index)].copy()
    if df.empty:
        raise InputError(
            "no gene id of the expression file is in the annotation",
            path=expr_path,
            record=f"gene {expr_df.index[0]}",
            hint=f"use an annotation ({genes_path}) with the same gene ids",
        )
    contigs = {
        c: (reader.resolve(c), reference.resolve(c) if reference is not None else c) for c in df["chrom"].unique()
    }
    for c, (v, f) in contigs.items():
        if v is None or f is None:
            reason = "contig_not_in_vcf" if v is None else "contig_not_in_fasta"
            dropped += [(g, reason) for g in df.loc[df["chrom"] == c, "gene_id"]]
    bad = [c for c, (v, f) in contigs.items() if v is None or f is None]
    df = df[~df["chrom"].isin(bad)]
    if df.empty:
        where = "the VCF" + ("" if reference is None else " and the FASTA")
        raise InputError(
            f"no gene lies on a contig found in {where} (annotation contigs: {', '.join(map(str, contigs))}; "
            f"VCF {vcf}: {', '.join(reader.contigs[:5])}...)",
            path=genes_path,
            hint="use an annotation, VCF and FASTA of the same assembly (chr1 and 1 are matched automatically)",
        )
    df["vcf_chrom"] = df["chrom"].map(lambda c: contigs[c][0])
    df["fasta_chrom"] = df["chrom"].map(lambda c: contigs[c][1])
    # Sorted by position so consecutive genes read neighbouring stretches of the VCF.
    return df.sort_values(["chrom", "tss", "gene_id"], kind="stable").reset_index(drop=True), dropped


def drop_bad_windows(genes_df, reference, reader, window: int) -> tuple[pd.DataFrame, list]:
    """Drop genes whose TSS lies past its contig's end, whose window leaves a FASTA excerpt
    (``CHR:START-END`` record: the bases beyond it exist but are unknown), or whose window is
    mostly N. A window running past a whole contig's end is kept, N-padded, unless mostly N.
    Without a FASTA only the VCF header's contig lengths can be checked."""
    keep, dropped = [], []
    for g in genes_df.itertuples(index=False):
        tss = int(g.tss)
        lo, hi = window_bounds(tss, g.strand, window)
        if reference is not None:
            first, last = reference.span(g.fasta_chrom)
            excerpt = reference.is_excerpt(g.fasta_chrom)
        else:
            first, last, excerpt = 1, reader.contig_length(g.vcf_chrom), False
        reason = None
        if excerpt and (lo < first or hi > last):
            reason = "window_outside_fasta_excerpt"
        elif tss < 1 or (last is not None and tss > last):
            reason = "tss_past_contig_end"
        elif reference is not None and reference.fetch(g.fasta_chrom, lo, hi).count(b"N") > MAX_N_FRACTION * window:
            reason = "mostly_n"
        keep.append(reason is None)
        if reason is not None:
            dropped.append((g.gene_id, reason))
    return genes_df[np.array(keep, dtype=bool)].reset_index(drop=True), dropped


def _stop_if_empty(genes_df: pd.DataFrame, dropped: list, blame: dict) -> None:
    """Refuse an empty study, naming the input behind the most common reason."""
    if genes_df.empty:
        counts = Counter(r for _, r in dropped)
        why = "; ".join(f"{n} {DROP_REASONS[r]} ({r})" for r, n in counts.items())
        raise InputError(
            f"no gene is left to study: {why}",
            path=blame[counts.most_common(1)[0][0]],
            hint="check that the FASTA, VCF and gene positions are of the same assembly and cover the genes",
        )


def _report_drops(dropped: list, partial: Path) -> None:
    """One line per reason on the console; every dropped gene in dropped_genes.tsv."""
    table = pd.DataFrame(dropped, columns=["gene_id", "reason"])
    with atomic_open(partial / "dropped_genes.tsv") as fh:
        table.to_csv(fh, sep="\t", index=False)
    for reason, n in Counter(table["reason"]).items():
        shown = ", ".join(table.loc[table["reason"] == reason, "gene_id"].head(3))
        console.print(f"[yellow]dropped {n} gene(s): {DROP_REASONS[reason]} ({reason}; e.g. {shown})[/]")


@contextlib.contextmanager
def _captured_warnings():
    """Collect Python warnings (cyvcf2 warns once per odd region) so they can be summarised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _summarise_warnings(caught: list, vcf: Path) -> None:
    """One line for all the warnings caught; cyvcf2's "no intervals found" only means a region
    holds no variant (counted as such, not shown)."""
    messages = [str(w.message).split("\n")[0][:160] for w in caught]
    messages = [m for m in messages if not m.startswith("no intervals found")]
    if not messages:
        return
    counts = Counter(messages)
    first, n = counts.most_common(1)[0]
    console.print(
        f"[yellow]{len(messages)} warning(s) while reading {vcf} ({len(counts)} distinct); "
        f"most common ({n}x): {first}[/]"
    )


def _copy_truth(folder: Path, partial: Path) -> list[str]:
    """The simulator's truth.tsv (and truth_*.tsv) beside the expression file, copied into the study."""
    names = []
    for path in sorted(folder.glob("truth*.tsv")):
        if path.name == "truth.tsv" or path.name.startswith("truth_"):
            shutil.copyfile(path, partial / path.name)
            names.append(path.name)
    return names


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


def _write_genes(
    partial: Path, genes_df: pd.DataFrame, reader, reference, window: int, *, progress: bool
) -> list[dict]:

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
            {
                "gene_id": g.gene_id,
                "gene_name": g.gene_name,
                "chrom": g.chrom,
                "tss": int(g.tss),
                "strand": g.strand,
                "window_start": lo,
                "window_end": hi,
                "n_variants": n_variants,
                "n_unique_haplotypes": n_unique,
                "gene_start": int(g.gene_start),
                "gene_end": int(g.gene_end),
            }
        )
    return rows


def _gene_counts(path: Path) -> tuple[int, int]:
    with np.load(path, allow_pickle=False) as z:
        return len(z["pos"]), len(z["hap_alleles"])


def _move_into_place(partial: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)
