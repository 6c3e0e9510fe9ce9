"""ridge-probe: penalty by leave-one-out CV on the training rows, checked against brute force
and scikit-learn's plain Ridge."""

from __future__ import annotations

import types

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from hapexpr.estimators.ridge_probe import RidgeProbeModel
from hapexpr.methods.ridge_probe import RidgeProbe


def _data(n=50, d=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0, size=d) + rng.normal(size=d)
    y = X[:, :3] @ np.array([0.5, -0.3, 0.2]) + rng.normal(size=n)
    return X, y


def test_penalty_is_the_brute_force_leave_one_out_minimum():
    X, y = _data()
    model = RidgeProbeModel(n_penalties=12).fit(X, y)
    Xs = (X - X.mean(0)) / X.std(0)
    n = len(y)
    loo = []
    for a in model.alphas_:
        err = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            err += (Ridge(alpha=a).fit(Xs[keep], y[keep]).predict(Xs[i : i + 1])[0] - y[i]) ** 2
        loo.append(err / n)
    assert model.alpha_ == pytest.approx(model.alphas_[int(np.argmin(loo))])
    np.testing.assert_allclose(model.cv_mse_, loo, rtol=1e-8)
    # The chosen penalty is an interior one here: the grid is wide enough.
    assert 0 < int(np.argmin(loo)) < len(model.alphas_) - 1


def test_matches_sklearn_ridge_at_the_chosen_penalty():
    X, y = _data(seed=1)
    model = RidgeProbeModel().fit(X, y)
    mu, sd = X.mean(0), X.std(0)
    ref = Ridge(alpha=model.alpha_).fit((X - mu) / sd, y)
    np.testing.assert_allclose(model.coef_ * sd, ref.coef_, rtol=1e-6, atol=1e-9)
    X_new = np.random.default_rng(9).normal(size=(7, X.shape[1]))
    np.testing.assert_allclose(model.predict(X_new), ref.predict((X_new - mu) / sd), rtol=1e-6, atol=1e-9)


def test_held_out_rows_cannot_change_predictions():
    X, y = _data(n=60, seed=2)
    folds = np.arange(60) % 3
    for k in range(3):
        train, test = folds != k, folds == k
        before = RidgeProbeModel().fit(X[train], y[train]).predict(X[test])
        y2 = y.copy()
        y2[test] = np.random.default_rng(k).normal(size=test.sum()) * 100
        after = RidgeProbeModel().fit(X[train], y2[train]).predict(X[test])
        np.testing.assert_array_equal(before, after)
        # ...while the training rows' expression does matter (the test can fail).
        y3 = y.copy()
        y3[train] += np.random.default_rng(k).normal(size=train.sum())
        assert not np.allclose(RidgeProbeModel().fit(X[train], y3[train]).predict(X[test]), before)


@pytest.mark.parametrize("case", ["constant_y", "constant_x", "no_columns"])
def test_degenerate_inputs_predict_the_training_mean(case):
    X, y = _data(n=20, d=5)
    if case == "constant_y":
        y = np.full(20, 3.0)
    elif case == "constant_x":
        X = np.ones((20, 5))
    else:
        X = np.zeros((20, 0))
    model = RidgeProbeModel().fit(X, y)
    np.testing.assert_allclose(model.predict(X[:4]), np.full(4, y.mean()))


def test_constant_column_is_ignored_not_nan():
    X, y = _data(n=40, d=6)
    X[:, 2] = 1.5
    model = RidgeProbeModel().fit(X, y)
    assert np.all(np.isfinite(model.coef_)) and model.coef_[2] == 0.0


def test_method_sums_the_two_haplotypes(monkeypatch):
    per_hap = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)  # (unique, dim)
    method = RidgeProbe()
    monkeypatch.setattr(method, "embeddings", lambda gene, seqs: (None, per_hap[: len(seqs)]))
    gene = types.SimpleNamespace(sequences=[b"A", b"C", b"G"], hap_index=np.array([[0, 1], [2, 2], [1, 0]]))
    X = method.features(types.SimpleNamespace(gene=lambda g: gene), "G1")
    np.testing.assert_allclose(X, [per_hap[0] + per_hap[1], 2 * per_hap[2], per_hap[1] + per_hap[0]])
    assert method.fit_name == "ridge-probe"
    assert isinstance(method.estimator(3), RidgeProbeModel)


def test_saved_model_predicts_the_same(tmp_path):
    X, y = _data(n=60, d=8)
    model = RidgeProbeModel().fit(X, y)
    model.save(tmp_path / "m")
    back = RidgeProbeModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert back.alpha_ == model.alpha_
