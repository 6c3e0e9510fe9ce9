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
from hapexpr.estimators.nt_network import (  # noqa: F401  (input_scaling: re-exported)
    PLOIDY,
    InputScaling,
    NTTransformer,
    NTTransformerConfig,
    check_features,
    input_scaling,
)
from hapexpr.estimators.nt_training import (
    TrainConfig,
    fit_with_epoch_selection,
    inner_cv,
    predict_batched,
)
from hapexpr.io.atomic import atomic_path, write_json

CHECKPOINT_FORMAT = "hapexpr.nt-transformer/3"
OLD_FORMATS = ("hapexpr.nt-transformer/1", "hapexpr.nt-transformer/2")
"""Still loaded and predicted as written: /1 without bounds, /2 clipped to the training range."""
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------------------------
# the per-gene estimator


ARCHITECTURE = ("d_model", "n_heads", "n_layers", "dim_feedforward", "dropout", "attn_dropout", "pooling")
"""The NTTransformerConfig fields an NTTransformerModel takes as parameters (the rest come from
the data: ``dim_in``, ``bins``)."""


SEED_STRIDE = 1000
"""Seed i of an ``n_seeds`` estimator is ``seed + i * SEED_STRIDE`` (the CV loop passes
``seed + fold``, so seeds of different folds never collide)."""


