"""How much of a gene's genetic value unphased genotypes can explain: the measured architecture.

Two shares of var(g), both in-sample least-squares fits on the cohort (docs/simulate.md,
"truth.tsv"): the additive share, R^2 of g on the ALT dosages of the gene's causal variants, and
the phase-dependent share, 1 - R^2 of g on those dosages and all their pairwise products
(squares included). The second is what no quadratic function of unphased genotypes captures: for
a cis pair it is exactly the part that depends on which haplotype carries each allele.
"""

from __future__ import annotations

import numpy as np


def _unexplained(g: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, g, rcond=None)
    resid = g - design @ coef
    return float(np.clip(resid.var() / g.var(), 0.0, 1.0))


def quadratic_design(dosage: np.ndarray) -> np.ndarray:
    """(samples, 1 + k + k(k+1)/2): intercept, the k dosages and every product d_a * d_b with a <= b.

    ``dosage`` is (variants, samples), ALT dosages 0..2.
    """
    k, n = dosage.shape
    a, b = np.triu_indices(k)
    return np.column_stack([np.ones(n), dosage.T, (dosage[a] * dosage[b]).T])


def variance_shares(g: np.ndarray, dosage: np.ndarray) -> tuple[float, float]:
    """(additive share, phase-dependent share) of var(g), each in [0, 1]; NaN when g does not vary.

    ``g`` is (samples,); ``dosage`` (variants, samples) holds the causal variants' ALT dosages.
    """
    n = g.size
    if n == 0 or g.var() <= 1e-12:
        return float("nan"), float("nan")
    if dosage.shape[0] == 0:
        return 0.0, 1.0
    additive = 1.0 - _unexplained(g, np.column_stack([np.ones(n), dosage.T]))
    return additive, _unexplained(g, quadratic_design(dosage))
