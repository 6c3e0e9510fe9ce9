"""Where the simulated genes sit, and the random reference sequence they sit on.

Coordinates here are 1-based and inclusive, as in GTF and VCF.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# ASCII codes in the order used to draw bases; 'N' never appears in the simulated reference.
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_A, _C, _G, _T = (int(b) for b in BASES)


@dataclass(frozen=True)
class Gene:
    """One simulated gene with a single transcript.

    ``tss`` is the gene start on the + strand and the gene end on the - strand; ``region_*`` is the
    stretch that carries simulated variation (the TSS window plus a margin, clipped to the contig).
    ``exons`` are (start, end) pairs in transcription order (exon 1 holds the TSS).
    """

    index: int
    gene_id: str
    gene_name: str
    transcript_id: str
    chrom: str
    strand: str
    start: int
    end: int
    tss: int
    exons: tuple[tuple[int, int], ...]
    region_start: int
    region_end: int


@dataclass(frozen=True)
class Layout:
    """Contigs (name -> length, in file order) and the genes on them, in genomic order."""

    contigs: dict[str, int]
    genes: tuple[Gene, ...]


def _strands(n_genes: int, rng: np.random.Generator) -> list[str]:
    """Random strands with gene 0 on + (the contig-start edge gene) and at least a third on -."""
    strands = ["-" if x else "+" for x in rng.random(n_genes) < 0.5]
    strands[0] = "+"
    if n_genes >= 2:
        strands[1] = "-"
    want_minus = min(n_genes - 1, max(1, n_genes // 3))
    plus = [i for i in range(1, n_genes) if strands[i] == "+"]
    rng.shuffle(plus)
    while strands.count("-") < want_minus and plus:
        strands[plus.pop()] = "-"
    return strands


def _exons(tss: int, length: int, strand: str, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
    """1-4 non-overlapping exons spanning the gene; first exon at the TSS, last at the TES."""
    n_exons = int(rng.integers(1, 5)) if length >= 800 else 1
    if n_exons == 1:
        spans = [(0, length - 1)]
    else:
        # Offsets from the TSS in transcription direction; internal boundaries drawn at random.
        cuts = np.sort(rng.choice(np.arange(200, length - 200), size=2 * (n_exons - 1), replace=False))
        starts = [0, *cuts[1::2].tolist()]
        ends = [*cuts[0::2].tolist(), length - 1]
        spans = list(zip(starts, ends))
    if strand == "+":
        return tuple((tss + a, tss + b) for a, b in spans)
    return tuple((tss - b, tss - a) for a, b in spans)


def layout_genes(
    *, n_genes: int, window: int, margin: int, rng: np.random.Generator, gap: tuple[int, int] = (2_000, 10_001)
) -> Layout:
    """Place ``n_genes`` genes on one or two contigs so that no two variation regions overlap.

    Consecutive regions are ``gap`` = [low, high) bp apart (drawn uniformly); the ``distal``
    architectures pass wide gaps so that the contigs reach far around each TSS.

    Gene 0 is on the + strand with its TSS within ``window/2`` of the start of ``chr1``; with three
    or more genes the last gene is on the - strand with its TSS within ``window/2`` of the end of
    the last contig, so both contig edges need N-padding downstream.
    """
    half = window // 2 + margin
    strands = _strands(n_genes, rng)
    n_contigs = 1 if n_genes == 1 else 2
    per_contig = np.array_split(np.arange(n_genes), n_contigs)
    if n_genes >= 3:
        strands[-1] = "-"
    contigs: dict[str, int] = {}
    genes: list[Gene] = []
    for c, members in enumerate(per_contig):
        chrom = f"chr{c + 1}"
        cursor = 0
        for i in members.tolist():
            strand = strands[i]
            length = int(rng.integers(1_500, 12_001))
            left = max(half, length - 1 if strand == "-" else 0)
            right = max(half, length - 1 if strand == "+" else 0)
            if i == 0:
                tss = int(rng.integers(window // 8 + 1, window // 2 - window // 8 + 1))
            else:
                tss = cursor + int(rng.integers(gap[0], gap[1])) + left
            cursor = tss + right
            start, end = (tss, tss + length - 1) if strand == "+" else (tss - length + 1, tss)
            genes.append(
                Gene(
                    index=i,
                    gene_id=f"ENSG9{i + 1:010d}.1",
                    gene_name=f"SIMG{i + 1}",
                    transcript_id=f"ENST9{i + 1:010d}.1",
                    chrom=chrom,
                    strand=strand,
                    start=max(1, start),
                    end=end,
                    tss=tss,
                    exons=_exons(tss, length, strand, rng),
                    region_start=max(1, tss - half),
                    region_end=tss + half,
                )
            )
        if n_genes >= 3 and c == n_contigs - 1:
            # The last gene (minus strand) ends near the contig end: its TSS window runs off it.
            last = genes[-1]
            contigs[chrom] = last.tss + int(rng.integers(window // 8, window // 2 - window // 8 + 1))
            genes[-1] = _clip_end(last, contigs[chrom])
        else:
            contigs[chrom] = cursor + int(rng.integers(3_000, 10_001))
    return Layout(contigs=contigs, genes=tuple(genes))


def _clip_end(gene: Gene, contig_length: int) -> Gene:
    """Clip a gene's variation region to the end of its contig."""
    return replace(gene, region_end=min(gene.region_end, contig_length))


