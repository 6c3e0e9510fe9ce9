"""Transcription-factor-like motifs: fixed position weight matrices, planting and scoring.

One rule turns any haplotype's promoter sequence into an expression contribution, the same for
every gene, so the effect of a variant follows from the bases it changes (docs/simulate.md,
"motif"). Sequences are uint8 ASCII arrays of A/C/G/T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name, IUPAC consensus, activity a_m (expression contribution of one fully bound site at the TSS).
MOTIFS: tuple[tuple[str, str, float], ...] = (
    ("M1_AP1like", "TGASTCAB", 1.0),
    ("M2_CAATlike", "RRCCAATSR", 0.6),
    ("M3_GCboxlike", "GGGGCGGGGC", 0.8),
    ("M4_repressor", "WACAGCTGTW", -0.8),
)
STRONG_P = 0.85  # a one-base IUPAC code: that base 0.85, the others 0.05 each
PAIR_P = 0.45  # a two-base code: each of its bases 0.45, the other two 0.05
THREE_P = 0.30  # a three-base code: each of its bases 0.30, the last 0.10
RADIUS = 500  # bp scanned on each side of the TSS (reduced to window // 2 for smaller windows)
DECAY = 200.0  # bp: a site's weight is exp(-|distance to the TSS| / DECAY)
THRESHOLD_DROP = 3.0  # bits: occupancy 1/2 at a score THRESHOLD_DROP below the consensus score
PLANT_ON_VARIANTS = 4  # planted sites per gene centred on a segregating site (when there are)
PLANT_FIXED = 2  # further planted sites per gene at random places within RADIUS / 2

_IUPAC = {
    "A": "A",
    "C": "C",
    "G": "G",
    "T": "T",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
    "N": "ACGT",
}
_CODE = np.full(256, -1, dtype=np.int64)
for _k, _b in enumerate(b"ACGT"):
    _CODE[_b] = _k


def pwm(consensus: str) -> np.ndarray:
    """(length, 4) base probabilities (A, C, G, T) of an IUPAC consensus, by the fixed rule above."""
    rows = []
    for letter in consensus:
        bases = _IUPAC[letter]
        p_in = {1: STRONG_P, 2: PAIR_P, 3: THREE_P, 4: 0.25}[len(bases)]
        p_out = (1.0 - p_in * len(bases)) / (4 - len(bases)) if len(bases) < 4 else 0.25
        rows.append([p_in if b in bases else p_out for b in "ACGT"])
    return np.asarray(rows)


@dataclass(frozen=True)
class Motif:
    name: str
    consensus: str
    activity: float
    log_odds: np.ndarray  # (length, 4) log2(p / 0.25)
    threshold: float  # bits

    @property
    def length(self) -> int:
        return self.log_odds.shape[0]

    @property
    def best(self) -> bytes:
        """The planted sequence: the most likely base of each position (first in ACGT order on ties)."""
        return bytes(b"ACGT"[i] for i in self.log_odds.argmax(axis=1))

    @property
    def strong_positions(self) -> np.ndarray:
        """Offsets whose consensus is a single base (a change there costs about 4 bits)."""
        return np.flatnonzero(self.log_odds.max(axis=1) > 1.5)


def _motif(name: str, consensus: str, activity: float) -> Motif:
    log_odds = np.log2(pwm(consensus) / 0.25)
    return Motif(name, consensus, activity, log_odds, float(log_odds.max(axis=1).sum() - THRESHOLD_DROP))


MOTIF_SET: tuple[Motif, ...] = tuple(_motif(*m) for m in MOTIFS)


def _scores(codes: np.ndarray, log_odds: np.ndarray) -> np.ndarray:
    """(starts,) PWM score in bits of every full-length placement of ``log_odds`` on ``codes``."""
    length = log_odds.shape[0]
    n = codes.size - length + 1
    if n <= 0:
        return np.zeros(0)
    total = np.zeros(n)
    for k in range(length):
        total += log_odds[k, codes[k : k + n]]
    return total


def contribution(sequence: bytes | np.ndarray, tss_index: int) -> float:
    """A haplotype's expression contribution c(h) from its promoter sequence.

    c(h) = sum over motifs m, starts i and both strands of a_m * o * exp(-|centre - tss| / DECAY),
    with o = 1 / (1 + exp(-(S - threshold_m))) and S the PWM log-odds score in bits; ``centre`` =
    i + (L - 1) / 2 and ``tss_index`` are 0-based offsets in ``sequence``. Bases other than ACGT
    score as the motif's worst base.
    """
    seq = np.frombuffer(bytes(sequence), dtype=np.uint8)
    codes = _CODE[seq]
    unknown = codes < 0
    comp = np.where(unknown, -1, 3 - codes)[::-1]  # reverse complement, as codes
    total = 0.0
    for motif in MOTIF_SET:
        # A fifth column (index -1 -> 4) holds the worst score for non-ACGT bases.
        lo = np.column_stack([motif.log_odds, motif.log_odds.min(axis=1)])
        forward = _scores(np.where(unknown, 4, codes), lo)
        reverse = _scores(np.where(comp < 0, 4, comp), lo)[::-1]  # start i on the + strand
        centres = np.arange(forward.size) + (motif.length - 1) / 2
        weight = np.exp(-np.abs(centres - tss_index) / DECAY)
        occupancy = _sigmoid(forward - motif.threshold) + _sigmoid(reverse - motif.threshold)
        total += motif.activity * float(np.sum(occupancy * weight))
    return total


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class PlantedMotif:
    """One planted site: reference positions start..end (1-based, inclusive), motif strand."""

    motif: str
    start: int
    end: int
    strand: str
    on_variant: bool


def plant(
    *,
    reference: np.ndarray,
    tss: int,
    radius: int,
    site_positions: np.ndarray,
    site_maf: np.ndarray,
    rng: np.random.Generator,
) -> list[PlantedMotif]:
    """Write motif consensus sequences into ``reference`` (the contig, edited in place) near ``tss``.

    Up to PLANT_ON_VARIANTS sites are centred so that a strong position of the motif falls on a
    segregating site (1-based ``site_positions`` within ``radius`` of the TSS; sites with minor
    allele frequency >= 5% first, then any), and PLANT_FIXED more sit at random within radius / 2.
    Sites never overlap each other; motif and strand are drawn uniformly.
    """
    lo, hi = tss - radius + 12, tss + radius - 12
    inside = (site_positions >= lo) & (site_positions <= hi)
    common = site_positions[inside & (site_maf >= 0.05)]
    rest = site_positions[inside & (site_maf < 0.05)]
    targets = [*rng.permutation(common).tolist(), *rng.permutation(rest).tolist()]
    planted: list[PlantedMotif] = []
    used: list[tuple[int, int]] = []

    def place(start: int, motif: Motif, strand: str, on_variant: bool) -> bool:
        end = start + motif.length - 1
        if start < max(1, tss - radius) or end > min(reference.size, tss + radius):
            return False
        if any(not (end < a or start > b) for a, b in used):
            return False
        seq = np.frombuffer(motif.best, dtype=np.uint8)
        if strand == "-":
            seq = np.frombuffer(_revcomp(motif.best), dtype=np.uint8)
        reference[start - 1 : end] = seq
        used.append((start, end))
        planted.append(PlantedMotif(motif.name, start, end, strand, on_variant))
        return True

    for site in targets:
        if sum(p.on_variant for p in planted) >= PLANT_ON_VARIANTS:
            break
        motif = MOTIF_SET[int(rng.integers(len(MOTIF_SET)))]
        strand = "+" if rng.random() < 0.5 else "-"
        k = int(rng.choice(motif.strong_positions))
        offset = k if strand == "+" else motif.length - 1 - k  # where the strong base sits on the + strand
        place(int(site) - offset, motif, strand, True)
    for _ in range(PLANT_FIXED):
        motif = MOTIF_SET[int(rng.integers(len(MOTIF_SET)))]
        strand = "+" if rng.random() < 0.5 else "-"
        for _attempt in range(20):
            start = tss + int(rng.integers(-radius // 2, radius // 2 - motif.length + 1))
            if place(start, motif, strand, False):
                break
    return sorted(planted, key=lambda p: p.start)


def _revcomp(seq: bytes) -> bytes:
    return seq[::-1].translate(bytes.maketrans(b"ACGT", b"TGCA"))
