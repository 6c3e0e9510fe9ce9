"""Cis-heritability of each gene: the ceiling a genetic predictor of expression can reach.

Haseman-Elston cross-product regression (GCTA ``--HEreg``, the "HE-CP" estimator): with y
standardised, the products y_i * y_j of every pair i < j are regressed (OLS, with intercept) on
the genetic relationship A_ij of the pair; the slope estimates h2. A is built from the gene's cis
variants, so the slope is the share of expression variance those variants explain.

HE is used rather than REML because it is closed-form: one estimate is a few (samples, samples)
reductions, so 20,000 genes cost seconds, and its delete-one-individual jackknife is exact and
vectorised (the sums over pairs lose one row each). It is unbiased but less efficient than REML
and can fall outside [0, 1]; estimates are kept unclipped so averages stay unbiased.

Everything here is pure numpy. Shapes: dosages (variants, samples); A (samples, samples);
y (samples,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def grm(dosages: np.ndarray) -> np.ndarray:
    """(samples, samples) genetic relationship matrix A = Z Z^T / m of standardised dosages.

    dosages: (variants, samples) ALT dosages in 0..2. Each variant is centred on 2p and scaled by
    sqrt(2p(1-p)) with p its ALT frequency in these samples (GCTA's GRM); monomorphic variants
    carry no information and are dropped. With no polymorphic variant A is all zeros.
    """
    d = np.asarray(dosages, dtype=np.float64)
    n = d.shape[1]
    p = d.mean(axis=1) / 2
    keep = (p > 0) & (p < 1)
    if not keep.any():
        return np.zeros((n, n))
    z = (d[keep] - 2 * p[keep, None]) / np.sqrt(2 * p[keep, None] * (1 - p[keep, None]))
    return (z.T @ z) / keep.sum()


def _standardise(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    sd = y.std()
    return (y - y.mean()) / sd if sd > 0 else np.zeros_like(y)


def he_regression(y: np.ndarray, A: np.ndarray) -> tuple[float, np.ndarray]:
    """HE-CP estimate of h2 and its delete-one-individual values.

    y: (samples,) phenotype (standardised here); A: (samples, samples) GRM.
    Returns (h2, h2_without) with h2_without (samples,) the estimate with each individual's
    pairs removed (y's standardisation is kept fixed, as in a jackknife of the regression).
    NaN when the relationships do not vary across pairs (fewer than 3 samples, or no variant).
    """
    n = len(y)
    if n < 3:
        return float("nan"), np.full(n, np.nan)
    y = _standardise(y)
    diag = np.diag(A)
    Ay = A @ y
    # per-individual sums over its pairs (j != i) ...
    r_x = A.sum(axis=1) - diag
    r_xx = (A * A).sum(axis=1) - diag * diag
    r_z = y * (y.sum() - y)
    r_xz = y * Ay - diag * y * y
    # ... and over all pairs i < j (each pair appears in two rows)
    s_x, s_xx, s_z, s_xz = r_x.sum() / 2, r_xx.sum() / 2, r_z.sum() / 2, r_xz.sum() / 2
    n_pairs = n * (n - 1) / 2

    def slope(sx, sxx, sz, sxz, m):
        var = sxx - sx * sx / m
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(var > 1e-12 * np.maximum(sxx, 1e-300), (sxz - sx * sz / m) / var, np.nan)

    h2 = float(slope(s_x, s_xx, s_z, s_xz, n_pairs))
    without = slope(s_x - r_x, s_xx - r_xx, s_z - r_z, s_xz - r_xz, n_pairs - (n - 1))
    return h2, np.asarray(without, dtype=np.float64)


def jackknife_se(estimate_without: np.ndarray) -> float:
    """Delete-one jackknife standard error from the (samples,) leave-one-out estimates."""
    t = np.asarray(estimate_without, dtype=np.float64)
    n = len(t)
    if n < 2 or not np.all(np.isfinite(t)):
        return float("nan")
    return float(np.sqrt((n - 1) / n * np.sum((t - t.mean()) ** 2)))


@dataclass(frozen=True)
class CisHeritability:
    """One gene's estimate: ``h2`` (mean over the K training sets), its jackknife ``se``,
    the ``n`` individuals and the ``m`` polymorphic cis variants behind it."""

    h2: float
    se: float
    n: int
    m: int


def cis_heritability(
    y: np.ndarray,
    dosages: np.ndarray,
    folds: np.ndarray,
    targets: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> CisHeritability:
    """h2 of one gene estimated inside the training folds, on the scale the models see.

    For every outer fold k, ``targets(y, train)`` turns raw expression into what the models of
    that fold are trained on (the cross-validation loop's own function,
    ``hapexpr.crossval.fold_targets``: ``--normalise`` then residualisation on the covariates,
    both learnt on the training individuals), and HE regression is run on those training
    individuals alone; the estimate is the mean of the K training-set estimates. Its SE is the
    delete-one-individual jackknife of that whole mean (an individual leaves the K - 1 training
    sets it belongs to). The scale matters: h2 is not invariant to a non-linear transform, and on
    log-normal raw values HE on the raw scale is biased low against the inverse-normal scale the
    models are scored on (0.10 against 0.20 in tests/test_heritability.py's check).

    y: (samples,) raw expression; dosages: (variants, samples); folds: (samples,) fold ids;
    targets: (y (samples,), train (samples,) bool) -> (samples,) float64.
    """
    n = len(y)
    A = grm(dosages)
    m = int(np.sum(np.ptp(np.asarray(dosages), axis=1) > 0)) if len(dosages) else 0
    if m == 0:
        return CisHeritability(float("nan"), float("nan"), n, 0)
    ks = np.unique(folds)
    est = np.empty(len(ks))
    without = np.empty((len(ks), n))
    for i, k in enumerate(ks):
        train = folds != k
        y_res = targets(y, train)
        h2_k, wo = he_regression(y_res[train], A[np.ix_(train, train)])
        est[i] = h2_k
        without[i] = h2_k  # an individual outside this training set leaves its estimate as is
        without[i, train] = wo
    return CisHeritability(float(est.mean()), jackknife_se(without.mean(axis=0)), n, m)
