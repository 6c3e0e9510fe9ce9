"""Phased variants from a coalescent with recombination (msprime), written as SNVs and indels.

msprime gives biallelic 0/1 sites on each gene's region; this module decides what each site looks
like in a VCF (an SNV, an insertion or a deletion of 1-20 bp), keeps REF consistent with the
synthetic reference and keeps every indel left-aligned, so ``bcftools norm`` would leave the file
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hapexpr.simulate.layout import BASES, Gene

NE = 10_000
MUTATION_RATE = 1.25e-8
RECOMBINATION_RATE = 1e-8

# Transition partner of each base (A<->G, C<->T) and its two transversions.
_TRANSITION = {ord("A"): ord("G"), ord("G"): ord("A"), ord("C"): ord("T"), ord("T"): ord("C")}
_TRANSVERSIONS = {
    ord("A"): (ord("C"), ord("T")),
    ord("G"): (ord("C"), ord("T")),
    ord("C"): (ord("A"), ord("G")),
    ord("T"): (ord("A"), ord("G")),
}


@dataclass(frozen=True)
class Variants:
    """Biallelic phased records of one region (or of a whole cohort after :func:`concat`).

    ``haplotypes`` is (variants, samples * 2) int8 of 0/1 with each sample's two haplotypes side
    by side (sample j -> columns 2j, 2j+1; column 2j is the left allele of ``a|b``).
    """

    chrom: tuple[str, ...]
    pos: np.ndarray  # (variants,) int64, 1-based
    ref: tuple[str, ...]
    alt: tuple[str, ...]
    kind: np.ndarray  # (variants,) '<U3': 'snv', 'ins' or 'del'
    haplotypes: np.ndarray

    @property
    def ids(self) -> list[str]:
        """Unique variant ids, ``chrom_pos_ref_alt`` (one record per position, so unique)."""
        return [f"{c}_{p}_{r}_{a}" for c, p, r, a in zip(self.chrom, self.pos.tolist(), self.ref, self.alt)]

    def __len__(self) -> int:
        return int(self.pos.size)


def carried(variants: Variants) -> Variants:
    """The records whose ALT allele at least one of the haplotypes carries (a VCF of these
    people lists no others)."""
    keep = np.flatnonzero(variants.haplotypes.any(axis=1))
    return Variants(
        chrom=tuple(variants.chrom[i] for i in keep.tolist()),
        pos=variants.pos[keep],
        ref=tuple(variants.ref[i] for i in keep.tolist()),
        alt=tuple(variants.alt[i] for i in keep.tolist()),
        kind=variants.kind[keep],
        haplotypes=variants.haplotypes[keep],
    )


def concat(parts: list[Variants], n_haplotypes: int) -> Variants:
    """Stack the per-region tables in the given (genomic) order."""
    if not parts:
        return Variants((), np.zeros(0, np.int64), (), (), np.zeros(0, "<U3"), np.zeros((0, n_haplotypes), np.int8))
    return Variants(
        chrom=tuple(c for p in parts for c in p.chrom),
        pos=np.concatenate([p.pos for p in parts]),
        ref=tuple(r for p in parts for r in p.ref),
        alt=tuple(a for p in parts for a in p.alt),
        kind=np.concatenate([p.kind for p in parts]),
        haplotypes=np.concatenate([p.haplotypes for p in parts], axis=0),
    )


def demography():
    """A cheap out-of-Africa-like model: AFR, EUR and EAS demes of Ne 10,000 with migration.

    EUR and EAS split 900 generations ago from an out-of-Africa deme (Ne 3,000, a bottleneck),
    which split from AFR 2,000 generations ago; the ancestral deme has Ne 10,000. The resulting
    differentiation (F_ST about 0.1-0.2) makes genotype PCs separate the demes as in real cohorts.
    """
    import msprime

    model = msprime.Demography()
    for name, size in (("AFR", NE), ("EUR", NE), ("EAS", NE), ("OOA", 3_000), ("ANC", NE)):
        model.add_population(name=name, initial_size=size)
    model.set_symmetric_migration_rate(["AFR", "EUR", "EAS"], 2.5e-5)
    model.add_population_split(time=900, derived=["EUR", "EAS"], ancestral="OOA")
    model.add_population_split(time=2_000, derived=["AFR", "OOA"], ancestral="ANC")
    model.sort_events()
    return model


def coalescent_haplotypes(*, length: int, samples: dict[str, int], model, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one region; returns 0-based site offsets (sites,) and (sites, haplotypes) int8.

    Haplotype columns follow msprime's individuals in the order of ``samples`` (two per
    individual). Sites that are monomorphic in the sample after back-mutation are dropped.
    """
    import msprime

    ts = msprime.sim_ancestry(
        samples=samples,
        demography=model,
        sequence_length=length,
        recombination_rate=RECOMBINATION_RATE,
        random_seed=seed,
    )
    ts = msprime.sim_mutations(
        ts, rate=MUTATION_RATE, model=msprime.BinaryMutationModel(), discrete_genome=True, random_seed=seed
    )
    haplotypes = ts.genotype_matrix().astype(np.int8, copy=False)
    offsets = ts.tables.sites.position.astype(np.int64)
    count = haplotypes.sum(axis=1)
    keep = (count > 0) & (count < haplotypes.shape[1])
    return offsets[keep], haplotypes[keep]


