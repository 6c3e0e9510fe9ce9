"""``enformer``: Enformer's predicted CAGE at the TSS, zero-shot or with a trained ridge head.

Enformer's outputs are embeddings like any other (:mod:`hapexpr.embed.enformer`): each distinct
haplotype is run once and its human-head tracks, summed over the bins around the TSS, sit in the
study's content-addressed store. The haplotypes are the gene's context haplotypes
(``STUDY/context/``, 196,608 bp around the TSS by default, whatever the study window), built
from the study's VCF and FASTA the first time Enformer needs them; a gene whose context could not
be built (it leaves a FASTA excerpt) gets no model. Studies without a context (``prepare
--context 0``, or prepared by a hapexpr that made none by default) give Enformer the study
window, N-padded. The method fills that store itself before fitting (as
``hapexpr embed STUDY --model enformer[:PATH] --bins TSS_BINS`` would) and reads each person's
two haplotypes' outputs from it. Heads (:mod:`hapexpr.estimators.enformer`): ``zero-shot``
scores one CAGE track, nothing learned; ``ridge`` learns a ridge head on all tracks inside the
training folds. Features: (samples, haplotypes=2, tracks) float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapexpr.context_store import REASONS, ContextStore, context_input
from hapexpr.embed.enformer import PREFIX, EnformerEmbedder
from hapexpr.embed.registry import build_embedder
from hapexpr.embed.run import embed_study
from hapexpr.errors import InputError
from hapexpr.estimators.enformer import DEFAULT_TRACK, HEADS, EnformerRidgeHead, ZeroShotEnformer
from hapexpr.estimators.enformer_store import BIN_BP, DEFAULT_TSS_BINS
from hapexpr.methods.base import Options, option
from hapexpr.methods.effects import haplotype_effects
from hapexpr.methods.embedding import EmbeddingMethod
from hapexpr.methods.registry import register
from hapexpr.progress import console
from hapexpr.study import GeneData


@dataclass(frozen=True)
class EnformerOptions(Options):
    model: str = option("tiny", "`tiny` (random, offline) or a local Enformer checkpoint directory.")
    track: int = option(DEFAULT_TRACK, "Output track scored zero-shot (5110 = CAGE GM12878).")
    head: str = option("zero-shot", "zero-shot or ridge (a ridge head on all tracks, trained in the folds).")
    seq_len: int | None = option(None, "Input length (default 196,608 for real weights).")
    batch_size: int = option(2, "Sequences per forward pass.")
    device: str = option("cpu", "cpu, cuda or auto.")
    tss_bins: int = option(DEFAULT_TSS_BINS, "128-bp output bins around the TSS summed per track.")
    calibrate: bool = option(False, "zero-shot: map the score onto the training individuals' scale.")

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise InputError(f"--head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.model != "tiny" and not Path(self.model).is_dir():
            raise InputError(
                "--model is neither `tiny` nor a checkpoint directory",
                path=self.model,
                hint="give a local directory with config.json and model.safetensors",
            )


@register
class Enformer(EmbeddingMethod):
    name = "enformer"
    Options = EnformerOptions
    needs = ("sequence",)  # the method embeds what it needs itself
    summary = "Enformer's CAGE at the TSS of each haplotype: zero-shot, or a trained ridge head"
    order = 40

    @classmethod
    def default_name(cls, options: EnformerOptions) -> str:
        return cls.name if options.head == "zero-shot" else f"{cls.name}-{options.head}"

    @classmethod
    def options_for_name(cls, name: str) -> dict | None:
        heads = {cls.default_name(EnformerOptions(head=h)): h for h in HEADS}
        return None if name not in heads else ({} if heads[name] == "zero-shot" else {"head": heads[name]})

    def embedder(self) -> EnformerEmbedder:
        """The Enformer embedder of these options (the model is loaded once per method)."""
        if getattr(self, "_embedder_obj", None) is None:
            o = self.options
            spec = PREFIX if o.model == "tiny" else f"{PREFIX}:{o.model}"
            source = EnformerEmbedder.source_for(spec, seq_len=o.seq_len)
            source["seed"] = o.seed
            self._embedder_obj = build_embedder(
                source, layer=None, bins=o.tss_bins, window=self.study.window, device=o.device, batch_size=o.batch_size
            )
            if not 0 <= o.track < self._embedder_obj.dim:
                raise InputError(f"--track {o.track} is outside the model's {self._embedder_obj.dim} human tracks")
            self._embedder_obj.use_study(self.study)  # the context haplotypes when the study has them
        return self._embedder_obj

    @property
    def uses_context(self) -> bool:
        return self.embedder().input == "context"

    def resolve(self, study) -> dict:
        self.study = study
        resolved = {"fingerprint": self.embedder().info()["fingerprint"]}
        # Only a context input says so: a window fit's record (hence its key) stays what it was.
        return {**resolved, "input": "context"} if self.uses_context else resolved

    def input_gene(self, cohort, gene_id: str) -> GeneData | None:
        """The gene as Enformer reads it: its context haplotypes (None when it has no context)
        when the study has a context store, else its window haplotypes."""
        if not self.uses_context:
            return cohort.gene(gene_id)
        gene = cohort.context_gene(gene_id)
        return None if gene is None else context_input(gene, self.embedder().window)

    def features(self, cohort, gene_id: str) -> np.ndarray:
        """(samples, haplotypes=2, tracks) float32; (samples, 2, 0) for a gene without a context
        (not :meth:`usable`: it gets no model)."""
        gene = self.input_gene(cohort, gene_id)
        if gene is None:
            return np.zeros((len(cohort.sample_ids), 2, 0), dtype=np.float32)
        return self.people_features(self.haplotype_features(gene, gene.sequences), gene.hap_index)

    def usable(self, X: np.ndarray) -> bool:
        return X.shape[-1] > 0

    def explain(self, cohort, gene_id: str, est):
        gene = self.input_gene(cohort, gene_id)
        if gene is None:
            raise InputError(f"gene {gene_id} has no Enformer context, so {self.fit_name} has no model for it")
        return haplotype_effects(self, gene, est)

    def models_used(self) -> list[dict]:
        info = self.embedder().info()
        kind = "tiny randomly initialised" if info["tiny"] else info["model"]
        return [
            {
                "description": f"Enformer {info['fingerprint']} ({kind}, {info['seq_len']:,} bp input "
                f"from the {'context haplotypes' if info['input'] == 'context' else 'study window'})",
                "tiny": bool(info["tiny"]),
                "fingerprint": info["fingerprint"],
            }
        ]

    def prepare(self, study, *, progress: bool) -> None:
        """Run the model over every distinct haplotype not yet in the store (caller holds the lock)."""
        store = ContextStore.open(study) if self.uses_context else None
        width = store.width if store is not None else None
        console.print(f"enformer: {input_note(study.window, self.embedder().runner.seq_len, context=width)}")
        if store is not None:
            store.build(progress=progress)  # once, on first use; a no-op after
        if store is not None and (missing := store.missing(study.gene_ids)):
            reasons = sorted(set(missing.values()))
            console.print(
                f"[yellow]enformer: {len(missing)} gene(s) have no {width:,} bp context and get no model: "
                + "; ".join(f"{REASONS.get(r, r)} ({r})" for r in reasons)
                + f"; e.g. {', '.join(list(missing)[:3])}[/]"
            )
        embed_study(study, self.embedder(), progress=progress)

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(n, tracks) float32: the tracks summed over the TSS bins."""
        return self.embeddings(gene, sequences)[1]

    def estimator(self, seed: int):
        if self.options.head == "ridge":
            return EnformerRidgeHead()
        return ZeroShotEnformer(track=self.options.track, calibrate=self.options.calibrate)

    def load_estimator(self, directory: Path):
        return EnformerRidgeHead.load(directory) if self.options.head == "ridge" else ZeroShotEnformer.load(directory)


