"""nt-transformer: shapes, determinism, checkpoints, the loss, early stopping, learning, multi-gene."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hapexpr.errors import InputError  # noqa: E402
from hapexpr.estimators.nt_multigene import (  # noqa: E402
    choose_holdout_genes,
    fit_multi_gene,
    multi_gene_fold,
)
from hapexpr.estimators.nt_network import NTTransformer, NTTransformerConfig  # noqa: E402
from hapexpr.estimators.nt_training import (  # noqa: E402
    TrainConfig,
    expression_loss,
    inner_split,
    predict_batched,
    train_model,
)
from hapexpr.estimators.nt_transformer import NTTransformerModel  # noqa: E402
from hapexpr.methods.nt_transformer import NTTransformer as NTTransformerMethod  # noqa: E402
from hapexpr.methods.nt_transformer import NTTransformerOptions  # noqa: E402

FAST = TrainConfig(max_epochs=25, patience=5, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cohort(seed=0, *, n=300, bins=8, dim=16, n_haps=14, h2=0.6):
    """A planted haplotype-level signal shaped like the embedding stage's output.

    Each person carries two of ``n_haps`` distinct haplotypes; a haplotype's (bins, dim)
    embedding is a shared per-bin background plus a small haplotype-specific deviation (what a
    few variants do to a bin's mean embedding). Expression is f(hap 1) + f(hap 2) + noise, with f
    a nonlinear function of a few dims of two bins, scaled so var(genetic) / var(y) = h2.
    Returns X (samples, 2, bins, dim) float32, y (samples,), the ceiling sqrt(h2).
    """
    rng = np.random.default_rng(seed)
    background = rng.normal(size=(bins, dim)) * 3.0
    haps = background + 0.05 * rng.normal(size=(n_haps, bins, dim))
    freq = rng.dirichlet(np.ones(n_haps))
    idx = rng.choice(n_haps, size=(n, 2), p=freq)
    X = haps[idx].astype(np.float32)

    def f(h):
        return 20 * h[:, 2, 3] + np.tanh(40 * (h[:, 5, 0] - background[5, 0]))

    g = f(X[:, 0]) + f(X[:, 1])
    g = (g - g.mean()) / g.std() * np.sqrt(h2)
    e = rng.normal(size=n)
    e = (e - e.mean()) / e.std() * np.sqrt(1 - h2)
    return X, g + e, np.sqrt(h2)


# ---- model


def test_forward_shapes_and_config_round_trip():
    c = NTTransformerConfig(dim_in=16, bins=8, d_model=32, n_heads=4, n_layers=2)
    assert NTTransformerConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    x = torch.randn(5, 2, 8, 16)
    assert NTTransformer(c)(x).shape == (5,)
    assert NTTransformer(replace(c, pooling="cls"))(x).shape == (5,)
    multi = NTTransformer(replace(c, n_genes=3)).eval()
    gene = torch.tensor([0, 1, 2, 1, 0])
    assert multi(x, gene).shape == (5,)
    # a fresh gene scale/offset is neutral: the same output as the shared trunk alone
    torch.testing.assert_close(multi(x, gene), multi(x))
    with pytest.raises(ValueError):
        NTTransformerConfig(dim_in=16, bins=8, d_model=30, n_heads=4)


def test_pairwise_loss_matches_brute_force():
    rng = np.random.default_rng(1)
    pred, y = rng.normal(size=11), rng.normal(size=11)
    gene = rng.integers(0, 3, size=11)
    w = 0.7

    def brute(p, t, g=None):
        g = np.zeros(len(p), int) if g is None else g
        terms = [
            ((p[i] - p[j]) - (t[i] - t[j])) ** 2
            for i in range(len(p))
            for j in range(len(p))
            if i != j and g[i] == g[j]
        ]
        return np.mean((p - t) ** 2) + w * np.mean(terms)

    tp, ty = torch.tensor(pred), torch.tensor(y)
    got = expression_loss(tp, ty, pairwise_weight=w)
    assert float(got) == pytest.approx(brute(pred, y), rel=1e-10)
    got_g = expression_loss(tp, ty, pairwise_weight=w, gene=torch.tensor(gene), n_genes=3)
    assert float(got_g) == pytest.approx(brute(pred, y, gene), rel=1e-10)
    assert float(expression_loss(tp, ty, pairwise_weight=0.0)) == pytest.approx(np.mean((pred - y) ** 2))


# ---- per-gene estimator


def test_fit_is_deterministic_and_leaves_global_rng_alone():
    X, y, _ = cohort(2, n=120)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = NTTransformerModel(train_config=FAST, seed=4).fit(X[:90], y[:90])
    assert torch.equal(torch.rand(3), expected_next)
    b = NTTransformerModel(train_config=FAST, seed=4).fit(X[:90], y[:90])
    c = NTTransformerModel(train_config=FAST, seed=5).fit(X[:90], y[:90])
    assert np.array_equal(a.predict(X[90:]), b.predict(X[90:]))
    assert not np.array_equal(a.predict(X[90:]), c.predict(X[90:]))
    assert not torch.are_deterministic_algorithms_enabled()


def test_predictions_ignore_haplotype_order_and_batch_size():
    X, y, _ = cohort(3, n=100)
    m = NTTransformerModel(train_config=replace(FAST, max_epochs=5), seed=0).fit(X[:80], y[:80])
    p = m.predict(X[80:])
    np.testing.assert_allclose(m.predict(X[80:, ::-1]), p, rtol=1e-5, atol=1e-6)
    Xs = m._scale(X[80:])
    one = predict_batched(m.module_, Xs, batch_size=1) * m.y_scale_ + m.y_mean_
    np.testing.assert_allclose(one, p, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_is_safetensors_and_json(tmp_path):
    from safetensors.numpy import load_file

    X, y, _ = cohort(4, n=100)
    m = NTTransformerModel(train_config=replace(FAST, max_epochs=5), seed=1, n_seeds=2).fit(X[:80], y[:80])
    m.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    raw = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header size, JSON header
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "hapexpr.nt-transformer/3"
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")  # independent reader
    np.testing.assert_array_equal(tensors["scaling.input_mean"], m.input_mean_)
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["model_config"]["bins"] == 8 and meta["train_config"]["pairwise_weight"] == FAST.pairwise_weight
    assert meta["target_scaling"]["mean"] == m.y_mean_
    assert meta["metrics"]["n_train"] == 80 and meta["metrics"]["n_val"] == 0  # refit on all of them
    assert meta["seeds"] == [1, 1 + 1000] and "model1.head.weight" in tensors
    loaded = NTTransformerModel.load(tmp_path / "ckpt")
    assert np.array_equal(loaded.predict_seeds(X[80:]), m.predict_seeds(X[80:]))
    assert np.array_equal(loaded.predict(X[80:]), m.predict(X[80:]))


def _rewrite_as_old_format(directory, fmt: str) -> None:
    """Turn a format /3 checkpoint of a ``training-range`` fit into what format ``fmt`` (/2 or
    /1) wrote: /2 named its rule ``clip``, /1 had no clipping range at all."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    meta = json.loads((directory / "config.json").read_text())
    tc = meta["train_config"]
    tc["clip_inputs"] = fmt.endswith("/2")
    del tc["input_rule"], tc["input_bound"]
    if fmt.endswith("/2"):
        meta["input_scaling"] = {"per": "bin,dim", "clip": True, "tensors": meta["input_scaling"]["tensors"]}
    else:
        tensors = {k: v for k, v in tensors.items() if k not in ("scaling.input_lo", "scaling.input_hi")}
        meta["input_scaling"] = {"per": "bin,dim", "tensors": ["scaling.input_mean", "scaling.input_scale"]}
    meta["format"] = fmt
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": fmt})
    (directory / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fmt", ["hapexpr.nt-transformer/2", "hapexpr.nt-transformer/1"])
def test_old_format_checkpoints_load_and_predict_as_they_did(tmp_path, fmt):
    X, y, _ = cohort(4, n=100)
    X = X.copy()
    X[:, :, 6] = X[0, 0, 6]  # constant in training ...
    X_new = X[80:].copy()
    X_new[:, 0, 6, :3] += 0.5  # ... where new people carry something new, and far outside the range
    X_new[:, 1, 2, 3] += 50.0
    m = NTTransformerModel(train_config=replace(FAST, max_epochs=5, input_rule="training-range"), seed=1)
    m.fit(X[:80], y[:80])
    m.save(tmp_path / "ckpt")
    _rewrite_as_old_format(tmp_path / "ckpt", fmt)
    loaded = NTTransformerModel.load(tmp_path / "ckpt")
    assert loaded.train_config_.input_rule == ("training-range" if fmt.endswith("/2") else "none")
    # the oracle: the module on inputs scaled by hand with that format's rule
    s = m.scaling_
    Z = (X_new - s.mean) / s.scale
    if fmt.endswith("/2"):
        Z = np.clip(Z, s.lo, s.hi)
        np.testing.assert_array_equal(Z[:, 0, 6], 0.0)  # /2 erased the new allele
    expected = predict_batched(m.module_, Z.astype(np.float32)) * m.y_scale_ + m.y_mean_
    np.testing.assert_allclose(loaded.predict(X_new), expected, rtol=1e-6, atol=1e-7)
    if fmt.endswith("/2"):  # exactly what the fit predicted: /2 is the fit's own rule
        np.testing.assert_array_equal(loaded.predict(X_new), m.predict(X_new))


def test_bad_features_are_input_errors():
    X, y, _ = cohort(5, n=40)
    with pytest.raises(InputError, match="samples, 2, bins, dim"):
        NTTransformerModel(train_config=FAST).fit(X[:, 0], y)
    m = NTTransformerModel(train_config=replace(FAST, max_epochs=2)).fit(X, y)
    with pytest.raises(InputError, match="trained on"):
        m.predict(X[:, :, :4])


def test_early_stopping_uses_only_the_training_rows_and_restores_the_best_epoch():
    from hapexpr.estimators.nt_transformer import input_scaling

    X, y, _ = cohort(6, n=150)
    mean, scale = input_scaling(X)
    Xs, ys = (X - mean) / scale, (y - y.mean()) / y.std()
    config = TrainConfig(max_epochs=30, patience=4, pairwise_weight=1.0, seed=3)
    val = inner_split(len(X), val_fraction=config.val_fraction, seed=config.seed)

    def run(targets):
        torch.manual_seed(0)
        model = NTTransformer(NTTransformerConfig(dim_in=16, bins=8))
        return model, train_model(model, Xs, targets, config=config)

    model, hist = run(ys)
    assert hist["n_train"] + hist["n_val"] == len(X) and hist["val_index"] == np.flatnonzero(val).tolist()
    assert hist["best_epoch"] == int(np.argmin(hist["val_loss"]))
    assert hist["epochs_run"] in (hist["best_epoch"] + config.patience + 1, config.max_epochs)
    # the restored weights are those of the best epoch
    pred = torch.as_tensor(predict_batched(model, Xs[val]))
    val_loss = expression_loss(pred, torch.as_tensor(ys[val], dtype=torch.float32), pairwise_weight=1.0)
    assert float(val_loss) == pytest.approx(hist["best_val_loss"], rel=1e-5)
    # validation rows never take part in a gradient step: changing their targets leaves the
    # training trajectory unchanged until the choice of the best epoch differs
    ys2 = ys.copy()
    ys2[val] = np.random.default_rng(9).normal(size=val.sum())
    _, hist2 = run(ys2)
    k = min(hist["epochs_run"], hist2["epochs_run"])
    assert hist2["train_loss"][:k] == hist["train_loss"][:k]
    assert hist2["val_loss"][:k] != hist["val_loss"][:k]


def test_learns_a_planted_signal_close_to_the_ceiling():
    X, y, ceiling = cohort(7, n=640)
    train, test = slice(0, 240), slice(240, None)  # ~the training folds of a 290-person cohort
    m = NTTransformerModel(train_config=TrainConfig(), seed=0).fit(X[train], y[train])
    r = np.corrcoef(m.predict(X[test]), y[test])[0, 1]
    assert r >= 0.85 * ceiling, (r, ceiling)


def test_method_features_and_estimator(monkeypatch):
    """Each person's input is their two haplotypes' binned embeddings; options reach the estimator."""
    per_hap = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)  # (unique, bins, dim)
    method = NTTransformerMethod(NTTransformerOptions(fingerprint="abc", pairwise_weight=0.5, seed=2))
    monkeypatch.setattr(method, "embeddings", lambda gene, seqs: (per_hap[: len(seqs)], per_hap.mean(axis=1)))
    gene = SimpleNamespace(sequences=[b"A", b"C", b"G"], hap_index=np.array([[0, 1], [2, 2]]))
    feats = method.features(SimpleNamespace(gene=lambda g: gene), "G1")
    assert feats.shape == (2, 2, 4, 5) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[0, 1], per_hap[1])
    est = method.estimator(7)
    assert isinstance(est, NTTransformerModel) and est.seed == 7
    assert est.train_config.pairwise_weight == 0.5
    assert method.fit_name == "nt-transformer"
    multi = NTTransformerMethod(NTTransformerOptions(multi_gene=True))
    assert multi.fit_name == "nt-transformer-multi" and multi.names() == [
        "nt-transformer-multi",
        "nt-transformer-multi-heldout",
    ]
    assert not multi.final and multi.shared_final and not method.shared_final  # one final model, not per gene