class NTTransformerModel:
    """Per-gene estimator (``GeneModel`` protocol) around :class:`NTTransformer`.

    ``fit(X, y)`` sees only training individuals: it standardises inputs per (bin, dim) (scales
    floored, standardised inputs bounded to |Z| <= ``TrainConfig.input_bound``, nothing zeroed,
    so an allele no training person carried reaches the network) and the target by mean/sd with their
    statistics, chooses the number of epochs by inner K-fold CV over them and refits on all of
    them (``TrainConfig.epoch_selection``). Learned attributes end in ``_``.

    X may carry a candidates axis, (samples, candidates, 2, bins, dim): the same people's
    embeddings from several stores (e.g. layers). Each candidate is scored by the same inner
    CV, on the training individuals only, and the best one (``candidate_``) is refit and used.
    n_seeds: train that many models (seeds ``seed + i * SEED_STRIDE``, same epochs and
    candidate, chosen with the first seed) and predict with their mean; :meth:`predict_seeds`
    gives each one's predictions.
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
        n_seeds: int = 1,
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
        self.n_seeds = n_seeds

    def _model_config(self, bins: int, dim: int) -> NTTransformerConfig:
        return NTTransformerConfig(dim_in=dim, bins=bins, **{f: getattr(self, f) for f in ARCHITECTURE})

    def _maker(self, seed: int):
        def make() -> NTTransformer:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # initial weights depend only on the seed
                return NTTransformer(self.config_)

        return make

    @property
    def seeds_(self) -> list[int]:
        return [self.seed + i * SEED_STRIDE for i in range(len(self.modules_))]

    def fit(self, X: np.ndarray, y: np.ndarray) -> NTTransformerModel:
        """X: (samples, 2, bins, dim) or (samples, candidates, 2, bins, dim) embeddings of
        training individuals; y: (samples,)."""
        X, n_cand, ys = self._start_fit(X, y)
        tc = self.train_config
        first = replace(tc, seed=self.seed)
        # one candidate: no choice to make; several: the same inner CV scores each of them
        scored = []
        for c in range(n_cand):
            xc = X[:, c] if n_cand > 1 else X
            scaling = tc.fit_scaling(xc)
            Xs = scaling.apply(xc)
            if tc.epoch_selection == "kfold":
                cv = inner_cv(self._maker(self.seed), Xs, ys, config=first)
                scored.append((cv["cv_loss"], c, scaling, Xs, cv, None))
            else:
                model, hist = fit_with_epoch_selection(self._maker(self.seed), Xs, ys, config=first)
                scored.append((hist["cv_loss"], c, scaling, Xs, None, (model, hist)))
        losses = [s[0] for s in scored]
        _, c, self.scaling_, Xs, cv, done = min(scored, key=lambda s: (s[0], s[1]))
        self.candidate_ = c if n_cand > 1 else None
        self.candidate_losses_ = losses if n_cand > 1 else None
        self.modules_, self.histories_ = [], []
        for i in range(self.n_seeds):
            seed_i = self.seed + i * SEED_STRIDE
            if i == 0 and done is not None:
                model, hist = done
            else:
                model, hist = fit_with_epoch_selection(
                    self._maker(seed_i), Xs, ys, config=replace(tc, seed=seed_i), cv=cv
                )
            self.modules_.append(model)
            self.histories_.append(hist)
        self.module_, self.history_ = self.modules_[0], self.histories_[0]
        if self.candidate_ is not None:
            self.history_["candidate"], self.history_["candidate_cv_loss"] = self.candidate_, losses
        self.train_config_ = first
        return self

    def _start_fit(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """Check the training data and fix the target scaling and the network's shape:
        (X without a candidates axis when there is one store, number of candidates, standardised y)."""
        X, n_cand = _split_candidates(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (X.shape[0],) or not np.isfinite(y).all():
            raise InputError(f"y must be ({X.shape[0]},) finite values, got shape {y.shape}")
        if self.n_seeds < 1:
            raise InputError(f"n_seeds must be >= 1, got {self.n_seeds}")
        self.y_mean_ = float(y.mean())
        sd = float(y.std())
        self.y_scale_ = sd if sd > 0 else 1.0
        self.config_ = self._model_config(X.shape[-2], X.shape[-1])
        return X, n_cand, (y - self.y_mean_) / self.y_scale_

    @property
    def input_mean_(self) -> np.ndarray:
        return self.scaling_.mean

    @property
    def input_scale_(self) -> np.ndarray:
        return self.scaling_.scale

    def _scale(self, X: np.ndarray) -> np.ndarray:
        X, n_cand = _split_candidates(X)
        if n_cand > 1 or self.candidate_ is not None:
            if self.candidate_ is None or X.ndim != 5:
                raise InputError(
                    f"features have {n_cand} candidate store(s) but the model was trained on "
                    f"{'one' if self.candidate_ is None else 'several'}",
                    hint="use the same --fingerprints as the training run",
                )
            X = X[:, self.candidate_]
        X = check_features(X, bins=self.config_.bins, dim=self.config_.dim_in)
        return self.scaling_.apply(X)

    def predict_seeds(self, X: np.ndarray) -> np.ndarray:
        """(seeds, samples) float64: each seed's predicted expression."""
        Xs = self._scale(X)
        z = np.stack([predict_batched(m, Xs, batch_size=self.train_config_.batch_size) for m in self.modules_])
        return z.astype(np.float64) * self.y_scale_ + self.y_mean_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 predicted expression on the scale of the ``y`` given to ``fit``
        (the mean over seeds)."""
        return self.predict_seeds(X).mean(axis=0)

    # ---- checkpoints: safetensors weights + JSON, never a pickle

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` (weights and input scaling) and ``config.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, module in enumerate(self.modules_):
            prefix = "model." if i == 0 else f"model{i}."
            tensors.update({prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()})
        sc = self.scaling_
        for name, arr in (("mean", sc.mean), ("scale", sc.scale), ("lo", sc.lo), ("hi", sc.hi)):
            tensors[f"scaling.input_{name}"] = torch.from_numpy(np.ascontiguousarray(arr))
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
                "seeds": self.seeds_,
                "candidate": self.candidate_,
                "target_scaling": {"mean": self.y_mean_, "scale": self.y_scale_},
                "input_scaling": {
                    "per": "bin,dim",
                    "rule": sc.rule,
                    "bound": self.train_config_.input_bound if sc.rule == "bounded" else None,
                    "tensors": [f"scaling.input_{n}" for n in ("mean", "scale", "lo", "hi")],
                },
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
        if meta.get("format") not in (CHECKPOINT_FORMAT, *OLD_FORMATS):
            raise StudyError(
                f"checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}",
                path=config_path,
                hint="refit the model with this version of hapexpr",
            )
        mc = NTTransformerConfig.from_dict(meta["model_config"])
        tc = TrainConfig.from_dict(meta["train_config"])
        seeds = meta.get("seeds") or [int(meta["seed"])]
        est = cls(
            **{f: getattr(mc, f) for f in ARCHITECTURE}, train_config=tc, seed=int(meta["seed"]), n_seeds=len(seeds)
        )
        tensors = load_file(str(directory / WEIGHTS_FILE))
        est.config_, est.train_config_ = mc, tc
        est.modules_ = []
        for i in range(len(seeds)):
            prefix = "model." if i == 0 else f"model{i}."
            module = NTTransformer(mc)
            module.load_state_dict(
                {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}, strict=True
            )
            est.modules_.append(module.eval())
        est.module_ = est.modules_[0]
        est.scaling_ = _load_scaling(tensors, meta.get("input_scaling") or {})
        est.candidate_ = meta.get("candidate")
        est.candidate_losses_ = None
        est.y_mean_ = float(meta["target_scaling"]["mean"])
        est.y_scale_ = float(meta["target_scaling"]["scale"])
        est.history_ = {"metrics": meta.get("metrics", {})}
        est.histories_ = [est.history_]
        return est


def _load_scaling(tensors: dict, meta: dict) -> InputScaling:
    """The input scaling of a checkpoint of any format: /3 and /2 store the interval each
    standardised (bin, dim) is clipped to (/2 with ``clip: false`` did not clip); /1 has none."""
    mean, scale = tensors["scaling.input_mean"].numpy(), tensors["scaling.input_scale"].numpy()
    if "scaling.input_lo" not in tensors or not meta.get("clip", True):
        unbounded = np.full_like(mean, np.inf)
        return InputScaling(mean, scale, -unbounded, unbounded, "none")
    rule = meta.get("rule", "training-range")
    return InputScaling(mean, scale, tensors["scaling.input_lo"].numpy(), tensors["scaling.input_hi"].numpy(), rule)


def _json_metrics(history: dict) -> dict:
    """The scalar summary of a training history that a checkpoint records."""
    keys = (
        "epoch_selection",
        "chosen_epochs",
        "inner_best_epochs",
        "cv_loss",
        "best_epoch",
        "epochs_run",
        "best_val_loss",
        "n_train",
        "n_val",
        "seconds",
        "candidate",
        "candidate_cv_loss",
    )
    out = {k: history[k] for k in keys if k in history}
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def _split_candidates(X: np.ndarray) -> tuple[np.ndarray, int]:
    """(samples, 2, bins, dim) -> (X float32, 1); (samples, candidates, 2, bins, dim) -> (X, candidates)."""
    X = np.asarray(X)
    if X.ndim == 5:
        for c in range(X.shape[1]):
            check_features(X[:, c])
        return X.astype(np.float32, copy=False), X.shape[1]
    return check_features(X), 1
