"""Correlations and comparisons against scipy as the oracle."""

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args
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
            rows.append(
                pd.DataFrame(
                    {
                        "method": m,
                        "gene_id": f"g{g}",
                        "sample_id": [f"s{i}" for i in range(n)],
                        "fold": np.arange(n) % folds,
                        "observed": obs,
                        "predicted": pred,
                    }
                )
            )
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


# --- comparisons on common genes, q-values, per-gene bootstrap, null expectation -----------------

from hapexpr.evaluate import (  # noqa: E402
    bh_qvalues,
    bootstrap_r,
    bootstrap_weights,
    compare_per_gene,
    paired_bootstrap,
    print_summary,
    ridge_null_r,
)


def test_compare_pairs_only_genes_both_methods_have():
    rng = np.random.default_rng(3)
    m = gene_metrics(_predictions(rng, {"full": 0.5}, genes=16), folds=4)
    small = gene_metrics(_predictions(rng, {"small": 0.2}, genes=4), folds=4)
    c = compare(pd.concat([m, small], ignore_index=True)).iloc[0]
    # the old pivot filled the 12 genes "small" lacks with r = 0 and counted them as wins
    assert c.n_genes == 4 and c.a_wins + c.b_wins + c.ties == 4
    wide = pd.concat([m, small]).pivot(index="gene_id", columns="method", values="pearson_r").dropna()
    assert c.wilcoxon_p == pytest.approx(stats.wilcoxon(wide["full"], wide["small"]).pvalue)


def test_pearson_q_is_benjamini_hochberg_per_method():
    rng = np.random.default_rng(4)
    m = gene_metrics(_predictions(rng, {"good": 2.0, "bad": 8.0}, genes=30, n=30), folds=4)
    for method, df in m.groupby("method"):
        np.testing.assert_allclose(df["pearson_q"], stats.false_discovery_control(df["pearson_p"]), rtol=1e-12)
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    q = bh_qvalues(p)
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[~np.isnan(p)], stats.false_discovery_control(p[~np.isnan(p)]))


def test_bootstrap_matches_a_slow_loop_over_resamples():
    rng = np.random.default_rng(5)
    n, genes = 25, 3
    obs = rng.normal(size=(genes, n))
    pa, pb = obs + rng.normal(size=(genes, n)), obs + 2 * rng.normal(size=(genes, n))
    pb[2] = 1.0  # a constant prediction counts as r = 0 in every resample
    w = bootstrap_weights(n, n_boot=200, seed=1)
    res = paired_bootstrap(obs, pa, obs, pb, w)
    deltas = np.empty((200, genes))
    for b in range(200):
        idx = np.repeat(np.arange(n), w[b].astype(int))  # the individuals drawn in resample b
        for g in range(genes):
            ra = stats.pearsonr(obs[g, idx], pa[g, idx]).statistic
            rb = 0.0 if g == 2 else stats.pearsonr(obs[g, idx], pb[g, idx]).statistic
            deltas[b, g] = ra - rb
    np.testing.assert_allclose(bootstrap_r(obs, pa, w) - bootstrap_r(obs, pb, w), deltas, atol=1e-10)
    np.testing.assert_allclose(res["ci_low"], np.percentile(deltas, 2.5, axis=0), atol=1e-10)
    tail = np.minimum((deltas <= 0).sum(0), (deltas >= 0).sum(0))
    np.testing.assert_allclose(res["p"], np.minimum(1, 2 * (tail + 1) / 201))
    assert res["delta_r"][2] == pytest.approx(stats.pearsonr(obs[2], pa[2]).statistic)


def _steiger_se(r12, r13, r23, n):
    """Asymptotic SE of r12 - r13 for correlations sharing variable 1 (Pearson-Filon / Steiger 1980)."""
    cov = (r23 * (1 - r12**2 - r13**2) - 0.5 * r12 * r13 * (1 - r12**2 - r13**2 - r23**2)) / n
    var = ((1 - r12**2) ** 2 + (1 - r13**2) ** 2) / n - 2 * cov
    return np.sqrt(var)


