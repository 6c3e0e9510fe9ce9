"""Embedding layers on plain sequences: tokenizer, tiny model, pooling, batching, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hapexpr.embed import pooling  # noqa: E402
from hapexpr.embed.tokenizer import VOCAB, NTTokenizer  # noqa: E402
from hapexpr.errors import InputError  # noqa: E402


def random_seqs(n: int, length: int, *, seed: int = 0, n_frac: float = 0.0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), length)
        if n_frac:
            s[rng.random(length) < n_frac] = ord("N")
        out.append(s.tobytes())
    return out


@pytest.fixture(scope="module")
def tiny():
    from hapexpr.embed.checkpoints import load_tiny

    return load_tiny(0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from hapexpr.embed.checkpoints import save_tiny

    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-nt")


# -- tokenizer --------------------------------------------------------------------------------


def test_tokenizer_reproduces_nt_test_vector():
    tok = NTTokenizer()
    text = tok.tokens_as_text("ACGTGTACNTGCACGGANCGACTAGTCTGA")
    assert " ".join(text) == "<cls> ACGTGT A C N TGCACG G A N CGACTA GTCTGA"
    assert len(tok.tokenize(b"ACGT" * 1498 + b"AC")) == 1000  # 5,994 bp -> 999 6-mers + <cls>
    assert tok.tokens_as_text("acgtgtn") == ["<cls>", "ACGTGT", "N"]


def test_vocabulary_order_is_nt():
    assert len(VOCAB) == 4107
    assert VOCAB[:4] == ["<unk>", "<pad>", "<mask>", "<cls>"]
    assert VOCAB[4:7] == ["AAAAAA", "AAAAAT", "AAAAAC"]
    assert VOCAB[4099] == "GGGGGG"
    assert VOCAB[4100:] == ["A", "T", "C", "G", "N", "<eos>", "<bos>"]


def test_token_spans_cover_the_sequence():
    tok = NTTokenizer()
    for seq in random_seqs(5, 97, seed=3, n_frac=0.05):
        t = tok.tokenize(seq)
        assert t.starts[0] == t.ends[0] == 0  # <cls> covers nothing
        assert np.array_equal(t.starts[1:], t.ends[:-1])
        assert t.ends[-1] == len(seq)
        # every token's text is the bases it spans (oracle: the vocabulary strings)
        for i, s, e in zip(t.ids[1:], t.starts[1:], t.ends[1:], strict=True):
            assert VOCAB[i] == seq[s:e].decode()


def test_saved_tokenizer_files_load_as_esm_tokenizer_with_same_ids(tiny_dir):
    from hapexpr.embed.tokenizer import HFTokenizer

    hf = HFTokenizer.from_directory(tiny_dir)
    assert hf.name == "EsmTokenizer"
    nt = NTTokenizer()
    for seq in random_seqs(4, 131, seed=1, n_frac=0.04) + [b"ACGTGTACNTGCACGGANCGACTAGTCTGA"]:
        a, b = nt.tokenize(seq), hf.tokenize(seq)
        assert np.array_equal(a.ids, b.ids)
        assert np.array_equal(a.starts, b.starts) and np.array_equal(a.ends, b.ends)


# -- pooling ----------------------------------------------------------------------------------


def test_pool_weights_match_per_base_average():
    """Oracle: give every base its token's vector, then average bases within each bin."""
    rng = np.random.default_rng(0)
    seq = random_seqs(1, 200, seed=5, n_frac=0.05)[0]
    t = NTTokenizer().tokenize(seq)
    hidden = rng.normal(size=(len(t), 7))
    tss, span, nbins = 100, 180, 7
    edges = pooling.bin_edges(tss, span, nbins)
    binned, mean = pooling.pool(hidden, pooling.pool_weights(t.starts, t.ends, edges))
    per_base = np.zeros((len(seq), 7))
    for k in range(1, len(t)):
        per_base[t.starts[k] : t.ends[k]] = hidden[k]
    expect = np.stack([per_base[edges[b] : edges[b + 1]].mean(axis=0) for b in range(nbins)])
    np.testing.assert_allclose(binned, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, hidden[1:].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert edges[0] == 10 and edges[-1] == 190  # centred on the TSS


# -- models and the batched engine --------------------------------------------------------


def test_tiny_model_is_nt_architecture_and_seeded(tiny):
    from hapexpr.embed.checkpoints import load_tiny, weights_sha256

    cfg = tiny.encoder.config
    assert cfg.vocab_size == 4105 and cfg.max_position_embeddings == 1002
    assert cfg.position_embedding_type == "absolute" and cfg.token_dropout is False
    assert cfg._attn_implementation == "sdpa"
    assert tiny.max_tokens == 1000
    assert weights_sha256(load_tiny(0).encoder) == weights_sha256(tiny.encoder)
    assert weights_sha256(load_tiny(1).encoder) != weights_sha256(tiny.encoder)


def test_engine_matches_unbatched_hf_forward(tiny, tiny_dir):
    """Oracle: transformers' own tokenizer (from the saved files) and model, one sequence at a
    time, no padding, pooled base by base."""
    from transformers import AutoTokenizer, EsmModel

    from hapexpr.embed.engine import Embedder

    window, nbins = 300, 6
    seqs = random_seqs(3, window, seed=2, n_frac=0.03)
    emb = Embedder(tiny, bins=nbins, window=window, layer=1)
    got_bins, got_mean = emb.compute(seqs, batch_size=2)

    hf_tok = AutoTokenizer.from_pretrained(str(tiny_dir), local_files_only=True)
    model = EsmModel.from_pretrained(str(tiny_dir), local_files_only=True, add_pooling_layer=False).eval()
    edges = pooling.bin_edges(window // 2, window, nbins)
    for i, seq in enumerate(seqs):
        ids = hf_tok(seq.decode(), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[1][0].numpy()
        toks = hf_tok.convert_ids_to_tokens(ids[0])
        per_base = np.concatenate([np.repeat(h[k : k + 1], len(toks[k]), axis=0) for k in range(1, len(toks))])
        assert len(per_base) == window
        expect = np.stack([per_base[edges[b] : edges[b + 1]].mean(axis=0) for b in range(nbins)])
        np.testing.assert_allclose(got_bins[i], expect, atol=2e-5)
        np.testing.assert_allclose(got_mean[i], h[1:].mean(axis=0), atol=2e-5)


def test_results_do_not_depend_on_batch_size_or_order(tiny):
    from hapexpr.embed.engine import Embedder

    emb = Embedder(tiny, bins=8, window=400)
    # different token counts (N runs split 6-mers) so batches really are padded
    seqs = random_seqs(7, 400, seed=4, n_frac=0.0) + random_seqs(4, 400, seed=9, n_frac=0.05)
    ref_b, ref_m = emb.compute(seqs, batch_size=1)
    perm = np.random.default_rng(0).permutation(len(seqs))
    for bs in (3, 11):
        b, m = emb.compute([seqs[i] for i in perm], batch_size=bs)
        np.testing.assert_allclose(b, ref_b[perm], atol=1e-5)
        np.testing.assert_allclose(m, ref_m[perm], atol=1e-5)
    assert np.abs(ref_b[0] - ref_b[1]).max() > 1e-3  # different sequences, different numbers


def test_saved_tiny_model_loads_by_path_with_identical_embeddings(tiny, tiny_dir):
    from hapexpr.embed.checkpoints import load_model
    from hapexpr.embed.engine import Embedder

    seqs = random_seqs(3, 240, seed=6, n_frac=0.02)
    a = Embedder(tiny, bins=4, window=240)
    b = Embedder(load_model(tiny_dir), bins=4, window=240)
    assert b.tokenizer.name == "EsmTokenizer"
    assert a.weights_sha256 == b.weights_sha256
    assert a.info()["fingerprint"] == b.info()["fingerprint"]
    for x, y in zip(a.compute(seqs), b.compute(seqs), strict=True):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_with_custom_code_needs_trust_remote_code(tmp_path, tiny_dir):
    import shutil

    from hapexpr.embed.checkpoints import load_model

    ckpt = tmp_path / "ntv2"
    shutil.copytree(tiny_dir, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="--trust-remote-code"):
        load_model(ckpt)
    with pytest.raises(InputError, match="config.json is missing"):
        load_model(tmp_path)


def test_long_windows_are_cropped_to_the_model_context(tiny):
    from hapexpr.embed.engine import Embedder

    emb = Embedder(tiny, bins=4, window=8000)
    assert emb.span == 5994
    info = emb.info()
    assert info["span_start"] == 4000 - 2997
    seq = random_seqs(1, 8000, seed=8, n_frac=0.01)[0]  # Ns: more tokens than fit
    ids, w = emb._prepare(seq, 4000)
    assert len(ids) == 1000 and w.shape == (5, 1000)
    b, m = emb.compute([seq])
    assert np.isfinite(b).all() and np.abs(b).sum() > 0


def test_bad_options_are_input_errors(tiny):
    from hapexpr.embed.engine import Embedder

    with pytest.raises(InputError, match="--layer 3"):
        Embedder(tiny, layer=3, window=100)
    with pytest.raises(InputError, match="--bins"):
        Embedder(tiny, bins=0, window=100)
    with pytest.raises(InputError, match="CUDA"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        Embedder(tiny, window=100, device="cuda")


# -- store and cache ----------------------------------------------------------------------


def test_cache_embeds_once_and_returns_stored_rows(tiny, tmp_path):
    from hapexpr.embed.engine import Embedder
    from hapexpr.embed.store import EmbeddingCache, hashes_of

    cache = EmbeddingCache(tmp_path / "store")
    emb = Embedder(tiny, bins=5, window=300, cache=cache)
    seqs = random_seqs(4, 300, seed=11)
    calls = []
    real = emb.compute
    emb.compute = lambda s, **kw: (calls.append(len(s)), real(s, **kw))[1]
    b1, m1 = emb.embed(seqs + seqs[:1], tss_offset=150)
    assert calls == [4]  # the duplicate is embedded once
    b2, m2 = emb.embed(seqs[::-1], tss_offset=150)
    assert calls == [4]  # all cached now
    np.testing.assert_array_equal(b2, b1[:4][::-1])
    fresh_b, fresh_m = real(seqs)
    np.testing.assert_allclose(b1[:4], fresh_b, atol=2e-3, rtol=2e-3)  # float16 storage
    np.testing.assert_array_equal(b1[:4], fresh_b.astype(np.float16).astype(np.float32))
    assert len(list((tmp_path / "store" / "extra").iterdir())) == 1
    # a new cache object sees the rows written by the first
    again = EmbeddingCache(tmp_path / "store")
    assert all(bytes(h) in again.index for h in hashes_of(seqs))


def test_replacing_a_gene_group_keeps_the_index_right(tmp_path):
    """A re-prepared study changes a gene's haplotypes: rows are reused by hash, never by
    position, and the old group is replaced whole."""
    from hapexpr.embed.store import EmbeddingCache, hashes_of, read_rows

    cache = EmbeddingCache(tmp_path / "store")
    seqs = random_seqs(3, 50, seed=12)
    rng = np.random.default_rng(0)
    bins, mean = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 4))
    cache.write_gene("G1", hashes_of(seqs), bins, mean)
    # new haplotype set: seqs[2] kept (now row 0), seqs[0..1] gone, one new sequence
    new = [seqs[2], random_seqs(1, 50, seed=13)[0]]
    kept_b, kept_m = cache.index.fetch([bytes(hashes_of(new)[0])], bins=2, dim=4)
    cache.write_gene(
        "G1", hashes_of(new), np.concatenate([kept_b, np.ones((1, 2, 4))]), np.concatenate([kept_m, np.ones((1, 4))])
    )
    for c in (cache, EmbeddingCache(tmp_path / "store")):  # in memory and rebuilt from disk
        assert bytes(hashes_of(seqs[:1])[0]) not in c.index
        b, m = c.index.fetch([bytes(h) for h in hashes_of(new)], bins=2, dim=4)
        np.testing.assert_allclose(b[0], bins[2], atol=1e-2)
        np.testing.assert_array_equal(b[1], np.ones((2, 4)))
    b, _ = read_rows(cache.gene_path("G1"))
    assert b.shape == (2, 2, 4)
    assert [p.name for p in (tmp_path / "store" / "genes").iterdir()] == ["G1.zarr"]


def test_a_local_causal_dna_language_model_embeds_through_the_same_path(tmp_path):
    """Any local Hugging Face DNA model whose tokenizer ships with it: here a tiny random GPT-2
    with a character-level tokenizer, saved to a directory and loaded by path (causal LM)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from hapexpr.embed.checkpoints import load_model
    from hapexpr.embed.engine import Embedder
    from hapexpr.embed.registry import resolve

    vocab = {"<pad>": 0, "<unk>": 1, "A": 2, "C": 3, "G": 4, "T": 5, "N": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_positions=512, n_embd=32, n_layer=2, n_head=2, pad_token_id=0)
    )
    model.save_pretrained(tmp_path / "ckpt")
    fast.save_pretrained(tmp_path / "ckpt")
    assert resolve(str(tmp_path / "ckpt")).name == "nucleotide-transformer"
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.n_layers == 2 and loaded.dim == 32
    seqs = [b"ACGT" * 50, b"TTGCA" * 40]
    emb = Embedder(loaded, bins=4, window=200)
    bins, mean = emb.compute(seqs)
    assert bins.shape == (2, 4, 32) and np.isfinite(bins).all()
    # a causal model's hidden state at a base depends only on the bases before it
    again, _ = Embedder(loaded, bins=4, window=200, batch_size=1).compute(seqs[::-1])
    np.testing.assert_allclose(again[::-1], bins, rtol=1e-5, atol=1e-5)
