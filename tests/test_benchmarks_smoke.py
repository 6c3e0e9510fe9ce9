"""Each benchmark's ``--smoke`` mode runs to completion and prints its ratio line, so the scripts
do not rot. The benchmarks check their own outputs (sequences equal to bcftools', embeddings equal
to a plain transformers loop's, one prediction per gene and person) and exit non-zero otherwise.

bench_elastic_net.py belongs to its own test owner; it is included here only if present, with the
same contract (exit 0, a ratio line).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_smoke(script: str, tmp_path: Path, timeout: int = 240) -> str:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{out[-3000:]}"
    return done.stdout


@pytest.mark.skipif(
    shutil.which("bcftools") is None or shutil.which("samtools") is None, reason="bcftools and samtools are the oracle"
)
def test_bench_haplotypes_smoke(tmp_path):
    out = run_smoke("bench_haplotypes.py", tmp_path)
    assert re.search(r"^identical: all \d+ bcftools sequences equal hapexpr's", out, re.M), out
    assert re.search(r"^RATIO window=\d+ bcftools_loop/hapexpr = [\d.]+x", out, re.M), out
    assert out.rstrip().endswith("ok")


def test_bench_embed_smoke(tmp_path):
    out = run_smoke("bench_embed.py", tmp_path)
    m = re.search(r"^agreement: max \|plain - stored\| mean embedding = (\S+)", out, re.M)
    assert m and float(m.group(1)) <= 1e-2, out
    assert re.search(r"^RATIO embed plain_loop/hapexpr = [\d.]+x .*dedup [\d.]+x.*overhead", out, re.M), out
    assert out.rstrip().endswith("ok")


def test_bench_embed_gpu_smoke(tmp_path):
    """The GPU script on the CPU with tiny sizes: it runs, agrees with a bare forward pass and
    prints its ratio (its MFU lines need a GPU)."""
    out = run_smoke("bench_embed_gpu.py", tmp_path)
    m = re.search(r"^agreement: max relative \|hapexpr mean - bare mean\| = (\S+)", out, re.M)
    assert m and float(m.group(1)) <= 1e-4, out
    assert re.search(r"^RATIO embed_gpu bare/hapexpr = [\d.]+x time", out, re.M), out
    assert out.rstrip().endswith("ok")


def test_bench_architecture_shares_smoke(tmp_path):
    """Each architecture's measured shares per seed and pooled; additive is exactly additive."""
    out = run_smoke("bench_architecture_shares.py", tmp_path)
    assert re.search(r"^\| additive \| 1 \| 3 \| \d+ \| (1\.000|nan) \| (0\.000|nan) \|", out, re.M), out
    assert re.search(
        r"^additive: (\d+ heritable genes of 3; mean additive_share 1\.000, mean phase_share 0\.000|no heritable gene)",
        out,
        re.M,
    ), out
    assert re.search(r"^motif: ", out, re.M) and re.search(r"^cis-interaction: ", out, re.M), out
    assert out.rstrip().endswith("ok")


