"""Per-gene estimators: scikit-learn-style models that know nothing of studies.

Each fits (samples, ...) features to (samples,) expression, predicts, and saves and loads
itself (:mod:`hapexpr.estimators.saving`, or safetensors checkpoints for the transformer). The
methods in :mod:`hapexpr.methods` build their features and drive them through the
cross-validation loop (:mod:`hapexpr.crossval`).
"""

from __future__ import annotations

import numpy as np


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
