"""A non-additive motif grammar: two motifs that act only together, and a saturating response.

The rule (docs/simulate.md, "motif-grammar"): on each haplotype an M1_AP1like site and an
M2_CAATlike site count only as a pair whose centres lie within SPACING bp of each other (breaking
either partner removes the pair); a person's expression saturates in the pair activity of both
haplotypes together, a Hill curve S(P) = P^HILL / (P^HILL + p_ref^HILL) half-saturated at p_ref,
the activity of ONE reference promoter: a person with two reference promoters is near saturation,
so losing a pair on one haplotype costs little while the other is intact and much more when both
are hit (dominance, and interactions between variants on the two haplotypes). Sequences are uint8 ASCII arrays of ACGT.
"""

from __future__ import annotations

import numpy as np

from hapexpr.simulate import motifs

PARTNERS = ("M1_AP1like", "M2_CAATlike")
SPACING = 40  # bp, centre to centre: the two sites of a pair act together only this close
HILL = 4  # steepness of a person's response to the summed pair activity of both haplotypes
PAIRS_ON_VARIANTS = 4  # planted pairs per gene with one partner centred on a segregating site
PAIRS_FIXED = 1  # further planted pairs at random places within RADIUS / 2
PLANT_GAP = (12, 30)  # bp between the two planted partners' centres (within SPACING)


def _motif(name: str) -> motifs.Motif:
    return next(m for m in motifs.MOTIF_SET if m.name == name)


def _occupancy(codes: np.ndarray, comp: np.ndarray, motif: motifs.Motif) -> np.ndarray:
    """(starts,) occupancy of ``motif`` at each + strand start, both strands summed."""
    lo = np.column_stack([motif.log_odds, motif.log_odds.min(axis=1)])
    forward = motifs._scores(codes, lo)
    reverse = motifs._scores(comp, lo)[::-1]
    return motifs._sigmoid(forward - motif.threshold) + motifs._sigmoid(reverse - motif.threshold)


def pair_activity(sequence: bytes | np.ndarray, tss_index: int) -> float:
    """p(h) = sum over A sites i of o_A(i) * exp(-|centre_i - tss| / DECAY) * (sum of o_B(j) over B
    sites whose centre lies within SPACING of centre_i); A, B = PARTNERS."""
    seq = np.frombuffer(bytes(sequence), dtype=np.uint8)
    codes = motifs._CODE[seq]
    unknown = codes < 0
    comp = np.where(unknown, -1, 3 - codes)[::-1]
    codes, comp = np.where(unknown, 4, codes), np.where(comp < 0, 4, comp)
    a, b = _motif(PARTNERS[0]), _motif(PARTNERS[1])
    occ_a, occ_b = _occupancy(codes, comp, a), _occupancy(codes, comp, b)
    if occ_a.size == 0 or occ_b.size == 0:
        return 0.0
    centre_a = np.arange(occ_a.size) + (a.length - 1) / 2
    centre_b = np.arange(occ_b.size) + (b.length - 1) / 2
    cum = np.concatenate([[0.0], np.cumsum(occ_b)])
    lo = np.searchsorted(centre_b, centre_a - SPACING, side="left")
    hi = np.searchsorted(centre_b, centre_a + SPACING, side="right")
    near_b = cum[hi] - cum[lo]
    weight = np.exp(-np.abs(centre_a - tss_index) / motifs.DECAY)
    return float(np.sum(occ_a * weight * near_b))


def saturate(activity: np.ndarray, reference: float) -> np.ndarray:
    """A person's response S(P) = P^HILL / (P^HILL + p_ref^HILL) to the summed pair activity P of
    both haplotypes; ``reference`` = p_ref, that of one reference promoter (S = 1/2 there)."""
    x = np.asarray(activity, dtype=np.float64) / reference if reference > 0 else np.asarray(activity) * 0.0 + 1.0
    return x**HILL / (x**HILL + 1.0)


def plant(
    *,
    reference: np.ndarray,
    tss: int,
    radius: int,
    site_positions: np.ndarray,
    site_maf: np.ndarray,
    rng: np.random.Generator,
) -> list[motifs.PlantedMotif]:
    """Write pairs of partner consensus sequences into ``reference`` (edited in place) near ``tss``.

    Up to PAIRS_ON_VARIANTS pairs have one partner (drawn at random) placed with a strong position
    on a segregating site (MAF >= 5% first, then any), its partner PLANT_GAP bp away (centre to
    centre, either side); PAIRS_FIXED more pairs sit at random within radius / 2. Sites never
    overlap; strands are drawn uniformly.
    """
    lo, hi = tss - radius + 12 + SPACING, tss + radius - 12 - SPACING
    inside = (site_positions >= lo) & (site_positions <= hi)
    common = site_positions[inside & (site_maf >= 0.05)]
    rest = site_positions[inside & (site_maf < 0.05)]
    targets = [*rng.permutation(common).tolist(), *rng.permutation(rest).tolist()]
    planted: list[motifs.PlantedMotif] = []
    used: list[tuple[int, int]] = []

    def free(start: int, motif: motifs.Motif) -> bool:
        end = start + motif.length - 1
        inside = start >= max(1, tss - radius) and end <= min(reference.size, tss + radius)
        return inside and not any(not (end < u or start > v) for u, v in used)

    def write(start: int, motif: motifs.Motif, strand: str, on_variant: bool) -> None:
        best = motif.best if strand == "+" else motifs._revcomp(motif.best)
        reference[start - 1 : start - 1 + motif.length] = np.frombuffer(best, dtype=np.uint8)
        used.append((start, start + motif.length - 1))
        planted.append(motifs.PlantedMotif(motif.name, start, start + motif.length - 1, strand, on_variant))

    def place_pair(first_start: int, first: motifs.Motif, strand: str, on_variant: bool) -> bool:
        second = _motif(PARTNERS[1] if first.name == PARTNERS[0] else PARTNERS[0])
        gap = int(rng.integers(PLANT_GAP[0], PLANT_GAP[1] + 1)) * (1 if rng.random() < 0.5 else -1)
        centre = first_start + (first.length - 1) / 2 + gap
        second_start = int(round(centre - (second.length - 1) / 2))
        second_strand = "+" if rng.random() < 0.5 else "-"
        apart = second_start > first_start + first.length - 1 or second_start + second.length - 1 < first_start
        if not (apart and free(first_start, first) and free(second_start, second)):
            return False
        write(first_start, first, strand, on_variant)
        write(second_start, second, second_strand, False)
        return True

    pairs_on_variants = 0
    for site in targets:
        if pairs_on_variants >= PAIRS_ON_VARIANTS:
            break
        first = _motif(PARTNERS[int(rng.integers(2))])
        strand = "+" if rng.random() < 0.5 else "-"
        k = int(rng.choice(first.strong_positions))
        offset = k if strand == "+" else first.length - 1 - k
        pairs_on_variants += place_pair(int(site) - offset, first, strand, True)
    for _ in range(PAIRS_FIXED):
        first = _motif(PARTNERS[int(rng.integers(2))])
        strand = "+" if rng.random() < 0.5 else "-"
        for _attempt in range(20):
            start = tss + int(rng.integers(-radius // 2, radius // 2 - first.length + 1))
            if place_pair(start, first, strand, False):
                break
    return sorted(planted, key=lambda p: p.start)
