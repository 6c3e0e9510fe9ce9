"""The report's additions for evaluate's statistics: q-values, per-gene paired intervals and the
heritability strata."""

import re

import numpy as np
import pandas as pd

from hapexpr.evaluate import evaluate_study
from hapexpr.report import write_report
from hapexpr.study import Study


def _write_predictions(study_path, noise):
    study = Study.open(study_path)
    rng = np.random.default_rng(0)
    expr = study.expression.loc[:, study.sample_ids]
    parts = []
    for gene_id in study.gene_ids:
        obs = expr.loc[gene_id].to_numpy(float)
        obs = obs - obs.mean()
        for method, sd in noise.items():
            parts.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "gene_id": gene_id,
                        "sample_id": study.sample_ids,
                        "fold": study.folds,
                        "observed": obs,
                        "predicted": obs + sd * obs.std() * rng.normal(size=len(obs)),
                    }
                )
            )
    pd.concat(parts, ignore_index=True).to_csv(study_path / "predictions.tsv", sep="\t", index=False)


def test_report_shows_intervals_q_values_and_strata(study_copy):
    _write_predictions(study_copy, {"nt-transformer": 0.5, "elastic-net": 3.0, "ridge-probe": 1.0})
    evaluate_study(study_copy, n_boot=200)
    page = write_report(study_copy).read_text()
    sec = page[page.index('<h2 id="statistics">') : page.index('<h2 id="explain">')]
    assert "Results by estimated cis-heritability" in sec and "0.05-0.2" in sec and "h2 &gt; 0.2" in sec
    alts = re.findall(r'<img alt="([^"]*)"', sec)
    assert alts == [
        "per-gene r against estimated h2_cis",
        "per-gene r(elastic-net) - r(nt-transformer) with bootstrap intervals",
    ]
    per = pd.read_csv(study_copy / "comparisons_per_gene.tsv", sep="\t", dtype={"gene_id": str})
    row = per[(per.method_a == "elastic-net") & (per.method_b == "nt-transformer")].sort_values("q").iloc[0]
    assert f"<td>{row.ci_low:.3f}</td><td>{row.ci_high:.3f}</td>" in sec
    metrics = pd.read_csv(study_copy / "metrics.tsv", sep="\t", dtype={"gene_id": str})
    q = metrics[metrics.method == "ridge-probe"].pearson_q.iloc[0]
    assert f"<td>{q:.3g}</td>" in sec
    comp = page[page.index('<h2 id="comparisons">') : page.index('<h2 id="method-vs-method">')]
    assert "genes in common" in comp and "BH q" in comp and "genes a better (q &lt; 0.05)" in comp
    summary = page[page.index('<h2 id="summary">') : page.index('<h2 id="comparisons">')]
    assert "genes q &lt; 0.05" in summary and "r / estimated ceiling" in summary and "null r" in summary
    assert '<th class="l">h2 of</th>' in summary and "genes without a model" in summary

    # read back from disk (no re-evaluation), the page keeps the per-gene columns of comparisons
    page2 = write_report(study_copy, overwrite=True).read_text()
    assert "genes a better (q &lt; 0.05)" in page2[page2.index('<h2 id="comparisons">') :]


def test_the_report_shows_the_seed_spread(study_copy):
    """A fit with seeds.tsv (``fit --seeds N``) gets a seed-spread table: the per-gene SD of r
    across seeds, computed here independently."""
    from hapexpr.report import seed_spread

    study = Study.open(study_copy)
    _write_predictions(study_copy, {"nt-transformer": 0.8, "elastic-net": 1.2})
    rng = np.random.default_rng(0)
    seeds = pd.DataFrame(
        [{"gene_id": g, "seed": s, "pearson_r": rng.normal(0.3, 0.05)} for g in study.gene_ids for s in range(3)]
    )
    (study_copy / "models" / "nt-transformer").mkdir(parents=True)
    seeds.to_csv(study_copy / "models" / "nt-transformer" / "seeds.tsv", sep="\t", index=False)
    table = seed_spread(study, ["nt-transformer", "elastic-net"])
    assert list(table["method"]) == ["nt-transformer"] and int(table["seeds"].iloc[0]) == 3
    want = seeds.groupby("gene_id")["pearson_r"].std(ddof=1)
    assert abs(table["mean SD across seeds"].iloc[0] - want.mean()) < 1e-12
    assert "Seed spread" in write_report(study_copy).read_text()
