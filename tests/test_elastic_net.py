"""elastic-net: PredictDB conventions, checked against scikit-learn's ElasticNet and a
brute-force inner CV built from plain ElasticNet fits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet

from hapexpr.estimators.elastic_net import (
    ElasticNetModel,
    _LockstepPaths,
    inner_fold_ids,
    lambda_grid,
)
from hapexpr.methods.elastic_net import ElasticNet as ElasticNetMethod
from hapexpr.methods.elastic_net import ElasticNetOptions
from hapexpr.study import GeneData

ROOT = Path(__file__).resolve().parents[1]
WINDOW = {"cis_window": 0}  # hand-written studies store no cis genotypes and name no VCF


def _cohort(n=120, p=40, h2=0.5, seed=0):
    """(samples, variants) dosages with LD (neighbouring variants share haplotype blocks)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, size=p)
    base = rng.random((2 * n, 1)) < freq[0]
    haps = np.empty((2 * n, p), dtype=np.int8)
    for j in range(p):  # each variant copies its neighbour 70% of the time: LD
        fresh = rng.random(2 * n) < freq[j]
        copy = rng.random(2 * n) < 0.7
        base = np.where(copy, base[:, 0], fresh)[:, None]
        haps[:, j] = base[:, 0]
    X = (haps[0::2] + haps[1::2]).astype(np.float64)
    beta = np.zeros(p)
    causal = [c for c in (3, 17, 30) if c < p]
    beta[causal] = [0.8, -0.5, 0.4][: len(causal)]
    g = X @ beta
    y = g / g.std() * np.sqrt(h2) + rng.normal(size=n) * np.sqrt(1 - h2) + 5.0
    return X, y


def test_coefficients_match_sklearn_elasticnet_at_the_chosen_lambda():
    X, y = _cohort()
    model = ElasticNetModel(tol=1e-10, max_iter=100_000, seed=1).fit(X, y)
    assert 0 < model.best_index_ < 99
    Xk = X[:, model.kept_]
    mu, sd = Xk.mean(0), Xk.std(0)
    ref = ElasticNet(alpha=model.lambda_, l1_ratio=0.5, tol=1e-12, max_iter=1_000_000).fit((Xk - mu) / sd, y)
    # Dosage scale: divide the standardised coefficients by the population SD (glmnet).
    np.testing.assert_allclose(model.coef_[model.kept_], ref.coef_ / sd, atol=1e-6)
    assert model.intercept_ == pytest.approx(ref.intercept_ - (ref.coef_ / sd) @ mu, abs=1e-6)
    assert np.count_nonzero(model.coef_) == np.count_nonzero(ref.coef_)
    np.testing.assert_allclose(model.predict(X), ref.predict((Xk - mu) / sd), atol=1e-6)
    # The model does find the causal variants.
    assert {3, 17, 30} <= set(np.flatnonzero(model.coef_))


def test_default_tolerance_is_within_1e4_of_sklearn():
    X, y = _cohort(seed=3)
    model = ElasticNetModel(seed=0).fit(X, y)
    Xk = X[:, model.kept_]
    mu, sd = Xk.mean(0), Xk.std(0)
    ref = ElasticNet(alpha=model.lambda_, l1_ratio=0.5, tol=1e-12, max_iter=1_000_000).fit((Xk - mu) / sd, y)
    np.testing.assert_allclose(model.coef_[model.kept_] * sd, ref.coef_, atol=1e-3)


def test_wide_genes_more_variants_than_people_match_sklearn():
    """p > n, as at +-1 Mb: the screened solver's fit equals ElasticNet on every variant, and
    its pooled inner-CV error equals brute-force fits of every fold and penalty."""
    X, y = _cohort(n=60, p=300, seed=21)
    model = ElasticNetModel(n_lambdas=12, patience=None, tol=1e-10, max_iter=100_000, seed=2).fit(X, y)
    Xk = X[:, model.kept_]
    mu, sd = Xk.mean(0), Xk.std(0)
    Xs = (Xk - mu) / sd
    ref = ElasticNet(alpha=model.lambda_, l1_ratio=0.5, tol=1e-12, max_iter=1_000_000).fit(Xs, y)
    np.testing.assert_allclose(model.coef_[model.kept_] * sd, ref.coef_, atol=1e-6)
    assert np.count_nonzero(model.coef_) == np.count_nonzero(ref.coef_) > 0
    folds = model.inner_folds_
    sq = np.zeros((len(y), len(model.lambdas_)))
    for k in range(10):
        tr, te = folds != k, folds == k
        for j, lam in enumerate(model.lambdas_):
            fit = ElasticNet(alpha=lam, l1_ratio=0.5, tol=1e-12, max_iter=1_000_000).fit(Xs[tr], y[tr])
            sq[te, j] = (fit.predict(Xs[te]) - y[te]) ** 2
    np.testing.assert_allclose(model.cv_mse_, sq.mean(axis=0), rtol=1e-5)
    assert model.lambdas_[-1] / model.lambdas_[0] == pytest.approx(1e-2)  # glmnet's wide default


