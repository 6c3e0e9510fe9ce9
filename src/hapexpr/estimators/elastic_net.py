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
and a KKT check of every left-out variant, coordinate descent over each problem's ever-active
variables with their Gram matrix, and one matrix product for every problem's gradient; the
coordinate descent itself is scikit-learn's compiled one. Exactly identical columns (in
``fit``'s rows; ~40% of the +-1 Mb columns on GEUVADIS) are solved as one column with ridge
weight 1/k and its coefficient split equally back, which is the same optimum. The walk stops
once the CV error has not improved for ``patience`` penalties (the small-penalty end of the
grid is by far the slowest and is never chosen there). ``benchmarks/bench_elastic_net.py``
compares it with a plain ``ElasticNetCV``, with the previous solver and with glmnet's own
Fortran. Details: ``docs/elastic-net.md``.
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


def identical_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of exactly identical columns of X (samples, variants).

    Returns ``first`` (distinct,) the first column of each group, in column order; ``group``
    (variants,) the group of each column; ``count`` (distinct,) the columns in each group.
    Columns are grouped by a random projection and the grouping is then checked value by value,
    so equal projections of unequal columns (never seen with dosages) cannot merge them.
    """
    n, p = X.shape
    if p == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    # Integer weights: with integer dosages every key is exact (below 2**53), so identical
    # columns get bit-identical keys whatever order BLAS sums in; with fractional dosages an
    # identical pair may, rarely, differ in the last bit and stay apart (a smaller merge, the
    # same fit).
    key = np.random.default_rng(0).integers(1, 2**20, size=n).astype(np.float64) @ X  # (variants,)
    _, first, group, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(count[group] > 1)
    if not np.array_equal(X[:, shared], X[:, first[group[shared]]]):  # a collision: exact bytes
        cols = np.ascontiguousarray(X.T).view(np.dtype((np.void, n * X.itemsize))).ravel()
        _, first, group, count = np.unique(cols, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")  # groups numbered in order of their first column
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[group.ravel()], count[order]


def gram_coordinate_descent(G, q, y, b0, l1: float, l2: float, tol: float, max_iter: int) -> tuple[np.ndarray, bool]:
    """(coefficients, converged) minimising ``1/2 b'Gb - q'b + l1 ||b||_1 + l2/2 ||b||^2``
    from ``b0``: scikit-learn's compiled Gram coordinate descent, stopped at its duality-gap
    tolerance (``tol`` relative to y'y) or after ``max_iter`` sweeps.

    Called directly where this scikit-learn exposes it with the signature known here, because
    ``enet_path`` around it costs ~0.3 ms of Python per call and a fit makes ~500 calls;
    otherwise through ``enet_path``, which runs the same routine (the results are identical).
    """
    global _DIRECT_CD
    b = np.array(b0, dtype=np.float64, order="C")
    G, q, y = np.ascontiguousarray(G), np.ascontiguousarray(q), np.ascontiguousarray(y)
    if _DIRECT_CD is not False:
        try:
            from sklearn.linear_model._cd_fast import enet_coordinate_descent_gram

            # (w, alpha, beta, Q, q, y, max_iter, tol, rng, random, positive, do_screening)
            b, _, _, n_iter = enet_coordinate_descent_gram(
                b, l1, l2, G, q, y, max_iter, tol, _CYCLIC, False, False, True
            )
            _DIRECT_CD = True
            return np.asarray(b), n_iter < max_iter
        except (ImportError, TypeError):
            if _DIRECT_CD:  # it worked before: a real error
                raise
            _DIRECT_CD = False
    from sklearn.linear_model import enet_path

    n = len(y)  # enet_path multiplies the penalties by n_samples and reads only X's shape
    alpha, l1_ratio = (l1 + l2) / n, (l1 / (l1 + l2) if l1 + l2 > 0 else 1.0)
    _, coefs, _, n_iter = enet_path(
        np.empty((n, len(b)), order="F"),
        y,
        alphas=[alpha],
        l1_ratio=l1_ratio,
        precompute=G,
        Xy=q,
        coef_init=np.asfortranarray(b),
        copy_X=False,
        check_input=False,
        tol=tol,
        max_iter=max_iter,
        return_n_iter=True,
    )
    return coefs[:, 0], n_iter[0] < max_iter


_DIRECT_CD: bool | None = None  # whether scikit-learn's compiled routine takes the direct call
# The generator the routine asks for; unused in cyclic order, but one costs ~0.1-0.7 ms to seed.
_CYCLIC = np.random.RandomState(0)


def lambda_grid(
    Xs: np.ndarray,
    yc: np.ndarray,
    *,
    alpha: float,
    n_lambdas: int,
    min_ratio: float | None = None,
    n_variants: int | None = None,
) -> np.ndarray:
    """(n_lambdas,) decreasing, log-spaced penalties from the smallest one that zeroes every
    coefficient down to ``min_ratio`` times it (glmnet's grid).

    Xs: (samples, variants) centred, standardised; yc: (samples,) centred. ``n_variants``:
    the variants the default ``min_ratio`` counts (default: Xs's columns; a merged Xs passes
    the count before merging, so the grid is the unmerged one's).
    """
    n, p = Xs.shape
    p = p if n_variants is None else n_variants
    lambda_max = float(np.max(np.abs(Xs.T @ yc))) / (n * alpha)
    if min_ratio is None:
        min_ratio = MIN_RATIO_WIDE if n < p else MIN_RATIO_TALL
    return np.geomspace(lambda_max, lambda_max * min_ratio, n_lambdas)


class _LockstepPaths:
    """The inner folds and the whole training set, walked down one penalty grid together.

    This is glmnet's path algorithm around scikit-learn's compiled coordinate descent. glmnet
    itself is GPL-2 Fortran (its PyPI wrapper ``python-glmnet`` serves only as the benchmark's
    reference), and scikit-learn's ``enet_path`` on all variants sweeps every one of ~5,000
    columns on every pass; at +-1 Mb that was slower than glmnet. What glmnet does, and this
    class does too:

    * **sequential strong rule**: at penalty ``lam_k`` only the variants with
      ``|x_j'r(lam_{k-1})|/n >= alpha (2 lam_k - lam_{k-1})`` in some problem, plus every
      variant screened earlier, are checked after each solve (tens to a few hundred of the
      thousands);
    * **KKT check**: after the screened solve, every left-out variant is checked against the
      optimality condition ``|x_j'r|/n <= alpha lam_k``; violators join and the solve is
      repeated, so the result is the solution of the full problem, not an approximation
      (scikit-learn's duality-gap tolerance, tested against ``ElasticNet`` on all variants);
    * **ever-active sets with covariance updates**: each problem runs coordinate descent over
      the variables that have ever been nonzero in it, with their centred Gram matrix, grown
      by the entering variables' rows and columns only; a screened variable whose
      ``|x_j'r|`` breaks the optimality condition joins and the active set is solved again
      (glmnet's inner loop);
    * **one matrix product for all problems**: the gradients of the 10 folds and the full fit
      are one ``R Xs`` (R: residuals, zero outside each problem's rows), because every
      problem's residuals sum to zero on its rows, so the fold centring drops out. The same
      holds for one problem's screened columns, ``Xs_S' r``, so no fold's centred columns are
      ever formed: its Gram matrix is ``Xs_A'Xs_A - T_A'T_A - n_f mu mu'`` (T: the fold's
      held-out rows, mu: the column means on its training rows).

    ``l2_weight`` (variants,): per-variant ridge weights (``_cd``), None for the plain elastic
    net. The coordinate descent itself is scikit-learn's ``enet_path`` (warm started,
    parameter validation skipped).

    Xs: (samples, variants) standardised; folds: (samples,) 0..K-1. Problem K is the full set.
    """

    def __init__(self, Xs, y, folds, *, l1_ratio: float, tol: float, max_iter: int, l2_weight=None):
        n, p = Xs.shape
        k = int(folds.max()) + 1
        self.Xs = np.ascontiguousarray(Xs, dtype=np.float64)
        self.rows = [np.flatnonzero(folds != f) for f in range(k)] + [np.arange(n)]
        self.tests = [np.flatnonzero(folds == f) for f in range(k)]
        self.n_rows = np.array([len(r) for r in self.rows], dtype=np.float64)
        F = len(self.rows)
        self.mask = np.zeros((F, n))  # (problems, samples) 1 on each problem's rows
        for f, r in enumerate(self.rows):
            self.mask[f, r] = 1.0
        self.means = (self.mask / self.n_rows[:, None]) @ self.Xs  # (problems, variants) on its rows
        self.ybar = (self.mask / self.n_rows[:, None]) @ y
        self.R0 = self.mask * (y[None, :] - self.ybar[:, None])  # (problems, samples) centred y, 0 off rows
        self.R = self.R0.copy()  # residuals at the current solutions, 0 off each problem's rows
        self.grad = self._gradient()  # (problems, variants) x_j'r / n
        self.l1_ratio, self.tol, self.max_iter = l1_ratio, tol, max_iter
        # (variants,) ridge weight of each column (1/k for a column standing for k identical
        # ones, see ElasticNetModel.fit); None: all 1, the plain elastic net.
        self.l2_weight = None if l2_weight is None else np.asarray(l2_weight, dtype=np.float64)
        self.screened = np.zeros(p, dtype=bool)
        self.S = np.zeros(0, dtype=np.intp)  # screened variants, in cache order
        # Their columns on all rows and on each fold's held-out rows, and their Gram matrix on
        # all rows, in buffers with spare room; every problem's x_j'y.
        self._X = np.zeros((n, 0), order="F")
        self._T = [np.zeros((len(t), 0), order="F") for t in self.tests]
        self._G = np.zeros((0, 0))
        self.Q = np.zeros((F, 0))
        self.b = np.zeros((F, 0))  # (problems, screened) coefficients (warm start)
        self.A = [np.zeros(0, dtype=np.intp) for _ in range(F)]  # ever-active, positions in S
        self.GA = [np.zeros((0, 0)) for _ in range(F)]  # their centred Gram matrix
        self.converged = True  # False once a solve stopped at max_iter short of the tolerance

    def _grow(self, new: np.ndarray) -> None:
        m, k = len(self.S), len(new)
        Xn = self.Xs[:, new]  # (samples, new)
        if m + k > self._X.shape[1]:  # out of room: double
            cap = max(m + k, 2 * self._X.shape[1], 64)
            self._X = _regrow(self._X, m, cap)
            self._T = [_regrow(T, m, cap) for T in self._T]
            G = np.zeros((cap, cap))
            G[:m, :m] = self._G[:m, :m]
            self._G = G
        X, G = self._X, self._G
        X[:, m : m + k] = Xn
        for T, t in zip(self._T, self.tests):
            T[:, m : m + k] = Xn[t]
        G[:m, m : m + k] = X[:, :m].T @ Xn
        G[m : m + k, :m] = G[:m, m : m + k].T
        G[m : m + k, m : m + k] = Xn.T @ Xn
        self.Q = np.concatenate([self.Q, self.R0 @ Xn], axis=1)
        self.b = np.concatenate([self.b, np.zeros((len(self.rows), k))], axis=1)
        self.S = np.concatenate([self.S, new])
        self.screened[new] = True

    def _cross(self, f: int, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """(A, B) cross products of problem f's centred screened columns at positions A, B."""
        G = self._G[np.ix_(A, B)]
        if f < len(self.tests):
            T = self._T[f]
            G -= T[:, A].T @ T[:, B]
        G -= self.n_rows[f] * np.outer(self.means[f, self.S[A]], self.means[f, self.S[B]])
        return G

    def _activate(self, f: int, add: np.ndarray) -> None:
        A, old = self.A[f], self.GA[f]
        a = len(A)
        AA = np.concatenate([A, add])
        G = np.empty((len(AA), len(AA)))
        G[:a, :a] = old
        G[:, a:] = self._cross(f, AA, add)  # the new columns, against old and new alike
        G[a:, :a] = G[:a, a:].T
        self.GA[f] = G
        self.A[f] = AA

    def _solve(self, f: int, lam: float) -> None:
        # glmnet's inner loop: coordinate descent over the ever-active variables, then one
        # check of every screened variable; violators join and the active set is solved again.
        m = len(self.S)
        l1 = self.l1_ratio * lam * self.n_rows[f]
        X = self._X[:, :m]
        while True:
            A = self.A[f]
            conv = True
            if len(A):
                w = None if self.l2_weight is None else self.l2_weight[self.S[A]]
                self.b[f, A], conv = self._cd(self.GA[f].copy(), self.Q[f, A], self.b[f, A], f, lam, w)
                self._residual(f)
            outside = np.ones(m, dtype=bool)
            outside[A] = False
            viol = np.flatnonzero((np.abs(X.T @ self.R[f]) > l1) & outside)  # x_j'r (centred)
            if not len(viol):
                self.converged &= conv
                return
            self._activate(f, viol)

    def _residual(self, f: int) -> None:
        A = self.A[f]
        bA = self.b[f, A]
        fitted = self._X[:, A] @ bA - self.means[f, self.S[A]] @ bA  # (samples,) centred columns
        self.R[f] = self.R0[f] - self.mask[f] * fitted

    def _cd(self, gram, Xy, b0, f: int, lam: float, l2_weight=None) -> tuple[np.ndarray, bool]:
        """scikit-learn's Gram coordinate descent at one penalty, warm-started at ``b0``;
        returns the coefficients and whether its duality-gap tolerance was met.

        ``l2_weight`` (columns,): per-column ridge weights. The problem then goes to
        scikit-learn as a lasso whose Gram matrix carries the ridge term on its diagonal,
        ``G + n lam (1-alpha) diag(w)``: ``1/2 b'(G + D)b - q'b`` equals ``1/2 ||y - Xb||^2 +
        1/2 b'Db`` up to a constant, so that lasso is exactly the elastic net with per-variant
        ridge weights, solved by the same compiled coordinate descent. scikit-learn has no
        per-variant penalty weights and glmnet is GPL Fortran: this transform, not a
        hand-written solver, is how the weights are applied (docs/elastic-net.md)."""
        n_f = self.n_rows[f]
        l1, l2 = lam * self.l1_ratio * n_f, lam * (1.0 - self.l1_ratio) * n_f  # scikit-learn's scaling
        if l2_weight is not None:  # gram is the caller's copy: safe to change
            gram.flat[:: len(gram) + 1] += l2 * l2_weight
            l2 = 0.0
        return gram_coordinate_descent(gram, Xy, self.R0[f, self.rows[f]], b0, l1, l2, self.tol, self.max_iter)

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
        new = np.flatnonzero(strong.any(axis=0) & ~self.screened)
        if len(new):
            self._grow(new)
        where = np.full(len(self.screened), -1)
        where[self.S] = np.arange(len(self.S))
        for f in range(len(self.rows)):
            # The problem's own strong set joins its active set before the first solve (as in
            # glmnet), saving the rounds of solve-check-join that finding them would cost.
            cand = where[np.flatnonzero(strong[f])]
            inside = np.zeros(len(self.S), dtype=bool)
            inside[self.A[f]] = True
            cand = cand[(cand >= 0) & ~inside[np.maximum(cand, 0)]]
            if len(cand):
                self._activate(f, cand)
            if len(self.S):
                self._solve(f, lam)
        self.grad = self._gradient()
        todo = np.arange(len(self.rows))
        while True:  # KKT check of the variants left out; violators join, solve again
            bad = (np.abs(self.grad[todo]) > a * lam) & ~self.screened
            todo = todo[bad.any(axis=1)]
            if not len(todo):
                break
            self._grow(np.flatnonzero(bad.any(axis=0)))
            for f in todo:
                self._solve(f, lam)
            self.grad[todo] = (self.R[todo] @ self.Xs) / self.n_rows[todo, None]

    def predict_fold(self, f: int) -> np.ndarray:
        """(test,) predictions of fold ``f``'s held-out rows at the current penalty."""
        A = self.A[f]
        Xt = self._T[f][:, A] - self.means[f, self.S[A]]
        return self.ybar[f] + Xt @ self.b[f, A]

    def coef(self, f: int) -> np.ndarray:
        """(variants,) standardised-scale coefficients of problem ``f`` at the current penalty."""
        out = np.zeros(self.Xs.shape[1])
        out[self.S] = self.b[f]
        return out


def _regrow(X: np.ndarray, m: int, cap: int) -> np.ndarray:
    """X's first m columns in a new Fortran buffer with room for ``cap``."""
    out = np.zeros((X.shape[0], cap), order="F")
    out[:, :m] = X[:, :m]
    return out


class ElasticNetModel:
    """Elastic net on dosages with the penalty chosen by seeded inner K-fold CV of ``fit``'s
    own rows only (nested inside whatever split the caller made).

    Parameters: ``alpha`` glmnet's mixing (scikit-learn's ``l1_ratio``); ``n_lambdas`` grid
    length; ``min_ratio`` smallest/largest penalty (None: glmnet's default); ``inner_folds``;
    ``maf`` minor-allele-frequency filter (keep MAF > maf); ``merge`` solve with each group of
    identical columns (in ``fit``'s rows) as one column with ridge weight 1/k, the coefficient
    then split equally (the same optimum, docs/elastic-net.md); ``patience`` stop walking the grid
    after this many penalties without a lower CV error (None: walk the whole grid), checked
    every ``block`` penalties; ``tol``/``max_iter`` of each coordinate-descent solve
    (scikit-learn's duality-gap tolerance and sweep limit).

    Learned: ``coef_`` (variants,) on the dosage scale (0 for dropped variants); ``intercept_``;
    ``kept_`` (variants,) bool, passed the MAF / monomorphic filter; ``x_mean_``/``x_scale_``
    (kept,) the standardisation; ``lambdas_`` (n_lambdas,) the grid; ``cv_mse_`` (n_lambdas,)
    pooled inner-CV mean squared error (NaN past the early stop); ``best_index_``/``lambda_``;
    ``inner_folds_`` (samples,) fold of each row; ``cv_pred_`` (samples,) inner out-of-fold
    predictions at ``lambda_``; ``cv_r_`` their Pearson r with y; ``cv_r2_`` = 1 - SSE/SST;
    ``converged_``; ``n_distinct_`` the distinct kept columns the solver saw (the kept count
    when ``merge`` is off). With no usable variant the model predicts the training mean and the CV
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
        merge: bool = True,
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
        self.merge = merge
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

        Xk = X[:, self.kept_]
        p_kept = Xk.shape[1]
        if self.merge:
            # k identical columns are one column with ridge weight 1/k: the optimum splits its
            # coefficient equally among them (docs/elastic-net.md), so they are solved as one.
            first, group, count = identical_columns(Xk)
            ridge = None if len(first) == p_kept else 1.0 / count
        else:
            first, group, count, ridge = np.arange(p_kept), np.arange(p_kept), np.ones(p_kept, np.intp), None
        self.n_distinct_ = len(first)
        Xs = (Xk[:, first] - self.x_mean_[first]) / self.x_scale_[first]
        yc = y - y.mean()
        grid = lambda_grid(
            Xs, yc, alpha=self.alpha, n_lambdas=self.n_lambdas, min_ratio=self.min_ratio, n_variants=p_kept
        )
        if grid[0] <= 0.0:
            return self
        self.lambdas_ = grid
        folds = inner_fold_ids(n, self.inner_folds, self.seed)
        self.inner_folds_ = folds
        best, oof, beta_distinct = self._inner_cv(Xs, y, grid, folds, ridge)
        beta_std = (beta_distinct / count)[group]  # each copy's equal share
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
        self.n_distinct_ = int(self.kept_.sum())
        self.cv_pred_ = np.full(n, np.nan)
        self.cv_r_ = float("nan")
        self.cv_r2_ = float("nan")
        self.converged_ = True

    def _inner_cv(self, Xs, y, grid, folds, ridge) -> tuple[int, np.ndarray, np.ndarray]:
        """Walk the inner folds and the full fit down the grid together; return the best
        index, the (samples, n_lambdas) out-of-fold predictions (NaN past the early stop) and
        the full fit's standardised coefficients at the best index."""
        n_l, n_folds = len(grid), int(folds.max()) + 1
        paths = _LockstepPaths(Xs, y, folds, l1_ratio=self.alpha, tol=self.tol, max_iter=self.max_iter, l2_weight=ridge)
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
    _PARAMS = (
        "alpha",
        "n_lambdas",
        "min_ratio",
        "inner_folds",
        "maf",
        "merge",
        "patience",
        "block",
        "tol",
        "max_iter",
        "seed",
    )
    _ARRAYS = ("coef_", "x_mean_", "x_scale_", "lambdas_", "cv_mse_", "inner_folds_", "cv_pred_")
    _SCALARS = ("intercept_", "lambda_", "cv_r_", "cv_r2_")

    def save(self, directory) -> None:
        """``estimator.json`` + ``weights.safetensors`` (:mod:`hapexpr.estimators.saving`)."""
        arrays = {a: np.asarray(getattr(self, a)) for a in self._ARRAYS}
        arrays["kept_"] = self.kept_.astype(np.uint8)
        learned = {a: finite_or_none(getattr(self, a)) for a in self._SCALARS}
        learned.update(
            best_index_=int(self.best_index_),
            converged_=bool(self.converged_),
            n_features_in_=int(self.n_features_in_),
            n_distinct_=int(self.n_distinct_),
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
        est.n_distinct_ = learned.get("n_distinct_")  # None in files saved before merging existed
        return est


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 when either side is constant (PredictDB's convention for a null model)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else 0.0
