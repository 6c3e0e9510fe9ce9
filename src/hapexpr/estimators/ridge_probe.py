"""Ridge regression with the penalty chosen by leave-one-out CV (the ``ridge-probe`` estimator).

The cheapest use of the embeddings and a sanity line for the transformer: each person's two
haplotype embeddings (mean over tokens, as the embedding stage stores them) are summed, so the
feature is additive in haplotypes like an allele dosage. Inside ``fit`` the columns are
standardised on the training rows and the penalty is chosen by exact leave-one-out CV
(scikit-learn's ``RidgeCV`` efficient LOO: one eigendecomposition per fit, every penalty
for free). Details: ``docs/elastic-net.md`` (section "ridge-probe").
"""

from __future__ import annotations

import numpy as np

from hapexpr.estimators import check_matrix, check_training
from hapexpr.estimators.saving import finite_or_none, load_estimator, none_to_nan, save_estimator


def penalty_grid(n_samples: int, dim: int, *, n_penalties: int = 36) -> np.ndarray:
    """(n_penalties,) ridge penalties on standardised features, relative to the mean non-zero
    eigenvalue of X'X (n*dim/min(n-1, dim)) so the grid fits any embedding width."""
    scale = n_samples * dim / max(1, min(n_samples - 1, dim))
    return scale * np.logspace(-4, 3, n_penalties)


class RidgeProbeModel:
    """Ridge on (samples, dim) features, penalty by leave-one-out CV on ``fit``'s rows only.

    Learned: ``coef_`` (dim,) on the input scale; ``intercept_``; ``alpha_`` the chosen penalty
    (on standardised features); ``alphas_`` the grid; ``cv_mse_`` (penalties,) LOO mean squared
    error; ``x_mean_``/``x_scale_`` (dim,) the standardisation (scale 1 for constant columns).
    """

    def __init__(self, *, alphas: np.ndarray | None = None, n_penalties: int = 36, seed: int = 0) -> None:
        self.alphas = alphas
        self.n_penalties = n_penalties
        self.seed = seed  # LOO is deterministic; kept for the estimator protocol

    def fit(self, X, y) -> RidgeProbeModel:
        """X: (samples, dim) features; y: (samples,) expression."""
        from sklearn.linear_model import RidgeCV

        X, y = check_training(X, y, columns="values")
        n, d = X.shape
        self.n_features_in_ = d
        self.x_mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.x_scale_ = np.where(sd > 1e-12, sd, 1.0)
        self.coef_ = np.zeros(d)
        self.intercept_ = float(y.mean()) if n else 0.0
        self.alphas_ = (
            np.asarray(self.alphas, dtype=np.float64)
            if self.alphas is not None
            else penalty_grid(n, max(d, 1), n_penalties=self.n_penalties)
        )
        self.alpha_ = float("nan")
        self.cv_mse_ = np.full(len(self.alphas_), np.nan)
        if n < 3 or d == 0 or np.ptp(y) == 0.0 or not np.any(sd > 1e-12):
            return self
        Xs = (X - self.x_mean_) / self.x_scale_
        ridge = RidgeCV(alphas=self.alphas_, fit_intercept=True, store_cv_results=True).fit(Xs, y)
        self.alpha_ = float(ridge.alpha_)
        self.cv_mse_ = ridge.cv_results_.mean(axis=0)
        # Constant columns are all-zero after centring; zero their round-off coefficients.
        self.coef_ = np.where(sd > 1e-12, ridge.coef_ / self.x_scale_, 0.0)
        self.intercept_ = float(ridge.intercept_ - self.x_mean_ @ self.coef_)
        return self

    def predict(self, X) -> np.ndarray:
        """(samples,) float64 predictions for (samples, dim) features."""
        X = check_matrix(X, columns="values")
        if X.shape[1] != len(self.coef_):  # coef_ alone defines the model (loaded fits too)
            raise ValueError(f"X has {X.shape[1]} columns; the model was fit on {len(self.coef_)}")
        return X @ self.coef_ + self.intercept_

    KIND = "hapexpr.ridge-model/1"

    def save(self, directory) -> None:
        """``estimator.json`` + ``weights.safetensors`` (:mod:`hapexpr.estimators.saving`)."""
        save_estimator(
            directory,
            kind=self.KIND,
            params={
                "alphas": None if self.alphas is None else [float(a) for a in self.alphas],
                "n_penalties": self.n_penalties,
                "seed": self.seed,
            },
            learned={"intercept_": float(self.intercept_), "alpha_": finite_or_none(self.alpha_)},
            arrays={
                "coef_": self.coef_,
                "x_mean_": self.x_mean_,
                "x_scale_": self.x_scale_,
                "alphas_": self.alphas_,
                "cv_mse_": self.cv_mse_,
            },
        )

    @classmethod
    def load(cls, directory) -> RidgeProbeModel:
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        est.coef_, est.x_mean_, est.x_scale_ = arrays["coef_"], arrays["x_mean_"], arrays["x_scale_"]
        est.alphas_, est.cv_mse_ = arrays["alphas_"], arrays["cv_mse_"]
        est.intercept_, est.alpha_ = float(learned["intercept_"]), none_to_nan(learned["alpha_"])
        est.n_features_in_ = len(est.coef_)
        return est
