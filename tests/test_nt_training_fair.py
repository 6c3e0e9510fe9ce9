"""nt-transformer trained fairly (issue 12) and multi-gene transfer (issue 13): epochs by inner
K-fold then a refit on every training individual, floored and bounded input scaling, the choice
among embedding stores (layers) inside the training folds, several seeds, shared multi-gene
scaling and gene-mixing batches."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from hapexpr.estimators.nt_multigene import fit_multi_gene  # noqa: E402
from hapexpr.estimators.nt_network import (  # noqa: E402
    NTTransformer,
    NTTransformerConfig,
    fit_input_scaling,
)
from hapexpr.estimators.nt_training import (  # noqa: E402
    TrainConfig,
    _batches,
    inner_cv,
    inner_folds,
)
from hapexpr.estimators.nt_transformer import NTTransformerModel  # noqa: E402

FAST = TrainConfig(max_epochs=12, patience=3, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(seed=0, *, n=120, bins=6, dim=8, n_haps=10, h2=0.7):
    """(samples, 2, bins, dim) haplotype embeddings with a planted signal in bin 2, y."""
    rng = np.random.default_rng(seed)
    background = rng.normal(size=(bins, dim)) * 3.0
    haps = background + 0.05 * rng.normal(size=(n_haps, bins, dim))
    idx = rng.choice(n_haps, size=(n, 2))
    X = haps[idx].astype(np.float32)
    g = 20 * (X[:, 0, 2, 1] + X[:, 1, 2, 1])
    g = (g - g.mean()) / g.std() * np.sqrt(h2)
    return X, g + rng.normal(size=n) * np.sqrt(1 - h2)


# ---- 1. epochs by inner K-fold, refit on every training individual


def test_kfold_epochs_then_refit_on_all_training_individuals():
    X, y = planted(1, n=100)
    m = NTTransformerModel(train_config=replace(FAST, inner_folds=4), seed=3).fit(X, y)
    h = m.history_
    assert h["epoch_selection"] == "kfold" and h["inner_folds"] == 4
    # the final model took its gradient steps on all 100 training individuals, none held back
    assert h["n_train"] == 100 and h["n_val"] == 0 and h["val_index"] == []
    assert h["epochs_run"] == h["chosen_epochs"] == len(h["train_loss"])
    # the epoch count is the argmin of the mean inner-fold validation curve, recomputed here
    ys = (y - y.mean()) / y.std()
    Xs = fit_input_scaling(X).apply(X)

    def make():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            return NTTransformer(NTTransformerConfig(dim_in=8, bins=6))

    cv = inner_cv(make, Xs, ys, config=replace(FAST, inner_folds=4, seed=3))
    assert cv["epochs"] == h["chosen_epochs"] == int(np.argmin(cv["mean_val_loss"])) + 1
    assert h["inner_val_loss"] == cv["mean_val_loss"] and len(cv["best_epochs"]) == 4
    # the inner folds partition the training individuals
    assert sorted(np.bincount(cv["fold"]).tolist()) == [25, 25, 25, 25]
    # deterministic
    again = NTTransformerModel(train_config=replace(FAST, inner_folds=4), seed=3).fit(X, y)
    assert np.array_equal(again.predict(X), m.predict(X))


def test_split_mode_keeps_the_old_behaviour():
    X, y = planted(2, n=100)
    h = NTTransformerModel(train_config=replace(FAST, epoch_selection="split"), seed=0).fit(X, y).history_
    assert h["epoch_selection"] == "split" and h["n_train"] == 80 and h["n_val"] == 20


def test_inner_folds_keep_an_individuals_rows_together():
    people = np.repeat(np.arange(30), 3)  # multi-gene: three genes' rows per person
    fold = inner_folds(people, 4, seed=0)
    for p in range(30):
        assert len(set(fold[people == p])) == 1
    assert set(fold) == {0, 1, 2, 3}


# ---- 2. an allele no training person carried reaches the network, bounded


def _constant_bin_cohort():
    X, y = planted(3, n=120)
    X = X * 100  # real-scale activations: a unit scale would not be neutral
    X[:, :, 4] = X[0, 0, 4]  # every haplotype identical in bin 4 ...
    X_new = X[100:].copy()
    X_new[:, 0, 4, :4] += 5.0  # ... and new people carry something no training person carried there
    return X, y, X_new


def test_a_new_allele_in_a_bin_constant_in_training_changes_the_prediction():
    X, y, X_new = _constant_bin_cohort()
    m = NTTransformerModel(train_config=FAST, seed=0).fit(X[:100], y[:100])
    s = m.scaling_
    typical = np.median(X[:100].reshape(-1, 6, 8).astype(np.float64).std(axis=0)[np.arange(6) != 4])
    # the constant bin is neither zeroed nor clipped: its scale is the floor, 0.1 x typical
    np.testing.assert_allclose(s.scale[4], 0.1 * typical, rtol=1e-3)
    z = s.apply(X_new)[:, 0, 4, :4]
    np.testing.assert_allclose(z, np.minimum(5.0 / (0.1 * typical), 10.0), rtol=1e-3)
    change = m.predict(X_new) - m.predict(X[100:])
    spread = m.predict(X[:100]).std()
    # every carrier's prediction moves (its size and sign are whatever the network learned of
    # those dims in other bins; a random untrained network would move them too)
    assert np.abs(change).min() > 1e-3 * spread and np.abs(change).mean() > 0.03 * spread
    # the rule before format /3 erased it: exactly as if absent
    old = NTTransformerModel(train_config=replace(FAST, input_rule="training-range"), seed=0).fit(X[:100], y[:100])
    np.testing.assert_array_equal(old.predict(X_new), old.predict(X[100:]))


def test_standardised_inputs_stay_within_the_bound():
    X, _, X_new = _constant_bin_cohort()
    X_new[:, 1, 2, 1] -= 1e6  # an absurd value in a bin that varied in training
    for bound in (10.0, 3.0):
        s = fit_input_scaling(X[:100], bound=bound)
        Z = s.apply(X_new)
        assert np.abs(Z).max() == pytest.approx(bound) and Z[:, 1, 2, 1].max() == pytest.approx(-bound)
        np.testing.assert_array_equal(Z, np.clip((X_new - s.mean) / s.scale, -bound, bound))
    unbounded = fit_input_scaling(X[:100], rule="none").apply(X_new)
    assert np.abs(unbounded).max() > 1e3
    with pytest.raises(ValueError, match="rule"):
        fit_input_scaling(X, rule="clip")


def test_scale_is_floored_where_one_rare_carrier_differs():
    X, _ = planted(4, n=200)
    X[:, :, 3] = X[0, 0, 3]
    X[0, 0, 3] += 1e-2  # a single rare carrier among 400 haplotypes changes bin 3 a little
    s = fit_input_scaling(X)
    typical = np.median(X.reshape(-1, 6, 8).astype(np.float64).std(axis=0))  # over every (bin, dim)
    assert s.scale[3].min() == pytest.approx(0.1 * typical, rel=1e-3)
    assert np.abs(s.apply(X)[:, :, 3]).max() < 5
    # without the floor the carrier's standardised value is extreme (sqrt(399) ~ 20)
    assert np.abs(fit_input_scaling(X, floor=0.0, rule="none").apply(X)[:, :, 3]).max() > 15


# ---- 3. choosing among embedding stores (layers) inside the training folds


def test_candidate_store_is_chosen_by_inner_cv_on_training_individuals():
    X, y = planted(5, n=120)
    noise = np.random.default_rng(0).permutation(X)  # same distribution, no relation to y
    both = np.stack([noise, X], axis=1)  # (samples, candidates, 2, bins, dim)
    m = NTTransformerModel(train_config=FAST, seed=0).fit(both[:100], y[:100])
    assert m.candidate_ == 1 and m.history_["candidate"] == 1
    assert m.candidate_losses_[1] < m.candidate_losses_[0]
    # the prediction only reads the chosen candidate
    other = both[100:].copy()
    other[:, 0] = 0
    np.testing.assert_array_equal(m.predict(other), m.predict(both[100:]))


def test_fit_records_layers_seeds_and_choices(study_copy):
    from hapexpr.embed import run_embed
    from hapexpr.embed.store import list_stores
    from hapexpr.fit import run_fit

    run_embed(study_copy, model="tiny", bins=8, layer=1, progress=False)
    run_embed(study_copy, model="tiny", bins=8, layer=2, progress=False)
    stores = {int(i["layer"]): i["fingerprint"] for i in list_stores(study_copy)}
    fps = (stores[1], stores[2])
    run_fit(
        study_copy,
        "nt-transformer",
        options=dict(max_epochs=3, seeds=2, fingerprints=fps, epoch_selection="split"),
        progress=False,
    )
    d = study_copy / "models" / "nt-transformer"
    record = json.loads((d / "fit.json").read_text())
    assert record["resolved"]["fingerprints"] == list(fps) and record["resolved"]["layers"] == [1, 2]
    assert sorted(u["layer"] for u in record["models_used"]) == [1, 2]
    seeds = pd.read_csv(d / "seeds.tsv", sep="\t", dtype={"gene_id": str})
    genes = pd.read_csv(study_copy / "predictions.tsv", sep="\t").query("method == 'nt-transformer'").gene_id
    assert len(seeds) == 2 * genes.nunique() and sorted(seeds.seed.unique()) == [0, 1000]
    assert seeds.pearson_r.between(-1, 1).all()
    choices = pd.read_csv(d / "choices.tsv", sep="\t", dtype={"gene_id": str})
    assert set(choices.fingerprint) <= set(fps) and set(choices.layer) <= {1, 2}
    assert len(choices) == genes.nunique() * choices.fold.nunique()
    # the candidates axis holds each store's features of the same people, in --fingerprints order
    from hapexpr.cohort import StudyCohort
    from hapexpr.methods.nt_transformer import NTTransformer as Method
    from hapexpr.methods.nt_transformer import NTTransformerOptions
    from hapexpr.study import Study

    study = Study.open(study_copy)
    cohort, gene = StudyCohort(study), study.gene_ids[0]
    both = Method(NTTransformerOptions(fingerprints=fps)).bind(study).features(cohort, gene)
    for c, fp in enumerate(fps):
        one = Method(NTTransformerOptions(fingerprint=fp)).bind(study).features(cohort, gene)
        np.testing.assert_array_equal(both[:, c], one)


# ---- 5. several seeds


def test_seeds_are_averaged():
    X, y = planted(6, n=100)
    m = NTTransformerModel(train_config=FAST, seed=2, n_seeds=3).fit(X[:80], y[:80])
    per = m.predict_seeds(X[80:])
    assert per.shape == (3, 20) and m.seeds_ == [2, 1002, 2002]
    assert not np.array_equal(per[0], per[1])
    np.testing.assert_allclose(m.predict(X[80:]), per.mean(axis=0))
    one = NTTransformerModel(train_config=FAST, seed=2).fit(X[:80], y[:80])
    np.testing.assert_array_equal(one.predict(X[80:]), per[0])  # seed 0 of 3 is the 1-seed model


# ---- 6. multi-gene: shared scaling, gene-mixing batches


def test_multi_gene_shared_scaling_makes_a_heldout_persons_input_their_own():
    genes = {f"G{i}": planted(10 + i, n=80) for i in range(4)}
    X_by, y_by = {g: v[0] for g, v in genes.items()}, {g: v[1] for g, v in genes.items()}
    train = np.arange(80) < 60
    config = replace(FAST, max_epochs=4, batch_size=64, genes_per_batch=4)
    fit, pred = fit_multi_gene(X_by, y_by, train, holdout_genes=["G3"], config=config, seed=0, shared_scaling=True)
    assert fit.input_scaling["G3"] is fit.input_scaling["G0"]  # one scaling for every gene
    # a held-out gene's prediction for one person depends on that person's embeddings only,
    # not on the other individuals of that gene (per-gene scaling made it depend on them)
    X_moved = dict(X_by, G3=np.where(train[:, None, None, None], X_by["G3"] + 5.0, X_by["G3"]))
    _, pred2 = fit_multi_gene(X_moved, y_by, train, holdout_genes=["G3"], config=config, seed=0, shared_scaling=True)
    np.testing.assert_array_equal(pred2["G3"][~train], pred["G3"][~train])
    assert fit.history["n_train"] == 3 * 60 and fit.history["epoch_selection"] == "kfold"


def test_multi_gene_batches_mix_genes_with_pairs_of_each():
    genes = torch.as_tensor(np.repeat(np.arange(10), 30))
    rows = torch.arange(300)
    config = TrainConfig(batch_size=64, genes_per_batch=8)
    batches = list(_batches(rows, genes, config, torch.Generator().manual_seed(0)))
    assert sorted(torch.cat(batches).tolist()) == list(range(300))  # every row once an epoch
    assert len(batches) == 5  # 40 chunks of <= 8 rows, 8 chunks a batch
    assert all(len(torch.unique(genes[b])) >= 4 for b in batches)
    assert all(torch.bincount(genes[b]).max() >= 2 for b in batches)


# ---- 4. float16 storage benchmark


def test_bench_float16_smoke():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_float16.py"), "--smoke"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(root / "src")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratio = float(done.stdout.strip().splitlines()[-1].split()[-1])
    assert ratio > 10  # one SNP moves its bin far more than float16 rounding does
