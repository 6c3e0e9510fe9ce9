"""``hapexpr evaluate``: per-gene correlations across held-out individuals, and comparisons.

Metrics are pure functions of the pooled out-of-fold predictions in STUDY/predictions.tsv.
A gene whose predictions are constant (e.g. an elastic net that kept no variant) has an
undefined correlation: it is written as NaN and counted as r = 0 in summaries, since a constant
prediction explains nothing.

Beside r: Benjamini-Hochberg q-values, comparisons of methods on their common genes, a paired
bootstrap over individuals per gene, the null expectation of pooled out-of-fold r (a reference
ridge under simulated null phenotypes) and each gene's cis-heritability ceiling
(``hapexpr.heritability``). Columns and methods: docs/evaluate.md.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hapexpr.crossval import fold_targets, read_predictions, study_targets
from hapexpr.errors import InputError, StudyError
from hapexpr.fit_records import fit_record
from hapexpr.heritability import cis_heritability
from hapexpr.io.atomic import atomic_open
from hapexpr.methods.registry import build
from hapexpr.study import Study


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r, NaN when either side is constant or fewer than 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (Pearson r of average ranks), NaN when either side is constant."""
    return pearson(stats.rankdata(x), stats.rankdata(y))


def gene_metrics(predictions: pd.DataFrame, folds: int) -> pd.DataFrame:
    """One row per method and gene: ``method gene_id n pearson_r spearman_r pearson_p
    pearson_q`` and ``pearson_r_fold<k>`` for each fold (r within that held-out fold alone).
    ``pearson_q``: Benjamini-Hochberg over the genes of the method.

    Genes whose predictions cover every individual of the file (the normal case) are computed
    as (genes, samples) matrices at once; any other gene row by row, with the same functions.
    """
    parts = []
    samples = pd.Index(sorted(predictions["sample_id"].unique()))
    fold_of = predictions.drop_duplicates("sample_id").set_index("sample_id")["fold"].reindex(samples).to_numpy()
    for method, rows in predictions.groupby("method", sort=True):
        obs = rows.pivot(index="gene_id", columns="sample_id", values="observed").reindex(columns=samples)
        pred = rows.pivot(index="gene_id", columns="sample_id", values="predicted").reindex(columns=samples)
        counts = rows.groupby("gene_id").size().reindex(obs.index)
        full = (np.isfinite(obs.to_numpy()) & np.isfinite(pred.to_numpy())).all(axis=1) & (
            counts.to_numpy() == len(samples)
        )
        x, y = obs.to_numpy(np.float64)[full], pred.to_numpy(np.float64)[full]
        r = _pearson_rows(x, y)
        out = pd.DataFrame(
            {
                "method": method,
                "gene_id": obs.index[full],
                "n": len(samples),
                "pearson_r": r,
                "spearman_r": _pearson_rows(stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)),
                "pearson_p": _pearson_p_rows(r, len(samples)),
            }
        )
        for k in range(folds):
            f = fold_of == k
            out[f"pearson_r_fold{k}"] = _pearson_rows(x[:, f], y[:, f])
        partial = set(obs.index[~full])
        slow = [
            _gene_row(method, g, df, folds)
            for g, df in rows[rows["gene_id"].isin(partial)].groupby("gene_id", sort=True)
        ]
        parts.append(pd.concat([out, pd.DataFrame(slow)], ignore_index=True) if slow else out)
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True).sort_values(["method", "gene_id"], kind="stable").reset_index(drop=True)
    out.insert(
        out.columns.get_loc("pearson_p") + 1,
        "pearson_q",
        out.groupby("method")["pearson_p"].transform(lambda p: bh_qvalues(p.to_numpy())),
    )
    return out