@pytest.mark.slow
def test_bench_scale_smoke(tmp_path):
    out = run_smoke("bench_scale.py", tmp_path)
    assert out.count("checked: predictions.tsv has one out-of-fold prediction") == 2, out
    for stage in ("prepare", "embed", "fit elastic-net", "fit ridge-probe"):
        assert re.search(rf"^{stage}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), f"no {stage} row:\n{out}"
    assert re.search(r"^RATIO scale total_time 2/1 genes = [\d.]+x", out, re.M), out
    assert out.rstrip().endswith("ok")


@pytest.mark.skipif(not (BENCH / "bench_elastic_net.py").exists(), reason="bench_elastic_net.py not written yet")
def test_bench_elastic_net_smoke(tmp_path):
    out = run_smoke("bench_elastic_net.py", tmp_path)
    assert re.search(r"\d+(\.\d+)?x", out), out
    assert out.rstrip().endswith("ok")


def test_bench_accuracy_smoke(tmp_path):
    """The accuracy benchmark's smoke cohort without the transformer and tiny-NT fits (the cheap
    methods, CPU seconds): the per-architecture table, the winners and the targets are printed, and
    the TSV's mean r is the mean of metrics.tsv's per-gene r over every gene of the study."""
    import pandas as pd

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    }
    methods = "elastic-net,elastic-net-window,ridge-probe-kmer,stack"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_accuracy.py"),
            "--smoke",
            "--methods",
            methods,
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "acc.tsv"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, f"exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
    assert re.search(r"^\| method \| genes \| mean_r \| ratio \|", out, re.M), out
    assert re.search(r"^\| additive \| 4 \| [\d.]+ \| \S+ \|", out, re.M), out
    assert re.search(
        r"^- additive: elastic-net ratio to ceiling = \S+ \(target >= 0.85\).* -> (MET|NOT MET)$", out, re.M
    ), out
    assert re.search(r"^- distal: NOT RUN$", out, re.M), out
    table = pd.read_csv(tmp_path / "acc.tsv", sep="\t")
    assert sorted(table["method"]) == sorted(methods.split(","))
    assert (table["genes"] == 4).all(), table
    metrics = pd.read_csv(tmp_path / "w" / "additive_s1" / "study" / "metrics.tsv", sep="\t")
    for method, row in table.set_index("method").iterrows():
        r = metrics.loc[metrics["method"] == method, "pearson_r"].fillna(0.0)
        assert row["mean_r"] == pytest.approx(r.sum() / 4, abs=1e-6), method  # genes without a model count as 0
    en = table.set_index("method").loc["elastic-net"]
    assert 0.0 <= en["explain_prec"] <= 1.0 and en["explain_genes"] == 1
    # The architecture's measured shares head its table and fill the TSV (additive: all additive).
    truth = pd.read_csv(tmp_path / "w" / "additive_s1" / "cohort" / "truth.tsv", sep="\t", keep_default_na=False)
    heritable = truth[truth["h2"] > 0]
    assert table["additive_share"].iloc[0] == pytest.approx(heritable["additive_share"].astype(float).mean(), abs=1e-6)
    assert table["phase_share"].iloc[0] == pytest.approx(heritable["phase_share"].astype(float).mean(), abs=1e-6)
    assert re.search(r"mean additive share of var\(g\) [\d.]+, mean phase-dependent share [\d.]+", out), out
    # One cohort: a headline difference but no interval; the multi-gene rows would say "5 shared".
    assert (table["cohorts"] == 1).all() and table["ci_lo"].isna().all()
    assert (table["models"] == "per gene").all()
    assert out.rstrip().endswith("ok")


