"""Genetic architectures: how a gene's causal variants turn into its genetic value g.

Each architecture builds one or more :class:`Component` (unscaled values per person plus the
causal variants behind them); :func:`genetic_value` scales them so var(g) = h2. The exact rules
and constants are in docs/simulate.md ("Genetic architectures"); they were fixed before any
benchmark and must not be tuned to favour a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from hapexpr.haplotypes import build_haplotypes
from hapexpr.simulate import grammar, motifs
from hapexpr.simulate.layout import Gene
from hapexpr.simulate.phenotypes import CausalEffect, GeneticModel
from hapexpr.simulate.shares import variance_shares
from hapexpr.simulate.variants import Variants

ARCHITECTURES = ("additive", "motif", "motif-grammar", "cis-interaction", "rare", "distal", "mixed")
# Share of the genetic variance each component gets in "mixed" (renormalised over the
# components a gene can have, e.g. a gene without a rare variant has no rare component).
MIXED_SHARES = {"additive": 0.35, "motif": 0.25, "distal": 0.15, "rare": 0.15, "cis-interaction": 0.10}
RARE_MAX_AF = 0.01
COMMON_MAF = 0.05
# In "mixed" each component has fewer causal variants than on its own.
N_CAUSAL = {"additive": (1, 5), "rare": (1, 5), "distal": (1, 3), "pairs": (1, 3)}
N_CAUSAL_MIXED = {"additive": (1, 3), "rare": (1, 2), "distal": (1, 2), "pairs": (1, 1)}
MOTIF_MIN_EFFECT = 0.01  # |c(ALT alone) - c(reference)| below this: not listed as a motif variant
# cis-interaction pairs: ALT frequency range of each member, people needed as double heterozygotes
# in cis and in trans (so phase is learnable), and the pair's own phase-dependent share below which
# it is effectively additive (fixed before any benchmark; docs/simulate.md).
PAIR_AF = (0.02, 0.98)
MIN_PHASE_PEOPLE = 5
MIN_PAIR_PHASE_SHARE = 0.25


def uses_distal(architecture: str) -> bool:
    return architecture in ("distal", "mixed")


def uses_motifs(architecture: str) -> bool:
    return architecture in ("motif", "mixed", "motif-grammar")


def planter(architecture: str):
    """The function that plants this architecture's motif sites (uses_motifs must hold)."""
    return grammar.plant if architecture == "motif-grammar" else motifs.plant


@dataclass(frozen=True)
class Component:
    """Unscaled genetic values (samples,), the causal variants behind them (same units), and the
    rule that computes the values from any (variants, people * 2) haplotypes (cohort rows)."""

    role: str
    values: np.ndarray
    entries: tuple[CausalEffect, ...]
    rule: Callable[[np.ndarray], np.ndarray]


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

    def rule(h: np.ndarray) -> np.ndarray:
        return beta @ _dosage(h[chosen])

    entries = tuple(CausalEffect(int(r), role, float(b)) for r, b in zip(chosen, beta))
    return Component(role, rule(haplotypes), entries, rule)


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