def test_kkt_check_repairs_a_screen_that_left_out_active_variables():
    """Jump from the all-zero solution straight to a small penalty: the strong rule, fed the
    gradient at zero, misses variables that are active there; the KKT check must add them, so
    every problem (10 folds and the full set) still equals ElasticNet on all variants."""
    X, y = _cohort(n=80, p=200, seed=22)
    Xs = (X - X.mean(0)) / X.std(0)
    folds = inner_fold_ids(80, 10, 0)
    grid = lambda_grid(Xs, y - y.mean(), alpha=0.5, n_lambdas=100)
    lam = grid[40]
    paths = _LockstepPaths(Xs, y, folds, l1_ratio=0.5, tol=1e-12, max_iter=100_000)
    screen = np.abs(paths.grad[-1]) >= 0.5 * lam  # what the strong rule keeps at this jump
    paths.step(lam, lam)
    for f, rows in enumerate(paths.rows):
        ref = ElasticNet(alpha=lam, l1_ratio=0.5, tol=1e-12, max_iter=1_000_000).fit(Xs[rows], y[rows])
        np.testing.assert_allclose(paths.coef(f), ref.coef_, atol=1e-7)
    active = np.flatnonzero(paths.coef(len(paths.rows) - 1))
    assert not screen[active].all()  # the screen alone would have missed some


def test_convergence_is_reported():
    X, y = _cohort(n=60, p=300, seed=24)
    assert ElasticNetModel(seed=0).fit(X, y).converged_
    assert not ElasticNetModel(seed=0, tol=1e-14, max_iter=2).fit(X, y).converged_


def test_lambda_is_the_minimum_of_a_brute_force_inner_cv():
    """Pooled inner-CV MSE from independent ElasticNet fits, one per fold and lambda."""
    X, y = _cohort(n=90, p=25, seed=4)
    model = ElasticNetModel(n_lambdas=15, patience=None, tol=1e-10, max_iter=100_000, seed=7).fit(X, y)
    Xk = X[:, model.kept_]
    Xs = (Xk - Xk.mean(0)) / Xk.std(0)
    folds = inner_fold_ids(len(y), 10, 7)
    np.testing.assert_array_equal(model.inner_folds_, folds)
    sq = np.zeros((len(y), len(model.lambdas_)))
    for k in range(10):
        tr, te = folds != k, folds == k
        for j, lam in enumerate(model.lambdas_):
            fit = ElasticNet(alpha=lam, l1_ratio=0.5, tol=1e-12, max_iter=100_000).fit(Xs[tr], y[tr])
            sq[te, j] = (fit.predict(Xs[te]) - y[te]) ** 2
    mse = sq.mean(axis=0)
    np.testing.assert_allclose(model.cv_mse_, mse, rtol=1e-5)
    assert model.best_index_ == int(np.argmin(mse))
    # glmnet's grid: the first lambda zeroes every coefficient, the last is 1e-4 of it (n > p).
    Xc = Xs - Xs.mean(0)
    np.testing.assert_allclose(model.lambdas_, lambda_grid(Xc, y - y.mean(), alpha=0.5, n_lambdas=15))
    assert model.lambdas_[-1] / model.lambdas_[0] == pytest.approx(1e-4)


def test_early_stop_picks_the_same_lambda_as_the_whole_grid():
    for seed in range(3):
        X, y = _cohort(seed=10 + seed, h2=0.3)
        fast = ElasticNetModel(seed=seed).fit(X, y)
        full = ElasticNetModel(seed=seed, patience=None).fit(X, y)
        assert fast.best_index_ == full.best_index_
        np.testing.assert_allclose(fast.coef_, full.coef_, atol=1e-12)
        assert np.isnan(fast.cv_mse_).any()  # it did stop early


def test_held_out_rows_cannot_change_predictions():
    X, y = _cohort(n=100, seed=5)
    folds = np.arange(100) % 5
    for k in range(5):
        train, test = folds != k, folds == k
        before = ElasticNetModel(seed=k).fit(X[train], y[train]).predict(X[test])
        y2 = y.copy()
        y2[test] = np.random.default_rng(k).normal(size=test.sum()) * 100
        np.testing.assert_array_equal(ElasticNetModel(seed=k).fit(X[train], y2[train]).predict(X[test]), before)
        y3 = y.copy()
        y3[train] = y3[train] + np.random.default_rng(k).normal(size=train.sum())
        assert not np.allclose(ElasticNetModel(seed=k).fit(X[train], y3[train]).predict(X[test]), before)


def test_maf_filter_and_monomorphic_variants():
    X, y = _cohort(n=200, p=10, seed=6)
    X[:, 0] = 0.0  # monomorphic
    X[:, 1] = 0.0
    X[:3, 1] = 1.0  # MAF 3/400 = 0.0075 < 0.01
    X[:, 2] = 0.0
    X[:5, 2] = 1.0  # MAF 5/400 = 0.0125 > 0.01
    X[:, 3] = 2.0
    X[:2, 3] = 1.0  # MAF 2/400 counted on the minor (REF) allele
    y = y + 50 * X[:, 1]  # a huge effect on the filtered rare variant must not enter
    model = ElasticNetModel(seed=0).fit(X, y)
    assert list(model.kept_[:4]) == [False, False, True, False]
    assert np.all(model.coef_[~model.kept_] == 0.0)
    assert np.all(np.isfinite(model.coef_))
    assert not ElasticNetModel(maf=0.02).fit(X, y).kept_[2]


@pytest.mark.parametrize("case", ["monomorphic", "no_variants", "constant_y", "tiny"])
def test_degenerate_genes_predict_the_training_mean(case):
    X, y = _cohort(n=30, p=5, seed=8)
    if case == "monomorphic":
        X = np.zeros_like(X)
    elif case == "no_variants":
        X = np.zeros((30, 0))
    elif case == "constant_y":
        y = np.full(30, 2.5)
    else:
        X, y = X[:3], y[:3]
    model = ElasticNetModel().fit(X, y)
    np.testing.assert_allclose(model.predict(X), np.full(len(y), y.mean()))
    assert np.isnan(model.lambda_) and np.all(model.coef_ == 0.0)