def _cpg_corrected_gc(gc: float, cpg_keep: float) -> float:
    """GC fraction to draw so that, after removing CpGs, the sequence has fraction ``gc``."""
    gc0 = gc
    for _ in range(20):
        gc0 = gc + (1.0 - cpg_keep) * (gc0 / 2.0) ** 2
    return gc0


def random_reference(length: int, *, rng: np.random.Generator, gc: float = 0.41, cpg_keep: float = 0.25) -> np.ndarray:
    """A random contig of human-like composition: ``gc`` GC and CpG depleted to ``cpg_keep`` of expected.

    Returns (length,) uint8 ASCII codes of A/C/G/T. CpG depletion mimics methyl-cytosine
    deamination: a removed CpG becomes TpG or CpA with equal chance.
    """
    gc0 = _cpg_corrected_gc(gc, cpg_keep)
    probs = [(1 - gc0) / 2, gc0 / 2, gc0 / 2, (1 - gc0) / 2]
    seq = BASES[rng.choice(4, size=length, p=probs)]
    cpg = np.flatnonzero((seq[:-1] == _C) & (seq[1:] == _G))
    drop = cpg[rng.random(cpg.size) >= cpg_keep]
    to_tpg = rng.random(drop.size) < 0.5
    seq[drop[to_tpg]] = _T
    seq[drop[~to_tpg] + 1] = _A
    return seq


def place_blocks(
    *,
    layout: Layout,
    gene: Gene,
    n_blocks: int,
    length: int,
    min_distance: int,
    max_distance: int,
    taken: list[tuple[str, int, int]],
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Up to ``n_blocks`` stretches of ``length`` bp far from ``gene``'s TSS, as (start, end), 1-based.

    Each block's centre lies at a distance drawn log-uniformly from [min_distance, max_distance]
    upstream or downstream (equal odds), inside the contig, clear of every interval in ``taken``
    (chrom, start, end) by at least 1 kb; accepted blocks are appended to ``taken``. A block that
    finds no room in 50 draws is left out (short contigs), so fewer may come back.
    """
    contig_length = layout.contigs[gene.chrom]
    blocks: list[tuple[int, int]] = []
    for _ in range(n_blocks):
        for _attempt in range(50):
            distance = float(np.exp(rng.uniform(np.log(min_distance), np.log(max_distance))))
            centre = gene.tss + int(round(distance)) * (1 if rng.random() < 0.5 else -1)
            start, end = centre - length // 2, centre - length // 2 + length - 1
            clear = all(c != gene.chrom or end + 1_000 < a or start - 1_000 > b for c, a, b in taken)
            if start >= 1 and end <= contig_length and clear:
                blocks.append((start, end))
                taken.append((gene.chrom, start, end))
                break
    return sorted(blocks)
