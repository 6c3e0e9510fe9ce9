"""``stack``: the base methods' predictions combined by non-negative least squares.

Nested so that no held-out individual's expression reaches its own prediction: for outer fold k,
the combiner is trained on predictions for the training individuals that come from an inner
cross-validation over the training folds only (each base model trained without fold k and
without the individual's own inner fold), and it is applied to the predictions of base models
trained on all training folds. That costs K x (K-1) + K base fits per gene and method.

The final stack (``hapexpr fit-final --method stack``) is one :class:`NNLSCombiner` per gene fit
on the bases' out-of-fold predictions over all individuals; it saves itself like every estimator
(``estimator.json`` + ``weights.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hapexpr.crossval import cross_validate_gene, residualise
from hapexpr.estimators.saving import load_estimator, save_estimator
from hapexpr.normalise import transform_in_fold


@dataclass
class NNLSCombiner:
    """y ~ intercept + sum_b w_b * pred_b with w_b >= 0 (centred, so the intercept is free).

    ``bases``: the names of the columns (the base fits), saved with the weights so a saved
    combiner says which prediction each weight multiplies."""

    bases: tuple[str, ...] | None = None
    weights_: np.ndarray = field(default=None, repr=False)
    intercept_: float = 0.0

    KIND = "hapexpr.stack-nnls/1"

    def fit(self, P: np.ndarray, y: np.ndarray) -> NNLSCombiner:
        """P: (samples, methods) base predictions; y: (samples,).

        Columns are scaled to unit SD for the solve (base methods' predictions differ in scale
        by orders of magnitude, e.g. a zero-shot score); a constant column gets weight 0.
        ``weights_`` are on the original scale, ``std_weights_`` per SD of each column."""
        from scipy.optimize import nnls  # scipy.optimize takes ~0.5 s to import

        mp, my = P.mean(axis=0), y.mean()
        sp = P.std(axis=0)
        live = sp > 1e-12 * max(1.0, float(np.abs(P).max(initial=0.0)))
        self.std_weights_ = np.zeros(P.shape[1])
        if live.any():
            self.std_weights_[live], _ = nnls((P[:, live] - mp[live]) / sp[live], y - my)
        self.weights_ = np.divide(self.std_weights_, sp, out=np.zeros_like(sp), where=live)
        self.intercept_ = float(my - mp @ self.weights_)
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """P: (samples, bases) base predictions, columns in ``bases`` order."""
        return P @ self.weights_ + self.intercept_

    def save(self, directory) -> None:
        """``estimator.json`` (``bases``, ``intercept_``) + ``weights.safetensors`` (``weights_``
        per unit of each base's prediction, ``std_weights_`` per SD of it), both in ``bases`` order."""
        save_estimator(
            directory,
            kind=self.KIND,
            params={"bases": None if self.bases is None else list(self.bases)},
            learned={"intercept_": float(self.intercept_)},
            arrays={"weights_": self.weights_, "std_weights_": self.std_weights_},
        )

    @classmethod
    def load(cls, directory) -> NNLSCombiner:
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        bases = params.get("bases")
        est = cls(bases=None if bases is None else tuple(bases))
        est.weights_, est.std_weights_ = arrays["weights_"], arrays["std_weights_"]
        est.intercept_ = float(learned["intercept_"])
        return est


def stack_gene(
    features: list[np.ndarray],
    makers: list,
    y: np.ndarray,
    covariates: np.ndarray | None,
    folds: np.ndarray,
    *,
    seed: int,
    normalise: str = "none",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold (observed, predicted, weights) of the stacked model for one gene.

    features[b]: (samples, ...) features of base method b; makers[b]: its estimator factory.
    Returns observed and predicted (samples,), and weights (folds, methods) per SD of each base
    method's predictions, so they compare across methods. ``normalise``: the study's
    ``--normalise``, fitted on each training set.
    """
    ks = np.unique(folds)
    observed = np.full(len(y), np.nan)
    predicted = np.full(len(y), np.nan)
    weights = np.zeros((len(ks), len(features)))
    for i, k in enumerate(ks):
        test, train = folds == k, folds != k
        inner = [int(j) for j in ks if j != k]
        P_train = np.column_stack(
            [
                cross_validate_gene(X, y, covariates, folds, make, seed=seed, train_folds=inner, normalise=normalise)[
                    1
                ][train]
                for X, make in zip(features, makers)
            ]
        )
        y_res = residualise(transform_in_fold(y, train, normalise), covariates, train)
        P_test = np.column_stack(
            [make(seed + int(k)).fit(X[train], y_res[train]).predict(X[test]) for X, make in zip(features, makers)]
        )
        comb = NNLSCombiner().fit(P_train, y_res[train])
        observed[test], predicted[test] = y_res[test], comb.predict(P_test)
        weights[i] = comb.std_weights_
    return observed, predicted, weights