def test_bootstrap_agrees_with_steigers_test_for_dependent_correlations():
    rng = np.random.default_rng(6)
    n, genes = 2000, 12
    obs = rng.normal(size=(genes, n))
    shared = rng.normal(size=(genes, n))  # the two methods' errors are correlated, as real ones are
    gain = np.linspace(0.0, 0.25, genes)[:, None]
    pa = (0.5 + gain) * obs + shared + 0.5 * rng.normal(size=(genes, n))
    pb = 0.5 * obs + shared + 0.5 * rng.normal(size=(genes, n))
    w = bootstrap_weights(n, n_boot=1000, seed=0)
    res = paired_bootstrap(obs, pa, obs, pb, w)
    sd_boot = (bootstrap_r(obs, pa, w) - bootstrap_r(obs, pb, w)).std(axis=0)
    r12 = np.array([stats.pearsonr(o, a).statistic for o, a in zip(obs, pa)])
    r13 = np.array([stats.pearsonr(o, b).statistic for o, b in zip(obs, pb)])
    r23 = np.array([stats.pearsonr(a, b).statistic for a, b in zip(pa, pb)])
    se = _steiger_se(r12, r13, r23, n)
    np.testing.assert_allclose(sd_boot, se, rtol=0.15)
    z = (r12 - r13) / se
    p_steiger = 2 * stats.norm.sf(np.abs(z))
    # the same genes are significant at 5%, away from the border
    clear = np.abs(np.abs(z) - 1.96) > 0.6
    assert clear.sum() >= 8
    assert np.array_equal(res["p"][clear] < 0.05, p_steiger[clear] < 0.05)
    assert (res["p"] < 0.05).sum() >= 3 and (res["p"] >= 0.05).sum() >= 2


