"""The network of Ramprasad, Pai & Pan (2024): a small transformer over the binned
foundation-model embeddings of both haplotypes; its config, ``forward``, and the checks and
input scaling of its (samples, haplotypes=2, bins, dim) inputs. Training is
:mod:`hapexpr.estimators.nt_training`; the per-gene estimator is
:mod:`hapexpr.estimators.nt_transformer`.

Import this module lazily (it imports torch at the top).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from hapexpr.errors import InputError

PLOIDY = 2


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
        tokens = (self.proj(x) + self.pos.weight[None, None, :bins] + self.hap.weight[None, :haps, None]).reshape(
            batch, haps * bins, -1
        )
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


SCALE_FLOOR = 0.1
"""Default floor of a (bin, dim) scale, as a fraction of the typical (median) scale of the
person-to-person variation over every (bin, dim) of the training data."""

INPUT_BOUND = 10.0
"""Default bound on standardised inputs, ``|Z| <= INPUT_BOUND`` (rule ``"bounded"``). A scale is
never below ``SCALE_FLOOR`` times the typical scale, so the bound is 1 / SCALE_FLOOR: a change of
one typical person-to-person sd in a coordinate that takes the floor (one constant in training)
just reaches it, and only changes larger than that are cut."""

INPUT_RULES = ("bounded", "training-range", "none")
"""How new inputs are kept in range: ``"bounded"`` (default since checkpoint format /3): every
(bin, dim) is bounded to |Z| <= bound, nothing is zeroed, so an allele no training person
carried reaches the network; ``"training-range"`` (the rule of format /2): each (bin, dim) is
clipped to the range the training haplotypes took there, and coordinates constant in training
are fixed at 0, which erases a new allele there; ``"none"``: no bound (format /1)."""


@dataclass(frozen=True)
class InputScaling:
    """Per-(bin, dim) standardisation of (samples, haplotypes, bins, dim) embeddings, with the
    interval each standardised (bin, dim) is clipped to.

    mean, scale, lo, hi: (bins, dim) float32. ``apply`` computes ``clip((X - mean) / scale, lo,
    hi)``; lo and hi are -bound and +bound everywhere under the ``"bounded"`` rule, the
    training range under ``"training-range"`` and -inf/+inf under ``"none"``
    (:data:`INPUT_RULES`).
    """

    mean: np.ndarray
    scale: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    rule: str = "bounded"

    def apply(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean) / self.scale, self.lo, self.hi)


def fit_input_scaling(
    X: np.ndarray, *, floor: float = SCALE_FLOOR, rule: str = "bounded", bound: float = INPUT_BOUND
) -> InputScaling:
    """:class:`InputScaling` from (samples, haplotypes, bins, dim) training embeddings (rows of
    several genes may be concatenated: the statistics are then shared across those genes).

    Statistics are per bin, not only per dim: the embedding of a bin varies far more between
    bins (different sequence) than between people (a few variants), so per-dim scaling would
    leave the person-to-person signal tiny. But a bin where only one rare carrier differs has
    a tiny sd there, so that carrier's standardised value would be 20-150 (measured on real
    cohorts); every scale is therefore floored at ``floor`` times the typical scale, the median
    sd over all (bin, dim) with any variation. A (bin, dim) where every haplotype is identical
    (up to float32 rounding) takes the floor as well, so an allele no training person carried
    shows up there at the size of a typical person-to-person change divided by ``floor``, then
    is bounded (``rule``, :data:`INPUT_RULES`; ``bound`` applies to ``"bounded"``).
    """
    if rule not in INPUT_RULES:
        raise ValueError(f"input scaling rule must be one of {INPUT_RULES}, got {rule!r}")
    if not bound > 0:
        raise ValueError(f"the input bound must be > 0, got {bound}")
    flat = X.reshape(-1, X.shape[-2], X.shape[-1]).astype(np.float64)
    mean = flat.mean(axis=0)
    sd = flat.std(axis=0)
    rounding = 1e-5 * max(float(np.abs(mean).max(initial=0.0)), 1e-12)
    varying = sd > rounding
    typical = float(np.median(sd[varying])) if varying.any() else 1.0
    scale = np.maximum(np.where(varying, sd, 0.0), floor * typical) if floor > 0 else np.where(varying, sd, 1.0)
    if rule == "training-range":
        Z = (flat - mean) / scale
        Z[:, ~varying] = 0.0
        lo, hi = Z.min(axis=0), Z.max(axis=0)
    else:
        limit = bound if rule == "bounded" else np.inf
        lo, hi = np.full_like(mean, -limit), np.full_like(mean, limit)
    f32 = np.float32
    return InputScaling(mean.astype(f32), scale.astype(f32), lo.astype(f32), hi.astype(f32), rule)


def input_scaling(X: np.ndarray, *, floor: float = SCALE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)``, each (bins, dim) float32, of :func:`fit_input_scaling`."""
    s = fit_input_scaling(X, floor=floor)
    return s.mean, s.scale


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
            f"features have {X.shape[2]} bins x {X.shape[3]} dims but the model was trained on {bins} x {dim}",
            hint="use embeddings from the same model fingerprint and binning as the training run",
        )
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise InputError("features contain NaN or infinite values", hint="re-run `hapexpr embed`")
    return X
