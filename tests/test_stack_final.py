"""The final stack, end to end from the CLI: ``fit-final --method stack`` makes the bases' final
fits and per-gene NNLS weights on their out-of-fold predictions; ``predict`` and ``explain`` with
it are the weighted sums of the bases' own outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from sklearn.linear_model import LinearRegression
from test_predict import PICK, make_vcf, renamed
from typer.testing import CliRunner

from hapexpr.cli import app
from hapexpr.crossval import read_predictions, study_targets
from hapexpr.final import final_dir, gene_dir
from hapexpr.fit import run_fit
from hapexpr.methods import registry
from hapexpr.methods.elastic_net import ElasticNet
from hapexpr.study import Study

BASES = ["elastic-net-window", "ridge-probe"]  # a dosage model and a sequence (embedding) model


def cli(*args) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())  # rich wraps lines at the terminal width


def read_tsv(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"gene_id": str, "sample_id": str, "variant_id": str})


@pytest.fixture(scope="module")
def stack_study(embedded_tiny_study, tmp_path_factory) -> Path:
    """The embedded tiny study with the two bases and their stack cross-validated (no final fit)."""
    work = tmp_path_factory.mktemp("stack-final") / "study"
    shutil.copytree(embedded_tiny_study, work)
    cli("fit", work, "--method", "elastic-net", "--cis-window", "0")
    cli("fit", work, "--method", "ridge-probe")
    cli("fit", work, "--method", "stack", "--base", ",".join(BASES))
    return work


@pytest.fixture(scope="module")
def final_stack(stack_study, tmp_path_factory) -> Path:
    """A copy of ``stack_study`` after ``hapexpr fit-final --method stack``."""
    work = tmp_path_factory.mktemp("stack-final-done") / "study"
    shutil.copytree(stack_study, work)
    out = cli("fit-final", work, "--method", "stack")
    for base in BASES:  # the bases' own final fits were made first, and said so
        assert f"{base}: no final fit on all individuals" in out
        assert json.loads((final_dir(Study.open(work), base) / "final.json").read_text())["complete"]
    return work


def stored_weights(study: Study, gene_id: str) -> tuple[np.ndarray, float, list[str]]:
    """(weights, intercept, bases) read straight from the gene's files, not through the loader."""
    d = gene_dir(study, "stack", gene_id)
    meta = json.loads((d / "estimator.json").read_text())
    return load_file(str(d / "weights.safetensors"))["weights_"], meta["learned"]["intercept_"], meta["params"]["bases"]


def test_weights_are_nnls_on_the_bases_out_of_fold_predictions(final_stack):
    study = Study.open(final_stack)
    record = json.loads((final_dir(study, "stack") / "final.json").read_text())
    assert record["complete"] and record["method"] == "stack" and record["options"]["base"] == BASES
    preds = read_predictions(final_stack)
    expr, cov = study_targets(study)
    design = np.column_stack([np.ones(len(study.sample_ids)), cov]) if cov is not None else None
    used = 0
    for gene_id in study.gene_ids:
        w, b, bases = stored_weights(study, gene_id)
        assert bases == BASES and (w >= 0).all()
        P = np.column_stack(
            [
                preds[(preds.method == m) & (preds.gene_id == gene_id)]
                .set_index("sample_id")
                .loc[study.sample_ids]["predicted"]
                for m in BASES
            ]
        )
        y = expr.loc[gene_id].to_numpy(dtype=np.float64)
        y = y - design @ np.linalg.lstsq(design, y, rcond=None)[0] if design is not None else y - y.mean()
        oracle = LinearRegression(positive=True).fit(P, y)  # scikit-learn's own non-negative least squares
        np.testing.assert_allclose(w, oracle.coef_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b, oracle.intercept_, rtol=1e-6, atol=1e-8)
        used += int((w > 0).sum())
    assert used > 0  # some base carries weight, so the predictions below are not just intercepts


def test_predict_is_the_weighted_sum_of_the_bases_own_predictions(final_stack, tiny_cohort, tmp_path):
    vcf = make_vcf(tiny_cohort / "genotypes.vcf.gz", tmp_path / "new.vcf.gz", samples=PICK, rename=renamed(PICK))
    cli("predict", final_stack, "--method", "stack", "--vcf", vcf, "--out", tmp_path / "stack.tsv")
    stack = read_tsv(tmp_path / "stack.tsv").set_index(["gene_id", "sample_id"])
    base = {}
    for m in BASES:
        cli("predict", final_stack, "--method", m, "--vcf", vcf, "--out", tmp_path / f"{m}.tsv")
        base[m] = read_tsv(tmp_path / f"{m}.tsv").set_index(["gene_id", "sample_id"])["predicted"]
    study = Study.open(final_stack)
    assert set(stack["method"]) == {"stack"} and len(stack) == len(PICK) * len(study.gene_ids)
    for gene_id in study.gene_ids:
        w, b, _ = stored_weights(study, gene_id)
        want = b + sum(wk * base[m].loc[gene_id].loc[stack.loc[gene_id].index] for wk, m in zip(w, BASES))
        np.testing.assert_allclose(stack.loc[gene_id]["predicted"], want, rtol=1e-9, atol=1e-10)
    assert stack["predicted"].nunique() > len(study.gene_ids)  # people differ within genes


