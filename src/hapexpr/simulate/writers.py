"""Writers for the simulated cohort's standard files; every file appears atomically.

All text is built deterministically (fixed float formats, fixed row order, BGZF blocks whose
gzip header carries no time stamp or file name), so the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hapexpr.io.atomic import atomic_path
from hapexpr.simulate.layout import Gene
from hapexpr.simulate.motifs import PlantedMotif
from hapexpr.simulate.phenotypes import GeneTruth
from hapexpr.simulate.variants import Variants

FASTA_LINE = 60
_GT = np.array(["0|0", "0|1", "1|0", "1|1"])


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """``atomic_path`` with ordinary (umask) permissions instead of mkstemp's private 0600."""
    with atomic_path(path) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp


def write_text(path: Path, lines: Iterable[str]) -> None:
    with _atomic(path) as tmp, open(tmp, "w", newline="\n") as fh:
        fh.writelines(lines)


def write_bgzf(path: Path, lines: Iterable[str], *, tbi_preset: str | None = None) -> None:
    """BGZF-compress ``lines`` into ``path`` with pysam; with ``tbi_preset`` also write ``path.tbi``.

    The index is renamed into place after the data file, so it is never older than the data.
    """
    import pysam

    fd, plain = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".plain.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="\n") as fh:
            fh.writelines(lines)
        with contextlib.ExitStack() as stack:
            tmp_tbi = stack.enter_context(_atomic(path.with_name(path.name + ".tbi"))) if tbi_preset else None
            tmp_gz = stack.enter_context(_atomic(path))
            pysam.tabix_compress(plain, str(tmp_gz), force=True)
            if tmp_tbi is not None:
                # The data file is renamed before the index (inner context exits first).
                pysam.tabix_index(str(tmp_gz), preset=tbi_preset, force=True, index=str(tmp_tbi))
    finally:
        Path(plain).unlink(missing_ok=True)


