"""``enformer``: Enformer's predicted CAGE at the TSS as an expression predictor across people.

Each distinct haplotype of a gene (5'->3' on the gene's strand, so minus-strand genes are
already reverse-complemented and their TSS bins are central) is centred on its TSS in a
``seq_len`` input (N-padded when the study window is shorter, cropped when longer), run through
Enformer once, and the human head's 5,313 tracks summed over the 3 bins around the TSS are
cached (see ``enformer_store``). Two heads use those outputs:

- ``zero-shot`` (default): score = mean over the person's two haplotypes of log(1 + CAGE) of
  one track (``track``, default 5110). Nothing is learned, so the fold's training individuals are
  not used at all (unless ``calibrate``), and the out-of-fold prediction is the score itself.
- ``ridge``: ridge regression on log(1 + outputs) of all tracks averaged over the two
  haplotypes, standardised and with the penalty chosen by leave-one-out CV, all inside
  the training folds.

Shapes: features are (samples, haplotypes=2, tracks) float32 in study sample order.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.progress import console, track_genes
from hapexpr.models.enformer_store import (
    DEFAULT_TSS_BINS,
    EnformerRunner,
    OutputCache,
    default_seq_len,
    gene_outputs,
)

DEFAULT_TRACK = 5110  # CAGE, GM12878 (lymphoblastoid), the cell type of most eQTL cohorts' LCLs
HEADS = ("zero-shot", "ridge")


def haplotype_features(outputs: np.ndarray, hap_index: np.ndarray) -> np.ndarray:
    """(samples, 2, tracks) from (unique, tracks) outputs and (samples, 2) ``hap_index``."""
    return outputs[np.asarray(hap_index, dtype=np.int64)]


def _log_mean(X: np.ndarray) -> np.ndarray:
    """(samples, ...) mean over the haplotype axis (1) of log(1 + X); X >= 0 (softplus)."""
    return np.log1p(np.asarray(X, dtype=np.float64)).mean(axis=1)


class ZeroShotEnformer:
    """Score = mean over haplotypes of log(1 + CAGE) of ``track``; ``fit`` learns nothing
    unless ``calibrate``, which maps the score onto the training individuals' expression by
    matching mean and standard deviation (slope kept positive, so the sign of the correlation
    is never learned from the data)."""

    def __init__(self, *, track: int = DEFAULT_TRACK, calibrate: bool = False) -> None:
        self.track = track
        self.calibrate = calibrate

    def score(self, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 from X (samples, 2, tracks)."""
        return _log_mean(np.asarray(X)[:, :, self.track])

    def fit(self, X: np.ndarray, y: np.ndarray) -> ZeroShotEnformer:
        if not 0 <= self.track < np.asarray(X).shape[-1]:
            raise InputError(f"--track {self.track} is outside the model's {np.asarray(X).shape[-1]} human tracks")
        self.shift_, self.scale_ = 0.0, 1.0
        if self.calibrate:
            s = self.score(X)
            sd_s, sd_y = float(s.std()), float(np.std(y))
            self.scale_ = sd_y / sd_s if sd_s > 0 else 0.0
            self.shift_ = float(np.mean(y)) - self.scale_ * float(s.mean())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.shift_ + self.scale_ * self.score(X)


