"""Haseman-Elston cis-heritability against a brute-force regression, a known simulated h2 and an
independent REML (grid-searched likelihood)."""

import numpy as np
import pytest

from hapexpr.crossval import residualise
from hapexpr.heritability import cis_heritability, grm, he_regression, jackknife_se


def _cohort(rng, n, m, h2):
    """(variants, samples) dosages and y with an infinitesimal cis effect of heritability h2."""
    p = rng.uniform(0.05, 0.5, size=m)
    d = rng.binomial(2, p[:, None], size=(m, n)).astype(float)
    z = (d - 2 * p[:, None]) / np.sqrt(2 * p * (1 - p))[:, None]
    y = rng.normal(scale=np.sqrt(h2 / m), size=m) @ z + rng.normal(scale=np.sqrt(1 - h2), size=n)
    return d, y


def _pairs_regression(y, A, keep):
    """Slope of y_i y_j on A_ij over the pairs i < j of ``keep`` (y standardised on all samples)."""
    ys = (y - y.mean()) / y.std()
    i, j = np.triu_indices(len(y), 1)
    use = keep[i] & keep[j]
    return np.polyfit(A[i, j][use], (ys[i] * ys[j])[use], 1)[0]


def test_grm_matches_its_definition():
    rng = np.random.default_rng(0)
    d, _ = _cohort(rng, 30, 12, 0.3)
    d[3] = 2.0  # monomorphic: dropped
    p = d.mean(1) / 2
    keep = (p > 0) & (p < 1)
    z = (d[keep] - 2 * p[keep, None]) / np.sqrt(2 * p[keep] * (1 - p[keep]))[:, None]
    np.testing.assert_allclose(grm(d), z.T @ z / keep.sum())


def test_he_slope_and_jackknife_match_brute_force_regressions():
    rng = np.random.default_rng(1)
    d, y = _cohort(rng, 50, 20, 0.5)
    A = grm(d)
    h2, without = he_regression(y, A)
    assert h2 == pytest.approx(_pairs_regression(y, A, np.ones(50, bool)), abs=1e-10)
    for k in (0, 17, 49):
        keep = np.arange(50) != k
        assert without[k] == pytest.approx(_pairs_regression(y, A, keep), abs=1e-10)


def _reml_grid(y, A):
    """REML h2 by grid search: y ~ N(1 mu, s2 (h2 A + (1 - h2) I)), mean profiled out by
    projecting onto the contrasts orthogonal to the intercept."""
    n = len(y)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), np.eye(n)[:, : n - 1]]))
    c = q[:, 1:]  # (n, n-1) orthonormal contrasts, orthogonal to 1
    s, u = np.linalg.eigh(c.T @ A @ c)
    t = u.T @ (c.T @ y)
    grid = np.linspace(0.001, 0.999, 999)
    lam = grid[:, None] * s[None, :] + (1 - grid[:, None])
    s2 = (t**2 / lam).mean(axis=1)
    loglik = -0.5 * (len(t) * np.log(s2) + np.log(lam).sum(axis=1))
    return grid[np.argmax(loglik)]


def test_he_recovers_a_known_h2_and_agrees_with_reml():
    rng = np.random.default_rng(2)
    estimates, ses = [], []
    for rep in range(12):
        d, y = _cohort(rng, 500, 40, 0.5)
        A = grm(d)
        h2, without = he_regression(y, A)
        se = jackknife_se(without)
        estimates.append(h2)
        ses.append(se)
        assert abs(h2 - 0.5) < 2.5 * se
        if rep < 4:  # the likelihood is an independent estimator of the same quantity
            assert abs(h2 - _reml_grid(y, A)) < 2 * se
    estimates, ses = np.array(estimates), np.array(ses)
    assert abs(estimates.mean() - 0.5) < 2.5 * ses.mean() / np.sqrt(len(estimates))
    # the jackknife SE is the sd of the estimator across cohorts (within sampling noise of 12 reps)
    assert 0.6 < estimates.std(ddof=1) / ses.mean() < 1.5


def test_null_gene_is_near_zero():
    rng = np.random.default_rng(3)
    d, y = _cohort(rng, 400, 30, 0.0)
    h2, without = he_regression(y, grm(d))
    assert abs(h2) < 3 * jackknife_se(without)


def test_cis_heritability_is_the_mean_of_training_fold_estimates():
    rng = np.random.default_rng(4)
    n = 200
    d, y = _cohort(rng, n, 25, 0.4)
    cov = rng.normal(size=(n, 2))
    y = y + cov @ np.array([1.0, -2.0])
    folds = np.arange(n) % 5
    h = cis_heritability(y, d, folds, lambda y, train: residualise(y, cov, train))
    A = grm(d)
    direct = []
    for k in range(5):
        train = folds != k
        direct.append(he_regression(residualise(y, cov, train)[train], A[np.ix_(train, train)])[0])
    assert h.h2 == pytest.approx(np.mean(direct), abs=1e-12)
    assert h.m == 25 and h.n == n and 0 < h.se < 0.5
    # the covariates would dominate without the residualisation
    assert abs(h.h2 - 0.4) < 3 * h.se


def test_no_variant_gives_nan():
    h = cis_heritability(np.arange(10.0), np.zeros((0, 10)), np.arange(10) % 2, lambda y, train: y)
    assert np.isnan(h.h2) and np.isnan(h.se) and h.m == 0


def test_fold_averaged_jackknife_se_matches_the_spread_across_cohorts():
    rng = np.random.default_rng(5)
    n = 300
    folds = np.arange(n) % 5
    est, se = [], []
    for _ in range(20):
        d, y = _cohort(rng, n, 30, 0.4)
        h = cis_heritability(y, d, folds, lambda y, train: residualise(y, None, train))
        est.append(h.h2)
        se.append(h.se)
    assert abs(np.mean(est) - 0.4) < 3 * np.mean(se) / np.sqrt(20)
    assert 0.6 < np.std(est, ddof=1) / np.mean(se) < 1.5