def _gene_row(method: str, gene_id: str, df: pd.DataFrame, folds: int) -> dict:
    obs, pred = df["observed"].to_numpy(), df["predicted"].to_numpy()
    r = pearson(obs, pred)
    row = {
        "method": method,
        "gene_id": gene_id,
        "n": len(df),
        "pearson_r": r,
        "spearman_r": spearman(obs, pred),
        "pearson_p": _pearson_p(r, len(df)),
    }
    for k in range(folds):
        f = df["fold"].to_numpy() == k
        row[f"pearson_r_fold{k}"] = pearson(obs[f], pred[f])
    return row


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(genes,) :func:`pearson` of each row pair of (genes, samples) arrays (NaN where either row
    is constant or has fewer than 3 values)."""
    if x.shape[1] < 3:
        return np.full(x.shape[0], np.nan)
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("gs,gs->g", xc, yc) / np.sqrt(np.einsum("gs,gs->g", xc, xc) * np.einsum("gs,gs->g", yc, yc))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of (tests,) p-values; NaN p-values stay NaN and are not counted."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok], kind="stable")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q_ok = np.empty(m)
    q_ok[order] = np.clip(ranked, 0.0, 1.0)
    q[ok] = q_ok
    return q


def _pearson_p_rows(r: np.ndarray, n: int) -> np.ndarray:
    """Vectorised :func:`_pearson_p` for (genes,) r at one n."""
    if n < 3:
        return np.full(len(r), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(r) * np.sqrt((n - 2) / np.maximum(1 - r * r, 0.0))
    return np.where(np.isnan(r), np.nan, np.where(np.abs(r) >= 1, 0.0, 2 * stats.t.sf(t, n - 2)))


def _pearson_p(r: float, n: int) -> float:
    if np.isnan(r) or n < 3:
        return float("nan")
    if abs(r) >= 1:
        return 0.0
    t = r * np.sqrt((n - 2) / (1 - r * r))
    return float(2 * stats.t.sf(abs(t), n - 2))


H2_STRATA = ((float("-inf"), 0.05, "h2 < 0.05"), (0.05, 0.2, "0.05-0.2"), (0.2, float("inf"), "h2 > 0.2"))
Q_LEVEL = 0.05


def summarise(metrics: pd.DataFrame, *, no_model: dict[str, int] | None = None) -> pd.DataFrame:
    """Per method: genes, genes without a model in CV (``no_model``: method -> count, genes with
    no prediction rows; see :func:`genes_without_model`) and genes with constant predictions,
    mean and median r (NaN as 0), the fraction of genes with r < 0 among genes with non-constant
    predictions and its null expectation on the same genes, genes with ``pearson_q`` < 0.05, r
    against the estimated ceiling sqrt(h2) of the variants the method reads (``h2_features``,
    else ``h2_cis``) overall and per heritability stratum, and the ratio to the true ceiling where
    the truth is known. Columns only appear when metrics holds what they need."""
    out = []
    for method, df in metrics.groupby("method", sort=True):
        r = df["pearson_r"].fillna(0.0)
        # A constant prediction (no model, or one that kept nothing) can never give r < 0, so the
        # r < 0 share is taken over the genes with a correlation, and so is its null.
        varies = df["pearson_r"].notna()
        row = {"method": method, "genes": len(df)}
        if no_model is not None:
            row["genes_no_model"] = int(no_model.get(method, 0))
        row.update(
            {
                "genes_constant": int((~varies).sum()),
                "mean_r": r.mean(),
                "median_r": r.median(),
                "frac_r_below_0": float((df.loc[varies, "pearson_r"] < 0).mean()) if varies.any() else float("nan"),
            }
        )
        if "null_r" in df:
            row["null_mean_r"] = df["null_r"].mean()
            row["null_frac_r_below_0"] = df.loc[varies, "null_frac_below_0"].mean()
        if "pearson_q" in df:
            row["genes_q05"] = int((df["pearson_q"] < Q_LEVEL).sum())
        if "h2_features" in df:
            row["h2_features_from"] = "/".join(sorted(df["h2_features_from"].dropna().unique()))
            row.update(_h2_cis_summary(r, df["h2_features"]))
        elif "h2_cis" in df:
            row.update(_h2_cis_summary(r, df["h2_cis"]))
        if "ceiling" in df:
            heritable = df["ceiling"] > 0
            row["mean_r_heritable"] = r[heritable].mean() if heritable.any() else float("nan")
            row["mean_ceiling_heritable"] = df.loc[heritable, "ceiling"].mean() if heritable.any() else float("nan")
            row["ratio_to_ceiling"] = (
                row["mean_r_heritable"] / row["mean_ceiling_heritable"] if heritable.any() else float("nan")
            )
        out.append(row)
    return pd.DataFrame(out)


def _h2_cis_summary(r: pd.Series, h2: pd.Series) -> dict:
    """Ratio of mean r to mean sqrt(h2) over genes with h2 >= 0.05 (below that the estimate is
    mostly noise and the ratio would divide by ~0), and mean r per stratum."""
    ok = h2 >= H2_STRATA[1][0]
    ceiling = np.sqrt(h2[ok])
    row = {"ratio_to_h2": r[ok].mean() / ceiling.mean() if ok.any() and ceiling.mean() > 0 else float("nan")}
    for i, (lo, hi, _) in enumerate(H2_STRATA):
        s = (h2 >= lo) & (h2 < hi)
        row[f"mean_r_h2_stratum{i}"] = r[s].mean() if s.any() else float("nan")
        row[f"genes_h2_stratum{i}"] = int(s.sum())
    return row


MIN_SQRT_H2_FOR_RATIO = 0.2
"""A stratum's ratio is given only where its mean sqrt(h2) is at least this (h2 ~ 0.04)."""


