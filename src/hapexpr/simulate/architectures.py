"""Genetic architectures: how a gene's causal variants turn into its genetic value g.

Each architecture builds one or more :class:`Component` (unscaled values per person plus the
causal variants behind them); :func:`genetic_value` scales them so var(g) = h2. The exact rules
and constants are in docs/simulate.md ("Genetic architectures"); they were fixed before any
benchmark and must not be tuned to favour a method.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hapexpr.haplotypes import build_haplotypes
from hapexpr.simulate import motifs
from hapexpr.simulate.layout import Gene
from hapexpr.simulate.phenotypes import CausalEffect
from hapexpr.simulate.variants import Variants

ARCHITECTURES = ("additive", "motif", "cis-interaction", "rare", "distal", "mixed")
# Share of the genetic variance each component gets in "mixed" (renormalised over the
# components a gene can have, e.g. a gene without a rare variant has no rare component).
MIXED_SHARES = {"additive": 0.35, "motif": 0.25, "distal": 0.15, "rare": 0.15, "cis-interaction": 0.10}
RARE_MAX_AF = 0.01
COMMON_MAF = 0.05
# In "mixed" each component has fewer causal variants than on its own.
N_CAUSAL = {"additive": (1, 5), "rare": (1, 5), "distal": (1, 3), "pairs": (1, 3)}
N_CAUSAL_MIXED = {"additive": (1, 3), "rare": (1, 2), "distal": (1, 2), "pairs": (1, 1)}
MOTIF_MIN_EFFECT = 0.01  # |c(ALT alone) - c(reference)| below this: not listed as a motif variant


def uses_distal(architecture: str) -> bool:
    return architecture in ("distal", "mixed")


def uses_motifs(architecture: str) -> bool:
    return architecture in ("motif", "mixed")


@dataclass(frozen=True)
class Component:
    """Unscaled genetic values (samples,) and the causal variants behind them (same units)."""

    role: str
    values: np.ndarray
    entries: tuple[CausalEffect, ...]


def _dosage(haplotypes: np.ndarray) -> np.ndarray:
    return (haplotypes[..., 0::2] + haplotypes[..., 1::2]).astype(np.float64)


def _additive(
    role: str,
    rows: np.ndarray,
    haplotypes: np.ndarray,
    candidates: np.ndarray,
    n_range: tuple[int, int],
    rng: np.random.Generator,
) -> Component | None:
    """1..n causal variants among ``candidates`` with effects N(0, 1) per ALT allele."""
    if candidates.size == 0:
        return None
    n = int(min(rng.integers(n_range[0], n_range[1] + 1), candidates.size))
    chosen = np.sort(rng.choice(candidates, size=n, replace=False))
    beta = rng.normal(size=n)
    values = beta @ _dosage(haplotypes[chosen])
    return Component(role, values, tuple(CausalEffect(int(r), role, float(b)) for r, b in zip(chosen, beta)))


def _common(rows: np.ndarray, haplotypes: np.ndarray) -> np.ndarray:
    """Rows with MAF >= 5%; failing any >= 1%; failing any the three most common (as today's picker)."""
    af = haplotypes[rows].mean(axis=1) if rows.size else np.zeros(0)
    maf = np.minimum(af, 1 - af)
    for cut in (COMMON_MAF, 0.01):
        if np.any(maf >= cut):
            return rows[maf >= cut]
    top = np.argsort(-maf, kind="stable")[:3]
    return np.sort(rows[top][maf[top] > 0])


def rare_component(rows: np.ndarray, haplotypes: np.ndarray, n_range, rng) -> Component | None:
    """Causal ALT alleles with cohort frequency 0 < AF < 1% (large per-allele effects after scaling)."""
    af = haplotypes[rows].mean(axis=1) if rows.size else np.zeros(0)
    return _additive("rare", rows, haplotypes, rows[(af > 0) & (af < RARE_MAX_AF)], n_range, rng)


def cis_pair_values(haplotypes: np.ndarray, entries) -> np.ndarray:
    """(samples,) sum over pairs of gamma * (haplotypes carrying both ALT alleles), unscaled or not.

    ``haplotypes`` is (variants, samples * 2); each pair appears in ``entries`` twice (once per
    member, ``partner`` set); it is counted once, from the member with the smaller row.
    """
    n = haplotypes.shape[1] // 2
    values = np.zeros(n)
    for e in entries:
        if e.role == "cis-interaction" and e.row < e.partner:
            both = (haplotypes[e.row] & haplotypes[e.partner]).astype(np.float64)
            values += e.effect * (both[0::2] + both[1::2])
    return values


def _trans_double_heterozygotes(haplotypes: np.ndarray, a: int, b: int) -> int:
    """People carrying one ALT allele at each of a and b, on different haplotypes."""
    left = haplotypes[a, 0::2] & haplotypes[b, 1::2]
    right = haplotypes[a, 1::2] & haplotypes[b, 0::2]
    het = (haplotypes[a, 0::2] ^ haplotypes[a, 1::2]) & (haplotypes[b, 0::2] ^ haplotypes[b, 1::2])
    return int(np.sum((left | right) & het))


def cis_component(rows: np.ndarray, haplotypes: np.ndarray, n_range, rng) -> Component | None:
    """1..n pairs of variants whose effect exists only when both ALT alleles share a haplotype.

    Up to 200 random pairs are drawn among variants with ALT frequency in [5%, 95%]; a pair
    qualifies when 2%-50% of haplotypes carry both ALT alleles (so the product varies and is not
    one allele) and is preferred when someone carries the two in trans (so phase matters in this
    cohort); qualifying pairs without such a person fill up the remaining places.
    """
    af = haplotypes[rows].mean(axis=1) if rows.size else np.zeros(0)
    candidates = rows[(af >= COMMON_MAF) & (af <= 1 - COMMON_MAF)]
    if candidates.size < 2:
        return None
    want = int(rng.integers(n_range[0], n_range[1] + 1))
    preferred: list[tuple[int, int]] = []
    fallback: list[tuple[int, int]] = []
    for _ in range(200):
        if len(preferred) == want:
            break
        a, b = sorted(int(x) for x in rng.choice(candidates, size=2, replace=False))
        both = (haplotypes[a] & haplotypes[b]).mean()
        if not 0.02 <= both <= 0.5 or (a, b) in preferred or (a, b) in fallback:
            continue
        (preferred if _trans_double_heterozygotes(haplotypes, a, b) else fallback).append((a, b))
    pairs = sorted((preferred + fallback)[:want])
    if not pairs:
        return None
    gamma = rng.normal(size=len(pairs))
    entries = []
    for (a, b), g in zip(pairs, gamma):
        entries += [CausalEffect(a, "cis-interaction", float(g), b), CausalEffect(b, "cis-interaction", float(g), a)]
    return Component("cis-interaction", cis_pair_values(haplotypes, entries), tuple(entries))


def haplotype_contributions(
    *, gene: Gene, variants: Variants, rows: np.ndarray, reference: np.ndarray, radius: int
) -> tuple[np.ndarray, dict[int, float], float]:
    """Motif contributions c(h) of every haplotype (samples * 2,), each variant's ALT-alone change, c(ref).

    The promoter is reference positions TSS - radius .. TSS + radius (clipped to the contig) with
    the haplotype's ALT alleles applied as ``bcftools consensus`` does (hapexpr.haplotypes).
    """
    start, end = max(1, gene.tss - radius), min(reference.size, gene.tss + radius)
    inside = rows[(variants.pos[rows] >= start) & (variants.pos[rows] <= end)]
    region = reference[start - 1 : end].tobytes()
    pos = variants.pos[inside]
    ref = [variants.ref[i] for i in inside.tolist()]
    alt = [variants.alt[i] for i in inside.tolist()]
    alleles = variants.haplotypes[inside].T.astype(bool)  # (haplotypes, variants)
    unique, index = np.unique(alleles, axis=0, return_inverse=True)

    def score(rows_of_alleles: np.ndarray) -> np.ndarray:
        built = build_haplotypes(region, start, pos, ref, alt, rows_of_alleles)
        return np.array([motifs.contribution(h.sequence, h.offset_of(gene.tss)) for h in built])

    per_haplotype = score(unique)[np.asarray(index).ravel()]
    base = float(score(np.zeros((1, inside.size), dtype=bool))[0])
    singles = score(np.eye(inside.size, dtype=bool)) - base if inside.size else np.zeros(0)
    return per_haplotype, {int(r): float(d) for r, d in zip(inside.tolist(), singles)}, base


def motif_component(*, gene, variants, rows, reference, radius) -> Component | None:
    c, singles, _ = haplotype_contributions(gene=gene, variants=variants, rows=rows, reference=reference, radius=radius)
    values = c[0::2] + c[1::2]
    entries = tuple(CausalEffect(r, "motif", d) for r, d in singles.items() if abs(d) >= MOTIF_MIN_EFFECT)
    return Component("motif", values, entries)


def components(
    *,
    architecture: str,
    gene: Gene,
    variants: Variants,
    window_rows: np.ndarray,
    distal_rows: np.ndarray,
    reference: np.ndarray,
    window: int,
    rng: np.random.Generator,
) -> list[Component]:
    """The components of one gene under ``architecture`` (not "additive", which keeps today's code)."""
    hap = variants.haplotypes
    near = window_rows[np.abs(variants.pos[window_rows] - gene.tss) <= window // 2]
    mixed = architecture == "mixed"
    n = N_CAUSAL_MIXED if mixed else N_CAUSAL
    radius = min(motifs.RADIUS, window // 2)
    built: list[Component | None] = []
    if mixed:
        built.append(_additive("additive", near, hap, _common(near, hap), n["additive"], rng))
    if architecture in ("motif", "mixed"):
        built.append(motif_component(gene=gene, variants=variants, rows=near, reference=reference, radius=radius))
    if architecture in ("cis-interaction", "mixed"):
        built.append(cis_component(near, hap, n["pairs"], rng))
    if architecture in ("rare", "mixed"):
        built.append(rare_component(near, hap, n["rare"], rng))
    if architecture in ("distal", "mixed"):
        built.append(_additive("distal", distal_rows, hap, _common(distal_rows, hap), n["distal"], rng))
    return [c for c in built if c is not None and c.values.var() > 1e-12]


def genetic_value(parts: list[Component], h2: float, *, mixed: bool) -> tuple[np.ndarray, list[CausalEffect]]:
    """g (samples,) with var(g) = h2, and every causal entry rescaled into expression units.

    Alone, a component is scaled to variance h2. In "mixed" each is first scaled to variance
    share_k * h2 (shares renormalised over the components present), then the sum is rescaled so
    var(g) = h2 exactly (components are not orthogonal).
    """
    if h2 <= 0 or not parts:
        n = parts[0].values.size if parts else 0
        return np.zeros(n), []
    shares = np.array([MIXED_SHARES[c.role] if mixed else 1.0 for c in parts])
    shares = shares / shares.sum()
    factors = [np.sqrt(s * h2 / c.values.var()) for s, c in zip(shares, parts)]
    g = sum(f * (c.values - c.values.mean()) for f, c in zip(factors, parts))
    total = np.sqrt(h2 / g.var()) if g.var() > 1e-12 else 0.0
    entries = [replace(e, effect=e.effect * f * total) for f, c in zip(factors, parts) for e in c.entries]
    return g * total, entries
