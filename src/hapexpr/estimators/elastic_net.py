"""``elastic-net``: PrediXcan / PredictDB-style elastic net on allele dosages.

Conventions follow PredictDB's ``cv.glmnet`` training: the ALT allele dosages (0..2) of the
variants in the cis window, variants with minor allele frequency at or below ``maf`` (in the
training individuals) dropped, columns standardised like glmnet's ``standardize=TRUE`` (mean 0,
population SD 1), elastic-net mixing ``alpha = 0.5``, a glmnet-style grid of 100 penalties and
the penalty with the lowest pooled squared error in a seeded inner 10-fold CV (``lambda.min``).
Coefficients are reported on the dosage scale, as glmnet and PredictDB do.

The objective is glmnet's and scikit-learn's (``ElasticNet(alpha=lambda, l1_ratio=alpha)``)::

    1/(2n) ||y - b0 - X b||^2 + lambda * (alpha ||b||_1 + (1 - alpha)/2 ||b||^2)

Speed matters (thousands of genes, thousands of variants each in +-1 Mb windows), so the
solver is scikit-learn's coordinate-descent path (``enet_path``, gap-safe screening), driven
the way glmnet drives its own: every inner fold walks down one shared penalty grid with warm
starts, the Gram matrix is used when variants < samples, input checks run once per gene instead
of once per solve, the walk stops once the CV error has not improved for ``patience`` penalties
(the small-penalty end of the grid is by far the slowest and is never chosen there), and the
final fit warm-starts down the grid to the chosen penalty. ``benchmarks/bench_elastic_net.py``
compares it with a plain ``ElasticNetCV``. Details: ``docs/elastic-net.md``.
"""

from __future__ import annotations

import warnings
import numpy as np

from hapexpr.estimators import check_matrix, check_training
from hapexpr.estimators.saving import finite_or_none, load_estimator, none_to_nan, save_estimator

# glmnet's default lambda.min.ratio: 0.01 when samples < variants, else 1e-4.
MIN_RATIO_WIDE = 1e-2
MIN_RATIO_TALL = 1e-4


def inner_fold_ids(n_samples: int, n_folds: int, seed: int) -> np.ndarray:
    """(samples,) int fold 0..k-1 of each training individual: balanced and seeded, like
    glmnet's ``sample(rep(seq(nfolds), length = N))``; k is at most ``n_samples``."""
    k = max(2, min(int(n_folds), int(n_samples)))
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n_samples) % k)


def lambda_grid(
    Xs: np.ndarray, yc: np.ndarray, *, alpha: float, n_lambdas: int, min_ratio: float | None = None
) -> np.ndarray:
    """(n_lambdas,) decreasing, log-spaced penalties from the smallest one that zeroes every
    coefficient down to ``min_ratio`` times it (glmnet's grid).

    Xs: (samples, variants) centred, standardised; yc: (samples,) centred.
    """
    n, p = Xs.shape
    lambda_max = float(np.max(np.abs(Xs.T @ yc))) / (n * alpha)
    if min_ratio is None:
        min_ratio = MIN_RATIO_WIDE if n < p else MIN_RATIO_TALL
    return np.geomspace(lambda_max, lambda_max * min_ratio, n_lambdas)


