"""The ``enformer`` method: tiny random Enformer, checkpoint loading, TSS-centred inputs,
cached outputs and the two heads. Never downloads."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hapexpr.errors import InputError  # noqa: E402
from hapexpr.estimators import enformer_store as es  # noqa: E402
from hapexpr.estimators.enformer import EnformerRidgeHead, ZeroShotEnformer  # noqa: E402
from hapexpr.methods.enformer import Enformer, EnformerOptions  # noqa: E402

L = 2048  # tiny input: 16 bins


def random_seqs(n: int, length: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(rng.choice(np.frombuffer(b"ACGT", np.uint8), length)) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    return es.tiny_enformer(0)


def full_forward_at_bins(model, seqs, bins):
    """Oracle: enformer-pytorch's own forward (its own one-hot, no crop), summed over bins."""
    from enformer_pytorch import str_to_one_hot

    model.set_target_length(-1)
    with torch.inference_mode():
        out = model(str_to_one_hot([s.decode() for s in seqs]), head="human")
    return out[:, bins].sum(1).numpy()


def test_tiny_builds_seeded_with_all_human_tracks(tiny):
    assert tiny.config.output_heads == {"human": es.HUMAN_TRACKS} and not tiny.training
    same, other = es.tiny_enformer(0), es.tiny_enformer(1)
    a, b, c = (dict(m.state_dict()) for m in (tiny, same, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    seqs = random_seqs(2, L)
    out = es.tss_outputs(tiny, torch.from_numpy(es.one_hot(seqs)), es.tss_bins(L))
    assert out.shape == (2, es.HUMAN_TRACKS) and bool((out > 0).all())  # softplus head


def test_tss_outputs_equal_the_library_forward(tiny):
    seqs = random_seqs(3, L, seed=1)
    bins = es.tss_bins(L)
    with torch.inference_mode():
        ours = es.tss_outputs(tiny, torch.from_numpy(es.one_hot(seqs)), bins).numpy()
    np.testing.assert_allclose(ours, full_forward_at_bins(tiny, seqs, bins), rtol=1e-5, atol=1e-6)


def test_save_then_load_by_path_gives_identical_outputs(tiny, tmp_path):
    es.save_enformer(tiny, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = es.load_enformer(tmp_path / "ckpt")
    x = torch.from_numpy(es.one_hot(random_seqs(2, L, seed=2)))
    with torch.inference_mode():
        np.testing.assert_array_equal(
            es.tss_outputs(tiny, x, es.tss_bins(L)).numpy(), es.tss_outputs(loaded, x, es.tss_bins(L)).numpy()
        )
    # pytorch_model.bin with every alias name (as transformers 4 wrote it) loads the same way
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    torch.save(tiny.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    from_bin = es.load_enformer(tmp_path / "bin")
    assert all(torch.equal(v, from_bin.state_dict()[k]) for k, v in tiny.state_dict().items())


def test_load_refuses_mismatched_or_missing_checkpoint(tiny, tmp_path):
    es.save_enformer(tiny, tmp_path / "ckpt")
    cfg = (tmp_path / "ckpt" / "config.json").read_text().replace('"dim": 48', '"dim": 96')
    (tmp_path / "ckpt" / "config.json").write_text(cfg)
    with pytest.raises(InputError, match="do not fit"):
        es.load_enformer(tmp_path / "ckpt")
    with pytest.raises(InputError, match="config.json is missing"):
        es.load_enformer(tmp_path / "nothing")


def test_our_loader_agrees_with_the_library_and_does_not_need_its_from_pretrained(tiny, tmp_path):
    """Why the loader exists: enformer-pytorch's ``from_pretrained`` breaks on transformers 5
    (which enformer-pytorch 0.8.12 avoids by pinning 4.56.2). On transformers 4 the library's
    loader is an independent oracle for ours; on 5 it must still fail as docs/enformer.md says
    (if this starts passing, revisit that page)."""
    import torch
    import transformers
    from enformer_pytorch import Enformer

    path = es.save_enformer(tiny, tmp_path / "ckpt")
    ours = es.load_enformer(path)
    if int(transformers.__version__.split(".")[0]) >= 5:
        with pytest.raises(AttributeError, match="all_tied_weights_keys"):
            Enformer.from_pretrained(str(path), local_files_only=True)
        return
    theirs = Enformer.from_pretrained(str(path), local_files_only=True, use_tf_gamma=False)
    theirs.eval()
    x = torch.from_numpy(es.one_hot([b"ACGT" * 512])).float()
    with torch.no_grad():
        a = ours(x, head="human")
        b = theirs(x, head="human")
    torch.testing.assert_close(a, b)


def test_one_hot_matches_library_and_n_is_zero():
    from enformer_pytorch import str_to_one_hot

    seq = b"ACGTNacgtn"
    ours = es.one_hot([seq])[0]
    np.testing.assert_array_equal(ours, str_to_one_hot(seq.decode()).numpy())
    assert not ours[4].any() and not ours[9].any()
    assert not es.one_hot([b"NNRY"]).any()


@pytest.mark.parametrize("window", [1000, 1001, 2048, 5000, 5001])
def test_centring_keeps_the_tss_at_the_input_centre(window):
    tss = window // 2
    seq = bytearray(b"A" * window)
    seq[tss] = ord("G")
    seq[0], seq[-1] = ord("C"), ord("T")  # the window's ends
    out = es.centre_on_tss(bytes(seq), tss, L)
    assert len(out) == L and out[L // 2 : L // 2 + 1] == b"G" and out.count(b"G") == 1
    if window <= L:  # padded: the whole window is there, N outside it
        assert out.count(b"N") == L - window
        assert out.index(b"C") == L // 2 - tss and set(out[: L // 2 - tss]) <= {ord("N")}
        assert out.index(b"T") == L // 2 + (window - 1 - tss)
    else:  # cropped around the TSS, no N
        assert b"N" not in out and b"C" not in out and b"T" not in out


def test_tss_bins_are_the_published_ones_at_full_length():
    bins = es.tss_bins(es.ENFORMER_SEQ_LEN)
    crop = (es.ENFORMER_SEQ_LEN // es.BIN_BP - 896) // 2
    assert list(bins - crop) == [447, 448, 449]
    assert list(es.tss_bins(L)) == [7, 8, 9] and list(es.tss_bins(L, 2)) == [7, 8]


def test_runner_is_batch_size_invariant():
    seqs = random_seqs(5, L, seed=3)
    a = es.EnformerRunner(seq_len=L, batch_size=1).predict(seqs)
    b = es.EnformerRunner(seq_len=L, batch_size=4).predict(seqs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError):
        es.EnformerRunner(seq_len=1000)


def test_zero_shot_averages_log1p_over_haplotypes():
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 3.0, size=(6, 2, 20)).astype(np.float32)
    est = ZeroShotEnformer(track=7).fit(X, rng.normal(size=6))
    expected = (np.log1p(X[:, 0, 7]) + np.log1p(X[:, 1, 7])) / 2
    np.testing.assert_allclose(est.predict(X), expected, rtol=1e-6)
    np.testing.assert_allclose(est.predict(X[:, ::-1]), expected, rtol=1e-6)  # haplotype order
    y = 3 + 2 * expected
    cal = ZeroShotEnformer(track=7, calibrate=True).fit(X, -y)
    assert np.corrcoef(cal.predict(X), expected)[0, 1] > 0.999  # sign never learned
    with pytest.raises(InputError):
        ZeroShotEnformer(track=20).fit(X, y)


def test_ridge_head_uses_training_rows_only():
    rng = np.random.default_rng(1)
    n, tracks = 60, 40
    X = rng.gamma(2.0, 2.0, size=(n, 2, tracks))
    y = np.log1p(X).mean(1)[:, :3].sum(1) + rng.normal(scale=0.3, size=n)
    folds = np.arange(n) % 5
    for k in range(5):
        tr, te = folds != k, folds == k
        est = EnformerRidgeHead().fit(X[tr], y[tr])
        X2, y2 = X.copy(), y.copy()
        X2[te] *= 10.0
        y2[te] = rng.normal(size=te.sum())
        est2 = EnformerRidgeHead().fit(X2[tr], y2[tr])
        np.testing.assert_allclose(est.predict(X[te]), est2.predict(X[te]))
        # oracle: scaler and ridge fitted by hand on the training rows at the chosen penalty
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        Z = np.log1p(X).mean(1)
        sc = StandardScaler().fit(Z[tr])
        ref = Ridge(alpha=est.alpha_).fit(sc.transform(Z[tr]), y[tr]).predict(sc.transform(Z[te]))
        np.testing.assert_allclose(est.predict(X[te]), ref, rtol=1e-6, atol=1e-9)


def test_enformer_is_an_embedder_whose_store_is_reused(study_copy):
    """Enformer's outputs go through the one content-addressed store: each distinct haplotype is
    run once, a second run computes nothing, another input length is another store, and the
    stored sum over the TSS bins equals the runner's own output for the same input."""
    from hapexpr.context_store import ContextStore, ContextStudy
    from hapexpr.embed import load_embedder, open_embeddings, run_embed
    from hapexpr.study import Study

    first = run_embed(study_copy, model="enformer", bins=3, seq_len=L, progress=False)
    assert first["computed"] == first["unique"] > 0
    again = run_embed(study_copy, model="enformer", bins=3, seq_len=L, progress=False)
    assert again["computed"] == 0 and again["fingerprint"] == first["fingerprint"]
    other = run_embed(study_copy, model="enformer", bins=3, seq_len=L + 128, progress=False)
    assert other["fingerprint"] != first["fingerprint"] and other["computed"] > 0
    store = open_embeddings(study_copy, first["fingerprint"])
    assert store.info["embedder"] == "enformer" and store.dim == es.HUMAN_TRACKS and store.bins == 3
    study = Study.open(study_copy)
    # The tiny study has a FASTA, so Enformer reads its context haplotypes cut to the input.
    gene = ContextStudy(study, ContextStore.open(study), L).gene(study.gene_ids[0])
    assert gene.window == L and len(gene.sequences[0]) == L
    bins, summed = store.haplotype_bins(gene), store.haplotype_mean(gene)
    runner = load_embedder(study_copy, first["fingerprint"]).runner
    direct = runner.predict([es.centre_on_tss(s, gene.tss_offset, L) for s in gene.sequences])
    np.testing.assert_array_equal(summed, direct)  # stored as float32: no rounding
    np.testing.assert_allclose(bins.sum(axis=1), summed, rtol=1e-5, atol=1e-6)


def test_prepare_and_fit_on_a_prepared_study(study_copy, capsys):
    """fit --method enformer fills the store itself (once), then both heads read it."""
    from hapexpr.embed import list_stores
    from hapexpr.fit import fit_method
    from hapexpr.study import Study

    study = Study.open(study_copy)
    first = Enformer().bind(study)
    first.prepare(study, progress=False)
    assert first.embedder().runner.n_forward > 0 and first.embedder().runner.seq_len == 2048
    err = capsys.readouterr().err.replace("\n", " ")
    assert "196,608 bp context haplotypes" in err and "padded with N" not in err  # built on first use
    for head in ("zero-shot", "ridge"):
        method = Enformer(EnformerOptions(head=head)).bind(study)
        rows = fit_method(study, method, overwrite=True, progress=False)
        assert rows["method"].iloc[0] == ("enformer" if head == "zero-shot" else "enformer-ridge")
        assert len(rows) == len(study.gene_ids) * len(study.sample_ids)
        assert rows["predicted"].notna().all()
        assert method.embedder().runner.n_forward == 0  # everything came from the store
    assert [s["embedder"] for s in list_stores(study_copy)] == ["enformer"]


def test_input_note_advises_a_context_only_where_enformer_would_see_much_padding():
    from hapexpr.methods.enformer import input_note

    # the tiny model's input is the window rounded up to whole 128 bp bins: nothing to advise
    tiny = input_note(2000, 2048)
    assert "padded with 48 bp of N to whole 128 bp bins" in tiny and "--context" not in tiny
    assert "--context 196608" in input_note(6000, 196_608)
