"""``nt-transformer``: a small transformer over the binned foundation-model embeddings of both
haplotypes (the model of Ramprasad, Pai & Pan 2024), one per gene or shared across genes.

This module holds the per-gene estimator that the cross-validation loop drives
(:class:`NTTransformerModel`); the network is :mod:`hapexpr.estimators.nt_network` and
training is a function in :mod:`hapexpr.estimators.nt_training`.
Architecture, defaults and the checkpoint format: ``docs/nt-transformer.md``.

Axes: ``(samples, haplotypes=2, bins, dim)``; bins are ordered 5'->3' on the gene's strand
around the TSS, as the embedding stage writes them.

Import this module lazily (it imports torch at the top).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hapexpr.errors import InputError, StudyError
from hapexpr.estimators.nt_network import NTTransformer, NTTransformerConfig, check_features, input_scaling
from hapexpr.estimators.nt_training import TrainConfig, predict_batched, train_model
from hapexpr.io.atomic import atomic_path, write_json

CHECKPOINT_FORMAT = "hapexpr.nt-transformer/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------------------------
# the per-gene estimator


ARCHITECTURE = ("d_model", "n_heads", "n_layers", "dim_feedforward", "dropout", "attn_dropout", "pooling")
"""The NTTransformerConfig fields an NTTransformerModel takes as parameters (the rest come from
the data: ``dim_in``, ``bins``)."""


class NTTransformerModel:
    """Per-gene estimator (``GeneModel`` protocol) around :class:`NTTransformer`.

    ``fit(X, y)`` sees only training individuals: it standardises inputs per (bin, dim) and the
    target by mean/sd with their statistics, holds out an inner validation split of them for
    early stopping and restores the best weights. Learned attributes end in ``_``.
    """

    def __init__(
        self,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 1,
        dim_feedforward: int = 64,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        pooling: str = "mean",
        train_config: TrainConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.attn_dropout = attn_dropout
        self.pooling = pooling
        self.train_config = train_config or TrainConfig()
        self.seed = seed

    def _model_config(self, bins: int, dim: int) -> NTTransformerConfig:
        return NTTransformerConfig(dim_in=dim, bins=bins, **{f: getattr(self, f) for f in ARCHITECTURE})

    def fit(self, X: np.ndarray, y: np.ndarray) -> NTTransformerModel:
        """X: (samples, 2, bins, dim) embeddings of training individuals; y: (samples,)."""
        X = check_features(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (X.shape[0],) or not np.isfinite(y).all():
            raise InputError(f"y must be ({X.shape[0]},) finite values, got shape {y.shape}")
        self.input_mean_, self.input_scale_ = input_scaling(X)
        self.y_mean_ = float(y.mean())
        sd = float(y.std())
        self.y_scale_ = sd if sd > 0 else 1.0
        self.config_ = self._model_config(X.shape[2], X.shape[3])
        train_config = replace(self.train_config, seed=self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # initial weights depend only on the seed
            self.module_ = NTTransformer(self.config_)
        self.history_ = train_model(
            self.module_, self._scale(X), (y - self.y_mean_) / self.y_scale_, config=train_config
        )
        self.train_config_ = train_config
        return self

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (X - self.input_mean_) / self.input_scale_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 predicted expression on the scale of the ``y`` given to ``fit``."""
        X = check_features(X, bins=self.config_.bins, dim=self.config_.dim_in)
        z = predict_batched(self.module_, self._scale(X), batch_size=self.train_config_.batch_size)
        return z.astype(np.float64) * self.y_scale_ + self.y_mean_

    # ---- checkpoints: safetensors weights + JSON, never a pickle

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` (weights and input scaling) and ``config.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.module_.state_dict().items()}
        tensors["scaling.input_mean"] = torch.from_numpy(self.input_mean_)
        tensors["scaling.input_scale"] = torch.from_numpy(self.input_scale_)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
        # config.json last: its presence marks a complete checkpoint
        write_json(
            directory / CONFIG_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "estimator": "NTTransformerModel",
                "model_config": self.config_.to_dict(),
                "train_config": self.train_config_.to_dict(),
                "seed": self.seed,
                "target_scaling": {"mean": self.y_mean_, "scale": self.y_scale_},
                "input_scaling": {"per": "bin,dim", "tensors": ["scaling.input_mean", "scaling.input_scale"]},
                "metrics": _json_metrics(self.history_),
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> NTTransformerModel:
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.exists() or not (directory / WEIGHTS_FILE).exists():
            raise StudyError(
                "no complete nt-transformer checkpoint here (config.json or model.safetensors missing)",
                path=directory,
                hint="fit the model again with `hapexpr fit STUDY --method nt-transformer`",
            )
        meta = json.loads(config_path.read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise StudyError(
                f"checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}",
                path=config_path,
                hint="refit the model with this version of hapexpr",
            )
        mc = NTTransformerConfig.from_dict(meta["model_config"])
        tc = TrainConfig.from_dict(meta["train_config"])
        est = cls(**{f: getattr(mc, f) for f in ARCHITECTURE}, train_config=tc, seed=int(meta["seed"]))
        tensors = load_file(str(directory / WEIGHTS_FILE))
        est.config_, est.train_config_ = mc, tc
        est.module_ = NTTransformer(mc)
        est.module_.load_state_dict(
            {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}, strict=True
        )
        est.module_.eval()
        est.input_mean_ = tensors["scaling.input_mean"].numpy()
        est.input_scale_ = tensors["scaling.input_scale"].numpy()
        est.y_mean_ = float(meta["target_scaling"]["mean"])
        est.y_scale_ = float(meta["target_scaling"]["scale"])
        est.history_ = {"metrics": meta.get("metrics", {})}
        return est


def _json_metrics(history: dict) -> dict:
    """The scalar summary of a training history that a checkpoint records."""
    keys = ("best_epoch", "epochs_run", "best_val_loss", "n_train", "n_val", "seconds")
    return {k: history[k] for k in keys if k in history}