def test_same_seed_same_fit_and_balanced_folds():
    X, y = _cohort(seed=9)
    a = ElasticNetModel(seed=3).fit(X, y)
    b = ElasticNetModel(seed=3).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    counts = np.bincount(inner_fold_ids(95, 10, 0))
    assert counts.max() - counts.min() <= 1 and len(counts) == 10
    assert not np.array_equal(inner_fold_ids(95, 10, 0), inner_fold_ids(95, 10, 1))


def _gene(tss=5_000, window=1_000):
    pos = np.array([3_000, 4_400, 4_499, 4_500, 5_000, 5_499, 5_500, 7_000])
    ref = np.array(["A", "A", "ACG", "C", "G", "T", "T", "A"], dtype=object)
    n = 6
    rng = np.random.default_rng(0)
    geno = rng.integers(0, 2, size=(len(pos), n, 2)).astype(np.int8)
    variants = pd.DataFrame(
        {
            "variant_id": [f"v{i}" for i in range(len(pos))],
            "chrom": "chr1",
            "pos": pos,
            "ref": ref,
            "alt": ["G"] * len(pos),
        }
    )
    return GeneData(
        gene_id="G1",
        chrom="chr1",
        tss=tss,
        strand="+",
        window=window,
        region_start=1,
        reference=b"",
        variants=variants,
        genotypes=geno,
        hap_index=np.zeros((n, 2), np.int32),
        hap_alleles=np.zeros((1, len(pos)), bool),
    )


class _Cohort:
    """The cohort interface over one GeneData (what StudyCohort and NewCohort provide)."""

    def __init__(self, gene):
        self._gene = gene
        self.sample_ids = [f"s{i}" for i in range(gene.genotypes.shape[1])]

    def gene(self, gene_id):
        return self._gene


def test_study_window_features_keep_variants_that_touch_the_window():
    gene = _gene()  # + strand window of 1000 bp at tss 5000: 4500..5499
    method = ElasticNetMethod(ElasticNetOptions(cis_window=0))
    cohort = _Cohort(gene)
    X = method.features(cohort, "G1")
    names = method.variant_table(cohort, "G1")
    assert list(names["variant_id"]) == ["v2", "v3", "v4", "v5"]  # v2 is a deletion reaching 4501
    np.testing.assert_array_equal(X.to_numpy(), gene.genotypes.sum(axis=2)[2:6].T)
    assert X.shape == (6, 4) and X.columns[0].startswith("chr1:")
    assert method.fit_name == "elastic-net-window"


