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
