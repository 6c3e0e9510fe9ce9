"""The multi-gene nt-transformer as a first-class model (issue 19): inputs streamed from the
embedding store train as the stacked arrays do, a SIGKILLed fit resumes at its first unfinished
fold with the same predictions, checkpoints round-trip, and fit-final / predict serve new people
on study genes, held-out genes and genes outside the study, from the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from hapexpr.cohort import StudyCohort  # noqa: E402
from hapexpr.crossval import residualise, study_targets  # noqa: E402
from hapexpr.errors import InputError  # noqa: E402
from hapexpr.estimators.nt_multigene import (  # noqa: E402
    MultiGeneFit,
    choose_holdout_genes,
    fit_multi_gene,
    multi_gene_fold,
)
from hapexpr.estimators.nt_training import TrainConfig  # noqa: E402
from hapexpr.methods.nt_transformer import NTTransformerOptions  # noqa: E402
from hapexpr.normalise import transform_in_fold  # noqa: E402
from hapexpr.study import Study  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
FIT = ["--multi-gene", "--holdout-genes", "0.25", "--max-epochs", "3", "--epoch-selection", "split"]
NAME = "nt-transformer-multi"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hapexpr(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "hapexpr.cli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def kmer_study(tiny_study, tmp_path_factory) -> Path:
    """The tiny study (60 people x 4 genes, 5 folds) embedded with kmer:4 (8 bins). Read-only."""
    from hapexpr.embed import run_embed

    out = tmp_path_factory.mktemp("kmer") / "study"
    shutil.copytree(tiny_study, out)
    run_embed(out, model="kmer:4", bins=8, progress=False)
    return out


@pytest.fixture(scope="module")
def cv_fit(kmer_study, tmp_path_factory) -> Path:
    """kmer_study with the multi-gene CV fit from the CLI (one gene held out). Read-only."""
    out = tmp_path_factory.mktemp("cv") / "study"
    shutil.copytree(kmer_study, out)
    hapexpr("fit", out, "--method", "nt-transformer", *FIT)
    return out


def _predictions(study: Path) -> pd.DataFrame:
    p = pd.read_csv(study / "predictions.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
    return p[p["method"].str.startswith(NAME)].sort_values(["method", "gene_id", "sample_id"]).reset_index(drop=True)


# ---- streaming: the store-backed fit trains as the stacked (samples, 2, bins, dim) arrays do


def test_streamed_inputs_train_as_arrays_do(cv_fit):
    """The CLI fit (inputs streamed from a scratch file of distinct haplotypes) against
    :func:`multi_gene_fold` on every gene's materialised (samples, 2, bins, dim) array, fold by
    fold with the fit's seeds and targets."""
    from hapexpr.methods.registry import build

    study = Study.open(cv_fit)
    m = build(
        "nt-transformer", {"multi_gene": True, "holdout_genes": 0.25, "max_epochs": 3, "epoch_selection": "split"}
    )
    m.bind(study)
    cohort = StudyCohort(study)
    X = {g: m.features(cohort, g) for g in study.gene_ids}
    expr, cov = study_targets(study)
    heldout = choose_holdout_genes(study.gene_ids, 0.25, seed=0)
    got = _predictions(cv_fit)
    assert set(got.loc[got["method"] == NAME + "-heldout", "gene_id"]) == set(heldout) and len(heldout) == 1
    for k in np.unique(study.folds):
        test, train = study.folds == k, study.folds != k
        y = {
            g: residualise(transform_in_fold(expr.loc[g].to_numpy(float), train, study.normalise), cov, train)
            for g in study.gene_ids
        }
        _, want = multi_gene_fold(X, y, train, test, heldout, seed=int(k), **m._multi_kwargs())
        for g in study.gene_ids:
            rows = got[got["gene_id"] == g].set_index("sample_id").loc[np.array(study.sample_ids)[test]]
            np.testing.assert_allclose(rows["predicted"].to_numpy(), want[g], rtol=1e-6, atol=1e-7)


# ---- resume after SIGKILL

_SLOW_FOLDS = """
import sys, time
import hapexpr.estimators.nt_multigene as m
real = m.multi_gene_fold
def slow(*a, **k):
    time.sleep(1.5)
    return real(*a, **k)
m.multi_gene_fold = slow
from hapexpr.cli import app
app(sys.argv[1:], prog_name="hapexpr")
"""