def h2_strata(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long table ``method h2_from stratum genes mean_r mean_sqrt_h2 ratio``: strata of
    H2_STRATA by the h2 of the variants each method reads (``h2_features``, named in
    ``h2_from``; else ``h2_cis``); empty without either. Ratio = mean r / mean sqrt(max(h2, 0)),
    NaN where that mean is below ``MIN_SQRT_H2_FOR_RATIO``."""
    cols = ["method", "h2_from", "stratum", "genes", "mean_r", "mean_sqrt_h2", "ratio"]
    if "h2_cis" not in metrics:
        return pd.DataFrame(columns=cols)
    column = "h2_features" if "h2_features" in metrics else "h2_cis"
    rows = []
    for method, df in metrics.groupby("method", sort=True):
        r, h2 = df["pearson_r"].fillna(0.0), df[column]
        source = "/".join(sorted(df["h2_features_from"].dropna().unique())) if column == "h2_features" else "h2_cis"
        for lo, hi, label in H2_STRATA:
            s = (h2 >= lo) & (h2 < hi)
            c = float(np.sqrt(h2[s].clip(lower=0)).mean()) if s.any() else float("nan")
            m = float(r[s].mean()) if s.any() else float("nan")
            rows.append(
                {
                    "method": method,
                    "h2_from": source,
                    "stratum": label,
                    "genes": int(s.sum()),
                    "mean_r": m,
                    "mean_sqrt_h2": c,
                    # dividing by a mean sqrt(h2) near 0 gives ratios like -4 that mean nothing
                    "ratio": m / c if c >= MIN_SQRT_H2_FOR_RATIO else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=cols)


def compare(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods on the genes BOTH were evaluated on (``n_genes``): genes won by
    each, the paired Wilcoxon signed-rank p-value of the per-gene r (NaN r counted as 0), and its
    Benjamini-Hochberg q-value across the pairs."""
    cols = ["method_a", "method_b", "n_genes", "a_wins", "b_wins", "ties", "mean_diff", "wilcoxon_p", "wilcoxon_q"]
    r_by = {m: df.set_index("gene_id")["pearson_r"].fillna(0.0) for m, df in metrics.groupby("method", sort=True)}
    rows = []
    for a, b in combinations(sorted(r_by), 2):
        common = r_by[a].index.intersection(r_by[b].index)
        ra, rb = r_by[a].loc[common], r_by[b].loc[common]
        d = (ra - rb).to_numpy()
        p = float(stats.wilcoxon(ra, rb).pvalue) if np.any(d != 0) and len(d) > 1 else float("nan")
        rows.append(
            {
                "method_a": a,
                "method_b": b,
                "n_genes": len(d),
                "a_wins": int((d > 0).sum()),
                "b_wins": int((d < 0).sum()),
                "ties": int((d == 0).sum()),
                "mean_diff": float(d.mean()) if len(d) else float("nan"),
                "wilcoxon_p": p,
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    out["wilcoxon_q"] = bh_qvalues(out["wilcoxon_p"].to_numpy())
    return out


# ---------------------------------------------------------------------------------------------
# Per-gene paired bootstrap of two methods on the same individuals

N_BOOT = 1000
BOOT_CHUNK = 512  # genes per block: (N_BOOT, BOOT_CHUNK) float64 arrays of 4 MB each
# Adaptive bootstrap: a gene whose rarer side holds fewer than MIN_TAIL of the resampled
# differences gets 10 times the resamples, up to MAX_BOOT, so its p is no longer floored at
# 2 / (N_BOOT + 1) ~ 0.002 but at 2 / (MAX_BOOT + 1) ~ 2e-5 (BH over thousands of genes needs it).
MIN_TAIL = 10
MAX_BOOT = 100_000
REFINE_CHUNK = 5_000  # resamples per matrix product in the refinement: (5,000, samples) weights
_STATS = ("delta_r", "ci_low", "ci_high", "p", "n_boot")
PER_GENE_COLUMNS = [
    "method_a",
    "method_b",
    "gene_id",
    "n",
    "r_a",
    "r_b",
    "delta_r",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "n_boot",
]


def bootstrap_weights(n: int, *, n_boot: int = N_BOOT, seed: int | list[int] = 0) -> np.ndarray:
    """(n_boot, n) float64 counts of each individual in each resample (multinomial = resampling
    n individuals with replacement); ``seed`` as numpy's ``default_rng`` takes it."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def bootstrap_r(observed: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_boot, genes) Pearson r of every gene in every resample, 0 where a resample leaves a
    side constant (a constant prediction explains nothing, as in the summaries).

    observed, predicted: (genes, samples); weights: (n_boot, samples) resampling counts. The
    weighted moments are five matrix products, so all genes and resamples go through BLAS at once.
    """
    x = observed - observed.mean(axis=1, keepdims=True)
    y = predicted - predicted.mean(axis=1, keepdims=True)
    n = weights.sum(axis=1, keepdims=True)
    mx, my = weights @ x.T / n, weights @ y.T / n
    vx = weights @ (x * x).T / n - mx * mx
    vy = weights @ (y * y).T / n - my * my
    cxy = weights @ (x * y).T / n - mx * my
    # relative threshold: a resample whose spread is ~0 in floating point counts as constant
    tiny_x = 1e-10 * np.maximum((x * x).mean(axis=1), 1e-300)
    tiny_y = 1e-10 * np.maximum((y * y).mean(axis=1), 1e-300)
    ok = (vx > tiny_x) & (vy > tiny_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, cxy / np.sqrt(np.where(ok, vx * vy, 1.0)), 0.0)
    return np.clip(r, -1.0, 1.0)


def _r_rows(observed: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(genes,) Pearson r of each row pair, 0 where a side is constant."""
    return bootstrap_r(observed, predicted, np.ones((1, observed.shape[1])))[0]


def paired_bootstrap(
    obs_a: np.ndarray,
    pred_a: np.ndarray,
    obs_b: np.ndarray,
    pred_b: np.ndarray,
    weights: np.ndarray,
    *,
    seed: int | None = None,
    max_boot: int = MAX_BOOT,
) -> dict[str, np.ndarray]:
    """Bootstrap over individuals of r_a - r_b for every gene; each resample draws the SAME
    individuals for both methods, so the test is paired.

    All inputs (genes, samples) over the same individuals; weights (n_boot, samples).
    Returns (genes,) arrays ``delta_r`` (observed r_a - r_b, constant predictions as r = 0),
    ``ci_low``/``ci_high`` (2.5 and 97.5 percentiles of the resampled differences), ``p``
    (two-sided: 2 x (the smaller count of resampled differences <= 0 or >= 0, + 1) / (resamples
    + 1), capped at 1; the +1 keeps it above 0 at a finite number of resamples) and ``n_boot``
    (resamples behind p). With a ``seed``, genes with fewer than MIN_TAIL resamples on the rarer
    side get more (:func:`refine_tails`, up to ``max_boot``); the CI stays from ``weights``.
    """
    st = _delta_stats(
        _r_rows(obs_a, pred_a) - _r_rows(obs_b, pred_b),
        bootstrap_r(obs_a, pred_a, weights) - bootstrap_r(obs_b, pred_b, weights),
    )
    if seed is not None:
        st.update(refine_tails(obs_a, pred_a, obs_b, pred_b, st, seed=seed, max_boot=max_boot))
    st["p"] = _boot_p(st["below"], st["above"], st["n_boot"])
    return st


def _delta_stats(delta: np.ndarray, d: np.ndarray) -> dict[str, np.ndarray]:
    """CI, side counts and p from (genes,) observed differences and (n_boot, genes) resampled ones."""
    low, high = np.percentile(d, [2.5, 97.5], axis=0)
    below, above = (d <= 0).sum(axis=0).astype(np.float64), (d >= 0).sum(axis=0).astype(np.float64)
    n_boot = np.full(d.shape[1], float(d.shape[0]))
    return {
        "delta_r": delta,
        "ci_low": low,
        "ci_high": high,
        "below": below,
        "above": above,
        "n_boot": n_boot,
        "p": _boot_p(below, above, n_boot),
    }


def _boot_p(below: np.ndarray, above: np.ndarray, n_boot: np.ndarray) -> np.ndarray:
    return np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (n_boot + 1))


def refine_tails(
    obs_a: np.ndarray,
    pred_a: np.ndarray,
    obs_b: np.ndarray,
    pred_b: np.ndarray,
    counts: dict[str, np.ndarray],
    *,
    seed: int,
    max_boot: int = MAX_BOOT,
) -> dict[str, np.ndarray]:
    """The adaptive bootstrap: (genes,) ``below``, ``above`` and ``n_boot`` after drawing more
    resamples for every gene whose rarer side has fewer than MIN_TAIL, in stages of 10 times
    the resamples so far, until it has MIN_TAIL or ``max_boot`` resamples.

    obs_*, pred_*: (genes, samples); counts: ``below``/``above``/``n_boot`` (genes,) from the
    first resamples (:func:`_delta_stats`). The new resamples are seeded by (seed, stage, chunk),
    so they are independent of the first ones and the result is reproducible. Genes refined
    together always share their resample count, so one set of weights serves them all.
    """
    below, above, n_boot = (np.array(counts[k], dtype=np.float64) for k in ("below", "above", "n_boot"))
    n = obs_a.shape[1]
    stage = 1
    while True:
        todo = np.flatnonzero((np.minimum(below, above) < MIN_TAIL) & (n_boot < max_boot))
        if todo.size == 0 or n < 3:
            break
        have = int(n_boot[todo].max())
        extra = min(max_boot, 10 * have) - have
        for i, start in enumerate(range(0, extra, REFINE_CHUNK)):
            w = bootstrap_weights(n, n_boot=min(REFINE_CHUNK, extra - start), seed=[seed, stage, i])
            d = bootstrap_r(obs_a[todo], pred_a[todo], w) - bootstrap_r(obs_b[todo], pred_b[todo], w)
            below[todo] += (d <= 0).sum(axis=0)
            above[todo] += (d >= 0).sum(axis=0)
        n_boot[todo] = have + extra
        stage += 1
    return {"below": below, "above": above, "n_boot": n_boot}


def compare_per_gene(
    predictions: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0, max_boot: int = MAX_BOOT
) -> pd.DataFrame:
    """One row per pair of methods and gene both predicted (columns PER_GENE_COLUMNS): the paired
    bootstrap of r_a - r_b over the individuals both predicted (adaptive past ``n_boot``
    resamples where p is small, up to ``max_boot``: :func:`refine_tails`), and BH q-values over
    the genes of each pair.

    One set of resamples of all individuals serves every method and gene that has all of them
    (the normal case), so each method's resampled r is computed once per block of genes and
    every pair only subtracts; a pair and gene with missing individuals is bootstrapped on its
    own over the individuals both methods predicted (same seed)."""
    methods = sorted(predictions["method"].unique())
    samples = pd.Index(sorted(predictions["sample_id"].unique()))
    genes = pd.Index(sorted(predictions["gene_id"].unique()))
    obs, pred = {}, {}
    for m in methods:
        rows = predictions[predictions["method"] == m]
        obs[m] = (
            rows.pivot(index="gene_id", columns="sample_id", values="observed")
            .reindex(index=genes, columns=samples)
            .to_numpy(np.float64)
        )
        pred[m] = (
            rows.pivot(index="gene_id", columns="sample_id", values="predicted")
            .reindex(index=genes, columns=samples)
            .to_numpy(np.float64)
        )
    has = {m: np.isfinite(obs[m]) & np.isfinite(pred[m]) for m in methods}  # (genes, samples)
    complete = {m: has[m].all(axis=1) for m in methods}
    pairs = list(combinations(methods, 2))
    res = {pair: {k: np.full(len(genes), np.nan) for k in ("n", "r_a", "r_b", *_STATS)} for pair in pairs}
    w_all = bootstrap_weights(len(samples), n_boot=n_boot, seed=seed) if len(samples) >= 3 else None
    for start in range(0, len(genes), BOOT_CHUNK):
        block = np.arange(start, min(start + BOOT_CHUNK, len(genes)))
        r_obs, r_boot = {}, {}
        for m in methods:
            full = block[complete[m][block]]
            if w_all is not None and full.size:
                r_obs[m] = dict(zip(full, _r_rows(obs[m][full], pred[m][full])))
                r_boot[m] = dict(zip(full, bootstrap_r(obs[m][full], pred[m][full], w_all).T))
        for a, b in pairs:
            both = [g for g in block if g in r_obs.get(a, {}) and g in r_obs.get(b, {})]
            if both:
                st = _delta_stats(
                    np.array([r_obs[a][g] - r_obs[b][g] for g in both]),
                    np.stack([r_boot[a][g] - r_boot[b][g] for g in both], axis=1),
                )
                x = [t[both] for t in (obs[a], pred[a], obs[b], pred[b])]
                st.update(refine_tails(*x, st, seed=seed, max_boot=max_boot))
                st["p"] = _boot_p(st["below"], st["above"], st["n_boot"])
                for k in _STATS:
                    res[(a, b)][k][both] = st[k]
                res[(a, b)]["n"][both] = len(samples)
            for g in block:  # partial genes: their own resamples over the individuals both have
                if g in both:
                    continue
                cols = has[a][g] & has[b][g]
                if cols.sum() < 3:
                    continue
                x = [t[g, cols][None, :] for t in (obs[a], pred[a], obs[b], pred[b])]
                w = bootstrap_weights(int(cols.sum()), n_boot=n_boot, seed=seed)
                st = paired_bootstrap(*x, w, seed=seed, max_boot=max_boot)
                for k in _STATS:
                    res[(a, b)][k][g] = st[k][0]
                res[(a, b)]["n"][g] = cols.sum()
    parts = []
    for (a, b), r in res.items():
        ok = np.isfinite(r["n"])
        for k, side in (("r_a", a), ("r_b", b)):
            r[k][ok] = [
                pearson(obs[side][g, has[a][g] & has[b][g]], pred[side][g, has[a][g] & has[b][g]])
                for g in np.flatnonzero(ok)
            ]
        part = pd.DataFrame(
            {
                "method_a": a,
                "method_b": b,
                "gene_id": genes[ok],
                "n": r["n"][ok].astype(int),
                **{k: r[k][ok] for k in ("r_a", "r_b", "delta_r", "ci_low", "ci_high", "p")},
            }
        )
        part["q"] = bh_qvalues(part["p"].to_numpy())
        part["n_boot"] = r["n_boot"][ok].astype(int)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=PER_GENE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PER_GENE_COLUMNS]


def significant_pairs(per_gene: pd.DataFrame) -> pd.DataFrame:
    """Per pair: genes where a (``a_better_q05``) or b (``b_better_q05``) has the higher r at
    bootstrap q < 0.05."""
    cols = ["method_a", "method_b", "a_better_q05", "b_better_q05"]
    if per_gene.empty:
        return pd.DataFrame(columns=cols)
    sig = per_gene["q"] < Q_LEVEL
    df = per_gene.assign(a_better_q05=sig & (per_gene["delta_r"] > 0), b_better_q05=sig & (per_gene["delta_r"] < 0))
    return df.groupby(["method_a", "method_b"], sort=True)[["a_better_q05", "b_better_q05"]].sum().reset_index()


# ---------------------------------------------------------------------------------------------
# Per-gene references: the null expectation of r and the cis-heritability ceiling

NULL_REPS = 32


def ridge_null_r(
    dosages: np.ndarray, folds: np.ndarray, *, reps: int = NULL_REPS, rng: np.random.Generator
) -> np.ndarray:
    """(reps,) pooled out-of-fold r of a reference ridge under the null, on this gene's own cis
    dosages and the study's folds: y ~ N(0, 1) independent of genotype, a ridge (standardised
    dosages, alpha = number of variants) fitted on the training folds on the training-mean-
    centred y, predicting the held-out fold. All replicates share the features, so each fold is
    one linear solve. NaN-free: r = 0 where a prediction is constant (no polymorphic variant).

    Why a reference model and not a permutation of the observed values: the negative bias of
    pooled out-of-fold r comes from each fold's held-out people being training data of the other
    folds' models (it shrinks as the model's effective number of features grows). A
    permutation within folds keeps the predictions fixed and so cannot see it.
    dosages: (variants, samples); folds: (samples,).
    """
    d = np.asarray(dosages, dtype=np.float64)
    n = d.shape[1]
    sd = d.std(axis=1)
    z = ((d[sd > 0] - d[sd > 0].mean(axis=1, keepdims=True)) / sd[sd > 0, None]).T  # (samples, m)
    if z.shape[1] == 0:
        return np.zeros(reps)
    y = rng.normal(size=(n, reps))
    obs, pred = np.empty((n, reps)), np.empty((n, reps))
    alpha = float(z.shape[1])
    for k in np.unique(folds):
        te, tr = folds == k, folds != k
        zm, ym = z[tr].mean(axis=0), y[tr].mean(axis=0)
        zt, yt = z[tr] - zm, y[tr] - ym
        if zt.shape[1] <= zt.shape[0]:
            beta = np.linalg.solve(zt.T @ zt + alpha * np.eye(zt.shape[1]), zt.T @ yt)
            pred[te] = (z[te] - zm) @ beta
        else:  # dual form when variants outnumber training individuals
            coef = np.linalg.solve(zt @ zt.T + alpha * np.eye(zt.shape[0]), yt)
            pred[te] = (z[te] - zm) @ zt.T @ coef
        obs[te] = y[te] - ym
    return _r_rows(obs.T, pred.T)


MIN_MAF = 0.01


def cis_dosages(study: Study, gene_id: str, *, min_maf: float = MIN_MAF) -> np.ndarray:
    """(variants, samples) dosages of the variants in the study window (those the elastic net
    uses by default) with minor allele frequency >= ``min_maf`` (the elastic net's default
    filter), in study sample order. Rare variants are left out because a standardised GRM gives
    each one the weight of a common variant while it tags almost nothing, which biased HE
    upwards on simulated cohorts (0.54 against a true mean of 0.41 over 9 genes at 290 people;
    0.38 with the filter)."""
    gene = study.gene(gene_id)
    inside = gene.variants["in_window"].to_numpy(dtype=bool) if "in_window" in gene.variants else slice(None)
    return _common(gene.dosages[inside], min_maf)


def wide_cis_dosages(study: Study, gene_id: str, *, min_maf: float = MIN_MAF) -> np.ndarray | None:
    """(variants, samples) dosages of the study's cis store, +-``study.cis_window`` of the TSS
    (the elastic net's +-1 Mb features), with minor allele frequency >= ``min_maf``, in study
    sample order; None when the study stores no cis genotypes (prepared before hapexpr stored
    them)."""
    if study.cis_window is None:
        return None
    return _common(np.asarray(study.cis_genotypes(gene_id).dosages, dtype=np.float64), min_maf)


def _common(dosages: np.ndarray, min_maf: float) -> np.ndarray:
    p = dosages.mean(axis=1) / 2
    return dosages[np.minimum(p, 1 - p) >= min_maf]


HERITABILITY_COLUMNS = [
    "gene_id",
    "n_cis_variants",
    "h2_cis",
    "h2_cis_se",
    "n_wide_variants",
    "h2_cis_wide",
    "h2_cis_wide_se",
]
"""The columns of STUDY/heritability.tsv (before ``h2_true``, added for simulated cohorts)."""


def gene_references(study: Study, gene_ids: list[str], *, seed: int = 0) -> pd.DataFrame:
    """One row per gene: ``gene_id n_cis_variants h2_cis h2_cis_se n_wide_variants h2_cis_wide
    h2_cis_wide_se null_r null_frac_below_0``.

    h2_cis: HE-regression cis-heritability estimated inside the training folds
    (``hapexpr.heritability.cis_heritability``) on the expression the models are trained on
    (``prepare --normalise`` and the covariates applied in each fold as by the CV loop),
    from the window's variants (:func:`cis_dosages`); h2_cis_wide: the same from the study's
    +-cis_window store (:func:`wide_cis_dosages`; NaN without one), the ceiling of the +-1 Mb
    elastic net; null_r / null_frac_below_0: mean of :func:`ridge_null_r` and its share below 0.
    """
    expr, cov = study_targets(study)
    folds = study.folds
    normalise = study.normalise

    def targets(y: np.ndarray, train: np.ndarray) -> np.ndarray:
        return fold_targets(y, cov, train, normalise)

    rng = np.random.default_rng(seed)
    rows = []
    for gene_id in gene_ids:
        if gene_id not in expr.index:
            continue
        d = cis_dosages(study, gene_id)
        y = expr.loc[gene_id].to_numpy(dtype=np.float64)
        h = cis_heritability(y, d, folds, targets)
        wide_d = wide_cis_dosages(study, gene_id)
        wide = None if wide_d is None else cis_heritability(y, wide_d, folds, targets)
        null = ridge_null_r(d, folds, rng=rng)
        rows.append(
            {
                "gene_id": gene_id,
                "n_cis_variants": h.m,
                "h2_cis": h.h2,
                "h2_cis_se": h.se,
                "n_wide_variants": np.nan if wide is None else wide.m,
                "h2_cis_wide": np.nan if wide is None else wide.h2,
                "h2_cis_wide_se": np.nan if wide is None else wide.se,
                "null_r": float(null.mean()),
                "null_frac_below_0": float((null < 0).mean()),
            }
        )
    return pd.DataFrame(rows, columns=["gene_id", *HERITABILITY_COLUMNS[1:], "null_r", "null_frac_below_0"])


def heritability_columns(study: Study, names) -> dict[str, str]:
    """Fit name -> the heritability.tsv column bounding its r (``h2_cis`` or ``h2_cis_wide``),
    asked of the fit's own method (:meth:`hapexpr.methods.base.Method.heritability_column`);
    ``h2_cis`` for rows with no fit record (predictions written by hand, a removed fit)."""
    out = {}
    for name in names:
        try:
            record = fit_record(study, name)
            method = build(record["method"], record.get("options"), fit_name=name)
            out[name] = method.heritability_column(study)
        except (StudyError, InputError, KeyError):
            out[name] = "h2_cis"
    return out


def genes_without_model(study: Study, names) -> dict[str, int]:
    """Fit name -> genes of the study it had nothing to learn from in cross-validation (no
    variant, say: ``genes_without_model`` of its fit.json; these genes have no rows in
    predictions.tsv, so metrics cannot see them). 0 for rows with no fit record."""
    out = {}
    for name in names:
        try:
            out[name] = len(fit_record(study, name).get("genes_without_model", []))
        except StudyError:
            out[name] = 0
    return out


def truth_path(study: Study) -> Path | None:
    """The simulator's truth.tsv, which ``prepare`` copies into the study; None when the study
    has none (a real cohort, or a study prepared before prepare copied it)."""
    inside = study.path / "truth.tsv"
    return inside if inside.exists() else None


def read_truth(study: Study) -> pd.DataFrame | None:
    """The simulated truth (gene_id, h2) when the expression came from ``hapexpr simulate``."""
    path = truth_path(study)
    if path is None:
        return None
    truth = pd.read_csv(path, sep="\t", dtype={"gene_id": str})
    if not {"gene_id", "h2"} <= set(truth.columns):
        return None
    # Predictions are judged against expression residualised on the covariates, so the ceiling
    # is the genetic share of what remains after that (the simulator records it).
    col = "h2_residualised" if "h2_residualised" in truth.columns else "h2"
    return truth[["gene_id", col]].rename(columns={col: "h2"})


def _write_tsv(path: Path, df: pd.DataFrame) -> None:
    with atomic_open(path) as fh:
        df.to_csv(fh, sep="\t", index=False, float_format="%.6g")


def evaluate_study(
    study_path: str | Path, *, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Write STUDY/metrics.tsv, comparisons.tsv, comparisons_per_gene.tsv and heritability.tsv;
    return (metrics, summary, comparisons)."""
    study = Study.open(study_path)
    predictions = read_predictions(study.path)
    if predictions.empty:
        raise StudyError(
            "there are no predictions to evaluate",
            path=study.path,
            hint="run `hapexpr fit STUDY --method elastic-net` (or another method) first",
        )
    metrics = gene_metrics(predictions, study.n_folds)
    refs = gene_references(study, sorted(metrics["gene_id"].unique()), seed=seed)
    metrics = metrics.merge(refs.drop(columns=["n_cis_variants", "n_wide_variants"]), on="gene_id", how="left")
    metrics["ratio_h2_cis"] = metrics["pearson_r"] / np.sqrt(metrics["h2_cis"].where(metrics["h2_cis"] > 0))
    names = sorted(metrics["method"].unique())
    metrics["h2_features_from"] = metrics["method"].map(heritability_columns(study, names))
    wide = metrics["h2_features_from"] == "h2_cis_wide"
    metrics["h2_features"] = metrics["h2_cis"].where(~wide, metrics["h2_cis_wide"])
    metrics["ratio_h2_features"] = metrics["pearson_r"] / np.sqrt(
        metrics["h2_features"].where(metrics["h2_features"] > 0)
    )
    heritability = refs[HERITABILITY_COLUMNS]
    truth = read_truth(study)
    if truth is not None:
        metrics = metrics.merge(truth, on="gene_id", how="left")
        metrics["ceiling"] = np.sqrt(metrics["h2"].clip(lower=0))
        metrics["ratio"] = metrics["pearson_r"] / metrics["ceiling"].where(metrics["ceiling"] > 0)
        heritability = heritability.merge(truth.rename(columns={"h2": "h2_true"}), on="gene_id", how="left")
    summary = summarise(metrics, no_model=genes_without_model(study, names))
    comparisons = compare(metrics)
    per_gene = compare_per_gene(predictions, n_boot=n_boot, seed=seed)
    sig = significant_pairs(per_gene)
    if not sig.empty:
        comparisons = comparisons.merge(sig, on=["method_a", "method_b"], how="left")
    metrics["gene_name"] = metrics["gene_id"].map(study.gene_names)  # last: scripts read columns by position too
    _write_tsv(study.path / "metrics.tsv", metrics)
    _write_tsv(study.path / "comparisons.tsv", comparisons)
    _write_tsv(study.path / "comparisons_per_gene.tsv", per_gene)
    _write_tsv(study.path / "heritability.tsv", heritability)
    return metrics, summary, comparisons


# printed in place of a summary value, to fit a screen
_SHORT = {"h2_cis": "window", "h2_cis_wide": "cis"}
_LABELS = {
    "genes_no_model": "none",
    "genes_constant": "const",
    "h2_features_from": "h2 of",
    "mean_r": "mean r",
    "median_r": "median",
    "frac_r_below_0": "r<0",
    "null_mean_r": "null r",
    "null_frac_r_below_0": "null r<0",
    "genes_q05": "q<.05",
    "ratio_to_h2": "r/√h2",
    "mean_r_h2_stratum0": "h2<.05",
    "mean_r_h2_stratum1": ".05-.2",
    "mean_r_h2_stratum2": "h2>.2",
    "ratio_to_ceiling": "true ratio",
}
# kept in the summary table and the report, left out of the terminal to fit a screen
_NOT_PRINTED = ("genes_h2_stratum", "mean_r_heritable", "mean_ceiling_heritable")


MAX_PRINTED_PAIRS = 8


def print_summary(summary: pd.DataFrame, comparisons: pd.DataFrame, *, reference: str | None = None) -> None:
    """The summary and comparisons as two compact tables (one line per method / pair). With more
    than ``MAX_PRINTED_PAIRS`` pairs only those with ``reference`` (the field's baseline) are
    printed, so the summary fits a screen; comparisons.tsv holds them all."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    shown = [c for c in summary.columns if not c.startswith(_NOT_PRINTED)]
    table = Table(
        title="Per-gene r across held-out individuals (pooled out-of-fold)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    cells = [
        [
            _SHORT.get(v, v) if isinstance(v, str) else (f"{v:d}" if isinstance(v, (int, np.integer)) else f"{v:.3f}")
            for v in row
        ]
        for row in summary[shown].itertuples(index=False)
    ]
    for i, col in enumerate(shown):
        # values never wrap (their width is the column's minimum); a long header wraps instead of
        # being cut ("true rat…")
        width = max((len(str(c[i])) for c in cells), default=1)
        table.add_column(
            _LABELS.get(col, col), justify="left" if col == "method" else "right", min_width=width, overflow="fold"
        )
    for row in cells:
        table.add_row(*row)
    console.print(table)
    strata = [c for c in summary.columns if c.startswith("genes_h2_stratum")]
    if strata:
        counts = ", ".join(f"{label}: {int(summary[c].max())}" for (_, _, label), c in zip(H2_STRATA, strata))
        console.print(
            "none: genes without a model in CV (no rows); const: genes with constant predictions (r = 0 in the "
            "means); r<0: share of the other genes, beside its null: that share for a ridge on each gene's window "
            "variants under simulated null phenotypes, in the study's folds; q<.05: genes at BH q < 0.05; r/√h2: "
            "mean r over mean sqrt(h2) (HE regression on the normalised, residualised expression, genes with "
            "h2 >= 0.05), h2 of the variants the method reads (h2 of: window, h2_cis of the sequence window; cis, "
            f"h2_cis_wide of the +-cis-window store); mean r by that h2 (largest count over methods: {counts}).",
            style="dim",
        )
    title = "Paired comparisons on common genes (wins; Wilcoxon p, BH q; genes better at bootstrap q<.05)"
    if len(comparisons) > MAX_PRINTED_PAIRS and reference is not None:
        shown = comparisons[(comparisons["method_a"] == reference) | (comparisons["method_b"] == reference)]
        if len(shown):
            title = (
                f"Paired comparisons with {reference} ({len(shown)} of {len(comparisons)} pairs; all in "
                "comparisons.tsv): wins; Wilcoxon p, BH q; genes better at bootstrap q<.05"
            )
            comparisons = shown
    if not comparisons.empty:
        t2 = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        extra = [c for c in ("a_better_q05", "b_better_q05") if c in comparisons]
        for col in [
            "method_a",
            "method_b",
            "n_genes",
            "a_wins",
            "b_wins",
            "mean_diff",
            "wilcoxon_p",
            "wilcoxon_q",
            *extra,
        ]:
            t2.add_column(
                col.replace("_better_q05", " better"), justify="left" if col.startswith("method") else "right"
            )
        for r in comparisons.itertuples(index=False):
            t2.add_row(
                r.method_a,
                r.method_b,
                str(r.n_genes),
                str(r.a_wins),
                str(r.b_wins),
                f"{r.mean_diff:+.3f}",
                _p(r.wilcoxon_p),
                _p(r.wilcoxon_q),
                *[_count(getattr(r, c)) for c in extra],
            )
        console.print(t2)


def _p(v: float) -> str:
    return "nan" if np.isnan(v) else f"{v:.3g}"


def _count(v) -> str:
    return "-" if pd.isna(v) else str(int(v))
