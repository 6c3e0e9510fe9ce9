"""``enformer``: Enformer's predicted CAGE at the TSS, zero-shot or with a trained ridge head.

Each distinct haplotype of a gene (5'->3' on the gene's strand) is centred on its TSS in a
``seq_len`` input, run through Enformer once, and the human head's tracks summed over the bins
around the TSS are cached per gene under ``STUDY/enformer/<fingerprint>/``
(:mod:`hapexpr.estimators.enformer_store`). Heads (:mod:`hapexpr.estimators.enformer`):
``zero-shot`` scores one CAGE track, nothing learned; ``ridge`` learns a ridge head on all
tracks inside the training folds. Features: (samples, haplotypes=2, tracks) float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.estimators.enformer import DEFAULT_TRACK, HEADS, EnformerRidgeHead, ZeroShotEnformer
from hapexpr.estimators.enformer_store import (
    DEFAULT_TSS_BINS,
    EnformerRunner,
    OutputCache,
    centre_on_tss,
    default_seq_len,
    sequence_key,
)
from hapexpr.methods.base import Options, option
from hapexpr.methods.haplotype import HaplotypeMethod
from hapexpr.methods.registry import register
from hapexpr.progress import console, track_genes
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
            raise InputError("--model is neither `tiny` nor a checkpoint directory", path=self.model,
                             hint="give a local directory with config.json and model.safetensors")


@register
class Enformer(HaplotypeMethod):
    name = "enformer"
    Options = EnformerOptions
    summary = "Enformer's CAGE at the TSS of each haplotype: zero-shot, or a trained ridge head"
    order = 40

    @classmethod
    def default_name(cls, options: EnformerOptions) -> str:
        return cls.name if options.head == "zero-shot" else f"{cls.name}-{options.head}"

    @classmethod
    def options_for_name(cls, name: str) -> dict | None:
        heads = {cls.default_name(EnformerOptions(head=h)): h for h in HEADS}
        return None if name not in heads else ({} if heads[name] == "zero-shot" else {"head": heads[name]})

    def runner(self) -> EnformerRunner:
        if getattr(self, "_runner", None) is None:
            o = self.options
            seq_len = o.seq_len or default_seq_len(o.model, self.study.window)
            self._runner = EnformerRunner(model=o.model, seq_len=seq_len, n_bins=o.tss_bins,
                                          batch_size=o.batch_size, device=o.device, seed=o.seed)
            if not 0 <= o.track < self._runner.n_tracks:
                raise InputError(f"--track {o.track} is outside the model's {self._runner.n_tracks} human tracks")
            self._cache = OutputCache(self.study.path, self._runner)
        return self._runner

    def models_used(self) -> list[dict]:
        tiny = self.options.model == "tiny"
        kind = "tiny randomly initialised" if tiny else self.options.model
        return [{"description": f"Enformer ({kind}, {self.options.seq_len or 'default'} bp input)", "tiny": tiny}]

    def prepare(self, study, *, progress: bool) -> None:
        """Run the model over every gene's distinct haplotypes not yet cached."""
        runner = self.runner()
        console.print(f"enformer: {input_note(study.window, runner.seq_len)}")
        start, total, computed = time.time(), 0, 0
        for gene_id in track_genes(study.gene_ids, "enformer", enabled=progress):
            gene = study.gene(gene_id)
            n_before = runner.n_forward
            total += len(self.haplotype_features(gene, gene.sequences))
            computed += runner.n_forward - n_before
        console.print(f"enformer: {len(study.gene_ids)} genes, {total} distinct haplotypes, "
                      f"{computed} forward passes in {time.time() - start:.1f} s (cache {self._cache.dir})")

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(n, tracks) float32 outputs; a gene's study haplotypes are cached, other sequences
        (new people, explain's rebuilt haplotypes) are computed and not cached."""
        runner = self.runner()
        inputs = [centre_on_tss(s, gene.tss_offset, runner.seq_len) for s in sequences]
        keys = [sequence_key(s) for s in inputs]
        entries = self._cache.load(gene.gene_id)
        todo = {k: s for k, s in zip(keys, inputs) if k not in entries}
        if todo:
            entries.update(zip(todo, runner.predict(list(todo.values()))))
            if not self.for_new_people:
                self._cache.save(gene.gene_id, {k: entries[k] for k in set(keys)})
        if not keys:
            return np.zeros((0, runner.n_tracks), dtype=np.float32)
        return np.stack([entries[k] for k in keys]).astype(np.float32)

    def estimator(self, seed: int):
        if self.options.head == "ridge":
            return EnformerRidgeHead()
        return ZeroShotEnformer(track=self.options.track, calibrate=self.options.calibrate)

    def load_estimator(self, directory: Path):
        return EnformerRidgeHead.load(directory) if self.options.head == "ridge" else ZeroShotEnformer.load(directory)


def input_note(window: int, seq_len: int) -> str:
    """One line saying how the study window becomes the model input."""
    if window < seq_len:
        return (f"each {window:,} bp study window is centred on its TSS in a {seq_len:,} bp input "
                f"padded with N ({seq_len - window:,} bp of N, all-zero one-hot): Enformer sees no "
                f"sequence beyond the window; prepare with --window {seq_len} to give it the full context")
    if window > seq_len:
        return f"each {window:,} bp study window is cropped to the central {seq_len:,} bp around the TSS"
    return f"the {window:,} bp study window is the model input, TSS at its centre"
