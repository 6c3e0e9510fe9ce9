"""Inverse-normal (and log2) normalisation fitted inside the training folds."""

import numpy as np
import pytest
from scipy.stats import norm, rankdata

from hapexpr.crossval import cross_validate_gene, residualise
from hapexpr.normalise import looks_unnormalised, transform_in_fold


def _y(n=80, seed=0):
    y = np.random.default_rng(seed).gamma(1.0, 50.0, size=n)
    y[5] = y[6]  # a tie
    return y


def test_all_individuals_agree_with_scipy_gtex_transform():
    y = _y()
    got = transform_in_fold(y, np.ones(len(y), bool), "inverse-normal")
    np.testing.assert_allclose(got, norm.ppf(rankdata(y) / (len(y) + 1)), rtol=0, atol=1e-12)


def test_held_out_values_never_shape_training_values():
    y = _y()
    train = np.arange(len(y)) % 5 != 0
    a = transform_in_fold(y, train, "inverse-normal")
    z = y.copy()
    z[~train] = np.random.default_rng(1).gamma(1.0, 500.0, size=(~train).sum())  # change every held-out value
    b = transform_in_fold(z, train, "inverse-normal")
    np.testing.assert_array_equal(a[train], b[train])
    np.testing.assert_allclose(a[train], norm.ppf(rankdata(y[train]) / (train.sum() + 1)))


def test_held_out_values_interpolate_between_training_ranks():
    y = np.array([1.0, 2.0, 3.0, 4.0, 1.5, 0.0, 9.0, 3.0])
    train = np.array([True, True, True, True, False, False, False, False])
    got = transform_in_fold(y, train, "inverse-normal")
    n = 4
    expected_ranks = [1, 2, 3, 4, 1.5, 0.5, 4.5, 3]  # between 1 and 2; below; above; equal to a training value
    np.testing.assert_allclose(got, norm.ppf(np.array(expected_ranks) / (n + 1)))


def test_log2_and_none():
    y = np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(transform_in_fold(y, np.ones(3, bool), "log2"), [0.0, 1.0, 2.0])
    assert transform_in_fold(y, np.ones(3, bool), "none") is not None
    with pytest.raises(ValueError):
        transform_in_fold(y, np.ones(3, bool), "quantile")


def test_cv_loop_normalises_inside_the_training_folds():
    rng = np.random.default_rng(0)
    n = 50
    X = rng.normal(size=(n, 3))
    y = np.exp(X[:, 0] + rng.normal(size=n))
    folds = np.arange(n) % 5

    class Mean:
        def fit(self, X, y):
            self.m = y.mean()
            return self

        def predict(self, X):
            return np.full(len(X), self.m)

    obs, _ = cross_validate_gene(X, y, None, folds, lambda s: Mean(), seed=0, normalise="inverse-normal")
    for k in range(5):
        train = folds != k
        want = residualise(transform_in_fold(y, train, "inverse-normal"), None, train)
        np.testing.assert_allclose(obs[folds == k], want[folds == k])
    raw, _ = cross_validate_gene(X, y, None, folds, lambda s: Mean(), seed=0)
    assert not np.allclose(raw, obs)


def test_raw_scale_is_recognised():
    rng = np.random.default_rng(0)
    assert looks_unnormalised(rng.poisson(rng.gamma(0.5, 200, size=(30, 1)), size=(30, 60)))
    assert looks_unnormalised(rng.normal(size=(30, 60))) is None
    assert looks_unnormalised(np.log2(1 + rng.gamma(0.5, 200, size=(30, 60)))) is None