def test_predict_alone_makes_every_final_fit_it_needs(stack_study, final_stack, tiny_cohort, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(stack_study, work)
    vcf = make_vcf(tiny_cohort / "genotypes.vcf.gz", tmp_path / "new.vcf.gz", samples=PICK, rename=renamed(PICK))
    out = cli("predict", work, "--method", "stack", "--vcf", vcf, "--out", tmp_path / "implicit.tsv")
    for name in ["stack", *BASES]:
        assert f"{name}: no final fit on all individuals" in out
    cli("predict", final_stack, "--method", "stack", "--vcf", vcf, "--out", tmp_path / "explicit.tsv")
    implicit, explicit = read_tsv(tmp_path / "implicit.tsv"), read_tsv(tmp_path / "explicit.tsv")
    pd.testing.assert_frame_equal(implicit, explicit)  # the same final stack as `fit-final` makes


def test_explain_is_the_weighted_sum_of_the_bases_effects(final_stack, tmp_path):
    study = Study.open(final_stack)
    gene_id = max(study.gene_ids, key=lambda g: int((stored_weights(study, g)[0] > 0).sum()))
    w, _, _ = stored_weights(study, gene_id)
    cli("explain", final_stack, "--method", "stack", "--gene", gene_id, "--out", tmp_path / "stack.tsv")
    table = read_tsv(tmp_path / "stack.tsv")
    want = np.zeros(len(table))
    for wk, m in zip(w, BASES):
        cli("explain", final_stack, "--method", m, "--gene", gene_id, "--out", tmp_path / f"{m}.tsv")
        effects = read_tsv(tmp_path / f"{m}.tsv")
        assert list(effects["variant_id"]) == list(table["variant_id"])
        np.testing.assert_allclose(table[f"effect_{m}"], wk * effects["mean_effect"].fillna(0.0), atol=1e-10)
        want = want + wk * effects["mean_effect"].to_numpy()
    np.testing.assert_allclose(table["mean_effect"], want, rtol=1e-9, atol=1e-10)
    assert table["sd_effect"].isna().all() and np.nanmax(np.abs(table["mean_effect"])) > 0


def test_an_interrupted_final_stack_resumes_at_the_missing_genes(final_stack, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(final_stack, work)
    study = Study.open(work)
    first, lost = study.gene_ids[0], study.gene_ids[1]
    stamp = (gene_dir(study, "stack", first) / "gene.json").stat().st_mtime_ns
    before = stored_weights(study, lost)
    shutil.rmtree(gene_dir(study, "stack", lost))
    half = gene_dir(study, "stack", lost)
    half = half.parent / f".tmp-{half.name}.0000dead"  # what a kill while writing the gene leaves
    half.mkdir()
    (half / "estimator.json").write_text('{"kind": ')
    state = final_dir(study, "stack") / "final.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "complete": False}))
    out = cli("fit-final", work, "--method", "stack")
    assert "1 genes fit" in out and f"({len(study.gene_ids) - 1} resumed)" in out
    assert (gene_dir(study, "stack", first) / "gene.json").stat().st_mtime_ns == stamp
    after = stored_weights(study, lost)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:]
    assert json.loads(state.read_text())["complete"]


class NoFinalNet(ElasticNet):
    """An elastic net that, like the multi-gene transformer, has no final fit."""

    name = "no-final-net"
    final = False


def test_a_base_without_a_final_fit_is_named(stack_study, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(stack_study, work)
    # no stack fit and one per-gene fit left: only the --base given can make the stack
    for name in ("stack", "elastic-net-window"):
        shutil.rmtree(work / "models" / name)
    registry.register(NoFinalNet)
    try:
        run_fit(work, "no-final-net", options={"cis_window": 0}, name="no-final-net", progress=False)
        res = CliRunner().invoke(
            app, ["fit-final", str(work), "--method", "stack", "--base", "ridge-probe,no-final-net"]
        )
    finally:
        registry.unregister(NoFinalNet.name)
    assert res.exit_code != 0 and "Traceback" not in res.output
    msg = " ".join(res.output.split())
    assert "no-final-net" in msg and "no final fit" in msg and "--base ridge-probe,OTHER --name stack-final" in msg
    assert not (work / "models" / "stack" / "final").exists()
