"""`hapexpr fit` on a prepared study: one out-of-fold prediction per person, no leakage, stack."""

import subprocess

import numpy as np
import pandas as pd
import pytest

from hapexpr.errors import StudyError
from hapexpr.fit import FitOptions, run_fit
from hapexpr.study import Study
from hapexpr.train import read_predictions


def _check_complete(study_path, method):
    study = Study.open(study_path)
    preds = read_predictions(study_path)
    rows = preds[preds.method == method]
    assert len(rows) == len(study.gene_ids) * len(study.sample_ids)
    counts = rows.groupby(["gene_id", "sample_id"]).size()
    assert (counts == 1).all() and set(rows.gene_id) == set(study.gene_ids)
    assert rows.predicted.notna().all() and rows.observed.notna().all()
    folds = dict(zip(study.sample_ids, study.folds))
    assert (rows.fold == rows.sample_id.map(folds)).all()
    return rows


def test_elastic_net_cli_writes_every_individual_once(study_copy):
    r = subprocess.run(["hapexpr", "fit", str(study_copy), "--method", "elastic-net"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _check_complete(study_copy, "elastic-net")
    again = subprocess.run(["hapexpr", "fit", str(study_copy), "--method", "elastic-net"], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    other = subprocess.run(["hapexpr", "fit", str(study_copy), "--method", "elastic-net", "--maf", "0.2"],
                           capture_output=True, text=True)
    assert other.returncode == 2 and "--overwrite" in other.stderr


def test_changing_held_out_expression_leaves_their_predictions_unchanged(study_copy, tmp_path):
    import shutil

    run_fit(study_copy, "elastic-net", progress=False)
    before = read_predictions(study_copy).query("method == 'elastic-net'")
    changed = tmp_path / "changed"
    shutil.copytree(study_copy, changed)
    shutil.rmtree(changed / "models")
    (changed / "predictions.tsv").unlink()
    study = Study.open(changed)
    held = [s for s, f in zip(study.sample_ids, study.folds) if f == 2]
    expr = pd.read_csv(changed / "expression.tsv", sep="\t", index_col=0)
    rng = np.random.default_rng(0)
    expr[held] = rng.normal(scale=5.0, size=(len(expr), len(held)))
    expr.to_csv(changed / "expression.tsv", sep="\t")
    run_fit(changed, "elastic-net", progress=False)
    after = read_predictions(changed).query("method == 'elastic-net'")
    key = ["gene_id", "sample_id"]
    m = before.merge(after, on=key, suffixes=("_a", "_b"))
    in_held = m.sample_id.isin(held)
    assert np.allclose(m.loc[in_held, "predicted_a"], m.loc[in_held, "predicted_b"], rtol=0, atol=1e-9)
    assert not np.allclose(m.loc[~in_held, "predicted_a"], m.loc[~in_held, "predicted_b"])


def test_enformer_and_stack(study_copy):
    with pytest.raises(StudyError, match="at least two base methods"):
        run_fit(study_copy, "stack", progress=False)
    run_fit(study_copy, "elastic-net", progress=False)
    run_fit(study_copy, "enformer", progress=False)
    run_fit(study_copy, "enformer", options=FitOptions(head="ridge"), progress=False)
    for m in ("enformer", "enformer-ridge"):
        _check_complete(study_copy, m)
    run_fit(study_copy, "stack", progress=False)
    rows = _check_complete(study_copy, "stack")
    assert rows.predicted.std() > 0


def test_nt_transformer_per_gene_and_multi_gene_with_held_out_genes(study_copy):
    from hapexpr.embed import run_embed

    run_embed(study_copy, model="tiny", bins=8, progress=False)
    run_fit(study_copy, "nt-transformer", options=FitOptions(max_epochs=3), progress=False)
    _check_complete(study_copy, "nt-transformer")
    run_fit(study_copy, "nt-transformer", options=FitOptions(multi_gene=True, holdout_genes=0.25, max_epochs=3),
            progress=False)
    preds = read_predictions(study_copy)
    trained = preds[preds.method == "nt-transformer-multi"]
    held = preds[preds.method == "nt-transformer-multi-heldout"]
    n = len(Study.open(study_copy).sample_ids)
    assert held.gene_id.nunique() == 1 and trained.gene_id.nunique() == 3
    assert len(held) == n and len(trained) == 3 * n
    assert set(held.gene_id).isdisjoint(trained.gene_id)