# ---- multi-gene mode


def _genes(n=120):
    out = {f"G{i}": cohort(10 + i, n=n) for i in range(4)}
    return {g: v[0] for g, v in out.items()}, {g: v[1] for g, v in out.items()}


def test_multi_gene_heldout_genes_never_influence_training():
    X_by, y_by = _genes()
    train = np.arange(120) < 90
    config = replace(FAST, batch_size=128)
    fit, pred = fit_multi_gene(X_by, y_by, train, holdout_genes=["G2"], config=config, seed=1)
    assert fit.trained_genes == ["G0", "G1", "G3"] and set(pred) == set(X_by)
    assert all(p.shape == (120,) for p in pred.values())
    # the held-out gene's expression is never read, for any individual
    y_changed = dict(y_by, G2=np.random.default_rng(0).normal(size=120) * 5 + 3)
    _, pred2 = fit_multi_gene(X_by, y_changed, train, holdout_genes=["G2"], config=config, seed=1)
    for g in X_by:
        assert np.array_equal(pred[g], pred2[g])
    # and its embeddings do not affect the trained genes
    X_changed = dict(X_by, G2=X_by["G2"][::-1].copy())
    _, pred3 = fit_multi_gene(X_changed, y_by, train, holdout_genes=["G2"], config=config, seed=1)
    for g in ("G0", "G1", "G3"):
        assert np.array_equal(pred[g], pred3[g])
    # test individuals' expression of trained genes is never read either
    y_test_changed = {g: np.where(train, y, 0.0) for g, y in y_by.items()}
    _, pred4 = fit_multi_gene(X_by, y_test_changed, train, holdout_genes=["G2"], config=config, seed=1)
    for g in X_by:
        assert np.array_equal(pred[g], pred4[g])


def test_multi_gene_fold_predicts_test_individuals_only():
    X_by, y_by = _genes()
    train = np.arange(120) % 4 != 0
    _, out = multi_gene_fold(X_by, y_by, train, ~train, ["G0"], config=replace(FAST, batch_size=128), seed=0)
    assert set(out) == set(X_by) and all(p.shape == ((~train).sum(),) for p in out.values())
    assert all(np.isfinite(p).all() for p in out.values())
    with pytest.raises(ValueError, match="both"):
        multi_gene_fold(X_by, y_by, train, np.ones(120, bool), ["G0"], config=FAST)


def test_choose_holdout_genes():
    genes = [f"G{i}" for i in range(20)]
    a = choose_holdout_genes(genes, 0.2, seed=3)
    assert len(a) == 4 and a == choose_holdout_genes(genes, 0.2, seed=3)
    assert a != choose_holdout_genes(genes, 0.2, seed=4)
    assert choose_holdout_genes(genes, 0.0, seed=3) == []
    assert len(choose_holdout_genes(genes[:2], 0.9, seed=0)) == 1