def test_killed_fit_resumes_at_first_unfinished_fold(kmer_study, cv_fit, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(kmer_study, study)
    args = ["fit", study, "--method", "nt-transformer", *FIT]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FOLDS, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    first = study / "models" / NAME / "folds" / "fold-0" / "fold.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.01)
    time.sleep(0.5)  # inside the next fold's pause: fold 0 is committed, fold 1 is not
    assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.parent.name for p in (study / "models" / NAME / "folds").glob("*/fold.json"))
    assert done and len(done) < 5, done
    rerun = hapexpr(*args)
    assert (rerun.stdout + rerun.stderr).count("resumed from its checkpoint") == len(done)
    pd.testing.assert_frame_equal(_predictions(study), _predictions(cv_fit))
    assert not (study / "models" / NAME / ".inputs.scratch").exists()


# ---- checkpoints


@pytest.mark.parametrize("shared", [False, True])
def test_checkpoint_round_trip(tmp_path, shared):
    rng = np.random.default_rng(0)
    haps = rng.normal(size=(4, 10, 6, 8)).astype(np.float32)
    X_by = {f"G{i}": haps[i][rng.integers(0, 10, size=(50, 2))] for i in range(4)}
    y_by = {g: X[:, :, 2, 1].sum(1) + rng.normal(size=50) for g, X in X_by.items()}
    config = TrainConfig(max_epochs=3, patience=2, batch_size=64, epoch_selection="split")
    fit, pred = fit_multi_gene(
        X_by, y_by, np.arange(50) < 40, holdout_genes=["G1"], config=config, shared_scaling=shared
    )
    fit.save(tmp_path)
    back = MultiGeneFit.load(tmp_path)
    assert back.trained_genes == ["G0", "G2", "G3"] and back.heldout_scale == fit.heldout_scale
    for g, X in X_by.items():
        np.testing.assert_array_equal(back.predict(g, X), pred[g])
        assert back.estimator(g).trained == (g != "G1")
    # a gene the fit never saw: neutral head, scaled on the people predicted (or the shared scaling)
    new = haps[1][rng.integers(0, 10, size=(30, 2))] + 0.5
    np.testing.assert_array_equal(back.predict("NEW", new), fit.predict("NEW", new))
    untrained = fit.predict("G1", X_by["G1"])
    assert np.isfinite(untrained).all() and np.std(untrained) > 0


def test_bf16_is_refused_on_cpu_and_multi_gene_takes_a_device():
    with pytest.raises(InputError, match="CUDA"):
        NTTransformerOptions(multi_gene=True, precision="bf16")
    assert not NTTransformerOptions(multi_gene=True, device="cpu").batched  # no per-gene batching
    with pytest.raises(InputError, match="multi-gene"):
        NTTransformerOptions(multi_gene=True, gene_batch=4)
    X = {g: np.zeros((8, 2, 2, 3), np.float32) for g in ("A", "B")}
    with pytest.raises(InputError, match="bf16"):
        fit_multi_gene(X, {g: np.arange(8.0) for g in X}, np.arange(8) < 6, precision="bf16", device="cpu")


# ---- fit-final and predict from the CLI: study genes, a held-out gene, genes outside the study


