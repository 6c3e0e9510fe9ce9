"""Per-gene models and the protocol the cross-validation loop (``hapexpr.train``) drives.

A *method* turns one gene's stored data into a feature array over individuals and makes a fresh
estimator for each training fold; the loop in ``hapexpr.train`` owns the folds, the covariate
residualisation inside the training folds and the writing of out-of-fold predictions, so no
method can see a held-out individual's expression.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class GeneModel(Protocol):
    """A scikit-learn-style estimator for one gene: parameters in ``__init__``, learned
    attributes with a trailing underscore, ``fit`` returns ``self``."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> GeneModel:
        """X: (samples, ...) features of the training individuals; y: (samples,) float64."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 predictions."""
        ...


class Method(Protocol):
    """What ``hapexpr fit --method NAME`` needs from a method."""

    name: str

    def features(self, study, gene) -> np.ndarray:
        """(samples, ...) features of every study individual for one gene (``GeneData``),
        in study sample order. Must not look at expression."""
        ...

    def estimator(self, seed: int) -> GeneModel:
        """A fresh, unfitted estimator."""
        ...


def check_matrix(X, *, columns: str = "features") -> np.ndarray:
    """X as (samples, columns) finite float64, or a ValueError saying what is wrong."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (samples, {columns}), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"X holds missing or infinite {columns}; impute them before fitting")
    return X


def check_training(X, y, *, columns: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) as checked float64 arrays of matching length, y (samples,) finite."""
    X = check_matrix(X, columns=columns)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y holds missing or infinite values")
    return X, y
