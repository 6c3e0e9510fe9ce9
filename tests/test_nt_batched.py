"""nt-transformer trained G genes at a time (issue 14): the same models as one gene at a time
within the stated tolerance, per-gene early stopping, the --gene-batch fit (CV and final) with
resume, and the flags."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from hapexpr.errors import InputError  # noqa: E402
from hapexpr.estimators.nt_batched import (  # noqa: E402
    _init_params,
    batched_forward,
    check_precision,
    fit_genes_batched,
    train_batched,
)
from hapexpr.estimators.nt_network import NTTransformer, NTTransformerConfig, fit_input_scaling  # noqa: E402
from hapexpr.estimators.nt_training import TrainConfig, train_model  # noqa: E402
from hapexpr.estimators.nt_transformer import NTTransformerModel  # noqa: E402
from hapexpr.methods.nt_transformer import NTTransformerOptions  # noqa: E402

TOL = 1e-4  # max |batched - one at a time| of standardised predictions (docs/nt-transformer.md)
FAST = TrainConfig(max_epochs=15, patience=4, batch_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def genes(n_genes=3, *, n=90, bins=6, dim=8, seed=0):
    """Per gene: X (n, 2, bins, dim) float32 and y (n,) with a planted haplotype signal whose
    strength differs by gene (the last gene is pure noise, so it stops early)."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_genes):
        haps = rng.normal(size=(10, bins, dim))
        idx = rng.integers(0, 10, size=(n, 2))
        X = haps[idx].astype(np.float32)
        signal = X[:, :, 1, 2].sum(axis=1) + np.tanh(X[:, :, 3, 0]).sum(axis=1)
        h2 = 0.0 if g == n_genes - 1 else 0.7 - 0.2 * g
        y = np.sqrt(h2) * (signal - signal.mean()) / signal.std() + np.sqrt(1 - h2) * rng.normal(size=n)
        out.append((X, y))
    return out


def standardised(est, X):
    return (est.predict_seeds(X) - est.y_mean_) / est.y_scale_


@pytest.mark.parametrize(
    "arch, tc, n_seeds",
    [
        ({}, FAST, 1),
        ({"n_layers": 2, "pooling": "cls"}, FAST, 1),
        ({}, replace(FAST, epoch_selection="split"), 2),
    ],
    ids=["kfold", "two-layers-cls", "split-two-seeds"],
)
def test_batched_fit_matches_one_gene_at_a_time(arch, tc, n_seeds):
    data = genes(3)
    train, test = slice(0, 70), slice(70, None)
    alone = [
        NTTransformerModel(**arch, train_config=tc, seed=5, n_seeds=n_seeds).fit(X[train], y[train]) for X, y in data
    ]
    together = fit_genes_batched(
        [NTTransformerModel(**arch, train_config=tc, seed=5, n_seeds=n_seeds) for _ in data],
        [X[train] for X, _ in data],
        [y[train] for _, y in data],
    )
    for a, b, (X, _) in zip(alone, together, data):
        for ha, hb in zip(a.histories_, b.histories_):
            assert ha["epochs_run"] == hb["epochs_run"] and ha["best_epoch"] == hb["best_epoch"]
            assert ha.get("inner_best_epochs") == hb.get("inner_best_epochs")
            np.testing.assert_allclose(ha["train_loss"], hb["train_loss"], atol=1e-4)
        assert np.abs(standardised(a, X[test]) - standardised(b, X[test])).max() <= TOL
        assert (a.y_mean_, a.y_scale_) == (b.y_mean_, b.y_scale_)
        np.testing.assert_array_equal(a.scaling_.scale, b.scaling_.scale)


