"""Language-model embedders (``--model tiny|PATH``): the Nucleotide Transformer and any local
Hugging Face DNA model whose tokenizer ships with it, masked or causal.

:meth:`Embedder.compute` is the one forward path every engine uses (local, Ray actors,
``hapexpr explain`` through :meth:`Embedder.embed`): tokenize, sort by token count so padding is
small, pad with the tokenizer's pad id and a matching attention mask, run the encoder under
``torch.inference_mode`` (SDPA attention; bf16 autocast on CUDA), take the chosen layer's hidden
states and pool them with per-sequence weight matrices in float32. Results do not depend on batch
size or input order beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hapexpr.embed import pooling
from hapexpr.embed.base import STORE_DTYPE, BaseEmbedder, no_options
from hapexpr.embed.checkpoints import TINY, LoadedModel, load_model, load_tiny, weights_sha256
from hapexpr.embed.registry import register
from hapexpr.errors import InputError
from hapexpr.preflight import torch_device

K = 6  # bases per NT token; sets the span that fits the model's context


@register
class Embedder(BaseEmbedder):
    """A language model, its tokenizer and a pooling scheme, ready to embed haplotype windows.

    loaded: the model (:func:`~hapexpr.embed.checkpoints.load_tiny` / ``load_model``).
    layer: hidden-state index, 0 = token embeddings, ``n_layers`` (default) = last layer after
        the final layer norm; negative values count from the end (-1 = last).
    bins: number of TSS-centred bins.
    window: length of the study's window sequences (bp); the TSS is at ``window // 2``.
    cache: an :class:`~hapexpr.embed.store.EmbeddingCache`, used by :meth:`embed` only.
    """

    name = "nucleotide-transformer"

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        layer: int | None = None,
        bins: int = 32,
        window: int,
        device: str = "cpu",
        batch_size: int = 8,
        cache=None,
        source: dict | None = None,
    ) -> None:
        n = loaded.n_layers
        if layer is None:
            layer = n
        if not -(n + 1) <= layer <= n:
            raise InputError(
                f"--layer {layer} is out of range for {loaded.name} ({n} layers)",
                hint=f"use 0..{n} (0 = token embeddings, {n} = last layer) or -1 for the last",
            )
        self.layer = layer % (n + 1)
        self.span = min(int(window), K * (loaded.max_tokens - 1))
        if bins < 1 or bins > self.span:
            raise InputError(f"--bins {bins} must be between 1 and the pooled span ({self.span} bp)")
        if batch_size < 1:
            raise InputError(f"--batch-size {batch_size} must be at least 1")
        super().__init__(
            bins=bins, window=window, batch_size=batch_size, cache=cache, source=source or {"model": loaded.name}
        )
        self.loaded = loaded
        self._pool_cache: dict[tuple, np.ndarray] = {}
        self.device = torch_device(device)
        self.encoder = loaded.encoder.to(self.device)
        self.tokenizer = loaded.tokenizer
        self._weights_sha256: str | None = None

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == TINY or Path(spec).expanduser().is_dir()

    @classmethod
    def source_for(cls, spec: str, *, trust_remote_code: bool = False, **options) -> dict:
        no_options(cls, options)
        return {"embedder": cls.name, **model_source(spec, trust_remote_code=trust_remote_code)}

    @classmethod
    def from_source(
        cls,
        source: dict,
        *,
        layer: int | None,
        bins: int,
        window: int,
        device: str = "cpu",
        batch_size: int = 8,
        cache=None,
    ) -> Embedder:
        spec = source["model_spec"]
        if spec == TINY:
            loaded = load_tiny(int(source.get("seed") or 0))
        else:
            loaded = load_model(spec, trust_remote_code=bool(source.get("trust_remote_code")))
        return cls(
            loaded,
            layer=layer,
            bins=bins,
            window=window,
            device=device,
            batch_size=batch_size,
            cache=cache,
            source=source,
        )

    # -- identity ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.loaded.dim

    @property
    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.encoder)
        return self._weights_sha256

    def keyed(self) -> dict:
        """Everything that changes the stored numbers (weights, tokenizer, layer, pooling,
        window) and nothing else."""
        return {
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer.fingerprint(),
            "layer": self.layer,
            "bins": self.bins,
            "span": self.span,
            "window": self.window,
            "tss_offset": self.tss_offset,
            "pooling": pooling.POOLING_VERSION,
            "dtype": STORE_DTYPE,
        }

    def describe(self) -> dict:
        return {
            "model": self.loaded.name,
            "tiny": self.loaded.tiny,
            "tokenizer": self.tokenizer.name,
            "n_layers": self.loaded.n_layers,
            "span_start": pooling.span_start(self.tss_offset, self.span),
            "max_tokens": self.loaded.max_tokens,
        }

    # -- computing --------------------------------------------------------------------------
    def _prepare(self, sequence: bytes, tss_offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (tokens,) and the (bins + 1, tokens) pooling matrix of one sequence."""
        lo, hi = pooling.crop_bounds(len(sequence), tss_offset, self.span)
        tok = self.tokenizer.tokenize(bytes(sequence[lo:hi]))
        ids, starts, ends = tok.ids, tok.starts + lo, tok.ends + lo
        limit = self.loaded.max_tokens
        if len(ids) > limit:
            # N runs split 6-mers into single bases, so a window can need more tokens than the
            # model's context; keep <cls> and the sequence tokens nearest the TSS.
            keep = limit - 1
            body = np.arange(1, len(ids))
            at_tss = int(np.searchsorted(ends[1:], tss_offset, side="right"))
            first = int(np.clip(at_tss - keep // 2, 0, len(body) - keep))
            sel = np.concatenate([[0], body[first : first + keep]])
            ids, starts, ends = ids[sel], starts[sel], ends[sel]
        # Windows without N share one token layout, so the pooling matrix is nearly always the
        # same: build each distinct layout's matrix once (profiled at ~1 ms a sequence).
        key = (int(tss_offset), starts.tobytes(), ends.tobytes())
        weights = self._pool_cache.get(key)
        if weights is None:
            if len(self._pool_cache) >= 256:
                self._pool_cache.clear()
            edges = pooling.bin_edges(tss_offset, self.span, self.bins)
            weights = self._pool_cache[key] = pooling.pool_weights(starts, ends, edges)
        return ids, weights

    def compute(
        self,
        sequences: Sequence[bytes],
        *,
        tss_offset: int | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed sequences without the cache.

        Returns ((n, bins, dim), (n, dim)) float32 in input order. ``on_batch(k)`` is called
        after each batch of k sequences (progress bars).
        """
        import torch

        tss = self.tss_offset if tss_offset is None else int(tss_offset)
        bs = batch_size or self.batch_size
        n = len(sequences)
        out_bins = np.zeros((n, self.bins, self.dim), dtype=np.float32)
        out_mean = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out_bins, out_mean
        prepared = [self._prepare(s, tss) for s in sequences]
        # Longest first: similar lengths share a batch (little padding) and an out-of-memory
        # error, if any, comes at once rather than at the end.
        order = sorted(range(n), key=lambda i: -len(prepared[i][0]))
        dev = torch.device(self.device)
        with torch.inference_mode():
            for b in range(0, n, bs):
                idx = order[b : b + bs]
                t = max(len(prepared[i][0]) for i in idx)
                ids = torch.full((len(idx), t), self.tokenizer.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), t), dtype=torch.long)
                weights = torch.zeros((len(idx), self.bins + 1, t), dtype=torch.float32)
                for j, i in enumerate(idx):
                    tid, w = prepared[i]
                    ids[j, : len(tid)] = torch.from_numpy(tid)
                    mask[j, : len(tid)] = 1
                    weights[j, :, : len(tid)] = torch.from_numpy(w)
                # bf16 for the transformer only: pooling stays float32 (autocast would run
                # bmm in bf16 too).
                with torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else _null_context():
                    hidden = self._hidden(ids.to(dev), mask.to(dev))
                pooled = torch.bmm(weights.to(dev), hidden.float()).cpu().numpy()
                out_bins[idx] = pooled[:, :-1]
                out_mean[idx] = pooled[:, -1]
                if on_batch is not None:
                    on_batch(len(idx))
        return out_bins, out_mean

    def _hidden(self, ids, mask):
        """(batch, tokens, dim) hidden states of ``self.layer``."""
        if self.layer == self.loaded.n_layers:
            return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[self.layer]


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def model_source(model: str, *, trust_remote_code: bool = False, seed: int = 0) -> dict:
    """How to rebuild a model, as recorded in info.json: ``{"model_spec": ..., ...}``."""
    if model == TINY:
        return {"model_spec": TINY, "seed": seed, "trust_remote_code": False}
    return {
        "model_spec": str(Path(model).expanduser().resolve()),
        "seed": None,
        "trust_remote_code": bool(trust_remote_code),
    }
