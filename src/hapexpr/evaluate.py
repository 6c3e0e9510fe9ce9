"""``hapexpr evaluate``: per-gene correlations across held-out individuals, and comparisons.

Metrics are pure functions of the pooled out-of-fold predictions in STUDY/predictions.tsv.
A gene whose predictions are constant (e.g. an elastic net that kept no variant) has an
undefined correlation: it is written as NaN and counted as r = 0 in summaries, since a constant
prediction explains nothing.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hapexpr.errors import StudyError
from hapexpr.io.atomic import atomic_open
from hapexpr.study import Study
from hapexpr.crossval import read_predictions


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
    """One row per method and gene: ``method gene_id n pearson_r spearman_r pearson_p`` and
    ``pearson_r_fold<k>`` for each fold (r within that held-out fold alone)."""
    rows = []
    for (method, gene_id), df in predictions.groupby(["method", "gene_id"], sort=True):
        obs, pred = df["observed"].to_numpy(), df["predicted"].to_numpy()
        r = pearson(obs, pred)
        n = len(df)
        row = {"method": method, "gene_id": gene_id, "n": n, "pearson_r": r, "spearman_r": spearman(obs, pred),
               "pearson_p": _pearson_p(r, n)}
        for k in range(folds):
            f = df["fold"].to_numpy() == k
            row[f"pearson_r_fold{k}"] = pearson(obs[f], pred[f])
        rows.append(row)
    return pd.DataFrame(rows)


def _pearson_p(r: float, n: int) -> float:
    if np.isnan(r) or n < 3:
        return float("nan")
    if abs(r) >= 1:
        return 0.0
    t = r * np.sqrt((n - 2) / (1 - r * r))
    return float(2 * stats.t.sf(abs(t), n - 2))


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method: genes, mean and median r (NaN as 0), fraction of genes with r < 0, and
    the mean ratio to the ceiling where the truth is known."""
    out = []
    for method, df in metrics.groupby("method", sort=True):
        r = df["pearson_r"].fillna(0.0)
        row = {"method": method, "genes": len(df), "mean_r": r.mean(), "median_r": r.median(),
               "frac_r_below_0": float((r < 0).mean())}
        if "ceiling" in df:
            heritable = df["ceiling"] > 0
            row["mean_r_heritable"] = r[heritable].mean() if heritable.any() else float("nan")
            row["mean_ceiling_heritable"] = df.loc[heritable, "ceiling"].mean() if heritable.any() else float("nan")
            row["ratio_to_ceiling"] = row["mean_r_heritable"] / row["mean_ceiling_heritable"] if heritable.any() else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def compare(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods on their shared genes: genes won by each and the paired Wilcoxon
    signed-rank p-value of the per-gene r (NaN r counted as 0)."""
    wide = metrics.pivot(index="gene_id", columns="method", values="pearson_r").fillna(0.0)
    rows = []
    for a, b in combinations(sorted(wide.columns), 2):
        d = (wide[a] - wide[b]).to_numpy()
        p = float(stats.wilcoxon(wide[a], wide[b]).pvalue) if np.any(d != 0) and len(d) > 1 else float("nan")
        rows.append({"method_a": a, "method_b": b, "genes": len(d), "a_wins": int((d > 0).sum()),
                     "b_wins": int((d < 0).sum()), "ties": int((d == 0).sum()), "mean_diff": float(d.mean()),
                     "wilcoxon_p": p})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "genes", "a_wins", "b_wins", "ties", "mean_diff", "wilcoxon_p"])


def read_truth(study: Study) -> pd.DataFrame | None:
    """The simulated truth (gene_id, h2) when the expression came from ``hapexpr simulate``:
    STUDY/truth.tsv (prepare copies it in), else, for studies prepared before that, the file
    beside the expression input."""
    path = study.path / "truth.tsv"
    expr = study.meta.get("inputs", {}).get("expression", {}).get("path")
    if not path.exists() and expr:
        path = Path(expr).parent / "truth.tsv"
    if not path.exists():
        return None
    truth = pd.read_csv(path, sep="\t", dtype={"gene_id": str})
    if not {"gene_id", "h2"} <= set(truth.columns):
        return None
    # Predictions are judged against expression residualised on the covariates, so the ceiling
    # is the genetic share of what remains after that (the simulator records it).
    col = "h2_residualised" if "h2_residualised" in truth.columns else "h2"
    return truth[["gene_id", col]].rename(columns={col: "h2"})


def evaluate_study(study_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Write STUDY/metrics.tsv and STUDY/comparisons.tsv; return (metrics, summary, comparisons)."""
    study = Study.open(study_path)
    predictions = read_predictions(study.path)
    if predictions.empty:
        raise StudyError("there are no predictions to evaluate", path=study.path,
                         hint="run `hapexpr fit STUDY --method elastic-net` (or another method) first")
    metrics = gene_metrics(predictions, study.n_folds)
    truth = read_truth(study)
    if truth is not None:
        metrics = metrics.merge(truth, on="gene_id", how="left")
        metrics["ceiling"] = np.sqrt(metrics["h2"].clip(lower=0))
        metrics["ratio"] = metrics["pearson_r"] / metrics["ceiling"].where(metrics["ceiling"] > 0)
    summary, comparisons = summarise(metrics), compare(metrics)
    with atomic_open(study.path / "metrics.tsv") as fh:
        metrics.to_csv(fh, sep="\t", index=False, float_format="%.6g")
    with atomic_open(study.path / "comparisons.tsv") as fh:
        comparisons.to_csv(fh, sep="\t", index=False, float_format="%.6g")
    return metrics, summary, comparisons


_LABELS = {"mean_r": "mean r", "median_r": "median r", "frac_r_below_0": "r < 0", "mean_r_heritable": "mean r (h2>0)",
           "mean_ceiling_heritable": "ceiling sqrt(h2)", "ratio_to_ceiling": "ratio"}


def print_summary(summary: pd.DataFrame, comparisons: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    table = Table(title="Per-gene correlation across held-out individuals (pooled out-of-fold)")
    for col in summary.columns:
        table.add_column(_LABELS.get(col, col), justify="left" if col == "method" else "right")
    for row in summary.itertuples(index=False):
        table.add_row(*[v if isinstance(v, str) else (f"{v:d}" if isinstance(v, (int, np.integer)) else f"{v:.3f}") for v in row])
    console.print(table)
    if not comparisons.empty:
        t2 = Table(title="Paired comparisons (genes won; Wilcoxon signed-rank p)")
        for col in ["method_a", "method_b", "a_wins", "b_wins", "mean_diff", "wilcoxon_p"]:
            t2.add_column(col, justify="left" if col.startswith("method") else "right")
        for r in comparisons.itertuples(index=False):
            t2.add_row(r.method_a, r.method_b, str(r.a_wins), str(r.b_wins), f"{r.mean_diff:+.3f}",
                       "nan" if np.isnan(r.wilcoxon_p) else f"{r.wilcoxon_p:.3g}")
        console.print(t2)