def _double_heterozygotes(haplotypes: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """People heterozygous at both a and b with the two ALT alleles on one haplotype (cis) and on
    different haplotypes (trans)."""
    h = haplotypes.astype(bool)
    het = (h[a, 0::2] ^ h[a, 1::2]) & (h[b, 0::2] ^ h[b, 1::2])
    cis = het & ((h[a, 0::2] & h[b, 0::2]) | (h[a, 1::2] & h[b, 1::2]))
    return int(cis.sum()), int((het & ~cis).sum())


def pair_rejection(haplotypes: np.ndarray, a: int, b: int) -> str | None:
    """Why the pair (a, b) cannot carry a learnable cis interaction in this cohort, or None.

    Rejected: a pair whose ALT alleles never share a haplotype (the product is 0 for everyone);
    a nested pair (every haplotype with one ALT allele has the other: the product is one allele's
    carriers); fewer than MIN_PHASE_PEOPLE double heterozygotes in cis or in trans; and an
    effectively additive pair, whose own phase-dependent share (hapexpr.simulate.shares) is
    below MIN_PAIR_PHASE_SHARE.
    """
    h = haplotypes.astype(bool)
    both = h[a] & h[b]
    if not both.any():
        return "never on one haplotype"
    if not (h[a] & ~h[b]).any() or not (h[b] & ~h[a]).any():
        return "nested"
    n_cis, n_trans = _double_heterozygotes(haplotypes, a, b)
    if min(n_cis, n_trans) < MIN_PHASE_PEOPLE:
        return f"{n_cis} double heterozygotes in cis and {n_trans} in trans (< {MIN_PHASE_PEOPLE})"
    _, phase = variance_shares(both[0::2].astype(np.float64) + both[1::2], _dosage(haplotypes[[a, b]]))
    if not phase >= MIN_PAIR_PHASE_SHARE:
        return f"effectively additive (phase-dependent share {phase:.3f} < {MIN_PAIR_PHASE_SHARE})"
    return None


def cis_component(rows: np.ndarray, haplotypes: np.ndarray, n_range, rng) -> Component | None:
    """1..n pairs of variants whose effect exists only when both ALT alleles share a haplotype.

    Every pair of variants in ``rows`` with ALT frequency within PAIR_AF is examined; the pairs
    :func:`pair_rejection` accepts are drawn from at random (no accepted pair: no component).
    """
    af = haplotypes[rows].mean(axis=1) if rows.size else np.zeros(0)
    candidates = rows[(af >= PAIR_AF[0]) & (af <= PAIR_AF[1])]
    accepted = [(int(a), int(b)) for a, b in combinations(candidates, 2) if pair_rejection(haplotypes, a, b) is None]
    if not accepted:
        return None
    want = int(rng.integers(n_range[0], n_range[1] + 1))
    picked = rng.choice(len(accepted), size=min(want, len(accepted)), replace=False)
    pairs = sorted(accepted[i] for i in picked.tolist())
    gamma = rng.normal(size=len(pairs))
    entries = []
    for (a, b), g in zip(pairs, gamma):
        entries += [CausalEffect(a, "cis-interaction", float(g), b), CausalEffect(b, "cis-interaction", float(g), a)]
    entries = tuple(entries)

    def rule(h: np.ndarray) -> np.ndarray:
        return cis_pair_values(h, entries)

    return Component("cis-interaction", rule(haplotypes), entries, rule)


def haplotype_contributions(
    *,
    gene: Gene,
    variants: Variants,
    rows: np.ndarray,
    reference: np.ndarray,
    radius: int,
    haplotypes: np.ndarray | None = None,
    score: Callable[[bytes, int], float] = motifs.contribution,
    removals: bool = False,
) -> tuple[np.ndarray, dict[int, float], float, dict[int, float]]:
    """Motif contributions c(h) of every haplotype (people * 2,), each variant's ALT-alone change,
    c(ref), and (with ``removals``) each variant's largest |change| when its ALT allele is removed
    from a haplotype that carries it (its effect on the backgrounds of the cohort; else empty).

    The promoter is reference positions TSS - radius .. TSS + radius (clipped to the contig) with
    the haplotype's ALT alleles applied as ``bcftools consensus`` does (hapexpr.haplotypes).
    ``haplotypes`` (variants, people * 2), rows as ``variants``, defaults to the cohort's;
    ``score`` is the rule from promoter sequence and TSS offset to c(h) (motif or grammar).
    """
    start, end = max(1, gene.tss - radius), min(reference.size, gene.tss + radius)
    inside = rows[(variants.pos[rows] >= start) & (variants.pos[rows] <= end)]
    region = reference[start - 1 : end].tobytes()
    pos = variants.pos[inside]
    ref = [variants.ref[i] for i in inside.tolist()]
    alt = [variants.alt[i] for i in inside.tolist()]
    hap = variants.haplotypes if haplotypes is None else haplotypes
    alleles = hap[inside].T.astype(bool)  # (haplotypes, variants)
    unique, index = np.unique(alleles, axis=0, return_inverse=True)

    def scored(rows_of_alleles: np.ndarray) -> np.ndarray:
        built = build_haplotypes(region, start, pos, ref, alt, rows_of_alleles)
        return np.array([score(h.sequence, h.offset_of(gene.tss)) for h in built])

    per_unique = scored(unique)
    per_haplotype = per_unique[np.asarray(index).ravel()]
    base = float(scored(np.zeros((1, inside.size), dtype=bool))[0])
    singles = scored(np.eye(inside.size, dtype=bool)) - base if inside.size else np.zeros(0)
    reach: dict[int, float] = {}
    if removals:
        # Removing an ALT allele from a real haplotype always gives a valid one (no allele of a
        # deletion's span can appear), unlike adding one.
        for k, row in enumerate(inside.tolist()):
            carriers = np.flatnonzero(unique[:, k])
            if carriers.size:
                without = unique[carriers].copy()
                without[:, k] = False
                reach[int(row)] = float(np.abs(per_unique[carriers] - scored(without)).max())
    return per_haplotype, {int(r): float(d) for r, d in zip(inside.tolist(), singles)}, base, reach


def motif_component(*, gene, variants, rows, reference, radius) -> Component | None:
    promoter = dict(gene=gene, variants=variants, rows=rows, reference=reference, radius=radius)
    c, singles, _, _ = haplotype_contributions(**promoter)
    entries = tuple(CausalEffect(r, "motif", d) for r, d in singles.items() if abs(d) >= MOTIF_MIN_EFFECT)

    def rule(h: np.ndarray) -> np.ndarray:
        per_haplotype = haplotype_contributions(**promoter, haplotypes=h)[0]
        return per_haplotype[0::2] + per_haplotype[1::2]

    return Component("motif", c[0::2] + c[1::2], entries, rule)


def grammar_component(*, gene, variants, rows, reference, radius) -> Component | None:
    """motif-grammar: S(p(h1) + p(h2)) per person (hapexpr.simulate.grammar).

    A variant is causal when its ALT allele changes p by MOTIF_MIN_EFFECT or more on the reference
    or on a cohort haplotype that carries it (a rule with interactions has background-dependent
    effects); its listed effect is S(p_ref + p(ref with this ALT)) - S(2 p_ref), one copy on the
    reference background (S half-saturated at p_ref, one reference promoter's activity).
    """
    promoter = dict(
        gene=gene, variants=variants, rows=rows, reference=reference, radius=radius, score=grammar.pair_activity
    )
    p, singles, base, reach = haplotype_contributions(**promoter, removals=True)
    reference_value = grammar.saturate(2 * base, base)
    entries = tuple(
        CausalEffect(r, "motif-grammar", float(grammar.saturate(2 * base + d, base) - reference_value))
        for r, d in singles.items()
        if max(abs(d), reach.get(r, 0.0)) >= MOTIF_MIN_EFFECT
    )

    def rule(h: np.ndarray) -> np.ndarray:
        per_haplotype = haplotype_contributions(**promoter, haplotypes=h)[0]
        return grammar.saturate(per_haplotype[0::2] + per_haplotype[1::2], base)

    return Component("motif-grammar", grammar.saturate(p[0::2] + p[1::2], base), entries, rule)


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
    if architecture == "motif-grammar":
        built.append(grammar_component(gene=gene, variants=variants, rows=near, reference=reference, radius=radius))
    if architecture in ("cis-interaction", "mixed"):
        built.append(cis_component(near, hap, n["pairs"], rng))
    if architecture in ("rare", "mixed"):
        built.append(rare_component(near, hap, n["rare"], rng))
    if architecture in ("distal", "mixed"):
        built.append(_additive("distal", distal_rows, hap, _common(distal_rows, hap), n["distal"], rng))
    return [c for c in built if c is not None and c.values.var() > 1e-12]


def genetic_value(
    parts: list[Component], h2: float, *, mixed: bool
) -> tuple[np.ndarray, list[CausalEffect], GeneticModel]:
    """g (samples,) with var(g) = h2, every causal entry rescaled into expression units, and the
    model that gives g from any people's haplotypes.

    Alone, a component is scaled to variance h2. In "mixed" each is first scaled to variance
    share_k * h2 (shares renormalised over the components present), then the sum is rescaled so
    var(g) = h2 exactly (components are not orthogonal).
    """
    if h2 <= 0 or not parts:
        n = parts[0].values.size if parts else 0
        return np.zeros(n), [], GeneticModel()
    shares = np.array([MIXED_SHARES[c.role] if mixed else 1.0 for c in parts])
    shares = shares / shares.sum()
    factors = [np.sqrt(s * h2 / c.values.var()) for s, c in zip(shares, parts)]
    g = sum(f * (c.values - c.values.mean()) for f, c in zip(factors, parts))
    total = np.sqrt(h2 / g.var()) if g.var() > 1e-12 else 0.0
    entries = [replace(e, effect=e.effect * f * total) for f, c in zip(factors, parts) for e in c.entries]
    model = GeneticModel(
        tuple(c.rule for c in parts),
        tuple(float(f * total) for f in factors),
        tuple(float(c.values.mean()) for c in parts),
    )
    return g * total, entries, model
