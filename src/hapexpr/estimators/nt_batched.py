"""Per-gene ``nt-transformer`` models trained G genes at a time: one batched network whose
parameters carry a leading gene axis, so a GPU (or one CPU core) runs G tiny models per step.

Each gene keeps what the one-at-a-time path (:func:`hapexpr.estimators.nt_training.train_model`
driven by :meth:`hapexpr.estimators.nt_transformer.NTTransformerModel.fit`) gives it: its own
data, input and target scaling, its own optimizer state and early stopping (a gene that stops
is frozen and keeps its best weights), its own number of epochs. The genes of one call share
the seed (the CV loop passes ``seed + fold`` to every gene of a fold) and the number of
training individuals, so the one-at-a-time path would draw the same initial weights, inner
folds, mini-batch orders, haplotype swaps and dropout masks for every gene: here they are drawn
once, from the same seeded streams and in the same order, and shared. Only the floating-point
rounding of the batched kernels differs, so predictions agree with the one-at-a-time path to
the tolerance measured in ``tests/test_nt_batched.py`` and stated in ``docs/nt-transformer.md``.

Shapes: parameters (genes, ...) with the names of :class:`NTTransformer`'s state dict; inputs
(genes, samples, haplotypes=2, bins, dim). Import this module lazily (it imports torch).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from hapexpr.errors import HapexprError, InputError
from hapexpr.estimators.nt_network import NTTransformer, NTTransformerConfig
from hapexpr.estimators.nt_training import TrainConfig, inner_folds, kfold_choice, training_rows
from hapexpr.estimators.nt_transformer import SEED_STRIDE, NTTransformerModel

PRECISIONS = ("fp32", "bf16")
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, which train_model uses
LN_EPS = 1e-5


def check_precision(precision: str, device: str) -> None:
    """A CUDA device must exist; bf16 only on CUDA (CPU autocast to bf16 is slow and its
    rounding was never validated)."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {device}: torch sees no CUDA device here",
            hint="use --device cpu (or auto), or a torch build and machine with a GPU",
        )
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and not str(device).startswith("cuda"):
        raise InputError(
            f"--precision bf16 needs a CUDA device, got {device!r}",
            hint="use --precision fp32 on CPU (the default)",
        )


# --------------------------------------------------------------------------------------------
# the batched network: NTTransformer.forward with a leading gene axis on every parameter