def _indel_lengths(n: int, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """Indel lengths 1..max_len with P(k) proportional to k^-1.5 (about half are 1 bp)."""
    k = np.arange(1, max_len + 1)
    w = k**-1.5
    return rng.choice(k, size=n, p=w / w.sum())


def assign_alleles(
    *,
    gene: Gene,
    offsets: np.ndarray,
    haplotypes: np.ndarray,
    reference: np.ndarray,
    rng: np.random.Generator,
    indel_fraction: float,
    max_indel: int,
) -> Variants:
    """Turn a region's 0/1 sites into VCF records; may edit ``reference`` (the contig) in place.

    ``reference`` is the contig as (length,) uint8 ASCII; position p is ``reference[p - 1]``.
    SNVs: the derived base is a transition twice as often as a transversion, and the reference
    carries the derived base with probability equal to its frequency in the cohort (so REF is
    not always the ancestral or the major allele); the reference base is then rewritten and the
    genotypes flipped. Indels are always derived (ALT) and left-aligned. A record inside an
    earlier deletion is kept only when no haplotype carries both ALT alleles, so every
    haplotype's sequence is unambiguous.
    """
    pos = offsets + gene.region_start
    n_sites = pos.size
    draw = rng.random(n_sites)
    kind = np.where(draw < indel_fraction / 2, "del", np.where(draw < indel_fraction, "ins", "snv")).astype("<U3")
    lengths = _indel_lengths(n_sites, max_indel, rng)
    haplotypes = haplotypes.copy()
    freq = haplotypes.mean(axis=1)

    # SNVs first: they may rewrite reference bases that an indel's REF string then includes.
    snv_alt = np.zeros(n_sites, np.uint8)
    for i in np.flatnonzero(kind == "snv").tolist():
        base = int(reference[pos[i] - 1])
        alt = _TRANSITION[base] if rng.random() < 2 / 3 else _TRANSVERSIONS[base][int(rng.integers(2))]
        if rng.random() < freq[i]:
            reference[pos[i] - 1] = alt
            haplotypes[i] = 1 - haplotypes[i]
            alt = base
        snv_alt[i] = alt

    refs: list[str] = []
    alts: list[str] = []
    for i in range(n_sites):
        p = int(pos[i])
        anchor = int(reference[p - 1])
        if kind[i] == "del":
            k = _left_aligned_deletion(reference, p, int(lengths[i]), gene.region_end)
            if k:
                refs.append(reference[p - 1 : p + k].tobytes().decode())
                alts.append(chr(anchor))
                continue
            kind[i] = "ins"  # a homopolymer run (or the region end) follows the anchor
        if kind[i] == "ins":
            inserted = _inserted_sequence(int(lengths[i]), anchor, rng)
            refs.append(chr(anchor))
            alts.append(chr(anchor) + inserted)
            continue
        refs.append(chr(anchor))
        alts.append(chr(int(snv_alt[i])))

    keep = _drop_ambiguous_overlaps(pos, refs, kind, haplotypes)
    idx = np.flatnonzero(keep)
    return Variants(
        chrom=(gene.chrom,) * idx.size,
        pos=pos[idx],
        ref=tuple(refs[i] for i in idx.tolist()),
        alt=tuple(alts[i] for i in idx.tolist()),
        kind=kind[idx],
        haplotypes=haplotypes[idx],
    )


def _left_aligned_deletion(reference: np.ndarray, p: int, k: int, last: int) -> int:
    """Longest deletion length <= k after anchor p that ends by ``last`` and is left-aligned; 0 if none.

    Deleting positions p+1..p+k could shift left exactly when the anchor equals the last
    deleted base.
    """
    k = min(k, last - p)
    while k > 0 and reference[p - 1] == reference[p + k - 1]:
        k -= 1
    return k


def _inserted_sequence(k: int, anchor: int, rng: np.random.Generator) -> str:
    """k random bases whose last base differs from the anchor, so the insertion is left-aligned."""
    seq = BASES[rng.integers(0, 4, size=k)]
    if seq[-1] == anchor:
        others = BASES[BASES != anchor]
        seq[-1] = others[rng.integers(0, 3)]
    return seq.tobytes().decode()


def _drop_ambiguous_overlaps(pos: np.ndarray, refs: list[str], kind: np.ndarray, haplotypes: np.ndarray) -> np.ndarray:
    """Mask of records to keep: drop a record inside a kept deletion if a haplotype carries both."""
    keep = np.ones(pos.size, dtype=bool)
    open_dels: list[tuple[int, int]] = []  # (last deleted position, record index)
    for i in range(pos.size):
        p = int(pos[i])
        open_dels = [(end, j) for end, j in open_dels if end >= p]
        if any((haplotypes[j] & haplotypes[i]).any() for _, j in open_dels):
            keep[i] = False
            continue
        if kind[i] == "del":
            open_dels.append((p + len(refs[i]) - 1, i))
    return keep