def test_compare_per_gene_pairs_on_common_genes_with_q_per_pair():
    rng = np.random.default_rng(7)
    preds = _predictions(rng, {"good": 0.3, "bad": 3.0}, genes=8, n=60)
    extra = _predictions(rng, {"only": 1.0}, genes=2, n=60)
    per = compare_per_gene(pd.concat([preds, extra], ignore_index=True), n_boot=300, seed=0)
    assert list(per.columns) == [
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
    gb = per[(per.method_a == "bad") & (per.method_b == "good")]
    assert len(gb) == 8 and (gb.n == 60).all()
    assert (gb.delta_r < 0).all() and (gb.ci_high < 0).all() and (gb.p < 0.05).all()
    np.testing.assert_allclose(gb.q, stats.false_discovery_control(gb.p))
    assert (gb.ci_low <= gb.delta_r).all() and (gb.delta_r <= gb.ci_high).all()
    only = per[per.method_b == "only"]  # "only" shares genes g0 and g1 with each of the others
    assert len(only) == 4 and set(only.gene_id) == {"g0", "g1"}


def test_adaptive_bootstrap_p_matches_a_brute_force_bootstrap_below_the_old_floor():
    """Genes with fewer than MIN_TAIL resamples on the rarer side get more (10x per stage): their
    p goes below the 2/1001 floor of 1,000 resamples and agrees with a plain bootstrap of 200,000
    resamples drawn independently; genes with a clear tail keep the first 1,000's p exactly."""
    from hapexpr.evaluate import MIN_TAIL

    rng = np.random.default_rng(11)
    n, genes = 120, 4
    obs, shared = np.repeat(rng.normal(size=(2, 1, n)), genes, axis=1)
    gain = np.array([0.0, 0.1, 0.4, 1.5])[:, None]  # no difference ... an overwhelming one
    pa = (0.6 + gain) * obs + shared + 0.6 * rng.normal(size=n)
    pb = 0.6 * obs + shared + 0.6 * rng.normal(size=n)
    w = bootstrap_weights(n, n_boot=1000, seed=0)
    plain = paired_bootstrap(obs, pa, obs, pb, w)
    adaptive = paired_bootstrap(obs, pa, obs, pb, w, seed=0, max_boot=100_000)
    refined = np.minimum(plain["below"], plain["above"]) < MIN_TAIL
    np.testing.assert_array_equal(adaptive["p"][~refined], plain["p"][~refined])
    np.testing.assert_array_equal(adaptive["n_boot"][~refined], 1000)
    np.testing.assert_array_equal(adaptive["ci_low"], plain["ci_low"])
    assert refined[2] and refined[3] and not refined[0]
    # brute force: 200,000 resamples in blocks, the same statistic
    below, above = np.zeros(genes), np.zeros(genes)
    for i in range(40):
        wb = bootstrap_weights(n, n_boot=5000, seed=1000 + i)
        d = bootstrap_r(obs, pa, wb) - bootstrap_r(obs, pb, wb)
        below, above = below + (d <= 0).sum(0), above + (d >= 0).sum(0)
    brute = np.minimum(1, 2 * (np.minimum(below, above) + 1) / 200_001)
    assert 2e-4 < brute[2] < 2 / 1001  # a p the old floor hid, resolved by the brute force
    assert adaptive["p"][2] < 2 / 1001 and 0.5 < adaptive["p"][2] / brute[2] < 2
    assert adaptive["p"][3] == pytest.approx(2 / 100_001)  # no resample on the other side: the new floor
    assert adaptive["n_boot"][3] == 100_000


def test_null_expectation_matches_cross_validation_under_the_null():
    """Pooled out-of-fold r under the null through the real CV loop (scikit-learn ridge), against
    the vectorised reference that evaluate reports."""
    from sklearn.linear_model import Ridge

    from hapexpr.crossval import cross_validate_gene

    rng = np.random.default_rng(8)
    n, genes = 150, 500
    folds = np.arange(n) % 5
    observed_r, expected = [], []
    for _ in range(genes):
        d = rng.binomial(2, rng.uniform(0.1, 0.5, size=4)[:, None], size=(4, n)).astype(float)
        z = ((d - d.mean(1, keepdims=True)) / d.std(1, keepdims=True)).T
        y = rng.normal(size=n)
        o, p = cross_validate_gene(z, y, None, folds, lambda s: Ridge(alpha=4.0), seed=0)
        observed_r.append(pearson(o, p))
        expected.append(ridge_null_r(d, folds, reps=16, rng=rng).mean())
    observed_r, expected = np.array(observed_r), np.array(expected)
    se = np.sqrt(observed_r.var() / genes + expected.var() / genes)
    assert observed_r.mean() < -4 * observed_r.std() / np.sqrt(genes)  # the bias is real ...
    assert abs(observed_r.mean() - expected.mean()) < 3 * se  # ... and the reference reproduces it


def test_printed_summary_fits_a_screen(capsys):
    methods = ["elastic-net", "enformer", "enformer-ridge", "nt-transformer", "ridge-probe", "stack"]
    rng = np.random.default_rng(9)
    rows = []
    for m in methods:
        for g in range(20):
            rows.append(
                {
                    "method": m,
                    "gene_id": f"g{g}",
                    "pearson_r": rng.normal(0.2, 0.2),
                    "pearson_q": rng.uniform(),
                    "null_r": -0.01,
                    "null_frac_below_0": 0.52,
                    "h2_cis": rng.uniform(0, 0.5),
                    "ceiling": rng.uniform(0, 0.7),
                }
            )
    metrics = pd.DataFrame(rows)
    comparisons = compare(metrics).assign(a_better_q05=1, b_better_q05=0)
    print_summary(summarise(metrics), comparisons)
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40
    assert "null r" in out and "q<.05" in out and "h2>.2" in out and "nt-transformer" in out


def _study_predictions(study_path, methods):
    """Predictions for every gene of a prepared study: the observed residualised expression and
    a noisy copy of it per method (noise sd given), in predictions.tsv's layout."""
    from hapexpr.crossval import residualise, study_targets
    from hapexpr.study import Study

    study = Study.open(study_path)
    expr, cov = study_targets(study)
    rng = np.random.default_rng(0)
    rows = []
    for m, (noise, genes) in methods.items():
        for g in study.gene_ids[:genes]:
            obs = residualise(expr.loc[g].to_numpy(float), cov, np.ones(len(study.folds), bool))
            rows.append(
                pd.DataFrame(
                    {
                        "method": m,
                        "gene_id": g,
                        "sample_id": study.sample_ids,
                        "fold": study.folds,
                        "observed": obs,
                        "predicted": obs + noise * rng.normal(size=len(obs)),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_evaluate_study_writes_the_new_tables(study_copy):
    from hapexpr.evaluate import evaluate_study, read_truth
    from hapexpr.study import Study

    preds = _study_predictions(study_copy, {"good": (0.5, 4), "partial": (2.0, 2)})
    preds.to_csv(study_copy / "predictions.tsv", sep="\t", index=False)
    metrics, summary, comparisons = evaluate_study(study_copy, n_boot=200)
    for col in (
        "pearson_q",
        "null_r",
        "null_frac_below_0",
        "h2_cis",
        "h2_cis_se",
        "ratio_h2_cis",
        "h2_features",
        "ratio_h2_features",
        "h2",
        "ceiling",
    ):
        assert col in metrics.columns, col
    assert comparisons.loc[0, "n_genes"] == 2
    on_disk = pd.read_csv(study_copy / "metrics.tsv", sep="\t", dtype={"gene_id": str})
    assert on_disk.columns[-1] == "gene_name"  # last: scripts reading the other columns keep working
    genes = pd.read_csv(study_copy / "genes.tsv", sep="\t", dtype=str).set_index("gene_id")["gene_name"]
    assert (on_disk["gene_name"] == on_disk["gene_id"].map(genes)).all() and on_disk["gene_name"].notna().all()
    per = pd.read_csv(study_copy / "comparisons_per_gene.tsv", sep="\t")
    assert len(per) == 2 and (per["n"] == len(preds[preds.method == "good"]) / 4).all()
    her = pd.read_csv(study_copy / "heritability.tsv", sep="\t", dtype={"gene_id": str})
    assert list(her.columns) == [
        "gene_id",
        "n_cis_variants",
        "h2_cis",
        "h2_cis_se",
        "n_wide_variants",
        "h2_cis_wide",
        "h2_cis_wide_se",
        "h2_true",
    ]
    assert len(her) == 4 and her["h2_cis_se"].gt(0).all()
    truth = read_truth(Study.open(study_copy))
    np.testing.assert_allclose(her.set_index("gene_id").loc[truth.gene_id, "h2_true"], truth["h2"], atol=1e-6)
    assert {"genes_q05", "null_mean_r", "ratio_to_h2", "mean_r_h2_stratum2", "genes_no_model"} <= set(summary.columns)
    # no fit records for these hand-written predictions: the window's h2 bounds them
    assert (metrics["h2_features_from"] == "h2_cis").all()
    np.testing.assert_allclose(metrics["h2_features"], metrics["h2_cis"])
    assert summary.set_index("method").loc["good", "genes_q05"] == int(
        (metrics.query("method == 'good'").pearson_q < 0.05).sum()
    )


def test_wide_heritability_uses_the_cis_window_variants_read_from_the_vcf(tiny_cohort, tiny_study):
    """h2_cis_wide is HE regression on every variant within +-cis_window of the TSS with MAF >=
    0.01: the same estimate from dosages read straight from the VCF with cyvcf2."""
    from cyvcf2 import VCF

    from hapexpr.crossval import fold_targets, study_targets
    from hapexpr.evaluate import gene_references
    from hapexpr.heritability import cis_heritability
    from hapexpr.study import Study

    study = Study.open(tiny_study)
    refs = gene_references(study, study.gene_ids).set_index("gene_id")
    expr, cov = study_targets(study)
    vcf = VCF(str(tiny_cohort / "genotypes.vcf.gz"))
    order = [vcf.samples.index(s) for s in study.sample_ids]
    for gene_id in study.gene_ids:
        info = study.gene_info(gene_id)
        lo, hi = max(1, int(info["tss"]) - study.cis_window), int(info["tss"]) + study.cis_window
        d = np.array([v.genotype.array()[order, :2].sum(axis=1) for v in vcf(f"{info['chrom']}:{lo}-{hi}")], float)
        maf = np.minimum(d.mean(axis=1) / 2, 1 - d.mean(axis=1) / 2)
        d = d[maf >= 0.01]
        h = cis_heritability(
            expr.loc[gene_id].to_numpy(float), d, study.folds, lambda y, t: fold_targets(y, cov, t, study.normalise)
        )
        assert refs.loc[gene_id, "n_wide_variants"] == h.m > refs.loc[gene_id, "n_cis_variants"]
        np.testing.assert_allclose(refs.loc[gene_id, ["h2_cis_wide", "h2_cis_wide_se"]], [h.h2, h.se], rtol=1e-9)


def test_wide_heritability_sees_distal_variants_the_window_misses(tmp_path):
    """Under the distal architecture (causal variants 10 kb-1 Mb from the TSS) the window's h2_cis
    is near 0 while h2_cis_wide recovers the simulated heritability."""
    from hapexpr.evaluate import gene_references
    from hapexpr.prepare import prepare_study
    from hapexpr.simulate import simulate_cohort
    from hapexpr.study import Study

    cohort = tmp_path / "c"
    simulate_cohort(cohort, individuals=300, genes=8, window=2000, seed=3, architecture="distal")
    prepare_study(**prepare_args(cohort, tmp_path / "s"))
    study = Study.open(tmp_path / "s")
    refs = gene_references(study, study.gene_ids)
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    true_h2 = truth.loc[refs["gene_id"], "h2_residualised"].to_numpy()
    assert refs["h2_cis"].mean() < 0.1 < true_h2.mean() - 0.1
    assert abs(refs["h2_cis_wide"].mean() - true_h2.mean()) < 0.1
    assert (refs["n_wide_variants"] > refs["n_cis_variants"]).all()


def test_wide_heritability_is_empty_without_a_cis_store(study_copy):
    """A study prepared before hapexpr stored cis genotypes (no ``cis_window`` in study.json, no
    cis/) still evaluates: the wide columns are empty."""
    import json
    import shutil

    from hapexpr.evaluate import gene_references
    from hapexpr.study import Study

    meta = json.loads((study_copy / "study.json").read_text())
    del meta["params"]["cis_window"]
    (study_copy / "study.json").write_text(json.dumps(meta))
    shutil.rmtree(study_copy / "cis")
    study = Study.open(study_copy)
    refs = gene_references(study, study.gene_ids)
    assert refs[["n_wide_variants", "h2_cis_wide", "h2_cis_wide_se"]].isna().all().all()
    assert refs["h2_cis"].notna().all()


def test_truth_is_read_from_the_study_only(study_copy):
    """evaluate reads the truth prepare copied into the study, never a file beside the inputs."""
    from hapexpr.evaluate import read_truth, truth_path
    from hapexpr.study import Study

    study = Study.open(study_copy)
    assert truth_path(study) == study_copy / "truth.tsv"
    pd.DataFrame({"gene_id": study.gene_ids, "h2": 0.123}).to_csv(study_copy / "truth.tsv", sep="\t", index=False)
    assert (read_truth(study)["h2"] == 0.123).all()
    (study_copy / "truth.tsv").unlink()  # the simulator's truth.tsv is still beside the expression file
    assert truth_path(study) is None and read_truth(study) is None


def test_genes_missing_individuals_are_handled_row_by_row():
    rng = np.random.default_rng(10)
    preds = _predictions(rng, {"a": 0.5, "b": 1.0}, genes=3, n=40)
    drop = preds.index[(preds.method == "b") & (preds.gene_id == "g1")][:5]
    preds = preds.drop(drop)
    m = gene_metrics(preds, folds=4).set_index(["method", "gene_id"])
    one = preds[(preds.method == "b") & (preds.gene_id == "g1")]
    assert m.loc[("b", "g1"), "n"] == 35 and m.loc[("a", "g1"), "n"] == 40
    assert m.loc[("b", "g1"), "pearson_r"] == pytest.approx(stats.pearsonr(one.observed, one.predicted).statistic)
    assert m.loc[("b", "g1"), "spearman_r"] == pytest.approx(stats.spearmanr(one.observed, one.predicted).statistic)
    assert m.loc[("a", "g2"), "pearson_p"] == pytest.approx(
        stats.pearsonr(
            *preds[(preds.method == "a") & (preds.gene_id == "g2")][["observed", "predicted"]].to_numpy().T
        ).pvalue
    )
    per = compare_per_gene(preds, n_boot=200, seed=3).set_index("gene_id")
    assert per.loc["g1", "n"] == 35 and per.loc["g0", "n"] == 40
    a = preds[(preds.method == "a") & (preds.gene_id == "g1")].set_index("sample_id").loc[one.sample_id]
    # same individuals, same resamples (the pivot orders individuals by id, so sort both sides)
    order = np.argsort(one.sample_id.to_numpy())
    ref = paired_bootstrap(
        *(
            v[:, order]
            for v in (
                a.observed.to_numpy()[None],
                a.predicted.to_numpy()[None],
                one.observed.to_numpy()[None],
                one.predicted.to_numpy()[None],
            )
        ),
        bootstrap_weights(35, n_boot=200, seed=3),
        seed=3,  # the same adaptive refinement
    )
    assert per.loc["g1", "n_boot"] == ref["n_boot"][0]
    assert per.loc["g1", "ci_low"] == pytest.approx(ref["ci_low"][0]) and per.loc["g1", "p"] == pytest.approx(
        ref["p"][0]
    )


def test_heritability_strata_and_ratio_in_the_summary():
    from hapexpr.evaluate import h2_strata

    metrics = pd.DataFrame(
        {
            "method": "m",
            "gene_id": [f"g{i}" for i in range(6)],
            "pearson_r": [0.0, np.nan, 0.2, 0.3, 0.5, 0.6],
            "h2_cis": [-0.02, 0.01, 0.1, 0.15, 0.4, 0.5],
        }
    )
    s = summarise(metrics).iloc[0]
    assert s.genes_h2_stratum0 == 2 and s.genes_h2_stratum1 == 2 and s.genes_h2_stratum2 == 2
    assert s.mean_r_h2_stratum0 == pytest.approx(0.0) and s.mean_r_h2_stratum2 == pytest.approx(0.55)
    assert s.ratio_to_h2 == pytest.approx(np.mean([0.2, 0.3, 0.5, 0.6]) / np.mean(np.sqrt([0.1, 0.15, 0.4, 0.5])))
    st = h2_strata(metrics).set_index("stratum")
    assert st.loc["0.05-0.2", "ratio"] == pytest.approx(0.25 / np.mean(np.sqrt([0.1, 0.15])))
    # the lowest stratum's mean sqrt(h2) (0.05) is too close to 0 for its ratio to mean anything
    assert st.loc["h2 < 0.05", "mean_sqrt_h2"] == pytest.approx(np.mean(np.sqrt([0.0, 0.01])))
    assert np.isnan(st.loc["h2 < 0.05", "ratio"])


def test_printed_summary_keeps_to_the_reference_pairs_when_there_are_many(capsys):
    """Past MAX_PRINTED_PAIRS pairs only those with the reference method are printed (all are in
    comparisons.tsv), so the summary stays within a screen."""
    from hapexpr.evaluate import MAX_PRINTED_PAIRS, print_summary

    methods = [f"m{i}" for i in range(6)]
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    assert len(pairs) > MAX_PRINTED_PAIRS
    comparisons = pd.DataFrame(
        {
            "method_a": [a for a, _ in pairs],
            "method_b": [b for _, b in pairs],
            "n_genes": 5,
            "a_wins": 3,
            "b_wins": 2,
            "mean_diff": 0.01,
            "wilcoxon_p": 0.5,
            "wilcoxon_q": 0.6,
        }
    )
    summary = pd.DataFrame({"method": methods, "genes": 5, "mean_r": 0.1, "median_r": 0.1, "frac_r_below_0": 0.2})
    print_summary(summary, comparisons, reference="m3")
    captured = capsys.readouterr()
    out = (captured.out + captured.err).split("Paired comparisons")[1]
    assert "5 of 15 pairs" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("m") and "method_a" not in line]
    assert len(rows) == 5 and all("m3" in r[:2] for r in rows)


def test_r_below_0_share_counts_only_genes_whose_predictions_vary():
    """A constant prediction (r NaN) can never be r < 0: it counts as r = 0 in the means but is
    left out of the r < 0 share and of its null, and is counted apart (issue 20)."""
    metrics = pd.DataFrame(
        {
            "method": "m",
            "gene_id": [f"g{i}" for i in range(5)],
            "pearson_r": [np.nan, np.nan, -0.1, 0.2, 0.3],
            "null_r": -0.01,
            "null_frac_below_0": [0.9, 0.9, 0.5, 0.6, 0.4],
        }
    )
    s = summarise(metrics, no_model={"m": 3}).iloc[0]
    assert s.genes == 5 and s.genes_constant == 2 and s.genes_no_model == 3
    assert s.frac_r_below_0 == pytest.approx(1 / 3)  # was 1/5 with the constants as r = 0
    assert s.null_frac_r_below_0 == pytest.approx(0.5)
    assert s.mean_r == pytest.approx(0.4 / 5)


def test_ratio_uses_the_heritability_of_the_variants_each_method_reads(study_copy):
    """The +-1 Mb elastic net is judged against h2_cis_wide and a window method against h2_cis,
    as each fit's own method says (never by its name: an elastic net on the window variants
    named like the +-1 Mb one gets h2_cis; rows with no fit record get h2_cis)."""
    from hapexpr.evaluate import evaluate_study, heritability_columns
    from hapexpr.fit import fit_method
    from hapexpr.methods.registry import build
    from hapexpr.study import Study

    study = Study.open(study_copy)
    fit_method(study, build("elastic-net").bind(study), progress=False)
    fit_method(study, build("elastic-net", {"cis_window": 0}, fit_name="elastic-net-1mb").bind(study), progress=False)
    preds = pd.read_csv(study_copy / "predictions.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
    handmade = preds[preds.method == "elastic-net"].assign(method="handmade")
    pd.concat([preds, handmade]).to_csv(study_copy / "predictions.tsv", sep="\t", index=False)
    assert heritability_columns(study, ["elastic-net", "elastic-net-1mb", "handmade"]) == {
        "elastic-net": "h2_cis_wide",
        "elastic-net-1mb": "h2_cis",
        "handmade": "h2_cis",
    }
    metrics, summary, _ = evaluate_study(study_copy, n_boot=50)
    for name, column in (("elastic-net", "h2_cis_wide"), ("elastic-net-1mb", "h2_cis"), ("handmade", "h2_cis")):
        m = metrics[metrics.method == name]
        np.testing.assert_allclose(m["h2_features"], m[column])
        row = summary.set_index("method").loc[name]
        assert row.h2_features_from == column
        ok = m[column] >= 0.05
        want = m.loc[ok, "pearson_r"].fillna(0).mean() / np.sqrt(m.loc[ok, column]).mean() if ok.any() else np.nan
        np.testing.assert_allclose(row.ratio_to_h2, want)


def test_heritability_is_estimated_on_the_normalised_scale_the_models_see(tmp_path):
    """On raw-scale (log-normal, RPKM-like) expression prepared with --normalise inverse-normal,
    h2_cis is estimated on the in-fold normalised values the models are trained on: near the
    simulated truth, while HE on the raw values (what evaluate did before issue 20) is biased low."""
    import shutil

    from hapexpr.crossval import residualise, study_targets
    from hapexpr.evaluate import cis_dosages, gene_references
    from hapexpr.heritability import cis_heritability
    from hapexpr.prepare import prepare_study
    from hapexpr.simulate import simulate_cohort
    from hapexpr.study import Study

    cohort, raw = tmp_path / "c", tmp_path / "raw"
    simulate_cohort(cohort, individuals=300, genes=10, window=2000, seed=3)
    shutil.copytree(cohort, raw)
    expr = pd.read_csv(cohort / "expression.bed.gz", sep="\t")
    values = expr.columns[4:]
    expr[values] = np.round(100 * np.exp(expr[values].to_numpy(float)), 4)
    expr.to_csv(raw / "expression.bed.gz", sep="\t", index=False, compression="gzip")
    prepare_study(**prepare_args(raw, tmp_path / "s", normalise="inverse-normal"))
    study = Study.open(tmp_path / "s")
    refs = gene_references(study, study.gene_ids).set_index("gene_id")
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    true_h2 = truth.loc[refs.index, "h2_residualised"]
    expr_raw, cov = study_targets(study)
    on_raw = np.array(
        [
            cis_heritability(
                expr_raw.loc[g].to_numpy(float), cis_dosages(study, g), study.folds, lambda y, t: residualise(y, cov, t)
            ).h2
            for g in refs.index
        ]
    )
    se = np.sqrt((refs["h2_cis_se"] ** 2).sum()) / len(refs)
    assert abs(refs["h2_cis"].mean() - true_h2.mean()) < max(3 * se, 0.05)
    assert np.corrcoef(refs["h2_cis"], true_h2)[0, 1] > 0.7
    assert true_h2.mean() - on_raw.mean() > 0.08  # the defect the test guards against is real here
