"""The cross-validation loop: residualisation inside the training folds and no leakage."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from hapexpr.crossval import cross_validate_gene, residualise
from hapexpr.estimators.stack import NNLSCombiner, stack_gene


class RidgeEstimator:
    def __init__(self, seed):
        self.seed = seed

    def fit(self, X, y):
        self.model_ = Ridge(alpha=1.0).fit(X, y)
        return self

    def predict(self, X):
        return self.model_.predict(X)


def _data(seed=0, n=60, p=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    C = rng.normal(size=(n, 2))
    y = X[:, 0] + C @ [1.0, -2.0] + rng.normal(size=n)
    folds = np.arange(n) % 5
    return X, y, C, folds


def test_residualise_matches_sklearn_on_training_rows():
    X, y, C, folds = _data()
    train = folds != 0
    lr = LinearRegression().fit(C[train], y[train])
    assert np.allclose(residualise(y, C, train), y - lr.predict(C))
    assert np.allclose(residualise(y, None, train), y - y[train].mean())


def test_every_individual_predicted_once_and_no_leakage():
    X, y, C, folds = _data()
    obs, pred = cross_validate_gene(X, y, C, folds, RidgeEstimator, seed=0)
    assert not np.isnan(pred).any() and not np.isnan(obs).any()
    held_out = folds == 3
    y2 = y.copy()
    y2[held_out] += np.random.default_rng(5).normal(scale=10, size=held_out.sum())
    _, pred2 = cross_validate_gene(X, y2, C, folds, RidgeEstimator, seed=0)
    assert np.allclose(pred[held_out], pred2[held_out])
    assert not np.allclose(pred[~held_out], pred2[~held_out])


def test_restricted_folds_never_train_on_excluded_fold():
    X, y, C, folds = _data()
    obs, pred = cross_validate_gene(X, y, C, folds, RidgeEstimator, seed=0, train_folds=[0, 1, 2, 3])
    assert np.isnan(pred[folds == 4]).all() and not np.isnan(pred[folds != 4]).any()
    y2 = y.copy()
    y2[folds == 4] = 1e6
    _, pred2 = cross_validate_gene(X, y2, C, folds, RidgeEstimator, seed=0, train_folds=[0, 1, 2, 3])
    assert np.allclose(pred[folds != 4], pred2[folds != 4])


def test_nnls_combiner_nonnegative():
    rng = np.random.default_rng(1)
    P = rng.normal(size=(100, 3))
    y = 2 * P[:, 0] - 1 * P[:, 1] + 0.5
    c = NNLSCombiner().fit(P, y)
    assert (c.weights_ >= 0).all() and c.weights_[0] == pytest.approx(2, abs=0.3) and c.weights_[1] == 0


def test_stack_has_no_leakage_and_combines():
    X, y, C, folds = _data(seed=3)
    feats = [X[:, :1], X[:, 1:]]
    obs, pred, w = stack_gene(feats, [RidgeEstimator, RidgeEstimator], y, C, folds, seed=0)
    assert w.shape == (5, 2) and (w >= 0).all()
    assert np.corrcoef(obs, pred)[0, 1] > 0.4
    held_out = folds == 2
    y2 = y.copy()
    y2[held_out] = -y2[held_out] * 7
    _, pred2, _ = stack_gene(feats, [RidgeEstimator, RidgeEstimator], y2, C, folds, seed=0)
    assert np.allclose(pred[held_out], pred2[held_out])