def test_fit_final_and_predict_new_people_held_out_and_outside_genes(cv_fit, tiny_cohort, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(cv_fit, study)
    hapexpr("fit-final", study, "--method", NAME)
    final = study / "models" / NAME / "final"
    assert (final / "shared" / "model.safetensors").exists() and (final / "shared" / "config.json").exists()
    s = Study.open(study)
    heldout = choose_holdout_genes(s.gene_ids, 0.25, seed=0)
    h = s.genes.set_index("gene_id").loc[heldout[0]]
    # an annotation of genes outside the study: the held-out gene's TSS under another id, and a
    # TSS the study never had
    annotation = tmp_path / "new.tsv"
    pd.DataFrame(
        {
            "gene_id": ["COPY", "ELSEWHERE"],
            "chrom": [h["chrom"], h["chrom"]],
            "tss": [h["tss"], 9000],
            "strand": ["+", "-"],
        }
    ).assign(strand=[h["strand"], "-"]).to_csv(annotation, sep="\t", index=False)
    out = tmp_path / "pred.tsv"
    vcf, fasta = tiny_cohort / "genotypes.vcf.gz", tiny_cohort / "reference.fa"
    run = hapexpr(
        "predict", study, "--method", NAME, "--vcf", vcf, "--out", out, "--genes", annotation, "--fasta", fasta
    )
    assert "2 gene(s) outside the study" in run.stdout + run.stderr
    pred = pd.read_csv(out, sep="\t", dtype={"gene_id": str, "sample_id": str})
    assert set(pred["gene_id"]) == {*s.gene_ids, "COPY", "ELSEWHERE"}
    # every row is named: study genes by the study's names, outside genes by the annotation's (here their ids)
    names = pred.groupby("gene_id")["gene_name"].first()
    assert names.notna().all() and names["COPY"] == "COPY" and names[s.gene_ids[0]] == s.gene_names[s.gene_ids[0]]
    assert pred.groupby("gene_id").size().eq(len(s.sample_ids)).all() and np.isfinite(pred["predicted"]).all()
    by = {g: d.set_index("sample_id").loc[s.sample_ids, "predicted"].to_numpy() for g, d in pred.groupby("gene_id")}
    # the held-out gene, predicted as a study gene and rebuilt from the annotation and FASTA:
    # the same haplotypes, embeddings, scaling (the same people) and neutral head
    np.testing.assert_array_equal(by["COPY"], by[heldout[0]])
    assert np.std(by[heldout[0]]) > 0
    for g in set(s.gene_ids) - set(heldout):
        assert np.std(by[g]) > 0
    # explain reads the same shared model
    trained = next(g for g in s.gene_ids if g not in heldout)
    hapexpr("explain", study, "--method", NAME, "--gene", trained, "--out", tmp_path / "effects.tsv")
    effects = pd.read_csv(tmp_path / "effects.tsv", sep="\t")
    assert len(effects) and np.isfinite(effects["mean_effect"].dropna()).all()


def test_predict_through_a_fold_model_gives_the_cv_held_out_figures(cv_fit, tiny_cohort):
    """A fold checkpoint, read back and fed the fold's test people through the code predict
    uses (a new cohort's features, the estimator of one gene of the shared model), gives that
    fold's held-out-gene predictions of the CV fit."""
    from hapexpr.cohort import NewCohort
    from hapexpr.methods.registry import build

    s = Study.open(cv_fit)
    m = build("nt-transformer", {"multi_gene": True, "holdout_genes": 0.25}).bind(s)
    m.for_new_people = True
    people = NewCohort(s, tiny_cohort / "genotypes.vcf.gz")
    heldout = choose_holdout_genes(s.gene_ids, 0.25, seed=0)[0]
    X = pd.Series(list(m.features(people, heldout)), index=people.sample_ids)
    cv = _predictions(cv_fit)
    cv = cv[cv["method"] == NAME + "-heldout"].set_index("sample_id")["predicted"]
    for k in np.unique(s.folds):
        test = np.array(s.sample_ids)[s.folds == k]
        fold = MultiGeneFit.load(cv_fit / "models" / NAME / "folds" / f"fold-{k}")
        got = fold.estimator(heldout).predict(np.stack(X.loc[test].to_list()))
        np.testing.assert_allclose(got, cv.loc[test].to_numpy(), rtol=1e-9)


def test_predict_outside_genes_errors(cv_fit, tiny_cohort, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(cv_fit, study)
    vcf, fasta = tiny_cohort / "genotypes.vcf.gz", tiny_cohort / "reference.fa"
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"gene_id": ["FAR"], "chrom": ["chr1"], "tss": [10_000_000], "strand": ["+"]}).to_csv(
        bad, sep="\t", index=False
    )
    out = tmp_path / "p.tsv"
    run = hapexpr(
        "predict", study, "--method", NAME, "--vcf", vcf, "--out", out, "--genes", bad, "--fasta", fasta, check=False
    )
    assert run.returncode == 2 and "does not cover gene FAR" in run.stderr and not out.exists()
    pd.DataFrame({"gene_id": ["NOWHERE"], "chrom": ["chr9"], "tss": [100], "strand": ["+"]}).to_csv(
        bad, sep="\t", index=False
    )
    run = hapexpr(
        "predict", study, "--method", NAME, "--vcf", vcf, "--out", out, "--genes", bad, "--fasta", fasta, check=False
    )
    assert run.returncode == 2 and "chr9" in run.stderr and "NOWHERE" in run.stderr
    run = hapexpr("predict", study, "--method", NAME, "--vcf", vcf, "--out", out, "--genes", bad, check=False)
    assert run.returncode == 2 and "--fasta" in run.stderr
    with pytest.raises(InputError, match="one model per study gene"):
        from hapexpr.predict import predict_new

        shutil.copytree(study, tmp_path / "s2")
        predict_new(tmp_path / "s2", "elastic-net", vcf=vcf, out=out, genes=bad, fasta=fasta, progress=False)