def test_each_gene_stops_early_on_its_own_and_keeps_its_best_weights():
    data = genes(3, n=110)
    tc = replace(FAST, max_epochs=40, patience=3, seed=2)
    mc = NTTransformerConfig(dim_in=8, bins=6)
    Xs, ys, alone = [], [], []
    for X, y in data:
        Xz = fit_input_scaling(X).apply(X).astype(np.float32)
        yz = ((y - y.mean()) / y.std()).astype(np.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            model = NTTransformer(mc)
        alone.append((model, train_model(model, Xz, yz, config=tc)))
        Xs.append(Xz)
        ys.append(yz)
    params = _init_params(mc, 2, len(data), "cpu")
    hists = train_batched(
        params, torch.as_tensor(np.stack(Xs)), torch.as_tensor(np.stack(ys)), model_config=mc, config=tc
    )
    runs = [h["epochs_run"] for h in hists]
    assert runs == [h["epochs_run"] for _, h in alone]
    assert len(set(runs)) > 1 and min(runs) < tc.max_epochs  # genes stopped at different epochs
    # best weights restored, frozen after the stop: the same function as the gene alone (not the
    # same weights: the attention's key bias gets only rounding noise as gradient, which AdamW
    # turns into steps of either sign that do not change any output)
    for i, (model, h) in enumerate(alone):
        assert hists[i]["best_epoch"] == h["best_epoch"]
        with torch.no_grad():
            got = batched_forward({k: v[i : i + 1] for k, v in params.items()}, torch.as_tensor(Xs[i])[None], mc)[0]
            want = model.eval()(torch.as_tensor(Xs[i]))
        assert (got - want).abs().max() <= TOL
    # fixed epochs per gene (the refit): each gene trains exactly its own count
    params = _init_params(mc, 2, len(data), "cpu")
    hists = train_batched(
        params,
        torch.as_tensor(np.stack(Xs)),
        torch.as_tensor(np.stack(ys)),
        model_config=mc,
        config=tc,
        epochs=[2, 5, 3],
    )
    assert [h["epochs_run"] for h in hists] == [2, 5, 3]


def test_batched_genes_must_agree_and_bf16_needs_cuda():
    data = genes(2)
    with pytest.raises(ValueError, match="share"):
        fit_genes_batched(
            [NTTransformerModel(train_config=FAST, seed=1), NTTransformerModel(train_config=FAST, seed=2)],
            [X for X, _ in data],
            [y for _, y in data],
        )
    with pytest.raises(InputError, match="different shapes"):
        fit_genes_batched(
            [NTTransformerModel(train_config=FAST) for _ in data], [data[0][0], data[1][0][:, :, :4]], [data[0][1]] * 2
        )
    with pytest.raises(InputError, match="CUDA"):
        check_precision("bf16", "cpu")
    if torch.cuda.is_available():
        check_precision("bf16", "cuda:0")
    else:
        with pytest.raises(InputError, match="no CUDA device"):
            fit_genes_batched([NTTransformerModel(train_config=FAST)], [data[0][0]], [data[0][1]], device="cuda")
    with pytest.raises(InputError, match="CUDA"):
        NTTransformerOptions(precision="bf16")
    with pytest.raises(InputError, match="multi-gene"):
        NTTransformerOptions(gene_batch=4, multi_gene=True)
    with pytest.raises(InputError, match="gene_batch"):
        NTTransformerOptions(gene_batch=0)


def _rows(study, name):
    p = pd.read_csv(study / "predictions.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
    return p[p.method == name].set_index(["gene_id", "sample_id"]).sort_index()


def test_gene_batch_fit_matches_default_and_resumes_after_a_kill(embedded_tiny_study, tmp_path, monkeypatch):
    from hapexpr.crossval import FitRun
    from hapexpr.fit import run_fit

    opts = dict(max_epochs=4)
    ref = tmp_path / "ref"
    shutil.copytree(embedded_tiny_study, ref)
    run_fit(ref, "nt-transformer", options=opts, progress=False)
    run_fit(ref, "nt-transformer", options={**opts, "gene_batch": 2}, name="nt-b2", progress=False)
    a, b = _rows(ref, "nt-transformer"), _rows(ref, "nt-b2")
    assert a.index.equals(b.index) and np.array_equal(a.observed, b.observed)
    scale = a.groupby(level=0)["observed"].transform("std")
    assert ((a.predicted - b.predicted).abs() / scale).max() <= TOL
    d = ref / "models" / "nt-b2"
    assert json.loads((d / "fit.json").read_text())["gene_batch"] == 2
    assert json.loads((d / "fit.json").read_text())["options"]["gene_batch"] == 2
    # at their defaults the new options stay out of the record, so older fits keep their key
    default = json.loads((ref / "models" / "nt-transformer" / "fit.json").read_text())
    assert not {"gene_batch", "device", "precision"} & set(default["options"])
    assert len(pd.read_csv(d / "choices.tsv", sep="\t")) == a.index.get_level_values(0).nunique() * 5

    # killed after the first chunk of 2 genes was written; the rerun keeps them and fits the rest
    work = tmp_path / "work"
    shutil.copytree(embedded_tiny_study, work)
    saved, real = [], FitRun.save_gene

    def dies_after_two(self, gene_id, observed, predicted):
        if len(saved) == 2:
            raise KeyboardInterrupt
        real(self, gene_id, observed, predicted)
        saved.append(gene_id)

    monkeypatch.setattr(FitRun, "save_gene", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_fit(work, "nt-transformer", options={**opts, "gene_batch": 2}, name="nt-b2", progress=False)
    oof = work / "models" / "nt-b2" / "oof"
    kept = {
        p.name: p.stat().st_mtime_ns for p in oof.glob("*.tsv") if not p.name.endswith((".seeds.tsv", ".choices.tsv"))
    }
    assert len(kept) == 2
    monkeypatch.setattr(FitRun, "save_gene", real)
    run_fit(work, "nt-transformer", options={**opts, "gene_batch": 2}, name="nt-b2", progress=False)
    assert all((oof / n).stat().st_mtime_ns == t for n, t in kept.items())
    pd.testing.assert_frame_equal(_rows(work, "nt-b2"), b)


def test_gene_batch_fit_final_matches_default(embedded_tiny_study, tmp_path):
    from hapexpr.cohort import StudyCohort
    from hapexpr.final import final_estimator, final_fit_method, fit_final
    from hapexpr.study import Study

    work = tmp_path / "s"
    shutil.copytree(embedded_tiny_study, work)
    fit_final(work, "nt-transformer", options=dict(max_epochs=4), progress=False)
    study = Study.open(work)
    method = final_fit_method(study, "nt-transformer")
    X = {g: method.features(StudyCohort(study), g) for g in study.gene_ids}
    before = {g: final_estimator(work, "nt-transformer", g).predict(X[g]) for g in study.gene_ids}
    fit_final(work, "nt-transformer", options=dict(max_epochs=4, gene_batch=3), overwrite=True, progress=False)
    record = json.loads((work / "models" / "nt-transformer" / "final" / "final.json").read_text())
    assert record["options"]["gene_batch"] == 3
    for g in study.gene_ids:
        est = final_estimator(work, "nt-transformer", g)
        after = est.predict(X[g])
        assert np.abs(after - before[g]).max() / est.y_scale_ <= TOL


def test_cli_flags_reach_the_method(embedded_tiny_study, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["fit", "--help"], terminal_width=200).output
    for flag in ("--gene-batch", "--precision", "--device"):
        assert flag in out
    work = tmp_path / "s"
    shutil.copytree(embedded_tiny_study, work)
    res = runner.invoke(app, ["fit", str(work), "--method", "nt-transformer", "--precision", "bf16"])
    assert res.exit_code != 0 and "CUDA" in res.output
    res = runner.invoke(
        app, ["fit", str(work), "--method", "nt-transformer", "--gene-batch", "4", "--max-epochs", "2", "--name", "b4"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((work / "models" / "b4" / "fit.json").read_text())["options"]["gene_batch"] == 4