class _PathWalker:
    """One training split, centred once, walked down the penalty grid with warm starts.

    X_train: (train, variants) standardised; X_test: (test, variants) on the same scale.
    """

    def __init__(self, X_train, y_train, X_test, *, l1_ratio: float, tol: float, max_iter: int):
        n, p = X_train.shape
        self.x_mean = X_train.mean(axis=0)
        self.y_mean = float(y_train.mean())
        self.X = np.asfortranarray(X_train - self.x_mean)
        self.y = np.ascontiguousarray(y_train - self.y_mean)
        # Same rule as scikit-learn's precompute="auto": the Gram matrix pays off when n > p.
        self.gram = np.dot(self.X.T, self.X) if n > p else None
        self.xy = self.X.T @ self.y if self.gram is not None else None
        self.X_test = X_test - self.x_mean
        self.coef = np.zeros(p, order="F")
        self.kw = dict(l1_ratio=l1_ratio, tol=tol, max_iter=max_iter)
        self.converged = True

    def run(self, lambdas: np.ndarray) -> np.ndarray:
        """(variants, len(lambdas)) coefficients at ``lambdas`` (decreasing), warm-started."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import enet_path

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            _, coefs, _ = enet_path(
                self.X, self.y, alphas=lambdas,
                precompute=self.gram if self.gram is not None else False, Xy=self.xy,
                coef_init=self.coef, copy_X=False, check_input=False, **self.kw,
            )
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.converged = False
        self.coef = np.asfortranarray(coefs[:, -1])
        return coefs

    def predict(self, coefs: np.ndarray) -> np.ndarray:
        """(test, len(lambdas)) predictions of the held-out rows."""
        return self.y_mean + self.X_test @ coefs


class ElasticNetModel:
    """Elastic net on dosages with the penalty chosen by seeded inner K-fold CV of ``fit``'s
    own rows only (nested inside whatever split the caller made).

    Parameters: ``alpha`` glmnet's mixing (scikit-learn's ``l1_ratio``); ``n_lambdas`` grid
    length; ``min_ratio`` smallest/largest penalty (None: glmnet's default); ``inner_folds``;
    ``maf`` minor-allele-frequency filter (keep MAF > maf); ``patience`` stop walking the grid
    after this many penalties without a lower CV error (None: walk the whole grid); ``block``
    penalties solved per warm-started call; ``tol``/``max_iter`` of the coordinate descent.

    Learned: ``coef_`` (variants,) on the dosage scale (0 for dropped variants); ``intercept_``;
    ``kept_`` (variants,) bool, passed the MAF / monomorphic filter; ``x_mean_``/``x_scale_``
    (kept,) the standardisation; ``lambdas_`` (n_lambdas,) the grid; ``cv_mse_`` (n_lambdas,)
    pooled inner-CV mean squared error (NaN past the early stop); ``best_index_``/``lambda_``;
    ``inner_folds_`` (samples,) fold of each row; ``cv_pred_`` (samples,) inner out-of-fold
    predictions at ``lambda_``; ``cv_r_`` their Pearson r with y; ``cv_r2_`` = 1 - SSE/SST;
    ``converged_``. With no usable variant the model predicts the training mean and the CV
    attributes are NaN.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        n_lambdas: int = 100,
        min_ratio: float | None = None,
        inner_folds: int = 10,
        maf: float = 0.01,
        patience: int | None = 10,
        block: int = 10,
        tol: float = 1e-4,
        max_iter: int = 1000,
        seed: int = 0,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.n_lambdas = n_lambdas
        self.min_ratio = min_ratio
        self.inner_folds = inner_folds
        self.maf = maf
        self.patience = patience
        self.block = block
        self.tol = tol
        self.max_iter = max_iter
        self.seed = seed

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X, y) -> ElasticNetModel:
        """X: (samples, variants) ALT dosages 0..2; y: (samples,) expression."""
        X, y = check_training(X, y, columns="dosages")
        n, p = X.shape
        self.n_features_in_ = p
        x_mean = X.mean(axis=0)
        x_sd = X.std(axis=0)  # population SD, as glmnet standardises
        freq = x_mean / 2.0
        maf = np.minimum(freq, 1.0 - freq)
        self.kept_ = (maf > self.maf) & (x_sd > 1e-12)
        self.coef_ = np.zeros(p)
        self.intercept_ = float(y.mean()) if n else 0.0
        self.x_mean_ = x_mean[self.kept_]
        self.x_scale_ = x_sd[self.kept_]
        self._reset_cv(n)
        if self.kept_.sum() == 0 or n < 4 or np.ptp(y) == 0.0:
            return self

        Xs = (X[:, self.kept_] - self.x_mean_) / self.x_scale_
        yc = y - y.mean()
        grid = lambda_grid(Xs, yc, alpha=self.alpha, n_lambdas=self.n_lambdas, min_ratio=self.min_ratio)
        if grid[0] <= 0.0:
            return self
        self.lambdas_ = grid
        folds = inner_fold_ids(n, self.inner_folds, self.seed)
        self.inner_folds_ = folds
        best, oof = self._inner_cv(Xs, y, grid, folds)
        self.best_index_ = best
        self.lambda_ = float(grid[best])
        self.cv_pred_ = oof[:, best]
        self.cv_r_ = _pearson(self.cv_pred_, y)
        self.cv_r2_ = 1.0 - float(np.sum((y - self.cv_pred_) ** 2) / np.sum(yc**2))

        # Final fit on all rows: warm-started down the grid to the chosen penalty.
        full = _PathWalker(Xs, y, Xs[:0], l1_ratio=self.alpha, tol=self.tol, max_iter=self.max_iter)
        beta_std = full.run(grid[: best + 1])[:, -1]
        self.converged_ = self.converged_ and full.converged
        self.coef_[self.kept_] = beta_std / self.x_scale_
        self.intercept_ = float(y.mean() - self.x_mean_ @ self.coef_[self.kept_])
        return self

    def _reset_cv(self, n: int) -> None:
        self.lambdas_ = np.full(self.n_lambdas, np.nan)
        self.cv_mse_ = np.full(self.n_lambdas, np.nan)
        self.best_index_ = -1
        self.lambda_ = float("nan")
        self.inner_folds_ = np.full(n, -1)
        self.cv_pred_ = np.full(n, np.nan)
        self.cv_r_ = float("nan")
        self.cv_r2_ = float("nan")
        self.converged_ = True

    def _inner_cv(self, Xs, y, grid, folds) -> tuple[int, np.ndarray]:
        """Walk every inner fold down the grid in blocks; return the best index and the
        (samples, n_lambdas) out-of-fold predictions (NaN past the early stop)."""
        n_l = len(grid)
        walkers, tests = [], []
        for k in range(folds.max() + 1):
            test = folds == k
            walkers.append(
                _PathWalker(Xs[~test], y[~test], Xs[test], l1_ratio=self.alpha, tol=self.tol, max_iter=self.max_iter)
            )
            tests.append(test)
        oof = np.full((len(y), n_l), np.nan)
        block = max(1, int(self.block))
        done = 0
        while done < n_l:
            stop = min(done + block, n_l)
            for walker, test in zip(walkers, tests):
                oof[test, done:stop] = walker.predict(walker.run(grid[done:stop]))
            # Pooled over individuals, as cv.glmnet does (not a mean of per-fold means).
            self.cv_mse_[done:stop] = np.mean((y[:, None] - oof[:, done:stop]) ** 2, axis=0)
            done = stop
            best = int(np.argmin(self.cv_mse_[:done]))
            if self.patience is not None and done - 1 - best >= self.patience:
                break
        self.converged_ = all(w.converged for w in walkers)
        return best, oof

    # -- prediction ----------------------------------------------------------------------

    def predict(self, X) -> np.ndarray:
        """(samples,) float64 predicted expression for (samples, variants) dosages."""
        X = check_matrix(X, columns="dosages")
        if X.shape[1] != len(self.coef_):  # coef_ alone defines the model (loaded fits too)
            raise ValueError(f"X has {X.shape[1]} variants; the model was fit on {len(self.coef_)}")
        return X @ self.coef_ + self.intercept_

    # -- saving ------------------------------------------------------------------------------

    KIND = "hapexpr.elastic-net-model/1"
    _PARAMS = ("alpha", "n_lambdas", "min_ratio", "inner_folds", "maf", "patience", "block", "tol", "max_iter", "seed")
    _ARRAYS = ("coef_", "x_mean_", "x_scale_", "lambdas_", "cv_mse_", "inner_folds_", "cv_pred_")
    _SCALARS = ("intercept_", "lambda_", "cv_r_", "cv_r2_")

    def save(self, directory) -> None:
        """``estimator.json`` + ``weights.safetensors`` (:mod:`hapexpr.estimators.saving`)."""
        arrays = {a: np.asarray(getattr(self, a)) for a in self._ARRAYS}
        arrays["kept_"] = self.kept_.astype(np.uint8)
        learned = {a: finite_or_none(getattr(self, a)) for a in self._SCALARS}
        learned.update(best_index_=int(self.best_index_), converged_=bool(self.converged_),
                       n_features_in_=int(self.n_features_in_))
        save_estimator(directory, kind=self.KIND, params={p: getattr(self, p) for p in self._PARAMS},
                       learned=learned, arrays=arrays)

    @classmethod
    def load(cls, directory) -> ElasticNetModel:
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        for a in cls._ARRAYS:
            setattr(est, a, arrays[a])
        est.kept_ = arrays["kept_"].astype(bool)
        for a in cls._SCALARS:
            setattr(est, a, none_to_nan(learned[a]))
        est.best_index_, est.converged_ = int(learned["best_index_"]), bool(learned["converged_"])
        est.n_features_in_ = int(learned["n_features_in_"])
        return est


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 when either side is constant (PredictDB's convention for a null model)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else 0.0
