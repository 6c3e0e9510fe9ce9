"""``--model enformer[:PATH]``: Enformer's human-head outputs at the bins around the TSS.

Enformer is an embedder like any other, except for what it reads: when the study has a context
(every study prepared with ``--fasta`` and without ``--context 0``; :mod:`hapexpr.context_store`,
built on first use) it embeds each gene's distinct *context* haplotypes, built from the reference
whatever the study window, else the study window's. Each distinct sequence is centred on its TSS in a ``seq_len``
input (cropped symmetrically when longer, N-padded when shorter), run once,
and its 5,313 human tracks at the ``bins`` 128-bp output bins around the TSS are stored in the
study's content-addressed store: ``bins`` (n, bins, tracks) per bin and ``mean`` (n, tracks)
holding their **sum** over the bins (the quantity the ``enformer`` method scores). Kept as
float32: CAGE-like outputs span orders of magnitude and the zero-shot score is their log.
``enformer`` (no path) is the tiny random model of the tests; ``enformer:PATH`` a local
checkpoint (``hapexpr.estimators.enformer_store.load_enformer``). Model, weights, input and
binning details: ``docs/enformer.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hapexpr.context_store import ContextStore, ContextStudy
from hapexpr.embed.base import BaseEmbedder
from hapexpr.embed.registry import register
from hapexpr.errors import InputError
from hapexpr.estimators.enformer_store import CACHE_VERSION, EnformerRunner, centre_on_tss, default_seq_len

PREFIX = "enformer"


def model_of(spec: str) -> str:
    """``tiny`` for ``enformer``, else the checkpoint path of ``enformer:PATH``."""
    _, _, path = spec.partition(":")
    return path or "tiny"


@register
class EnformerEmbedder(BaseEmbedder):
    name = "enformer"
    store_dtype = "float32"

    def __init__(
        self, runner: EnformerRunner, *, window: int, batch_size: int = 2, cache=None, source: dict | None = None
    ) -> None:
        super().__init__(bins=len(runner.bins), window=window, batch_size=batch_size, cache=cache, source=source)
        self.runner = runner
        self.device = runner.device
        # "window" (the study window) or "context" (prepare's context store): what is embedded.
        self.input = str(self.source.get("input") or "window")
        self.study_window = self.window
        self.context_width = self.source.get("context")

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == PREFIX or spec.startswith(PREFIX + ":")

    @classmethod
    def source_for(cls, spec: str, *, trust_remote_code: bool = False, seq_len: int | None = None) -> dict:
        model = model_of(spec)
        if model != "tiny" and not Path(model).is_dir():
            raise InputError(
                "--model enformer:PATH needs a checkpoint directory",
                path=model,
                hint="give a local directory with config.json and model.safetensors",
            )
        model = model if model == "tiny" else str(Path(model).resolve())
        return {
            "embedder": cls.name,
            "model_spec": f"{PREFIX}:{model}" if model != "tiny" else PREFIX,
            "seq_len": seq_len,
            "seed": 0,
        }

    @classmethod
    def from_source(
        cls,
        source: dict,
        *,
        layer: int | None,
        bins: int,
        window: int,
        device: str = "cpu",
        batch_size: int = 2,
        cache=None,
    ) -> EnformerEmbedder:
        if layer is not None:
            raise InputError("--layer does not apply to Enformer's outputs (use --bins for the TSS bins)")
        model = model_of(source["model_spec"])
        seq_len = int(source.get("seq_len") or default_seq_len(model, window))
        runner = EnformerRunner(
            model=model,
            seq_len=seq_len,
            n_bins=bins,
            batch_size=batch_size,
            device=device,
            seed=int(source.get("seed") or 0),
        )
        return cls(runner, window=window, batch_size=batch_size, cache=cache, source={**source, "seq_len": seq_len})

    @property
    def dim(self) -> int:
        return self.runner.n_tracks

    def use_study(self, study):
        """The study's context haplotypes (a :class:`ContextStudy`, each cut to
        min(context, seq_len) bp around the TSS) when it has a context store, else the study
        itself (its window, N-padded to ``seq_len``). Sets ``window`` (and the TSS offset) to
        the sequences' width, and marks the store's fingerprint with the input."""
        if isinstance(study, ContextStudy):
            return study
        store = ContextStore.open(study)
        if store is None:
            self.input, self.window, self.context_width = "window", self.study_window, None
        else:
            self.input, self.context_width = "context", store.width
            self.window = min(store.width, self.runner.seq_len)
        self.tss_offset = self.window // 2
        self.source["input"], self.source["context"] = self.input, self.context_width
        return study if store is None else ContextStudy(study, store, self.window)

    @property
    def weights_sha256(self) -> str:
        return self.runner.weights_sha256

    def keyed(self) -> dict:
        return {
            "embedder": self.name,
            **self.runner.key,
            "window": self.window,
            "tss_offset": self.tss_offset,
            "dtype": self.store_dtype,
            "cache_version": CACHE_VERSION,
            # A context input is another store than the window's (studies without one keep theirs).
            **({"input": "context", "context": self.context_width} if self.input == "context" else {}),
        }

    def describe(self) -> dict:
        model = model_of(self.source["model_spec"])
        return {
            "model": f"Enformer {model}",
            "tiny": model == "tiny",
            "layer": None,
            "weights_sha256": self.runner.weights_sha256,
            "seq_len": self.runner.seq_len,
            "tss_bins": [int(b) for b in self.runner.bins],
            "input": self.input,
            "aggregate": "mean = sum over the TSS bins",
        }

    def compute(
        self,
        sequences: Sequence[bytes],
        *,
        tss_offset: int | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        tss = self.tss_offset if tss_offset is None else int(tss_offset)
        inputs = [centre_on_tss(bytes(s), tss, self.runner.seq_len) for s in sequences]
        if not inputs:
            return np.zeros((0, self.bins, self.dim), np.float32), np.zeros((0, self.dim), np.float32)
        return self.runner.predict_bins(inputs, on_batch=on_batch)