def write_reference(path: Path, contigs: dict[str, np.ndarray]) -> None:
    """FASTA with 60-base lines and its samtools-style ``.fai`` index (written second)."""
    fai: list[str] = []
    offset = 0
    with _atomic(path) as tmp, open(tmp, "wb") as fh:
        for name, seq in contigs.items():
            header = f">{name}\n".encode()
            fh.write(header)
            offset += len(header)
            fai.append(f"{name}\t{seq.size}\t{offset}\t{FASTA_LINE}\t{FASTA_LINE + 1}\n")
            raw = seq.tobytes()
            for i in range(0, len(raw), FASTA_LINE):
                fh.write(raw[i : i + FASTA_LINE] + b"\n")
            offset += seq.size + -(-seq.size // FASTA_LINE)
    write_text(path.with_name(path.name + ".fai"), fai)


def _attributes(pairs: list[tuple[str, str | int]]) -> str:
    return " ".join(f'{k} "{v}";' if isinstance(v, str) else f"{k} {v};" for k, v in pairs)


def gtf_lines(genes: Iterable[Gene], *, seed: int) -> Iterator[str]:
    """GENCODE-style records: gene, transcript, then exons in transcription order."""
    yield f"##description: hapexpr simulated annotation (seed {seed})\n"
    yield "##provider: hapexpr\n##format: gtf\n"
    for g in genes:
        base = [("gene_id", g.gene_id)]
        names = [("gene_type", "protein_coding"), ("gene_name", g.gene_name)]
        tx = [("transcript_id", g.transcript_id)]
        tx_names = [("transcript_type", "protein_coding"), ("transcript_name", f"{g.gene_name}-201")]
        cols = f"{g.chrom}\tHAVANA\t{{}}\t{{}}\t{{}}\t.\t{g.strand}\t.\t"
        yield cols.format("gene", g.start, g.end) + _attributes(base + names + [("level", 2)]) + "\n"
        yield (
            cols.format("transcript", g.start, g.end)
            + _attributes(base + tx + names + tx_names + [("level", 2), ("tag", "Ensembl_canonical")])
            + "\n"
        )
        for number, (start, end) in enumerate(g.exons, start=1):
            exon = [("exon_number", number), ("exon_id", f"ENSE9{g.index + 1:07d}{number:03d}.1"), ("level", 2)]
            yield cols.format("exon", start, end) + _attributes(base + tx + names + tx_names + exon) + "\n"


def vcf_lines(variants: Variants, *, samples: list[str], contigs: dict[str, int], seed: int) -> Iterator[str]:
    """A phased VCF 4.2: one biallelic record per position, sorted, GT only."""
    yield "##fileformat=VCFv4.2\n"
    yield '##FILTER=<ID=PASS,Description="All filters passed">\n'
    yield f"##source=hapexpr simulate (msprime coalescent with recombination; seed {seed})\n"
    yield "##reference=reference.fa\n"
    for name, length in contigs.items():
        yield f"##contig=<ID={name},length={length}>\n"
    yield '##INFO=<ID=AC,Number=A,Type=Integer,Description="Alternate allele count in the cohort">\n'
    yield '##INFO=<ID=AN,Number=1,Type=Integer,Description="Number of alleles in the cohort">\n'
    yield '##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele frequency in the cohort">\n'
    yield '##INFO=<ID=VT,Number=1,Type=String,Description="Variant type: SNP or INDEL">\n'
    yield '##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">\n'
    yield "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]) + "\n"
    hap = variants.haplotypes
    an = hap.shape[1]
    ac = hap.sum(axis=1, dtype=np.int64).tolist()
    codes = 2 * hap[:, 0::2] + hap[:, 1::2]
    for i, vid in enumerate(variants.ids):
        vt = "SNP" if variants.kind[i] == "snv" else "INDEL"
        info = f"AC={ac[i]};AN={an};AF={ac[i] / an:.6g};VT={vt}"
        fixed = f"{variants.chrom[i]}\t{variants.pos[i]}\t{vid}\t{variants.ref[i]}\t{variants.alt[i]}\t.\tPASS\t{info}\tGT\t"
        yield fixed + "\t".join(_GT[codes[i]].tolist()) + "\n"


def expression_lines(genes: list[Gene], expression: np.ndarray, samples: list[str]) -> Iterator[str]:
    """tensorQTL phenotype BED: ``#chr start end gene_id samples...``; start = TSS - 1, end = TSS."""
    yield "\t".join(["#chr", "start", "end", "gene_id", *samples]) + "\n"
    for g, row in zip(genes, expression):
        yield f"{g.chrom}\t{g.tss - 1}\t{g.tss}\t{g.gene_id}\t" + "\t".join(f"{x:.6f}" for x in row) + "\n"


def covariate_lines(sex: np.ndarray, pcs: np.ndarray, samples: list[str]) -> Iterator[str]:
    """tensorQTL covariates: first column ``id``, one row per covariate, one column per sample."""
    yield "\t".join(["id", *samples]) + "\n"
    yield "sex\t" + "\t".join(str(int(x)) for x in sex) + "\n"
    for k, row in enumerate(pcs, start=1):
        yield f"PC{k}\t" + "\t".join(f"{x:.6f}" for x in row) + "\n"


def sample_lines(samples: list[str], populations: list[str], sex: np.ndarray) -> Iterator[str]:
    yield "sample_id\tpopulation\tsex\n"
    for s, p, x in zip(samples, populations, sex):
        yield f"{s}\t{p}\t{int(x)}\n"


TRUTH_COLUMNS = (
    "gene_id",
    "gene_name",
    "chrom",
    "tss",
    "strand",
    "h2",
    "h2_residualised",
    "n_causal",
    "causal_variants",
    "causal_effects",
    "causal_af",
    "causal_types",
    "covariate_effects",
    "architecture",
    "additive_share",
    "phase_share",
)


def truth_lines(truths: list[GeneTruth], variants: Variants, covariate_names: list[str]) -> Iterator[str]:
    """One row per gene: h2, causal variant ids (VCF ID column) and their per-ALT-allele effects."""
    yield "\t".join(TRUTH_COLUMNS) + "\n"
    ids = variants.ids
    af = variants.haplotypes.mean(axis=1)
    for t in truths:
        g = t.gene
        cov = ",".join(f"{n}:{x:.6g}" for n, x in zip(covariate_names, t.covariate_effects))
        row = [
            g.gene_id,
            g.gene_name,
            g.chrom,
            str(g.tss),
            g.strand,
            f"{t.h2:.6f}",
            f"{t.h2_residualised:.6f}",
            str(len(t.causal)),
            ",".join(ids[i] for i in t.causal),
            ",".join(f"{x:.6g}" for x in t.effects),
            ",".join(f"{af[i]:.6g}" for i in t.causal),
            ",".join(str(variants.kind[i]) for i in t.causal),
            cov,
            t.architecture,
            f"{t.additive_share:.6f}",
            f"{t.phase_share:.6f}",
        ]
        yield "\t".join(row) + "\n"


def truth_genetic_lines(truths: list[GeneTruth], samples: list[str]) -> Iterator[str]:
    """Each person's genetic value per gene (truth_genetic.tsv: gene_id, sample_id, genetic_value)."""
    yield "gene_id\tsample_id\tgenetic_value\n"
    for t in truths:
        g = t.genetic if t.genetic is not None else np.zeros(len(samples))
        for sample, value in zip(samples, g.tolist()):
            yield f"{t.gene.gene_id}\t{sample}\t{value:.9g}\n"


TRUTH_VARIANT_COLUMNS = ("gene_id", "variant_id", "role", "effect", "partner", "alt_af", "tss_distance", "type")


def truth_variant_lines(truths: list[GeneTruth], variants: Variants) -> Iterator[str]:
    """One row per gene, causal variant and role (truth_variants.tsv; see docs/simulate.md)."""
    yield "\t".join(TRUTH_VARIANT_COLUMNS) + "\n"
    ids = variants.ids
    af = variants.haplotypes.mean(axis=1)
    for t in truths:
        for e in t.entries:
            partner = ids[e.partner] if e.partner >= 0 else "."
            distance = int(variants.pos[e.row]) - t.gene.tss
            row = [
                t.gene.gene_id,
                ids[e.row],
                e.role,
                f"{e.effect:.6g}",
                partner,
                f"{af[e.row]:.6g}",
                str(distance),
                str(variants.kind[e.row]),
            ]
            yield "\t".join(row) + "\n"


def truth_motif_lines(genes: list[Gene], planted: dict[int, list[PlantedMotif]]) -> Iterator[str]:
    """Planted motif sites (truth_motifs.tsv): where each was written into the reference."""
    yield "gene_id\tmotif\tchrom\tstart\tend\tstrand\ton_variant\n"
    for g in genes:
        for m in planted.get(g.index, []):
            yield f"{g.gene_id}\t{m.motif}\t{g.chrom}\t{m.start}\t{m.end}\t{m.strand}\t{int(m.on_variant)}\n"