def stack_states(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """name -> (genes, ...) stacked copy of the models' state dicts."""
    states = [m.state_dict() for m in models]
    return {k: torch.stack([s[k].detach() for s in states]).contiguous() for k in states[0]}


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(genes, ..., in) x (genes, out, in) + (genes, out) -> (genes, ..., out)."""
    shape = x.shape
    y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2)) + b[:, None]
    return y.reshape(*shape[:-1], w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis with per-gene weight/bias (genes, d)."""
    extra = (slice(None), *(None,) * (x.ndim - 2))
    # addcmul rounds as the fused affine step of nn.LayerNorm does (normalised * w + b does not)
    return torch.addcmul(b[extra], nn.functional.layer_norm(x, x.shape[-1:], eps=LN_EPS), w[extra])


def batched_forward(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    config: NTTransformerConfig,
    masks: Iterator[torch.Tensor] | None = None,
) -> torch.Tensor:
    """(genes, batch, 2, bins, dim_in) -> (genes, batch): :class:`NTTransformer` per gene.

    masks: training mode: the dropout masks (batch, tokens, width), already divided by 1 - p,
    in the order the one-at-a-time encoder layer draws them (after attention, inside the
    feed-forward block, after it), shared by every gene; None: eval mode (no dropout).
    """
    g, batch, haps, bins, _ = x.shape
    p = params
    tokens = _linear(x, p["proj.weight"], p["proj.bias"])
    tokens = tokens + p["pos.weight"][:, None, None, :bins] + p["hap.weight"][:, None, :haps, None]
    tokens = tokens.reshape(g, batch, haps * bins, -1)
    if config.pooling == "cls":
        tokens = torch.cat([p["cls"][:, None, 0].expand(g, batch, 1, -1), tokens], dim=2)
    d, heads = config.d_model, config.n_heads
    length = tokens.shape[2]
    for i in range(config.n_layers):
        pre = f"encoder.layers.{i}."
        h = _layer_norm(tokens, p[pre + "norm1.weight"], p[pre + "norm1.bias"])
        qkv = _linear(h, p[pre + "self_attn.in_proj_weight"], p[pre + "self_attn.in_proj_bias"])
        q, k, v = (t.reshape(g * batch, length, heads, d // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        att = nn.functional.scaled_dot_product_attention(q, k, v)
        att = att.transpose(1, 2).reshape(g, batch, length, d)
        att = _linear(att, p[pre + "self_attn.out_proj.weight"], p[pre + "self_attn.out_proj.bias"])
        tokens = tokens + (att if masks is None else att * next(masks))
        h = _layer_norm(tokens, p[pre + "norm2.weight"], p[pre + "norm2.bias"])
        h = torch.relu(_linear(h, p[pre + "linear1.weight"], p[pre + "linear1.bias"]))
        if masks is not None:
            h = h * next(masks)
        h = _linear(h, p[pre + "linear2.weight"], p[pre + "linear2.bias"])
        tokens = tokens + (h if masks is None else h * next(masks))
    tokens = _layer_norm(tokens, p["norm.weight"], p["norm.bias"])
    pooled = tokens[:, :, 0] if config.pooling == "cls" else tokens.mean(dim=2)
    return _linear(pooled, p["head.weight"], p["head.bias"]).squeeze(-1)


def _dropout_masks(
    config: NTTransformerConfig, batch: int, length: int, gen: torch.Generator, device
) -> Iterator[torch.Tensor]:
    """The masks ``nn.functional.dropout`` draws on CPU (``bernoulli_(1 - p)`` of the input's
    shape, divided by 1 - p), from ``gen`` in the encoder's order; on ``device``."""
    p = config.dropout
    # (width, sequence-major): the attention output that dropout1 sees is a transposed view
    # (multi-head attention computes (tokens, batch, d)) and ``empty_like`` keeps its strides,
    # so its mask is drawn in (tokens, batch, d) memory order
    sites = [(config.d_model, True), (config.dim_feedforward, False), (config.d_model, False)] * config.n_layers
    for width, token_major in sites:
        if p == 0:
            yield torch.ones((), device=device)
            continue
        shape = (length, batch, width) if token_major else (batch, length, width)
        mask = torch.empty(shape).bernoulli_(1 - p, generator=gen).div_(1 - p)
        yield (mask.transpose(0, 1) if token_major else mask).to(device, non_blocking=True)


def batched_loss(pred: torch.Tensor, y: torch.Tensor, pairwise_weight: float) -> torch.Tensor:
    """(genes,) :func:`hapexpr.estimators.nt_training.expression_loss` of each gene's
    (genes, batch) predictions, in float32."""
    pred = pred.float()
    r = pred - y
    mse = r.pow(2).mean(dim=1)
    n = r.shape[1]
    if pairwise_weight == 0 or n < 2:
        return mse
    pair_mean = 2.0 * n * (r - r.mean(dim=1, keepdim=True)).pow(2).sum(dim=1) / (n * (n - 1))
    return mse + pairwise_weight * pair_mean


# --------------------------------------------------------------------------------------------
# training


@contextlib.contextmanager
def _rng_context(device: str) -> Iterator[None]:
    """As :func:`hapexpr.estimators.nt_training.deterministic` on CPU (deterministic kernels,
    one thread); on CUDA nothing is switched (cuBLAS would need CUBLAS_WORKSPACE_CONFIG): GPU
    results are reproducible to the stated tolerance, not bit for bit."""
    if str(device).startswith("cuda"):
        yield
        return
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _decays(params: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, float]:
    """name -> weight decay, as :func:`hapexpr.estimators.nt_training._adamw` groups them."""
    out = {}
    for name, t in params.items():
        is_matrix = t.ndim - 1 >= 2 and not any(s in name for s in ("pos.", "hap.", "gene_", "cls"))
        out[name] = config.weight_decay if is_matrix else 0.0
    return out


def _adamw_step(params, grads, state, decays, lr, step, rows) -> None:
    """One AdamW step (the arithmetic of torch's single-tensor AdamW) on the genes ``rows``
    (a LongTensor, or None for every gene); other genes' parameters and moments are untouched."""
    b1, b2 = BETAS
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    step_size, bc2_sqrt = lr / bc1, bc2**0.5
    with torch.no_grad():
        for name, full in params.items():
            grad = grads[name]
            m_full, v_full = state[name]
            if rows is None:
                par, m, v = full.data, m_full, v_full
            else:
                grad, par, m, v = grad[rows], full.data[rows], m_full[rows], v_full[rows]
            if decays[name]:
                par.mul_(1 - lr * decays[name])
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt).add_(EPS)
            par.addcdiv_(m, denom, value=-step_size)
            if rows is not None:
                full.data[rows], m_full[rows], v_full[rows] = par, m, v


class _Run:
    """The state of one :func:`train_batched` call: (genes, ...) parameters and their AdamW
    moments, the shared seeded generators, and one epoch / one validation pass over the genes
    still training (``live``: a LongTensor of gene indices, or None for all of them)."""

    def __init__(self, params, X, y, model_config: NTTransformerConfig, config: TrainConfig, precision: str):
        self.params, self.X, self.y = params, X, y
        self.model_config, self.config = model_config, config
        self.device = X.device
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        )
        self.decays = _decays(params, config)
        self.moments = {k: (torch.zeros_like(t), torch.zeros_like(t)) for k, t in params.items()}
        self.step = 0
        self.length = 2 * model_config.bins + (model_config.pooling == "cls")
        # as the one-at-a-time path: batches and swaps from a generator seeded with the seed,
        # dropout from the global RNG seeded with it (see nt_training.deterministic)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.drop_gen = torch.Generator().manual_seed(config.seed)

    def _take(self, t: torch.Tensor, cols: torch.Tensor, live) -> torch.Tensor:
        """(live genes, cols, ...): only those rows, no copy of every gene's whole data."""
        return t[:, cols] if live is None else t[live[:, None], cols[None, :]]

    def _live_params(self, live) -> dict[str, torch.Tensor]:
        return self.params if live is None else {k: t[live] for k, t in self.params.items()}

    def epoch(self, train_t: torch.Tensor, live) -> list[float]:
        """One epoch over the training rows ``train_t`` (CPU); the live genes' mean loss."""
        c = self.config
        n_live = len(self.y) if live is None else len(live)
        totals = torch.zeros(n_live, device=self.device)
        order = train_t[torch.randperm(len(train_t), generator=self.gen)]
        for start in range(0, len(order), c.batch_size):
            batch = order[start : start + c.batch_size]
            swap = torch.rand(len(batch), generator=self.gen) < 0.5 if c.swap_haplotypes else None
            rows = batch.to(self.device)
            xb, yb = self._take(self.X, rows, live), self._take(self.y, rows, live)
            if swap is not None:
                xb = torch.where(swap.to(self.device)[None, :, None, None, None], xb.flip(2), xb)
            masks = _dropout_masks(self.model_config, len(batch), self.length, self.drop_gen, self.device)
            for t in self.params.values():
                t.requires_grad_(True)
            with self.autocast:
                pred = batched_forward(self._live_params(live), xb, self.model_config, masks)
            loss = batched_loss(pred, yb, c.pairwise_weight)
            grads = torch.autograd.grad(loss.sum(), list(self.params.values()))
            for t in self.params.values():
                t.requires_grad_(False)
            self.step += 1
            _adamw_step(self.params, dict(zip(self.params, grads)), self.moments, self.decays, c.lr, self.step, live)
            totals += loss.detach() * len(batch)
        return (totals / len(train_t)).tolist()

    def validation_loss(self, val_t: torch.Tensor, live) -> list[float]:
        """The live genes' loss on the validation rows (device), both haplotype orders averaged."""
        with torch.no_grad(), self.autocast:
            xv, yv = self._take(self.X, val_t, live), self._take(self.y, val_t, live)
            p = self._live_params(live)
            pv = 0.5 * (batched_forward(p, xv, self.model_config) + batched_forward(p, xv.flip(2), self.model_config))
            return batched_loss(pv, yv, self.config.pairwise_weight).tolist()


def train_batched(
    params: dict[str, torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    model_config: NTTransformerConfig,
    config: TrainConfig,
    val_mask: np.ndarray | None = None,
    epochs: Sequence[int] | None = None,
    precision: str = "fp32",
) -> list[dict]:
    """:func:`hapexpr.estimators.nt_training.train_model` for G genes at once, in place on
    ``params`` (name -> (genes, ...) float32 on the training device).

    X: (genes, samples, 2, bins, dim) scaled inputs; y: (genes, samples) standardised targets,
    both on the device. val_mask: (samples,) bool inner validation rows, shared by the genes
    (default the seeded ``val_fraction`` split); each gene stops early on its own validation
    loss and gets the weights of its best epoch back. epochs: (genes,) train each gene on ALL
    rows for exactly that many epochs (the refit of epoch selection).
    Returns each gene's history, with the keys :func:`train_model` gives.
    """
    start_time = time.perf_counter()
    g, n = y.shape
    device = X.device
    if epochs is not None:
        epochs = [int(e) for e in epochs]
        if len(epochs) != g or min(epochs) < 1:
            raise ValueError(f"epochs must be {g} counts >= 1, got {epochs}")
    train_rows, val_rows = training_rows(n, config, refit=epochs is not None, val_mask=val_mask)
    n_epochs = config.max_epochs if epochs is None else max(epochs)
    run = _Run(params, X, y, model_config, config, precision)
    histories = [{"train_loss": [], "val_loss": []} for _ in range(g)]
    best_val = [float("inf")] * g
    best_epoch = [-1] * g
    best_state = {k: t.detach().clone() for k, t in params.items()}
    active = np.ones(g, dtype=bool)
    val_t = torch.as_tensor(val_rows, device=device)
    train_t = torch.as_tensor(train_rows)
    with _rng_context(str(device)):
        for epoch in range(n_epochs):
            live_idx = None if active.all() else torch.as_tensor(np.flatnonzero(active), device=device)
            epoch_loss = run.epoch(train_t, live_idx)
            live = np.flatnonzero(active)
            for j, gi in enumerate(live):
                histories[gi]["train_loss"].append(epoch_loss[j])
            if epochs is not None:
                for gi in live:
                    if len(histories[gi]["train_loss"]) >= epochs[gi]:
                        active[gi] = False
                if not active.any():
                    break
                continue
            val_loss = run.validation_loss(val_t, live_idx)
            improved = []
            for j, gi in enumerate(live):
                histories[gi]["val_loss"].append(val_loss[j])
                if val_loss[j] < best_val[gi]:
                    best_val[gi], best_epoch[gi] = val_loss[j], epoch
                    improved.append(gi)
                elif epoch - best_epoch[gi] >= config.patience:
                    active[gi] = False
            if improved:
                idx = torch.as_tensor(improved, device=device)
                for k, t in params.items():
                    best_state[k][idx] = t.detach()[idx]
            if not active.any():
                break
    if epochs is not None:
        if not all(np.isfinite(h["train_loss"]).all() for h in histories):
            raise HapexprError(
                "nt-transformer training diverged (the training loss was not finite)",
                hint="lower the learning rate (TrainConfig.lr) or check the embeddings for extreme values",
            )
        best_epoch, best_val = [e - 1 for e in epochs], [float("nan")] * g
    else:
        if min(best_epoch) < 0:
            raise HapexprError(
                "nt-transformer training diverged (the validation loss was never finite)",
                hint="lower the learning rate (TrainConfig.lr) or check the embeddings for extreme values",
            )
        with torch.no_grad():
            for k, t in params.items():
                t.copy_(best_state[k])
    seconds = (time.perf_counter() - start_time) / g
    for i, h in enumerate(histories):
        h.update(
            best_epoch=best_epoch[i],
            epochs_run=len(h["train_loss"]),
            best_val_loss=best_val[i],
            n_train=len(train_rows),
            n_val=len(val_rows),
            val_index=val_rows.tolist(),
            seconds=seconds,
        )
    return histories


def _init_params(model_config: NTTransformerConfig, seed: int, genes: int, device) -> dict[str, torch.Tensor]:
    """(genes, ...) copies of the initial weights every gene's model draws from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as NTTransformerModel._maker: weights depend only on the seed
        state = NTTransformer(model_config).state_dict()
    return {k: v.detach().to(device).unsqueeze(0).repeat(genes, *([1] * v.ndim)).contiguous() for k, v in state.items()}


def _inner_cv_batched(X, y, model_config, config, device, precision) -> list[dict]:
    """:func:`hapexpr.estimators.nt_training.inner_cv` of each gene (same inner folds)."""
    g, n = y.shape
    fold = inner_folds(np.arange(n), config.inner_folds, seed=config.seed)
    curves: list[list[list[float]]] = [[] for _ in range(g)]
    best: list[list[int]] = [[] for _ in range(g)]
    for j in np.unique(fold):
        params = _init_params(model_config, config.seed, g, device)
        hists = train_batched(
            params, X, y, model_config=model_config, config=config, val_mask=fold == j, precision=precision
        )
        for i, h in enumerate(hists):
            curves[i].append(h["val_loss"])
            best[i].append(h["best_epoch"] + 1)
    out = []
    for i in range(g):
        length = max(len(c) for c in curves[i])
        mean_curve = np.array([c + [c[-1]] * (length - len(c)) for c in curves[i]]).mean(axis=0)
        out.append(
            {
                "epochs": int(np.argmin(mean_curve)) + 1,
                "cv_loss": float(mean_curve.min()),
                "mean_val_loss": mean_curve.tolist(),
                "best_epochs": best[i],
                "fold": fold,
            }
        )
    return out


def _unstack(params: dict[str, torch.Tensor], model_config: NTTransformerConfig) -> list[NTTransformer]:
    """One eval-mode CPU :class:`NTTransformer` per gene from (genes, ...) parameters."""
    g = next(iter(params.values())).shape[0]
    models = []
    for i in range(g):
        m = NTTransformer(model_config)
        m.load_state_dict({k: t[i].detach().float().cpu() for k, t in params.items()})
        models.append(m.eval())
    return models


def _fit_seed(X, y, model_config, config, device, precision, cvs) -> tuple[list[NTTransformer], list[dict]]:
    """fit_with_epoch_selection for every gene with one seed: (models, histories)."""
    start = time.perf_counter()
    g = y.shape[0]
    params = _init_params(model_config, config.seed, g, device)
    if config.epoch_selection == "split":
        hists = train_batched(params, X, y, model_config=model_config, config=config, precision=precision)
        for h in hists:
            h.update(epoch_selection="split", cv_loss=h["best_val_loss"])
        return _unstack(params, model_config), hists
    hists = train_batched(
        params, X, y, model_config=model_config, config=config, epochs=[c["epochs"] for c in cvs], precision=precision
    )
    seconds = (time.perf_counter() - start) / g
    for h, cv in zip(hists, cvs):
        h.update(kfold_choice(cv, seconds=seconds + cv.get("seconds", 0.0)))
    return _unstack(params, model_config), hists


def fit_genes_batched(
    estimators: Sequence[NTTransformerModel],
    X_by_gene: Sequence[np.ndarray],
    y_by_gene: Sequence[np.ndarray],
    *,
    device: str = "cpu",
    precision: str = "fp32",
) -> list[NTTransformerModel]:
    """Fit G unfitted :class:`NTTransformerModel` at once; each comes back as its own ``fit``
    would leave it (to the stated tolerance).

    estimators: same architecture, TrainConfig and seed (what the method builds for the genes
    of one fold). X_by_gene: each (samples, 2, bins, dim), one store (no candidates axis), the
    same samples and shape for every gene; y_by_gene: each (samples,).
    """
    if not estimators:
        return []
    first = estimators[0]
    keys = {(e.seed, e.n_seeds, e.train_config, e._model_config(1, 1)) for e in estimators}
    if len(keys) != 1:
        raise ValueError("batched genes must share the architecture, TrainConfig, seed and number of seeds")
    check_precision(precision, device)
    if first.attn_dropout:
        raise InputError("batched training draws no attention dropout", hint="use attn_dropout=0 (the default)")
    Xs, ys = [], []
    for est, X, y in zip(estimators, X_by_gene, y_by_gene):
        X, n_cand, y_std = est._start_fit(X, y)
        if n_cand > 1:
            raise InputError(
                "batched training takes one embedding store per gene",
                hint="drop --fingerprints or use --gene-batch 1",
            )
        tc = est.train_config
        est.scaling_ = tc.fit_scaling(X)
        Xs.append(est.scaling_.apply(X).astype(np.float32))
        ys.append(y_std)
    if len({x.shape for x in Xs}) != 1:
        raise InputError(
            f"batched genes have features of different shapes ({sorted({x.shape for x in Xs})})",
            hint="group genes by (samples, bins, dim) or use --gene-batch 1",
        )
    model_config = first.config_
    X_t = torch.as_tensor(np.stack(Xs), device=device)
    y_t = torch.as_tensor(np.stack(ys), dtype=torch.float32, device=device)
    tc = first.train_config
    base = replace(tc, seed=first.seed)
    cvs = None
    if tc.epoch_selection == "kfold":
        start = time.perf_counter()
        cvs = _inner_cv_batched(X_t, y_t, model_config, base, device, precision)
        for cv in cvs:
            cv["seconds"] = (time.perf_counter() - start) / len(estimators)
    per_seed = []
    for i in range(first.n_seeds):
        seed_i = first.seed + i * SEED_STRIDE
        per_seed.append(_fit_seed(X_t, y_t, model_config, replace(tc, seed=seed_i), device, precision, cvs))
    for j, est in enumerate(estimators):
        est.candidate_, est.candidate_losses_ = None, None
        est.modules_ = [models[j] for models, _ in per_seed]
        est.histories_ = [hists[j] for _, hists in per_seed]
        est.module_, est.history_ = est.modules_[0], est.histories_[0]
        est.train_config_ = base
    return list(estimators)
