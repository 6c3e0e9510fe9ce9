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
path is solved the way glmnet solves it (``_LockstepPaths``): the inner folds and the full fit
walk down one shared penalty grid together with warm starts, sequential strong-rule screening
and a KKT check of every left-out variant, coordinate descent over the active set with a cached
Gram matrix of the screened variants, and one matrix product for every problem's gradient;
the coordinate descent itself is scikit-learn's. The walk stops once the CV error has not
improved for ``patience`` penalties (the small-penalty end of the grid is by far the slowest
and is never chosen there). ``benchmarks/bench_elastic_net.py`` compares it with a plain
``ElasticNetCV`` and with glmnet's own Fortran. Details: ``docs/elastic-net.md``.
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


class _LockstepPaths:
    """The inner folds and the whole training set, walked down one penalty grid together.

    This is glmnet's path algorithm around scikit-learn's compiled coordinate descent. glmnet
    itself is GPL-2 Fortran (its PyPI wrapper ``python-glmnet`` serves only as the benchmark's
    reference), and scikit-learn's ``enet_path`` on all variants (the previous solver) sweeps
    every one of ~5,000 columns on every pass; at +-1 Mb that was slower than glmnet. What
    glmnet does, and this class does too:

    * **sequential strong rule**: at penalty ``lam_k`` only the variants with
      ``|x_j'r(lam_{k-1})|/n >= alpha (2 lam_k - lam_{k-1})``, plus every variant screened
      earlier, are handed to the solver (usually tens to a few hundred of thousands);
    * **KKT check**: after the screened solve, every left-out variant is checked against the
      optimality condition ``|x_j'r|/n <= alpha lam_k``; violators join and the solve is
      repeated, so the result is the solution of the full problem, not an approximation
      (scikit-learn's duality-gap tolerance, tested against ``ElasticNet`` on all variants);
    * **covariance updates**: each problem keeps the Gram matrix of its screened variants,
      extended by the new columns only (never the full variants x variants one), and runs
      coordinate descent over its nonzero coefficients only, checking the other screened
      variants with that Gram matrix (glmnet's inner loop);
    * **one matrix product for all problems**: the gradients of the 10 folds and the full fit
      are one ``R Xs`` (R: residuals, zero outside each problem's rows), because every
      problem's residuals sum to zero on its rows, so the fold centring drops out.

    The coordinate descent is scikit-learn's ``enet_path`` (warm started, parameter validation
    skipped); no solver is reimplemented here, only glmnet's bookkeeping around it.

    Xs: (samples, variants) standardised; folds: (samples,) 0..K-1. Problem K is the full set.
    """

    GRAM_MAX = 2000  # screened variants above this: coordinate descent on columns, no Gram

    def __init__(self, Xs, y, folds, *, l1_ratio: float, tol: float, max_iter: int):
        n, p = Xs.shape
        k = int(folds.max()) + 1
        self.Xs = np.ascontiguousarray(Xs, dtype=np.float64)
        self.rows = [np.flatnonzero(folds != f) for f in range(k)] + [np.arange(n)]
        self.tests = [np.flatnonzero(folds == f) for f in range(k)]
        self.n_rows = np.array([len(r) for r in self.rows], dtype=np.float64)
        member = np.zeros((len(self.rows), n))
        for f, r in enumerate(self.rows):
            member[f, r] = 1.0 / len(r)
        self.means = member @ self.Xs  # (problems, variants) column means on each problem's rows
        self.ybar = member @ y
        self.yc = [y[r] - self.ybar[f] for f, r in enumerate(self.rows)]
        self.R = np.zeros((len(self.rows), n))  # (problems, samples) residuals, 0 off its rows
        for f, r in enumerate(self.rows):
            self.R[f, r] = self.yc[f]
        self.grad = self._gradient()  # (problems, variants) x_j'r / n
        self.l1_ratio, self.tol, self.max_iter = l1_ratio, tol, max_iter
        F = len(self.rows)
        self.screened = np.zeros((F, p), dtype=bool)
        self.S = [np.zeros(0, dtype=np.intp) for _ in range(F)]  # screened variants, cache order
        # Their centred columns and Gram matrix live in buffers with spare room, so that new
        # variants only fill in their own rows and columns. No Gram past GRAM_MAX variants.
        self._X = [np.zeros((len(r), 0), order="F") for r in self.rows]
        self._G: list[np.ndarray | None] = [np.zeros((0, 0)) for _ in range(F)]
        self.q = [np.zeros(0) for _ in range(F)]  # their x_j'y
        self.b = [np.zeros(0) for _ in range(F)]  # their coefficients (warm start)
        self.converged = True  # False once a solve stopped at max_iter short of the tolerance

    def _grow(self, f: int, new: np.ndarray) -> None:
        rows, m, k = self.rows[f], len(self.S[f]), len(new)
        Xn = self.Xs[np.ix_(rows, new)] - self.means[f, new]
        if m + k > self._X[f].shape[1]:  # out of room: double
            cap = max(m + k, 2 * self._X[f].shape[1], 64)
            X = np.zeros((len(rows), cap), order="F")
            X[:, :m] = self._X[f][:, :m]
            self._X[f] = X
            if self._G[f] is not None and m + k <= self.GRAM_MAX:
                G = np.zeros((min(cap, self.GRAM_MAX), min(cap, self.GRAM_MAX)))
                G[:m, :m] = self._G[f][:m, :m]
                self._G[f] = G
        X = self._X[f]
        X[:, m : m + k] = Xn
        if self._G[f] is not None and m + k <= self.GRAM_MAX:
            G = self._G[f]
            G[:m, m : m + k] = X[:, :m].T @ Xn
            G[m : m + k, :m] = G[:m, m : m + k].T
            G[m : m + k, m : m + k] = Xn.T @ Xn
        else:
            self._G[f] = None
        self.q[f] = np.concatenate([self.q[f], Xn.T @ self.yc[f]])
        self.b[f] = np.concatenate([self.b[f], np.zeros(k)])
        self.S[f] = np.concatenate([self.S[f], new])
        self.screened[f, new] = True

    def _solve(self, f: int, lam: float) -> None:
        m, q, b = len(self.S[f]), self.q[f], self.b[f]
        X = self._X[f][:, :m]
        n_f = self.n_rows[f]
        if self._G[f] is None:
            b, conv = self._cd(X, False, None, b, f, lam, self.max_iter)
            self.converged &= conv
        else:
            # glmnet's inner loop: coordinate descent over the nonzero coefficients only, then
            # one check of every screened variable with the Gram matrix (x_j'r = q_j - G_j b);
            # violators join and the active set is solved again. A sweep then costs |active|,
            # not |screened|, per changed coefficient.
            G = self._G[f][:m, :m]
            l1 = self.l1_ratio * lam * n_f
            act = (np.abs(q - G @ b) > l1) | (b != 0)
            start = b
            while True:
                A = np.flatnonzero(act)
                b = np.zeros_like(b)
                if not len(A):
                    break
                b[A], conv = self._cd(X[:, A], G[np.ix_(A, A)], q[A], start[A], f, lam, self.max_iter)
                viol = (np.abs(q - G @ b) > l1) & ~act
                if not viol.any():
                    self.converged &= conv
                    break
                act |= viol
                start = b
        self.b[f] = b
        self.R[f, self.rows[f]] = self.yc[f] - X @ b

    def _cd(self, X, gram, Xy, b0, f: int, lam: float, max_iter: int) -> tuple[np.ndarray, bool]:
        """scikit-learn's coordinate descent at one penalty, warm-started at ``b0``; returns
        the coefficients and whether its duality-gap tolerance was met."""
        from sklearn.linear_model import enet_path

        _, coefs, _, n_iter = enet_path(
            np.asfortranarray(X),
            self.yc[f],
            alphas=[lam],
            l1_ratio=self.l1_ratio,
            precompute=gram if gram is False else np.ascontiguousarray(gram),
            Xy=Xy,
            coef_init=np.asfortranarray(b0),
            copy_X=False,
            check_input=False,
            tol=self.tol,
            max_iter=max_iter,
            return_n_iter=True,
        )
        return coefs[:, 0], n_iter[0] < max_iter

    def _gradient(self) -> np.ndarray:
        # (problems, samples) @ (samples, variants): the fastest orientation for BLAS here.
        return (self.R @ self.Xs) / self.n_rows[:, None]

    def step(self, lam: float, lam_prev: float) -> None:
        """Solve every problem at ``lam``, warm-started from ``lam_prev``'s solutions."""
        import sklearn
        from sklearn.exceptions import ConvergenceWarning

        # Parameter validation skipped: it costs more than a warm-started screened solve.
        # Convergence is tracked from the iteration counts (``converged``), not warnings.
        with sklearn.config_context(skip_parameter_validation=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._step(lam, lam_prev)

    def _step(self, lam: float, lam_prev: float) -> None:
        a = self.l1_ratio
        strong = np.abs(self.grad) >= a * (2.0 * lam - lam_prev)
        for f in range(len(self.rows)):
            new = np.flatnonzero(strong[f] & ~self.screened[f])
            if len(new):
                self._grow(f, new)
            if len(self.S[f]):
                self._solve(f, lam)
        self.grad = self._gradient()
        for f in range(len(self.rows)):
            while True:  # KKT check of the variants left out; violators join, solve again
                bad = np.flatnonzero((np.abs(self.grad[f]) > a * lam) & ~self.screened[f])
                if not len(bad):
                    break
                self._grow(f, bad)
                self._solve(f, lam)
                self.grad[f] = (self.R[f] @ self.Xs) / self.n_rows[f]

    def predict_fold(self, f: int) -> np.ndarray:
        """(test,) predictions of fold ``f``'s held-out rows at the current penalty."""
        nz = np.flatnonzero(self.b[f])
        S = self.S[f][nz]
        Xt = self.Xs[np.ix_(self.tests[f], S)] - self.means[f, S]
        return self.ybar[f] + Xt @ self.b[f][nz]

    def coef(self, f: int) -> np.ndarray:
        """(variants,) standardised-scale coefficients of problem ``f`` at the current penalty."""
        out = np.zeros(self.Xs.shape[1])
        out[self.S[f]] = self.b[f]
        return out


class ElasticNetModel:
    """Elastic net on dosages with the penalty chosen by seeded inner K-fold CV of ``fit``'s
    own rows only (nested inside whatever split the caller made).

    Parameters: ``alpha`` glmnet's mixing (scikit-learn's ``l1_ratio``); ``n_lambdas`` grid
    length; ``min_ratio`` smallest/largest penalty (None: glmnet's default); ``inner_folds``;
    ``maf`` minor-allele-frequency filter (keep MAF > maf); ``patience`` stop walking the grid
    after this many penalties without a lower CV error (None: walk the whole grid), checked
    every ``block`` penalties; ``tol``/``max_iter`` of each coordinate-descent solve
    (scikit-learn's duality-gap tolerance and sweep limit).

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
        best, oof, beta_std = self._inner_cv(Xs, y, grid, folds)
        self.best_index_ = best
        self.lambda_ = float(grid[best])
        self.cv_pred_ = oof[:, best]
        self.cv_r_ = _pearson(self.cv_pred_, y)
        self.cv_r2_ = 1.0 - float(np.sum((y - self.cv_pred_) ** 2) / np.sum(yc**2))
        # The fit on all rows walked the grid with the folds; its solution at the chosen lambda.
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

    def _inner_cv(self, Xs, y, grid, folds) -> tuple[int, np.ndarray, np.ndarray]:
        """Walk the inner folds and the full fit down the grid together; return the best
        index, the (samples, n_lambdas) out-of-fold predictions (NaN past the early stop) and
        the full fit's standardised coefficients at the best index."""
        n_l, n_folds = len(grid), int(folds.max()) + 1
        paths = _LockstepPaths(Xs, y, folds, l1_ratio=self.alpha, tol=self.tol, max_iter=self.max_iter)
        oof = np.full((len(y), n_l), np.nan)
        beta = np.zeros(Xs.shape[1])  # the full fit's solution at the best penalty so far
        block = max(1, int(self.block))
        best = 0
        for i, lam in enumerate(grid):
            paths.step(lam, grid[i - 1] if i else lam)
            for f in range(n_folds):
                oof[paths.tests[f], i] = paths.predict_fold(f)
            # Pooled over individuals, as cv.glmnet does (not a mean of per-fold means).
            self.cv_mse_[i] = np.mean((y - oof[:, i]) ** 2)
            best = int(np.argmin(self.cv_mse_[: i + 1]))
            if best == i:
                beta = paths.coef(n_folds)
            if self.patience is not None and (i + 1) % block == 0 and i - best >= self.patience:
                break
        self.converged_ = paths.converged
        return best, oof, beta

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
        learned.update(
            best_index_=int(self.best_index_), converged_=bool(self.converged_), n_features_in_=int(self.n_features_in_)
        )
        save_estimator(
            directory,
            kind=self.KIND,
            params={p: getattr(self, p) for p in self._PARAMS},
            learned=learned,
            arrays=arrays,
        )

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
