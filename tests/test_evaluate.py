"""Correlations and comparisons against scipy as the oracle."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hapexpr.evaluate import compare, gene_metrics, pearson, spearman, summarise


def test_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=50)
        y = 0.5 * x + rng.normal(size=50)
        y[::7] = y[0]  # ties, for spearman
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_constant_prediction_is_nan_and_counts_as_zero():
    assert np.isnan(pearson(np.arange(5.0), np.ones(5)))
    metrics = pd.DataFrame({"method": ["m", "m"], "gene_id": ["a", "b"], "pearson_r": [np.nan, 0.4]})
    s = summarise(metrics)
    assert s.loc[0, "mean_r"] == pytest.approx(0.2)


def _predictions(rng, methods, genes=6, n=40, folds=4):
    rows = []
    for g in range(genes):
        obs = rng.normal(size=n)
        for m, noise in methods.items():
            pred = obs + noise * rng.normal(size=n)
            rows.append(pd.DataFrame({"method": m, "gene_id": f"g{g}", "sample_id": [f"s{i}" for i in range(n)],
                                      "fold": np.arange(n) % folds, "observed": obs, "predicted": pred}))
    return pd.concat(rows, ignore_index=True)


def test_gene_metrics_per_gene_and_per_fold():
    rng = np.random.default_rng(1)
    preds = _predictions(rng, {"good": 0.5, "bad": 5.0})
    m = gene_metrics(preds, folds=4)
    assert len(m) == 12 and set(m.columns) >= {"method", "gene_id", "n", "pearson_r", "spearman_r", "pearson_r_fold3"}
    one = preds[(preds.method == "good") & (preds.gene_id == "g2")]
    row = m[(m.method == "good") & (m.gene_id == "g2")].iloc[0]
    assert row["pearson_r"] == pytest.approx(stats.pearsonr(one.observed, one.predicted).statistic)
    f1 = one[one.fold == 1]
    assert row["pearson_r_fold1"] == pytest.approx(stats.pearsonr(f1.observed, f1.predicted).statistic)
    assert row["pearson_p"] == pytest.approx(stats.pearsonr(one.observed, one.predicted).pvalue)


def test_compare_counts_wins_and_uses_paired_wilcoxon():
    rng = np.random.default_rng(2)
    m = gene_metrics(_predictions(rng, {"good": 0.3, "bad": 3.0}, genes=10), folds=4)
    c = compare(m).iloc[0]
    wide = m.pivot(index="gene_id", columns="method", values="pearson_r")
    assert (c.method_a, c.method_b) == ("bad", "good")
    assert c.b_wins == int((wide["good"] > wide["bad"]).sum())
    assert c.wilcoxon_p == pytest.approx(stats.wilcoxon(wide["bad"], wide["good"]).pvalue)