def test_cis_window_comes_from_the_study_and_a_wider_one_is_refused(study_copy):
    """The +-50 kb features are the study's cis store (what bcftools gives over the same span),
    and a window wider than the store is refused with what to do, never read from the VCF."""
    from hapexpr.cohort import StudyCohort
    from hapexpr.errors import StudyError
    from hapexpr.study import Study

    study = Study.open(study_copy)
    cohort = StudyCohort(study)
    gene_id = study.gene_ids[0]
    X = ElasticNetMethod(ElasticNetOptions(cis_window=50_000)).features(cohort, gene_id)
    info = study.gene_info(gene_id)
    vcf = study.meta["inputs"]["vcf"]["path"]
    region = f"{info['chrom']}:{max(1, int(info['tss']) - 50_000)}-{int(info['tss']) + 50_000}"
    lines = subprocess.run(
        ["bcftools", "query", "-r", region, "-s", ",".join(study.sample_ids), "-f", "%POS:%REF:%ALT[\t%GT]\n", vcf],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    want = np.array(
        [[sum(int(a) for a in gt.replace("|", "/").split("/")) for gt in line.split("\t")[1:]] for line in lines],
        dtype=np.float64,
    ).T
    assert [c.split(":", 1)[1] for c in X.columns] == [line.split("\t")[0] for line in lines]
    np.testing.assert_array_equal(X.to_numpy(), want)
    with pytest.raises(StudyError, match="--cis-window 2000000"):
        ElasticNetMethod(ElasticNetOptions(cis_window=2_000_000)).features(cohort, gene_id)


def test_dosage_model_aligns_new_people_by_variant_and_fills_the_mean():
    """Columns are matched by name; a variant the new people lack takes the training mean."""
    from hapexpr.methods.elastic_net import DosageElasticNet

    X, y = _cohort(n=150, p=12, seed=3)
    cols = [f"1:{100 + i}:A:G" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    est = DosageElasticNet(alpha=0.5, seed=0).fit(df, y)
    shuffled = df[cols[::-1]]
    np.testing.assert_allclose(est.predict(shuffled), est.predict(df))
    dropped = df.drop(columns=[cols[0]])
    filled = df.assign(**{cols[0]: X[:, 0].mean()})
    np.testing.assert_allclose(est.predict(dropped), est.predict(filled))


def test_benchmark_smoke():
    """The benchmark's smoke mode runs (so the script does not rot) and its checks pass."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_elastic_net.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "speed ratio" in proc.stdout


# -- export-predictdb ------------------------------------------------------------------------


def _write_study(root: Path, *, n=150, folds=3, seed=0) -> dict:
    """A prepared study directory written through the study contract: 3 genes (one strongly
    heritable, one weakly, one null), two covariates with large effects on expression."""
    import json

    from hapexpr.study import GENE_COLUMNS, gene_file_name, write_gene

    rng = np.random.default_rng(seed)
    samples = [f"S{i:03d}" for i in range(n)]
    (root / "genes").mkdir(parents=True)
    json.dump(
        {"format_version": 1, "params": {"window": 1000, "folds": folds, "seed": 0}}, open(root / "study.json", "w")
    )
    pd.DataFrame({"sample_id": samples, "fold": np.arange(n) % folds}).to_csv(
        root / "samples.tsv", sep="\t", index=False
    )
    cov = rng.normal(size=(2, n))
    rows, expr, truth = [], {}, {}
    for g, h2 in enumerate([0.6, 0.15, 0.0]):
        gid = f"ENSG{g:03d}"
        X, _ = _cohort(n=n, p=20, seed=100 + g)
        y = simulate = X[:, [3, 17]] @ np.array([1.0, -0.7])
        y = simulate / simulate.std() * np.sqrt(h2) + rng.normal(size=n) * np.sqrt(1 - h2) if h2 else rng.normal(size=n)
        expr[gid] = y + 3.0 * cov[0] - 2.0 * cov[1] + 10.0
        geno = np.zeros((20, n, 2), np.int8)
        geno[:, :, 0] = X.T >= 1
        geno[:, :, 1] = X.T == 2
        pos = 4_510 + 20 * np.arange(20)
        variants = pd.DataFrame(
            {
                "variant_id": [f"rs{g}{j:02d}" if j else "." for j in range(20)],
                "chrom": "chr2",
                "pos": pos,
                "ref": "A",
                "alt": "T",
                "in_window": True,
            }
        )
        write_gene(
            root / "genes" / gene_file_name(gid),
            GeneData(
                gene_id=gid,
                chrom="chr2",
                tss=5_000,
                strand="+",
                window=1_000,
                region_start=3_000,
                reference=b"A" * 5000,
                variants=variants,
                genotypes=geno,
                hap_index=np.zeros((n, 2), np.int32),
                hap_alleles=np.zeros((1, 20), bool),
            ),
        )
        rows.append([gid, f"GENE{g}", "chr2", 5_000, "+", 4_500, 5_499, 20, 1, 5_000, 5_000])
        truth[gid] = X
    pd.DataFrame(rows, columns=GENE_COLUMNS).to_csv(root / "genes.tsv", sep="\t", index=False)
    pd.DataFrame(expr, index=samples).T.rename_axis("gene_id").to_csv(root / "expression.tsv", sep="\t")
    pd.DataFrame(cov, index=["pc1", "pc2"], columns=samples).rename_axis("id").to_csv(root / "covariates.tsv", sep="\t")
    return {"X": truth, "expr": expr, "cov": cov, "samples": samples}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from hapexpr.export import export_predictdb

    root = tmp_path_factory.mktemp("export")
    data = _write_study(root / "study")
    summary = export_predictdb(root / "study", root / "all.db", options=WINDOW, all_genes=True)
    return root, data, summary


def test_export_writes_the_predictdb_schema_exactly(exported):
    import sqlite3

    root, _, summary = exported
    con = sqlite3.connect(root / "all.db")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"weights", "extra"}
    cols = lambda t: [(r[1], r[2]) for r in con.execute(f"PRAGMA table_info({t})")]  # noqa: E731
    assert cols("weights") == [
        ("gene", "TEXT"),
        ("rsid", "TEXT"),
        ("varID", "TEXT"),
        ("ref_allele", "TEXT"),
        ("eff_allele", "TEXT"),
        ("weight", "REAL"),
    ]
    assert cols("extra") == [
        ("gene", "TEXT"),
        ("genename", "TEXT"),
        ("n.snps.in.model", "INTEGER"),
        ("pred.perf.R2", "REAL"),
        ("pred.perf.pval", "REAL"),
        ("pred.perf.qval", "REAL"),
    ]
    extra = pd.read_sql("SELECT * FROM extra", con)
    weights = pd.read_sql("SELECT * FROM weights", con)
    con.close()
    assert summary["genes_written"] == len(extra) and summary["weights_written"] == len(weights)
    counts = weights.groupby("gene").size()
    assert dict(zip(extra["gene"], extra["n.snps.in.model"])) == counts.to_dict()
    assert set(extra["genename"]) <= {"GENE0", "GENE1", "GENE2"}
    assert weights["varID"].str.fullmatch(r"chr2_\d+_A_T").all()
    assert (weights["eff_allele"] == "T").all() and (weights["ref_allele"] == "A").all()
    # A missing VCF ID ('.') falls back to the varID.
    first = weights[weights["varID"] == "chr2_4510_A_T"]
    assert (first["rsid"] == first["varID"]).all()
    other = weights[weights["varID"] != "chr2_4510_A_T"]
    assert other["rsid"].str.fullmatch(r"rs\d+").all()


def test_export_weights_are_an_all_individual_fit_on_residualised_expression(exported):
    import sqlite3

    from sklearn.linear_model import LinearRegression

    root, data, _ = exported
    weights = pd.read_sql("SELECT * FROM weights", sqlite3.connect(root / "all.db"))
    gid = "ENSG000"
    y = data["expr"][gid]
    C = data["cov"].T
    resid = y - LinearRegression().fit(C, y).predict(C)  # independent OLS oracle
    model = ElasticNetModel(seed=0).fit(data["X"][gid], resid)
    w = weights[weights["gene"] == gid].set_index("varID")["weight"]
    expected = {f"chr2_{4510 + 20 * j}_A_T": model.coef_[j] for j in np.flatnonzero(model.coef_)}
    assert set(w.index) == set(expected)
    np.testing.assert_allclose([w[k] for k in expected], list(expected.values()), rtol=1e-6, atol=1e-9)
    # Dosage-scale weights predict the residualised expression well for the heritable gene.
    assert np.corrcoef(data["X"][gid] @ model.coef_, resid)[0, 1] > 0.6


def test_export_perf_is_predictdb_nested_cv(exported):
    import sqlite3

    root, _, _ = exported
    extra = pd.read_sql("SELECT * FROM extra", sqlite3.connect(root / "all.db")).set_index("gene")
    assert extra.loc["ENSG000", "pred.perf.R2"] > 0.3 and extra.loc["ENSG000", "pred.perf.pval"] < 1e-6
    assert ((extra["pred.perf.R2"] >= 0) & (extra["pred.perf.R2"] <= 1)).all()
    # Benjamini-Hochberg by hand over the genes with a model.
    p = extra["pred.perf.pval"].to_numpy()
    order = np.argsort(p)
    bh = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(bh, 1)
    np.testing.assert_allclose(extra["pred.perf.qval"].to_numpy(), q)


def test_nested_perf_formula():
    from scipy.stats import norm

    from hapexpr.export import nested_perf

    perf = nested_perf(np.array([0.3, 0.3, 0.3]), np.array([53, 53, 53]))
    z = np.arctanh(0.3) * np.sqrt(50)
    assert perf.zscore == pytest.approx(3 * z / np.sqrt(3))
    assert perf.pval == pytest.approx(2 * norm.sf(perf.zscore))
    assert perf.r2 == pytest.approx(0.09)


def test_export_default_filter_refuses_overwrite_and_writes_atomically(exported):
    import sqlite3

    from hapexpr.errors import InputError
    from hapexpr.export import export_predictdb

    root, _, _ = exported
    out = root / "filtered.db"
    summary = export_predictdb(root / "study", out, options=WINDOW)
    extra = pd.read_sql("SELECT * FROM extra", sqlite3.connect(out))
    assert "ENSG000" in set(extra["gene"]) and "ENSG002" not in set(extra["gene"])
    assert summary["genes_written"] == len(extra) < summary["genes"]
    before = out.read_bytes()
    with pytest.raises(InputError, match="--overwrite"):
        export_predictdb(root / "study", out, options=WINDOW)
    assert out.read_bytes() == before
    export_predictdb(root / "study", out, options=WINDOW, overwrite=True)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_export_predictdb(exported, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    root, _, _ = exported
    out = tmp_path / "w.db"
    res = CliRunner().invoke(
        app, ["export-predictdb", str(root / "study"), "--out", str(out), "--all-genes", "--cis-window", "0"]
    )
    assert res.exit_code == 0, res.output
    assert out.exists()
    res = CliRunner().invoke(app, ["export-predictdb", str(root / "study"), "--out", str(out), "--cis-window", "0"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = CliRunner().invoke(app, ["export-predictdb", str(tmp_path / "nope"), "--out", str(tmp_path / "x.db")])
    assert res.exit_code == 2 and "study.json" in res.output


def test_export_on_a_prepared_study_agrees_with_fit_final(study_copy, tmp_path):
    """On a study from `hapexpr simulate` + `prepare`: the database's weights are exactly the
    nonzero coefficients `hapexpr fit-final --method elastic-net` stores (same seed)."""
    import sqlite3

    from hapexpr.cohort import StudyCohort
    from hapexpr.export import export_predictdb
    from hapexpr.final import final_estimator, fit_final
    from hapexpr.study import Study

    out = tmp_path / "w.db"
    summary = export_predictdb(study_copy, out, all_genes=True)
    study = Study.open(study_copy)
    assert summary["genes"] == len(study.gene_ids) and summary["genes_with_model"] >= 1
    weights = pd.read_sql("SELECT * FROM weights", sqlite3.connect(out))
    fit_final(study_copy, "elastic-net", progress=False)
    cohort = StudyCohort(study)
    method = ElasticNetMethod().bind(study)
    for gid in study.gene_ids:
        est = final_estimator(study_copy, "elastic-net", gid)
        table = method.variant_table(cohort, gid)
        nz = np.flatnonzero(est.coef_)
        got = weights[weights["gene"] == gid]
        assert len(got) == len(nz)
        np.testing.assert_allclose(got["weight"].to_numpy(), est.coef_[nz], rtol=1e-12)
        assert list(got["varID"]) == [
            f"{c}_{p}_{r}_{a}" for c, p, r, a in zip(*(table[k].to_numpy()[nz] for k in ("chrom", "pos", "ref", "alt")))
        ]
        assert list(got["rsid"]) == list(table["variant_id"].to_numpy()[nz])


def test_export_reads_the_studys_own_fits_and_parallel_export_is_identical(study_copy, tmp_path):
    """export-predictdb computes nothing the study already holds: after `fit` and `fit-final`
    with the same options it reads their files, and the database equals the one fitted from
    scratch (one process) and the one fitted by two worker processes; a fit made with other
    options is not read."""
    import sqlite3

    from hapexpr.export import export_predictdb
    from hapexpr.final import fit_final
    from hapexpr.fit import run_fit

    def tables(path):
        con = sqlite3.connect(path)
        return [pd.read_sql(f"SELECT * FROM {t} ORDER BY gene", con) for t in ("weights", "extra")]

    fresh = export_predictdb(study_copy, tmp_path / "fresh.db", all_genes=True, progress=False)
    assert fresh["reused"] == []
    pooled = export_predictdb(study_copy, tmp_path / "jobs.db", all_genes=True, jobs=2, progress=False)
    assert pooled["reused"] == []
    run_fit(study_copy, "elastic-net", progress=False)
    fit_final(study_copy, "elastic-net", progress=False)
    reused = export_predictdb(study_copy, tmp_path / "reused.db", all_genes=True, progress=False)
    assert reused["reused"] == ["fit-final", "fit"]
    other = export_predictdb(study_copy, tmp_path / "other.db", all_genes=True, options={"seed": 3}, progress=False)
    assert other["reused"] == []
    want = tables(tmp_path / "fresh.db")
    assert len(want[0]) > 0
    for name in ("jobs.db", "reused.db"):
        got = tables(tmp_path / name)
        pd.testing.assert_frame_equal(got[0], want[0])
        # the fit's files keep 10 significant digits: the nested-CV figures agree to that
        pd.testing.assert_frame_equal(got[1], want[1], rtol=1e-8)


def test_export_maps_ids_to_rsids_and_counts_the_rest(exported, tmp_path):
    """--rsid-map replaces VCF ids by rsIDs on (chrom, pos, ref, alt); what is left unmapped is
    counted so the CLI can warn that S-PrediXcan matches by rsid."""
    import sqlite3

    from hapexpr.export import export_predictdb

    root, _, _ = exported
    weights = pd.read_sql("SELECT * FROM weights", sqlite3.connect(root / "all.db"))
    first = weights["varID"].iloc[0].split("_")
    mapping = tmp_path / "map.tsv"
    mapping.write_text(
        "chrom\tpos\tref\talt\trsid\n"
        + f"chr{first[0].removeprefix('chr')}\t{first[1]}\t{first[2]}\t{first[3]}\trs999\n"
    )
    out = tmp_path / "m.db"
    summary = export_predictdb(root / "study", out, options=WINDOW, all_genes=True, rsid_map=mapping)
    got = pd.read_sql("SELECT * FROM weights", sqlite3.connect(out))
    assert set(got.loc[got["varID"] == weights["varID"].iloc[0], "rsid"]) == {"rs999"}
    assert summary["not_rsid"] == int((~got["rsid"].str.match(r"^rs\d+$")).sum())
    # the covariance names the SNPs as the weights do, mapped rsIDs included
    cov = _read_covariance(tmp_path / "m.covariances.txt.gz")
    assert {g: set(m.index) for g, m in cov.items()} == {g: set(w["rsid"]) for g, w in got.groupby("gene")}


def _read_covariance(path: Path) -> dict[str, pd.DataFrame]:
    """gene -> symmetric (snps x snps) covariance from a PredictDB covariance file."""
    df = pd.read_csv(path, sep=r"\s+", dtype={"RSID1": str, "RSID2": str})
    assert list(df.columns) == ["GENE", "RSID1", "RSID2", "VALUE"]
    out = {}
    for gene, rows in df.groupby("GENE", sort=False):
        ids = list(dict.fromkeys(rows["RSID1"]))
        m = pd.DataFrame(np.nan, index=ids, columns=ids)
        for a, b, v in rows[["RSID1", "RSID2", "VALUE"]].itertuples(index=False):
            assert np.isnan(m.loc[a, b]), f"{gene}: pair {a} {b} written twice"
            m.loc[a, b] = m.loc[b, a] = v
        out[gene] = m
    return out


def test_export_writes_predictdb_snp_covariances(exported):
    """The covariance file holds, per gene, every pair of its model's SNPs once (ids as in the
    weights' rsid column, genes contiguous) with the n-1 sample covariance of the true dosages."""
    import gzip
    import sqlite3

    root, data, summary = exported
    path = root / "all.covariances.txt.gz"
    assert summary["covariance"] == str(path)
    assert gzip.open(path, "rt").readline() == "GENE RSID1 RSID2 VALUE\n"
    weights = pd.read_sql("SELECT * FROM weights", sqlite3.connect(root / "all.db"))
    cov = _read_covariance(path)
    assert set(cov) == set(weights["gene"]) and summary["covariances_written"] > 0
    genes = pd.read_csv(path, sep=" ")["GENE"]
    assert (genes != genes.shift()).sum() == genes.nunique()  # contiguous, as MetaXcan requires
    for gid, w in weights.groupby("gene"):
        m = cov[gid]
        assert set(m.index) == set(w["rsid"]) and not m.isna().to_numpy().any()
        cols = [(int(v.split("_")[1]) - 4510) // 20 for v in w["varID"]]
        want = np.cov(data["X"][gid][:, cols], rowvar=False, ddof=1)  # independent: the simulated dosages
        np.testing.assert_allclose(m.loc[list(w["rsid"]), list(w["rsid"])].to_numpy(), np.atleast_2d(want), rtol=1e-8)


def _spredixcan_z(weights: pd.Series, cov: pd.DataFrame, gwas_z: pd.Series) -> float:
    """S-PrediXcan (Barbeira et al. 2018): z_g = sum_l w_l sigma_l z_l / sigma_g, with
    sigma_l^2 the SNP variances and sigma_g^2 = w' Cov w, both from the covariance file."""
    ids = list(weights.index)
    c = cov.loc[ids, ids].to_numpy()
    w = weights.to_numpy()
    return float(np.sum(w * np.sqrt(np.diag(c)) * gwas_z[ids].to_numpy()) / np.sqrt(w @ c @ w))


def test_spredixcan_on_the_exported_covariance_matches_individual_level_association(exported):
    """A trait driven by two genes' predicted expression: S-PrediXcan's z from the exported
    weights + covariance and per-SNP GWAS z-scores equals (to the summary-statistics
    approximation) the z of regressing the trait on predicted expression person by person."""
    import sqlite3

    from scipy import stats

    root, data, _ = exported
    weights = pd.read_sql("SELECT * FROM weights", sqlite3.connect(root / "all.db"))
    cov = _read_covariance(root / "all.covariances.txt.gz")
    rng = np.random.default_rng(5)
    n = len(data["samples"])
    snp_dosage, pred = {}, {}
    for gid, w in weights.groupby("gene"):
        cols = [(int(v.split("_")[1]) - 4510) // 20 for v in w["varID"]]
        X = data["X"][gid][:, cols]
        snp_dosage.update(zip(w["rsid"], X.T))
        pred[gid] = X @ w["weight"].to_numpy()
    assert "ENSG000" in pred
    trait = rng.normal(size=n)
    for gid, b in zip(sorted(pred), [0.25, -0.15, 0.0]):
        trait += b * (pred[gid] - pred[gid].mean()) / (pred[gid].std() or 1.0)
    gwas_z = {}
    for rsid, x in snp_dosage.items():  # marginal GWAS: one regression per SNP
        fit = stats.linregress(x, trait)
        gwas_z[rsid] = fit.slope / fit.stderr
    gwas_z = pd.Series(gwas_z)
    for gid, w in weights.groupby("gene"):
        z_spx = _spredixcan_z(w.set_index("rsid")["weight"], cov[gid], gwas_z)
        if np.ptp(pred[gid]) == 0:
            continue
        fit = stats.linregress(pred[gid], trait)
        z_ind = fit.slope / fit.stderr
        assert abs(z_spx - z_ind) < 0.1 + 0.05 * abs(z_ind), (gid, z_spx, z_ind)
    # the heritable gene drives the trait: S-PrediXcan finds it
    w0 = weights[weights["gene"] == "ENSG000"].set_index("rsid")["weight"]
    assert abs(_spredixcan_z(w0, cov["ENSG000"], gwas_z)) > 2


def test_export_refuses_an_existing_covariance_file(exported, tmp_path):
    from hapexpr.errors import InputError
    from hapexpr.export import export_predictdb

    root, _, _ = exported
    (tmp_path / "c.txt.gz").write_bytes(b"keep")
    with pytest.raises(InputError, match="covariance file already exists"):
        export_predictdb(root / "study", tmp_path / "w.db", options=WINDOW, covariance=tmp_path / "c.txt.gz")
    assert (tmp_path / "c.txt.gz").read_bytes() == b"keep" and not (tmp_path / "w.db").exists()


def test_strand_ambiguous_snps_are_dropped_on_request():
    from hapexpr.methods.elastic_net import strand_ambiguous

    np.testing.assert_array_equal(
        strand_ambiguous(["A", "C", "A", "G", "AT"], ["T", "G", "G", "C", "A"]), [True, True, False, True, False]
    )
    gene = _gene()
    gene.variants.loc[2, "alt"] = "T"  # v2's REF is a deletion: not a SNP, never ambiguous
    gene.variants.loc[3, ["ref", "alt"]] = ["A", "T"]
    cohort = _Cohort(gene)
    kept = ElasticNetMethod(ElasticNetOptions(cis_window=0, drop_ambiguous=True)).variant_table(cohort, "G1")
    assert "v3" not in set(kept["variant_id"]) and "v2" in set(kept["variant_id"])


# -- identical columns merged (one column, ridge weight 1/k, coefficient split equally) ----------


def _duplicated(X, seed, copies=(2, 3, 4, 2, 5)):
    """X with some columns repeated (causal columns 3 and 17 and three others, each copied k-1
    more times) and the columns shuffled, so copies are not neighbours; returns it and each
    column's source."""
    rng = np.random.default_rng(seed)
    src = list(range(X.shape[1]))
    others = rng.choice([j for j in range(X.shape[1]) if j not in (3, 17)], size=len(copies) - 2, replace=False)
    for j, k in zip([3, 17, *others], copies):
        src += [int(j)] * (k - 1)
    src = np.array(src)[rng.permutation(len(src))]
    return X[:, src], src


def _kkt_violation(Xs, y, b, lam, alpha=0.5):
    """Largest violation of the elastic net's optimality conditions on every column of Xs
    (standardised) at standardised coefficients b: an oracle independent of any solver."""
    n = len(y)
    g = Xs.T @ (y - y.mean() - Xs @ b) / n - lam * (1 - alpha) * b  # must be lam*alpha*sign(b)
    nz = b != 0
    return max(
        float(np.max(np.abs(g[nz] - lam * alpha * np.sign(b[nz])), initial=0.0)),
        float(np.max(np.abs(g[~nz]) - lam * alpha, initial=0.0)),
    )


def test_identical_columns_groups_exactly_equal_columns():
    from hapexpr.estimators.elastic_net import identical_columns

    X, src = _duplicated(_cohort(n=50, p=30, seed=5)[0], seed=1)
    X = np.column_stack([X, X[:, 0] + 1e-9, 0.5 * X[:, 1] + 0.25])  # near, fractional: not copies
    first, group, count = identical_columns(X)
    # brute force: the first column equal to each column
    want_first = [next(i for i in range(j + 1) if np.array_equal(X[:, i], X[:, j])) for j in range(X.shape[1])]
    np.testing.assert_array_equal(first[group], want_first)
    assert list(first) == sorted(set(want_first))
    np.testing.assert_array_equal(count, np.bincount(group))
    assert count.sum() == X.shape[1] and count.max() >= 5


@pytest.mark.parametrize(("n", "p", "seed"), [(120, 40, 31), (60, 200, 32)])
def test_merged_fit_equals_the_unmerged_fit(n, p, seed):
    """Copies of columns are solved as one column with ridge weight 1/k: the predictions, the
    chosen lambda, the CV curve and the coefficients equal the fit on every copy, each copy
    gets an equal share, and the expanded coefficients meet the unmerged problem's own
    optimality conditions (checked directly, no solver involved)."""
    X, src = _duplicated(_cohort(n=n, p=p, seed=seed)[0], seed=seed)
    y = _cohort(n=n, p=p, seed=seed)[1]
    kw = {"tol": 1e-12, "max_iter": 100_000, "seed": 3}
    merged = ElasticNetModel(**kw).fit(X, y)
    plain = ElasticNetModel(merge=False, **kw).fit(X, y)
    assert merged.n_distinct_ < plain.n_distinct_ == merged.kept_.sum()
    assert merged.best_index_ == plain.best_index_ > 0
    np.testing.assert_array_equal(merged.lambdas_, plain.lambdas_)
    np.testing.assert_allclose(merged.predict(X), plain.predict(X), atol=1e-6)
    np.testing.assert_allclose(merged.cv_pred_, plain.cv_pred_, atol=1e-6)
    np.testing.assert_allclose(merged.cv_mse_, plain.cv_mse_, rtol=1e-6)
    np.testing.assert_allclose(merged.coef_, plain.coef_, atol=1e-6)
    for j in set(src[merged.kept_]):  # every copy carries the same weight
        copies = merged.coef_[(src == j) & merged.kept_]
        np.testing.assert_array_equal(copies, copies[0])
    assert any(merged.coef_[src == j][0] != 0 and (src == j).sum() > 1 for j in set(src))
    Xk = X[:, merged.kept_]
    Xs = (Xk - Xk.mean(0)) / Xk.std(0)
    assert _kkt_violation(Xs, y, merged.coef_[merged.kept_] * Xk.std(0), merged.lambda_) < 1e-6


def test_columns_identical_in_training_rows_only_merge_for_the_fit():
    """Two variants equal in the training individuals but not in the new ones: the fit merges
    them, the model keeps one weight per variant (equal halves), and new people are predicted
    with those weights exactly as the unmerged fit predicts them."""
    X, y = _cohort(n=140, p=30, seed=33)
    train, test = np.arange(100), np.arange(100, 140)
    X = np.column_stack([X, X[:, 3]])  # variant 3 (causal) twice...
    X[test, -1] = np.where(X[test, 3] == 2, 1, X[test, 3])  # ...but not in the new people
    kw = {"tol": 1e-12, "max_iter": 100_000, "seed": 0}
    merged = ElasticNetModel(**kw).fit(X[train], y[train])
    plain = ElasticNetModel(merge=False, **kw).fit(X[train], y[train])
    assert merged.n_distinct_ == plain.n_distinct_ - 1
    assert merged.coef_[3] == merged.coef_[-1] != 0
    assert not np.array_equal(X[test, 3], X[test, -1])
    np.testing.assert_allclose(merged.predict(X[test]), X[test] @ merged.coef_ + merged.intercept_, rtol=1e-12)
    np.testing.assert_allclose(merged.predict(X[test]), plain.predict(X[test]), atol=1e-6)


def test_saved_merged_model_predicts_identically(tmp_path):
    X, src = _duplicated(_cohort(seed=34)[0], seed=34)
    y = _cohort(seed=34)[1]
    model = ElasticNetModel(seed=0).fit(X, y)
    model.save(tmp_path / "m")
    back = ElasticNetModel.load(tmp_path / "m")
    assert back.merge and back.n_distinct_ == model.n_distinct_ < X.shape[1]
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_coordinate_descent_without_the_direct_call_is_identical(monkeypatch):
    """Where scikit-learn's compiled routine cannot be called directly, enet_path runs it: the
    same coefficients, CV curve and convergence."""
    import hapexpr.estimators.elastic_net as en

    X, src = _duplicated(_cohort(n=60, p=200, seed=35)[0], seed=35)
    y = _cohort(n=60, p=200, seed=35)[1]
    direct = ElasticNetModel(seed=1).fit(X, y)
    monkeypatch.setattr(en, "_DIRECT_CD", False)
    via_path = ElasticNetModel(seed=1).fit(X, y)
    np.testing.assert_allclose(via_path.coef_, direct.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(via_path.cv_mse_, direct.cv_mse_, rtol=1e-10)
    assert via_path.best_index_ == direct.best_index_


def test_export_writes_every_copy_with_the_unmerged_weights(study_copy, tmp_path, monkeypatch):
    """PredictDB weights with merging are the per-variant weights of the unmerged fit: one row
    per variant, copies included, each with its own (equal) share."""
    import sqlite3

    from hapexpr.export import export_predictdb
    from hapexpr.methods.elastic_net import DosageElasticNet

    def export(merge, name):
        def estimator(self, seed):
            o = self.options
            return DosageElasticNet(
                alpha=o.alpha, maf=o.maf, inner_folds=o.inner_folds, seed=seed, merge=merge, tol=1e-12, max_iter=100_000
            )

        monkeypatch.setattr(ElasticNetMethod, "estimator", estimator)
        export_predictdb(study_copy, tmp_path / name, all_genes=True, progress=False)
        return pd.read_sql("SELECT * FROM weights ORDER BY gene, varID", sqlite3.connect(tmp_path / name))

    merged, plain = export(True, "merged.db"), export(False, "plain.db")
    assert len(merged) > 0
    pd.testing.assert_frame_equal(merged.drop(columns="weight"), plain.drop(columns="weight"))
    np.testing.assert_allclose(merged["weight"], plain["weight"], atol=1e-6)