def test_cohort_contrast_is_a_t_interval_over_cohorts():
    """The headline difference: mean over cohorts of the per-cohort mean difference (NaN r as 0),
    with a t interval over cohorts, checked against scipy's one-sample t test."""
    import importlib.util

    import numpy as np
    import pandas as pd
    from scipy import stats

    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH / "bench_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    rows = []
    for seed, genes in ((1, 5), (2, 3), (3, 8)):
        for g in range(genes):
            ra, rb = rng.normal(0.3, 0.2), rng.normal(0.2, 0.2)
            rows += [("a", f"s{seed}:G{g}", ra), ("b", f"s{seed}:G{g}", np.nan if g == 0 else rb)]
    rows.append(("a", "s3:only_a", 0.9))  # a gene one method lacks is left out of the pair
    metrics = pd.DataFrame(rows, columns=["method", "gene_id", "pearson_r"])
    got = bench.cohort_contrast(metrics, "a", "b")
    wide = metrics.pivot(index="gene_id", columns="method", values="pearson_r").drop(index="s3:only_a").fillna(0.0)
    per_cohort = (wide["a"] - wide["b"]).groupby(wide.index.str[:2]).mean().to_numpy()
    test = stats.ttest_1samp(per_cohort, 0.0)
    lo, hi = stats.t.interval(0.95, len(per_cohort) - 1, loc=per_cohort.mean(), scale=stats.sem(per_cohort))
    assert got["cohorts"] == 3
    assert got["diff"] == pytest.approx(per_cohort.mean())
    assert (got["lo"], got["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert got["p"] == pytest.approx(test.pvalue)
    one = bench.cohort_contrast(metrics[metrics["gene_id"].str.startswith("s1:")], "a", "b")
    assert one["cohorts"] == 1 and np.isnan(one["lo"]) and np.isnan(one["p"])


def test_bench_train_gpu_smoke(tmp_path):
    out = run_smoke("bench_train_gpu.py", tmp_path)
    m = re.search(r"^agreement fp32: max \|batched - CPU default path\| standardised prediction = (\S+)", out, re.M)
    assert m and float(m.group(1)) <= 1e-4, out
    assert re.search(r"^RATIO train_gpu batched/one_at_a_time = [\d.]+x genes/s \(fp32; baseline: ", out, re.M), out
    assert out.rstrip().endswith("ok")


METAXCAN = os.environ.get("HAPEXPR_METAXCAN")
METAXCAN_PYTHON = os.environ.get("HAPEXPR_METAXCAN_PYTHON")


@pytest.mark.skipif(
    not (METAXCAN and METAXCAN_PYTHON) or shutil.which("bcftools") is None,
    reason="MetaXcan is not a dependency: set HAPEXPR_METAXCAN (its software/ directory) and "
    "HAPEXPR_METAXCAN_PYTHON (an interpreter with numpy<2 and its requirements; see bench_metaxcan.py)",
)
def test_bench_metaxcan_smoke(tmp_path):
    """MetaXcan's own Predict.py and SPrediXcan.py on hapexpr's database and covariance file."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_metaxcan.py"), "--smoke", "--out", str(tmp_path / "mx")]
        + ["--metaxcan", METAXCAN, "--python", METAXCAN_PYTHON],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"^Predict.py vs hapexpr predict: (\d+) of \1 genes", done.stdout, re.M), out
    assert done.stdout.rstrip().endswith("ok")


def test_bench_train_multigene_gpu_smoke(tmp_path):
    out = run_smoke("bench_train_multigene_gpu.py", tmp_path)
    assert re.search(r"^cpu fp32 \(reference\)\s*:\s*[\d.]+ s\s+\d+ rows/s", out, re.M), out
    assert re.search(r"^RATIO train_multigene_gpu device/cpu = [\d.]+x rows/s", out, re.M), out
    assert out.rstrip().endswith("ok")


def test_bench_heritability_scale_smoke(tmp_path):
    out = run_smoke("bench_heritability_scale.py", tmp_path)
    assert re.search(r"^h2_cis \(inverse-normal\) +mean h2 [\d.]+ \(truth [\d.]+\) +bias [-+][\d.]+", out, re.M), out
    assert re.search(r"^raw scale \(before issue 20\)", out, re.M), out
    assert out.rstrip().endswith("ok")


@pytest.mark.skipif(
    shutil.which("bcftools") is None or shutil.which("tabix") is None, reason="bcftools reverts alleles"
)
def test_bench_unseen_smoke(tmp_path):
    # the script itself exits non-zero when the elastic net (the zero control) predicts a change
    out = run_smoke("bench_unseen.py", tmp_path, timeout=900)
    assert re.search(r"^seed 1: \d+ unseen alleles among 12 new people", out, re.M), out
    for method in ("elastic-net", "ridge-probe", "nt-transformer"):
        assert re.search(rf"^\| {method} \| \d+ \| \d+ \|", out, re.M), out
    assert re.search(r"^TARGET nt-transformer \(kmer:4\)", out, re.M), out