class EnformerRidgeHead:
    """Ridge on log(1 + outputs) of all tracks averaged over the two haplotypes.

    Standardisation and the penalty (efficient leave-one-out CV over ``alphas`` times the number
    of tracks) are fitted on the rows passed to ``fit`` only, i.e. inside the training folds.
    """

    def __init__(self, *, alphas: tuple[float, ...] = tuple(np.logspace(-3, 3, 13))) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> EnformerRidgeHead:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        Z = _log_mean(X)
        grid = np.asarray(self.alphas, dtype=np.float64) * Z.shape[1]
        self.pipeline_ = make_pipeline(StandardScaler(), RidgeCV(alphas=grid)).fit(Z, np.asarray(y, dtype=np.float64))
        self.alpha_ = float(self.pipeline_[-1].alpha_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict(_log_mean(X))


class EnformerMethod:
    """The ``enformer`` method for ``hapexpr.train`` (``hapexpr.models.Method``)."""

    name = "enformer"

    def __init__(self, *, model: str = "tiny", track: int = DEFAULT_TRACK, head: str = "zero-shot",
                 seq_len: int | None = None, batch_size: int = 2, device: str = "cpu", seed: int = 0,
                 tss_bins: int = DEFAULT_TSS_BINS, calibrate: bool = False) -> None:
        if head not in HEADS:
            raise InputError(f"--head {head!r} is not one of {', '.join(HEADS)}")
        if model != "tiny" and not Path(model).is_dir():
            raise InputError("--model is neither `tiny` nor a checkpoint directory", path=model,
                             hint="give a local directory with config.json and model.safetensors")
        self.model, self.track, self.head = str(model), int(track), head
        self.seq_len, self.batch_size, self.device, self.seed = seq_len, batch_size, device, seed
        self.tss_bins, self.calibrate = tss_bins, calibrate
        self._runner: EnformerRunner | None = None
        self._cache: OutputCache | None = None

    @property
    def options(self) -> dict:
        """What the fit depends on (for ``FitRun``'s options key and fit.json)."""
        return {"model": self.model, "track": self.track, "head": self.head, "seq_len": self.seq_len,
                "seed": self.seed, "tss_bins": self.tss_bins, "calibrate": self.calibrate}

    def runner(self, study) -> EnformerRunner:
        if self._runner is None:
            seq_len = self.seq_len or default_seq_len(self.model, study.window)
            self._runner = EnformerRunner(model=self.model, seq_len=seq_len, n_bins=self.tss_bins,
                                          batch_size=self.batch_size, device=self.device, seed=self.seed)
            if not 0 <= self.track < self._runner.n_tracks:
                raise InputError(f"--track {self.track} is outside the model's {self._runner.n_tracks} human tracks")
            self._cache = OutputCache(study.path, self._runner)
        return self._runner

    def features(self, study, gene) -> np.ndarray:
        """(samples, 2, tracks) float32 outputs of each person's two haplotypes, from the cache
        (running the model on what is missing). Never looks at expression."""
        runner = self.runner(study)
        outputs, _ = gene_outputs(runner, self._cache, gene)
        return haplotype_features(outputs, gene.hap_index)

    def estimator(self, seed: int):
        if self.head == "ridge":
            return EnformerRidgeHead()
        return ZeroShotEnformer(track=self.track, calibrate=self.calibrate)


def input_note(window: int, seq_len: int) -> str:
    """One line saying how the study window becomes the model input."""
    if window < seq_len:
        return (f"each {window:,} bp study window is centred on its TSS in a {seq_len:,} bp input "
                f"padded with N ({seq_len - window:,} bp of N, all-zero one-hot): Enformer sees no "
                f"sequence beyond the window; prepare with --window {seq_len} to give it the full context")
    if window > seq_len:
        return f"each {window:,} bp study window is cropped to the central {seq_len:,} bp around the TSS"
    return f"the {window:,} bp study window is the model input, TSS at its centre"


def precompute(study_path, *, model: str = "tiny", seq_len: int | None = None, batch_size: int = 2,
               device: str = "cpu", seed: int = 0, tss_bins: int = DEFAULT_TSS_BINS,
               progress: bool = True, method: EnformerMethod | None = None) -> dict:
    """Fill ``STUDY/enformer/<fingerprint>/`` for every gene of the study; resumable.

    ``method``: an :class:`EnformerMethod` whose settings (and loaded model) to use instead of
    the keyword options, so ``fit`` loads and hashes the weights once for both stages.
    The caller holds the study lock. Returns a summary: fingerprint, cache_dir, seq_len, bins,
    genes, haplotypes (distinct, all genes), computed (run now), reused (from the cache),
    seconds, and ``input`` (how windows were padded or cropped, to show the user).
    """

    from hapexpr.study import Study

    study = Study.open(study_path)
    if method is None:
        method = EnformerMethod(model=model, seq_len=seq_len, batch_size=batch_size, device=device,
                                seed=seed, tss_bins=tss_bins)
    runner = method.runner(study)
    note = input_note(study.window, runner.seq_len)
    if progress:
        console.print(f"enformer: {note}")
    start, total, computed = time.time(), 0, 0
    for gene_id in track_genes(study.gene_ids, "enformer", enabled=progress):
        outputs, n_new = gene_outputs(runner, method._cache, study.gene(gene_id))
        total += len(outputs)
        computed += n_new
    return {"fingerprint": runner.fingerprint, "cache_dir": str(method._cache.dir), "model": method.model,
            "seq_len": runner.seq_len, "window": study.window, "tss_bins": [int(b) for b in runner.bins],
            "use_tf_gamma": runner.use_tf_gamma, "genes": len(study.gene_ids), "haplotypes": total,
            "computed": computed, "reused": total - computed, "seconds": round(time.time() - start, 2),
            "input": note}
