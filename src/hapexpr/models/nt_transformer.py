"""``nt-transformer``: a small transformer over the binned foundation-model embeddings of both
haplotypes (the model of Ramprasad, Pai & Pan 2024), one per gene or shared across genes.

This module holds the model (config + ``forward``), the per-gene estimator that the
cross-validation loop drives (:class:`NTTransformerModel`) and the method object
(:class:`NTTransformerMethod`). Training is a function in :mod:`hapexpr.models.nt_training`.
Architecture, defaults and the checkpoint format: ``docs/nt-transformer.md``.

Axes: ``(samples, haplotypes=2, bins, dim)``; bins are ordered 5'->3' on the gene's strand
around the TSS, as the embedding stage writes them.

Import this module lazily (it imports torch at the top).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hapexpr.errors import InputError, StudyError
from hapexpr.models.nt_training import TrainConfig, predict_batched, train_model

PLOIDY = 2
CHECKPOINT_FORMAT = "hapexpr.nt-transformer/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class NTTransformerConfig:
    """Shape and size of :class:`NTTransformer`; round-trips through :meth:`to_dict`/JSON.

    dim_in: embedding dimension of the foundation model (the last input axis).
    bins: number of bins per haplotype (the third input axis).
    dropout: on the residual branches and feed-forward layers; attn_dropout: on attention
        weights (0 by default: it regularises little here and keeps the fast attention kernel).
    pooling: ``"mean"`` over the 2 x bins tokens, or ``"cls"`` (a learned summary token).
    n_genes: 0 for a per-gene model; > 0 adds a gene-specific output scale and offset.
    """

    dim_in: int
    bins: int
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 1
    dim_feedforward: int = 64
    dropout: float = 0.1
    attn_dropout: float = 0.0
    pooling: str = "mean"
    n_genes: int = 0

    def __post_init__(self) -> None:
        if self.dim_in < 1 or self.bins < 1:
            raise ValueError(f"dim_in and bins must be positive, got {self.dim_in}, {self.bins}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NTTransformerConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class NTTransformer(nn.Module):
    """(batch, haplotypes=2, bins, dim_in) float32 -> (batch,) float32 predicted expression.

    Each (haplotype, bin) embedding becomes one token: a linear projection to ``d_model`` plus a
    learned position embedding (bin) and a learned haplotype embedding. The 2 x bins tokens go
    through pre-norm transformer encoder layers, are pooled and mapped to one number. In
    multi-gene mode ``gene`` (batch,) int64 selects a gene-specific output scale (kept positive
    so that a gene never seen in training can use the neutral scale 1) and offset.
    """

    def __init__(self, config: NTTransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.proj = nn.Linear(c.dim_in, c.d_model)
        self.pos = nn.Embedding(c.bins, c.d_model)
        self.hap = nn.Embedding(PLOIDY, c.d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.dim_feedforward, c.dropout, batch_first=True, norm_first=True
        )
        layer.self_attn.dropout = c.attn_dropout
        # nested tensors only speed up padded batches; ours are dense and must stay deterministic
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)  # pre-norm layers leave the last residual un-normed
        self.head = nn.Linear(c.d_model, 1)
        if c.n_genes:
            self.gene_log_scale = nn.Embedding(c.n_genes, 1)
            self.gene_offset = nn.Embedding(c.n_genes, 1)
            nn.init.zeros_(self.gene_log_scale.weight)
            nn.init.zeros_(self.gene_offset.weight)
        nn.init.normal_(self.pos.weight, std=0.02)
        nn.init.normal_(self.hap.weight, std=0.02)

    def forward(self, x: torch.Tensor, gene: torch.Tensor | None = None) -> torch.Tensor:
        batch, haps, bins, _ = x.shape
        tokens = (
            self.proj(x)
            + self.pos.weight[None, None, :bins]
            + self.hap.weight[None, :haps, None]
        ).reshape(batch, haps * bins, -1)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)
        tokens = self.norm(self.encoder(tokens))
        pooled = tokens[:, 0] if self.cls is not None else tokens.mean(dim=1)
        out = self.head(pooled).squeeze(-1)
        if gene is not None:
            out = out * self.gene_log_scale(gene).squeeze(-1).exp() + self.gene_offset(gene).squeeze(-1)
        return out


# --------------------------------------------------------------------------------------------
# input scaling (training statistics only)


def input_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-(bin, dim) mean and scale of (samples, haplotypes, bins, dim) training embeddings.

    Statistics are per bin, not only per dim: the embedding of a bin varies far more between
    bins (different sequence) than between people (a few variants), so per-dim scaling would
    leave the person-to-person signal tiny. Bins where every haplotype is identical get scale 1
    (their centred values are exactly 0) instead of amplifying float32 rounding.
    Returns ``(mean, scale)``, each (bins, dim) float32.
    """
    flat = X.reshape(-1, X.shape[-2], X.shape[-1]).astype(np.float64)
    mean = flat.mean(axis=0)
    sd = flat.std(axis=0)
    floor = 1e-5 * max(float(np.abs(mean).max(initial=0.0)), 1e-12)
    scale = np.where(sd > floor, sd, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def check_features(X: np.ndarray, *, bins: int | None = None, dim: int | None = None) -> np.ndarray:
    """Validate (samples, 2, bins, dim) features and return them as float32."""
    X = np.asarray(X)
    if X.ndim != 4 or X.shape[1] != PLOIDY:
        raise InputError(
            f"nt-transformer expects features of shape (samples, 2, bins, dim), got {X.shape}",
            hint="pass the binned embeddings of both haplotypes (embedding store .sample_bins)",
        )
    if (bins is not None and X.shape[2] != bins) or (dim is not None and X.shape[3] != dim):
        raise InputError(
            f"features have {X.shape[2]} bins x {X.shape[3]} dims but the model was trained on "
            f"{bins} x {dim}",
            hint="use embeddings from the same model fingerprint and binning as the training run",
        )
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise InputError("features contain NaN or infinite values", hint="re-run `hapexpr embed`")
    return X


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

        from hapexpr.io.atomic import atomic_path, write_json

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
                "method": NTTransformerMethod.name,
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


# --------------------------------------------------------------------------------------------
# the method the CV loop drives


class NTTransformerMethod:
    """``hapexpr fit --method nt-transformer`` (``Method`` protocol), per-gene mode.

    fingerprint: which embeddings under ``STUDY/embeddings/`` to use (None: the only one).
    Multi-gene mode is :func:`hapexpr.models.nt_training.multi_gene_fold`, called per fold.
    """

    name = "nt-transformer"

    def __init__(
        self,
        *,
        fingerprint: str | None = None,
        pairwise_weight: float = TrainConfig.pairwise_weight,
        max_epochs: int = TrainConfig.max_epochs,
        patience: int = TrainConfig.patience,
        d_model: int = 32,
        n_layers: int = 1,
        seed: int = 0,
    ) -> None:
        self.fingerprint = fingerprint
        self.train_config = TrainConfig(
            pairwise_weight=pairwise_weight, max_epochs=max_epochs, patience=patience, seed=seed
        )
        self.d_model = d_model
        self.n_layers = n_layers
        self.seed = seed

    def features(self, study, gene) -> np.ndarray:
        """(samples, 2, bins, dim) float32 embeddings of every study individual for ``gene``."""
        from hapexpr.embed import open_embeddings

        store = open_embeddings(study.path, fingerprint=self.fingerprint)
        return np.asarray(store.sample_bins(gene), dtype=np.float32)

    def estimator(self, seed: int) -> NTTransformerModel:
        return NTTransformerModel(
            d_model=self.d_model, n_layers=self.n_layers, train_config=self.train_config, seed=seed
        )
