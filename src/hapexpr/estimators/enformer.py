"""Heads on Enformer's outputs at the TSS: zero-shot CAGE and a ridge head (per-gene estimators).

Each distinct haplotype of a gene (5'->3' on the gene's strand, so minus-strand genes are
already reverse-complemented and their TSS bins are central) is centred on its TSS in a
``seq_len`` input (N-padded when the study window is shorter, cropped when longer), run through
Enformer once, and the human head's 5,313 tracks summed over the 3 bins around the TSS are
cached (see ``enformer_store``). Two heads use those outputs:

- ``zero-shot`` (default): score = mean over the person's two haplotypes of log(1 + CAGE) of
  one track (``track``, default 5110). Nothing is learned, so the fold's training individuals are
  not used at all (unless ``calibrate``), and the out-of-fold prediction is the score itself.
- ``ridge``: ridge regression on log(1 + outputs) of all tracks averaged over the two
  haplotypes, standardised and with the penalty chosen by leave-one-out CV, all inside
  the training folds.

Shapes: features are (samples, haplotypes=2, tracks) float32 in study sample order.
"""

from __future__ import annotations

import numpy as np

from hapexpr.errors import InputError
from hapexpr.estimators.saving import load_estimator, save_estimator

DEFAULT_TRACK = 5110  # CAGE, GM12878 (lymphoblastoid), the cell type of most eQTL cohorts' LCLs
HEADS = ("zero-shot", "ridge")


def _log_mean(X: np.ndarray) -> np.ndarray:
    """(samples, ...) mean over the haplotype axis (1) of log(1 + X); X >= 0 (softplus)."""
    return np.log1p(np.asarray(X, dtype=np.float64)).mean(axis=1)


class ZeroShotEnformer:
    """Score = mean over haplotypes of log(1 + CAGE) of ``track``; ``fit`` learns nothing
    unless ``calibrate``, which maps the score onto the training individuals' expression by
    matching mean and standard deviation (slope kept positive, so the sign of the correlation
    is never learned from the data)."""

    def __init__(self, *, track: int = DEFAULT_TRACK, calibrate: bool = False) -> None:
        self.track = track
        self.calibrate = calibrate

    def score(self, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 from X (samples, 2, tracks)."""
        return _log_mean(np.asarray(X)[:, :, self.track])

    def fit(self, X: np.ndarray, y: np.ndarray) -> ZeroShotEnformer:
        if not 0 <= self.track < np.asarray(X).shape[-1]:
            raise InputError(f"--track {self.track} is outside the model's {np.asarray(X).shape[-1]} human tracks")
        self.shift_, self.scale_ = 0.0, 1.0
        if self.calibrate:
            s = self.score(X)
            sd_s, sd_y = float(s.std()), float(np.std(y))
            self.scale_ = sd_y / sd_s if sd_s > 0 else 0.0
            self.shift_ = float(np.mean(y)) - self.scale_ * float(s.mean())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.shift_ + self.scale_ * self.score(X)

    KIND = "hapexpr.enformer-zero-shot/1"

    def save(self, directory) -> None:
        save_estimator(
            directory,
            kind=self.KIND,
            params={"track": self.track, "calibrate": self.calibrate},
            learned={"shift_": self.shift_, "scale_": self.scale_},
            arrays={},
        )

    @classmethod
    def load(cls, directory) -> ZeroShotEnformer:
        params, learned, _ = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        est.shift_, est.scale_ = float(learned["shift_"]), float(learned["scale_"])
        return est


class EnformerRidgeHead:
    """Ridge on log(1 + outputs) of all tracks averaged over the two haplotypes.

    Standardisation and the penalty (efficient leave-one-out CV over ``alphas`` times the number
    of tracks) are fitted on the rows passed to ``fit`` only, i.e. inside the training folds.
    """

    def __init__(self, *, alphas: tuple[float, ...] = tuple(np.logspace(-3, 3, 13))) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> EnformerRidgeHead:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        Z = _log_mean(X)
        grid = np.asarray(self.alphas, dtype=np.float64) * Z.shape[1]
        self.pipeline_ = make_pipeline(StandardScaler(), RidgeCV(alphas=grid)).fit(Z, np.asarray(y, dtype=np.float64))
        self.alpha_ = float(self.pipeline_[-1].alpha_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if hasattr(self, "pipeline_"):
            return self.pipeline_.predict(_log_mean(X))
        return (_log_mean(X) - self.x_mean_) / self.x_scale_ @ self.coef_ + self.intercept_

    KIND = "hapexpr.enformer-ridge-head/1"

    def save(self, directory) -> None:
        scaler, ridge = self.pipeline_[0], self.pipeline_[-1]
        save_estimator(
            directory,
            kind=self.KIND,
            params={"alphas": [float(a) for a in self.alphas]},
            learned={"alpha_": self.alpha_, "intercept_": float(ridge.intercept_)},
            arrays={"x_mean_": scaler.mean_, "x_scale_": scaler.scale_, "coef_": ridge.coef_},
        )

    @classmethod
    def load(cls, directory) -> EnformerRidgeHead:
        """A head that predicts from the saved standardisation and coefficients (the same
        arithmetic as the fitted scikit-learn pipeline)."""
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(alphas=tuple(params["alphas"]))
        est.x_mean_, est.x_scale_, est.coef_ = arrays["x_mean_"], arrays["x_scale_"], arrays["coef_"]
        est.alpha_, est.intercept_ = float(learned["alpha_"]), float(learned["intercept_"])
        return est
