"""Covariates (sex, genotype PCs) and expression with a known cis-genetic architecture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from hapexpr.simulate.layout import Gene
from hapexpr.simulate.variants import Variants

MIN_CAUSAL_MAF = 0.05


def dosages(haplotypes: np.ndarray) -> np.ndarray:
    """ALT dosages (variants, samples) in 0..2 from (variants, samples * 2) 0/1 haplotypes."""
    return (haplotypes[:, 0::2] + haplotypes[:, 1::2]).astype(np.float64)


def genotype_pcs(dosage: np.ndarray, *, n_pcs: int, min_maf: float = 0.05) -> np.ndarray:
    """Top ``n_pcs`` principal components of standardised dosages, as (pcs, samples) unit-variance scores.

    ``dosage`` is (variants, samples). Variants with cohort MAF below ``min_maf`` are left out, as
    in usual QTL pipelines. The PCs are the leading eigenvectors of the (samples, samples) Gram
    matrix, which is cheaper than an SVD when variants far outnumber samples. The sign of each PC
    is fixed (its largest-magnitude score is positive) so the output is reproducible. Fewer rows
    come back when the data have lower rank.
    """
    n_samples = dosage.shape[1]
    af = dosage.mean(axis=1) / 2
    common = np.minimum(af, 1 - af) >= min_maf
    x = (dosage[common].T - 2 * af[common]) / np.sqrt(2 * af[common] * (1 - af[common]))
    if x.shape[1] == 0:
        return np.zeros((0, n_samples))
    eigval, eigvec = np.linalg.eigh(x @ x.T)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    k = int(min(n_pcs, n_samples - 1, np.sum(eigval > 1e-8 * eigval[0])))
    scores = eigvec[:, :k] * np.sqrt(n_samples)
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(k)])
    return (scores * flip).T


@dataclass(frozen=True)
class CausalEffect:
    """One row of truth_variants.tsv: a variant's role in a gene's genetic value and its effect.

    ``row`` indexes the cohort's Variants; ``partner`` is the other variant of a cis-interaction
    pair (else -1); ``effect`` is in expression units (see docs/simulate.md for each role).
    """

    row: int
    role: str
    effect: float
    partner: int = -1


@dataclass(frozen=True)
class GeneticModel:
    """A gene's genetic value as a function of haplotypes, for the cohort's people or any others.

    ``g(H) = sum_k factors[k] * (rules[k](H) - means[k])``: ``H`` is (variants, people * 2) 0/1
    haplotypes whose rows are the cohort's variants (the :class:`Variants` rows), each rule gives
    (people,) unscaled values, ``means`` are the rules' cohort means. On the cohort it gives
    ``GeneTruth.genetic``; on people outside it, their true genetic value on the same scale (not
    re-centred on them).
    """

    rules: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
    factors: tuple[float, ...] = ()
    means: tuple[float, ...] = ()

    def __call__(self, haplotypes: np.ndarray) -> np.ndarray:
        g = np.zeros(haplotypes.shape[1] // 2)
        for rule, factor, mean in zip(self.rules, self.factors, self.means):
            g += factor * (rule(haplotypes) - mean)
        return g


@dataclass(frozen=True)
class GeneTruth:
    """What generated one gene's expression. ``effects`` are per ALT allele, in expression units.

    ``causal``/``effects`` list each causal variant once (effects of a variant with several
    roles summed); ``entries`` has one :class:`CausalEffect` per variant and role. ``genetic`` is
    the (samples,) genetic value g in expression units; ``model`` computes it from any people's
    haplotypes. ``additive_share``/``phase_share`` are measured on the cohort (hapexpr.simulate.shares).
    """

    gene: Gene
    h2: float
    h2_residualised: float
    causal: tuple[int, ...]  # row indices into the cohort's Variants
    effects: tuple[float, ...]
    covariate_effects: tuple[float, ...]
    architecture: str = "additive"
    entries: tuple[CausalEffect, ...] = ()
    genetic: np.ndarray | None = None
    model: GeneticModel = GeneticModel()
    additive_share: float = float("nan")
    phase_share: float = float("nan")


def _pick_causal(
    gene: Gene, variants: Variants, rows: np.ndarray, dosage: np.ndarray, window: int, rng: np.random.Generator
) -> np.ndarray:
    """1-5 causal rows within window/2 of the TSS; half the time one is an indel.

    Causal variants are drawn among those with MAF >= 5%; failing any, >= 1%; failing any, the
    three most common ones (a rare causal variant concentrates the genetic variance in a few
    people, as real rare-variant eQTLs do).
    """
    near = rows[np.abs(variants.pos[rows] - gene.tss) <= window // 2]
    af = dosage[near].mean(axis=1) / 2
    maf = np.minimum(af, 1 - af)
    candidates = near[maf >= MIN_CAUSAL_MAF]
    if candidates.size == 0:
        candidates = near[maf >= 0.01]
    if candidates.size == 0:
        candidates = np.sort(near[np.argsort(-maf, kind="stable")[:3]])
    if candidates.size == 0:
        return candidates
    n_causal = int(min(rng.integers(1, 6), candidates.size))
    indels = candidates[variants.kind[candidates] != "snv"]
    if indels.size and rng.random() < 0.5:
        first = indels[rng.integers(indels.size)]
        rest = candidates[candidates != first]
        chosen = [first, *rng.choice(rest, size=min(n_causal - 1, rest.size), replace=False).tolist()]
    else:
        chosen = rng.choice(candidates, size=n_causal, replace=False).tolist()
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _residualise(y: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Least-squares residuals of (samples,) y on (samples, k) design."""
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ beta