def input_note(window: int, seq_len: int, *, context: int | None = None) -> str:
    """One line saying how the study window (or the stored context) becomes the model input."""
    if context is not None:
        if context < seq_len:
            return (
                f"each {context:,} bp context haplotype is centred on its TSS in a {seq_len:,} bp input "
                f"padded with N ({seq_len - context:,} bp of N); prepare with --context {seq_len} "
                "to fill the whole input"
            )
        crop = "" if context == seq_len else f", cropped to the central {seq_len:,} bp"
        return f"each person's own {context:,} bp context haplotypes around the TSS are the model input{crop}"
    if seq_len - BIN_BP < window < seq_len:  # the tiny model's input: the window in whole bins
        return f"the {window:,} bp study window, padded with {seq_len - window} bp of N to whole {BIN_BP} bp bins, is the model input"
    if window < seq_len:
        return (
            f"each {window:,} bp study window is centred on its TSS in a {seq_len:,} bp input "
            f"padded with N ({seq_len - window:,} bp of N, all-zero one-hot): Enformer sees no "
            f"sequence beyond the window; this study has no Enformer context (prepared with --context 0, "
            f"or before hapexpr recorded one by default): prepare it again with --fasta "
            f"(--context {seq_len} for this input) to give Enformer each person's own sequence over its whole input"
        )
    if window > seq_len:
        return f"each {window:,} bp study window is cropped to the central {seq_len:,} bp around the TSS"
    return f"the {window:,} bp study window is the model input, TSS at its centre"
