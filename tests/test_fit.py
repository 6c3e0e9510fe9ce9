"""`hapexpr fit` on a prepared study: one out-of-fold prediction per person, no leakage, stack."""

import subprocess

import numpy as np
import pandas as pd
import pytest

from hapexpr.crossval import read_predictions
from hapexpr.errors import StudyError
from hapexpr.fit import run_fit
from hapexpr.study import Study


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
    again = subprocess.run(
        ["hapexpr", "fit", str(study_copy), "--method", "elastic-net"], capture_output=True, text=True
    )
    assert again.returncode == 0 and "nothing to do" in again.stderr
    other = subprocess.run(
        ["hapexpr", "fit", str(study_copy), "--method", "elastic-net", "--maf", "0.2"], capture_output=True, text=True
    )
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
    with pytest.raises(StudyError, match="at least two base fits"):
        run_fit(study_copy, "stack", progress=False)
    run_fit(study_copy, "elastic-net", progress=False)
    run_fit(study_copy, "enformer", progress=False)
    run_fit(study_copy, "enformer", options=dict(head="ridge"), progress=False)
    for m in ("enformer", "enformer-ridge"):
        _check_complete(study_copy, m)
    run_fit(study_copy, "stack", progress=False)
    rows = _check_complete(study_copy, "stack")
    assert rows.predicted.std() > 0


def test_nt_transformer_per_gene_and_multi_gene_with_held_out_genes(study_copy):
    from hapexpr.embed import run_embed

    run_embed(study_copy, model="tiny", bins=8, progress=False)
    run_fit(study_copy, "nt-transformer", options=dict(max_epochs=3), progress=False)
    _check_complete(study_copy, "nt-transformer")
    run_fit(
        study_copy, "nt-transformer", options=dict(multi_gene=True, holdout_genes=0.25, max_epochs=3), progress=False
    )
    preds = read_predictions(study_copy)
    trained = preds[preds.method == "nt-transformer-multi"]
    held = preds[preds.method == "nt-transformer-multi-heldout"]
    n = len(Study.open(study_copy).sample_ids)
    assert held.gene_id.nunique() == 1 and trained.gene_id.nunique() == 3
    assert len(held) == n and len(trained) == 3 * n
    assert set(held.gene_id).isdisjoint(trained.gene_id)


def test_variants_of_a_method_live_side_by_side_and_stack_uses_their_own_options(study_copy):
    """elastic-net at +-1 Mb and at the sequence window are two fits with two names; a stack
    over the window variant rebuilds it from its own fit.json (not from the stack's options)."""
    import json

    run_fit(study_copy, "elastic-net", progress=False)
    run_fit(study_copy, "elastic-net", options={"cis_window": 0}, progress=False)
    run_fit(study_copy, "elastic-net", options={"maf": 0.05}, name="en-maf5", progress=False)
    preds = read_predictions(study_copy)
    assert {"elastic-net", "elastic-net-window", "en-maf5"} <= set(preds.method)
    for m in ("elastic-net", "elastic-net-window", "en-maf5"):
        _check_complete(study_copy, m)
    record = json.loads((study_copy / "models" / "en-maf5" / "fit.json").read_text())
    assert record["method"] == "elastic-net" and record["options"]["maf"] == 0.05
    assert record["cpu_seconds"] > 0 and record["seconds"] > 0
    run_fit(study_copy, "stack", options={"base": ("elastic-net-window", "en-maf5")}, progress=False)
    stack = json.loads((study_copy / "models" / "stack" / "fit.json").read_text())
    assert stack["options"]["base"] == ["elastic-net-window", "en-maf5"]
    assert set(stack["resolved"]["base_records"]) == {"elastic-net-window", "en-maf5"}
    _check_complete(study_copy, "stack")


def test_a_gene_without_variants_gets_no_prediction(study_copy):
    """A gene with nothing to learn from is reported as having no model, not r = -0.07."""
    import json

    from hapexpr.study import gene_file_name

    study = Study.open(study_copy)
    gene_id = study.gene_ids[0]
    path = study_copy / "genes" / gene_file_name(gene_id)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["genotypes"] = np.zeros_like(arrays["genotypes"])  # every person REF/REF
    np.savez_compressed(path, **arrays)
    run_fit(study_copy, "elastic-net", options={"cis_window": 0}, progress=False)
    rows = read_predictions(study_copy).query("method == 'elastic-net-window'")
    assert gene_id not in set(rows.gene_id) and rows.gene_id.nunique() == len(study.gene_ids) - 1
    record = json.loads((study_copy / "models" / "elastic-net-window" / "fit.json").read_text())
    assert record["genes_without_model"] == [gene_id]


def test_jobs_and_ray_engines_give_the_same_predictions_byte_for_byte(study_copy, tmp_path):
    """Genes fitted in 2 local processes, or as Ray tasks, give predictions.tsv identical to the
    in-process loop (the per-gene computation is the same; only where it runs changes)."""
    import shutil

    pytest.importorskip("ray")
    copies = {}
    for label, kw in (("here", {}), ("jobs", {"jobs": 2}), ("ray", {"engine": "ray"})):
        work = tmp_path / label
        shutil.copytree(study_copy, work)
        run_fit(work, "elastic-net", options={"cis_window": 0}, progress=False, **kw)
        copies[label] = (work / "predictions.tsv").read_bytes()
    assert copies["here"] == copies["jobs"] == copies["ray"]


def test_a_killed_parallel_fit_resumes_without_redoing_finished_genes(study_copy):
    """Genes written before a kill are kept (their files untouched); the rerun fits the rest."""
    import json
    import os
    import signal
    import time

    from hapexpr.study import gene_file_name

    study = Study.open(study_copy)
    oof = study_copy / "models" / "elastic-net-window" / "oof"
    proc = subprocess.Popen(
        ["hapexpr", "fit", str(study_copy), "--method", "elastic-net", "--cis-window", "0", "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(oof.glob("*.tsv"))) < 1:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in oof.glob("*.tsv")}
    assert 1 <= len(kept) < len(study.gene_ids)  # killed mid-run
    r = subprocess.run(
        ["hapexpr", "fit", str(study_copy), "--method", "elastic-net", "--cis-window", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert all((oof / name).stat().st_mtime_ns == t for name, t in kept.items())
    assert json.loads((oof.parent / "fit.json").read_text())["complete"]
    _check_complete(study_copy, "elastic-net-window")
    assert {gene_file_name(g)[:-4] + ".tsv" for g in study.gene_ids} == {p.name for p in oof.glob("*.tsv")}
