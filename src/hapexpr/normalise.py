"""Expression normalisation fitted inside the training folds (``prepare --normalise``).

``inverse-normal`` is the rank-based inverse normal transform GTEx and PredictDB apply to each
gene (``norm.ppf(rank / (n + 1))``, average ranks for ties), with one difference: PredictDB
transforms every individual at once, so a held-out person's value moves the training people's
ranks. Here the training individuals' values alone define the transform; a held-out value is
placed among them by linear interpolation of the training ranks and mapped through the same
``norm.ppf(rank / (n + 1))``, so nothing held out shapes a training value. With every individual
in training this is exactly GTEx's transform.
"""

from __future__ import annotations

import numpy as np

from hapexpr.errors import InputError

METHODS = ("none", "log2", "inverse-normal")


def transform_in_fold(y: np.ndarray, train: np.ndarray, how: str) -> np.ndarray:
    """(samples,) float64 ``y`` transformed with parameters learnt from ``train`` rows only.

    y: (samples,) expression of one gene; train: (samples,) bool, the training individuals.
    how: ``none`` (y unchanged), ``log2`` (log2(y + 1), no parameters; y must be >= 0) or
    ``inverse-normal`` (see the module docstring). Held-out values below the smallest training
    value get rank 0.5, above the largest rank n + 0.5 (half a step beyond the training range).
    """
    y = np.asarray(y, dtype=np.float64)
    train = np.asarray(train, dtype=bool)
    if how == "none":
        return y
    if how == "log2":
        if (y < 0).any():
            raise ValueError("log2 normalisation needs non-negative expression")
        return np.log2(y + 1.0)
    if how != "inverse-normal":
        raise ValueError(f"unknown normalisation {how!r}; expected one of {', '.join(METHODS)}")
    from scipy.stats import norm, rankdata

    y_train = y[train]
    n = len(y_train)
    if n == 0:
        raise ValueError("inverse-normal needs at least one training individual")
    ranks = rankdata(y_train)  # average ranks for ties, as GTEx
    values = np.unique(y_train)
    value_rank = _unique_ranks(y_train, values)
    r = np.interp(y, values, value_rank)
    r = np.where(y < values[0], 0.5, np.where(y > values[-1], n + 0.5, r))
    r[train] = ranks
    return norm.ppf(r / (n + 1))


def _unique_ranks(y_train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Average rank of each distinct value (values sorted ascending), ties averaged."""
    order = np.sort(y_train)
    lo = np.searchsorted(order, values, side="left")
    hi = np.searchsorted(order, values, side="right")
    return (lo + 1 + hi) / 2.0


def check_normalise(how: str, expr: np.ndarray, *, path) -> None:
    """Refuse a normalisation the values cannot take (log2 of negatives)."""
    if how not in METHODS:
        raise InputError(f"--normalise {how!r} is not one of {', '.join(METHODS)}")
    if how == "log2" and (expr < 0).any():
        raise InputError(
            "--normalise log2 needs non-negative expression, and this file has negative values",
            path=path,
            hint="the values already look transformed; use --normalise none or inverse-normal",
        )


def looks_unnormalised(expr: np.ndarray) -> str | None:
    """A reason to think (genes, samples) values are raw counts or RPKM/TPM, or None.

    Log-scale or standardised expression has negative values or stays far below 100 (log2 of
    a TPM of 10^30 is 100); raw-scale expression is non-negative and reaches the hundreds.
    """
    expr = np.asarray(expr, dtype=np.float64)
    if expr.size == 0 or (expr < 0).any() or expr.max() < 100:
        return None
    kind = "integer counts" if np.all(expr == np.round(expr)) else "non-negative values"
    mean, median = expr.mean(axis=1), np.median(expr, axis=1)
    skew = np.median((mean - median) / (expr.std(axis=1) + 1e-12))
    return f"{kind} up to {expr.max():.4g}, median gene skew (mean-median)/sd {skew:.2f}"