def simulate_expression(
    *,
    gene: Gene,
    variants: Variants,
    rows: np.ndarray,
    dosage: np.ndarray,
    covariates: np.ndarray,
    h2_target: float,
    window: int,
    covariate_sd: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, GeneTruth]:
    """One gene's expression (samples,) = genetic + covariate effects + noise, and its truth.

    The genetic part g = dosages @ effects is scaled to sample variance h2 and the noise e is
    drawn, made orthogonal to g and the covariates, and scaled to variance 1 - h2, so that
    var(g) / var(g + e) is exactly the recorded h2. ``covariates`` is (covariates, samples);
    each gets an effect drawn from N(0, covariate_sd^2). ``h2_residualised`` is the genetic
    fraction left after regressing expression on the covariates (PCs absorb a little of g).
    """
    n = dosage.shape[1]
    causal = _pick_causal(gene, variants, rows, dosage, window, rng) if h2_target > 0 else np.zeros(0, np.int64)
    raw = rng.normal(size=causal.size)
    g = raw @ dosage[causal] if causal.size else np.zeros(n)
    g = g - g.mean()
    h2 = h2_target if g.var() > 1e-12 else 0.0
    if h2 == 0.0:
        causal, raw, g = np.zeros(0, np.int64), np.zeros(0), np.zeros(n)
    scale = np.sqrt(h2 / g.var()) if h2 > 0 else 0.0
    model = GeneticModel()
    if h2 > 0:
        rows, weights = causal.copy(), raw.copy()
        model = GeneticModel(
            (lambda h: weights @ dosages(h[rows]),), (float(scale),), (float((raw @ dosage[causal]).mean()),)
        )
    effects, g = raw * scale, g * scale

    expression, truth = _with_noise(
        gene=gene,
        g=g,
        h2=h2,
        covariates=covariates,
        covariate_sd=covariate_sd,
        rng=rng,
        causal=tuple(causal.tolist()),
        effects=tuple(float(x) for x in effects),
        architecture="additive",
        entries=tuple(CausalEffect(int(r), "additive", float(x)) for r, x in zip(causal.tolist(), effects)),
    )
    return expression, replace(truth, model=model)


def expression_from_genetic(
    *,
    gene: Gene,
    g: np.ndarray,
    entries: list[CausalEffect],
    architecture: str,
    covariates: np.ndarray,
    covariate_sd: float,
    rng: np.random.Generator,
    model: GeneticModel = GeneticModel(),
) -> tuple[np.ndarray, GeneTruth]:
    """Expression (samples,) from a genetic value g already scaled to the target h2 (var(g) = h2).

    g is centred here; noise and covariate effects follow the rule of :func:`simulate_expression`.
    ``model`` (the rule that gave g) is kept in the truth for genes with h2 > 0.
    """
    g = g - g.mean()
    h2 = float(g.var()) if g.var() > 1e-12 else 0.0
    if h2 == 0.0:
        g, entries, model = np.zeros_like(g), [], GeneticModel()
    summed: dict[int, float] = {}
    for entry in entries:
        summed[entry.row] = summed.get(entry.row, 0.0) + entry.effect
    causal = tuple(sorted(summed))
    expression, truth = _with_noise(
        gene=gene,
        g=g,
        h2=h2,
        covariates=covariates,
        covariate_sd=covariate_sd,
        rng=rng,
        causal=causal,
        effects=tuple(summed[r] for r in causal),
        architecture=architecture,
        entries=tuple(sorted(entries, key=lambda e: (e.row, e.role))),
    )
    return expression, replace(truth, model=model)


def _with_noise(
    *,
    gene: Gene,
    g: np.ndarray,
    h2: float,
    covariates: np.ndarray,
    covariate_sd: float,
    rng: np.random.Generator,
    causal: tuple[int, ...],
    effects: tuple[float, ...],
    architecture: str,
    entries: tuple[CausalEffect, ...],
) -> tuple[np.ndarray, GeneTruth]:
    """Add noise orthogonal to g and the covariates (variance 1 - h2) and covariate effects."""
    n = g.size
    design = np.column_stack([np.ones(n), covariates.T])
    # In a tiny cohort (n <= covariates + 4) the noise could not stay orthogonal to the covariates
    # and still vary; it is then only made orthogonal to g and the intercept.
    e_design = np.column_stack([design, g]) if n > design.shape[1] + 3 else np.column_stack([np.ones(n), g])
    e = _residualise(rng.normal(size=n), e_design)
    e = e * np.sqrt((1 - h2) / e.var()) if e.var() > 0 else e
    h2 = float(g.var() / (g.var() + e.var())) if g.var() + e.var() > 0 else 0.0
    gamma = rng.normal(scale=covariate_sd, size=covariates.shape[0])
    expression = g + e + gamma @ covariates

    g_res = _residualise(g, design)
    denominator = g_res.var() + e.var()
    h2_res = float(g_res.var() / denominator) if denominator > 0 else 0.0
    truth = GeneTruth(
        gene=gene,
        h2=float(h2),
        h2_residualised=h2_res,
        causal=causal,
        effects=effects,
        covariate_effects=tuple(float(x) for x in gamma),
        architecture=architecture,
        entries=entries,
        genetic=g,
    )
    return expression, truth
