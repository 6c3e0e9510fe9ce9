"""Training for ``nt-transformer``: the loss, one training function, epoch selection and batched
prediction. The multi-gene mode built on them is :mod:`hapexpr.estimators.nt_multigene`.

Everything here sees only the arrays it is given; callers pass training individuals only.
Training is deterministic on CPU for a given seed: weights, shuffling, dropout and haplotype
swaps all draw from a seeded RNG forked from (and restored to) the global one, and
``torch.use_deterministic_algorithms`` is switched on for the duration of the call.

Import this module lazily (it imports torch at the top).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from hapexpr.errors import HapexprError
from hapexpr.estimators.nt_network import (
    INPUT_BOUND,
    INPUT_RULES,
    InputScaling,
    fit_input_scaling,
)

EPOCH_SELECTION = ("kfold", "split")


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_model` trains; round-trips through :meth:`to_dict`/JSON.

    pairwise_weight: weight of the pairwise term (see :func:`expression_loss`; default justified
        in docs/nt-transformer.md).
    epoch_selection: ``"kfold"`` (default): the number of epochs is chosen by ``inner_folds``-fold
        cross-validation over the training individuals (early stopping in each inner fold, the
        epoch that minimises the mean inner validation curve), then the model is refit on ALL
        training individuals for that many epochs (:func:`fit_with_epoch_selection`).
        ``"split"``: the old, ~4x faster way: one seeded ``val_fraction`` inner split, early
        stopping on it and its best weights kept, so only 1 - val_fraction of the training
        individuals ever take a gradient step.
    val_fraction: share of the training individuals held out for early stopping (``"split"``).
    swap_haplotypes: randomly swap the two haplotypes of each training example (phase order is
        arbitrary); predictions always average both orders.
    scale_floor: input scales per (bin, dim) are at least this fraction of the typical scale
        (:func:`hapexpr.estimators.nt_network.fit_input_scaling`).
    input_rule: how standardised inputs are kept in range: ``"bounded"`` (default, |Z| <=
        ``input_bound``; an allele no training person carried reaches the network),
        ``"training-range"`` (the rule before checkpoint format /3: clipped to the training
        range, coordinates constant in training fixed at 0) or ``"none"``
        (:data:`hapexpr.estimators.nt_network.INPUT_RULES`).
    input_bound: the bound of ``"bounded"``, in units of each (bin, dim)'s scale.
    genes_per_batch: multi-gene mode: > 0 makes each mini-batch hold ``batch_size //
        genes_per_batch`` individuals of each of ``genes_per_batch`` genes; 0 (default) draws
        rows at random (random batches of 64 over 45 genes already mix genes; the structured
        batches measured worse on the motif cohort, docs/nt-transformer.md).
    """

    lr: float = 2e-3
    weight_decay: float = 1e-2
    max_epochs: int = 60
    batch_size: int = 64
    patience: int = 5
    epoch_selection: str = "kfold"
    inner_folds: int = 4
    val_fraction: float = 0.2
    pairwise_weight: float = 1.0
    swap_haplotypes: bool = True
    scale_floor: float = 0.1
    input_rule: str = "bounded"
    input_bound: float = INPUT_BOUND
    genes_per_batch: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.pairwise_weight < 0:
            raise ValueError(f"pairwise_weight must be >= 0, got {self.pairwise_weight}")
        if self.max_epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("max_epochs and patience must be >= 1 and batch_size >= 2")
        if self.epoch_selection not in EPOCH_SELECTION:
            raise ValueError(f"epoch_selection must be one of {EPOCH_SELECTION}, got {self.epoch_selection!r}")
        if self.inner_folds < 2:
            raise ValueError(f"inner_folds must be >= 2, got {self.inner_folds}")
        if self.scale_floor < 0 or self.genes_per_batch < 0:
            raise ValueError("scale_floor and genes_per_batch must be >= 0")
        if self.input_rule not in INPUT_RULES or not self.input_bound > 0:
            raise ValueError(f"input_rule must be one of {INPUT_RULES} and input_bound > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        if "clip_inputs" in d and "input_rule" not in d:  # written before format /3
            d = {**d, "input_rule": "training-range" if d["clip_inputs"] else "none"}
        return cls(**{k: v for k, v in d.items() if k in known})

    def fit_scaling(self, X: np.ndarray) -> InputScaling:
        """:func:`fit_input_scaling` of (samples, 2, bins, dim) training embeddings with this
        config's floor and rule."""
        return fit_input_scaling(X, floor=self.scale_floor, rule=self.input_rule, bound=self.input_bound)


def expression_loss(
    pred: torch.Tensor,
    y: torch.Tensor,
    *,
    pairwise_weight: float,
    gene: torch.Tensor | None = None,
    n_genes: int = 0,
) -> torch.Tensor:
    """MSE + pairwise_weight * mean over ordered pairs (i != j) of the same gene in the batch of
    ((pred_i - pred_j) - (y_i - y_j))^2.

    The pair mean is computed in O(batch) from the identity
    sum_{i,j} (r_i - r_j)^2 = 2 n sum_i (r_i - mean r)^2 with r = pred - y, per gene group.
    pred, y: (batch,); gene: (batch,) int64 in [0, n_genes) or None (one group).
    """
    r = pred - y
    mse = r.pow(2).mean()
    if pairwise_weight == 0:
        return mse
    if gene is None:
        n = r.shape[0]
        if n < 2:
            return mse
        pair_mean = 2.0 * n * (r - r.mean()).pow(2).sum() / (n * (n - 1))
    else:
        onehot = nn.functional.one_hot(gene, n_genes).to(r.dtype)  # (batch, genes)
        n_g = onehot.sum(0)
        mean_g = (onehot.T @ r) / n_g.clamp(min=1)
        ss_g = onehot.T @ (r - onehot @ mean_g).pow(2)
        pairs = (n_g * (n_g - 1)).sum()
        if pairs == 0:
            return mse
        pair_mean = (2.0 * n_g * ss_g).sum() / pairs
    return mse + pairwise_weight * pair_mean


@contextlib.contextmanager
def deterministic(seed: int, device: str = "cpu") -> Iterator[torch.Generator]:
    """Seed a private torch RNG, fork the global one, enable deterministic algorithms and use one
    intra-op thread; restore all of it afterwards so callers' state is untouched.

    One thread because these models are tiny: splitting their small matrix products across
    threads costs more than it saves (measured ~0.7 s vs ~4.6 s of CPU per fit on 2 cores), and
    it makes the result independent of the machine's thread count. On CUDA only the seeds are
    set (deterministic cuBLAS would need CUBLAS_WORKSPACE_CONFIG; GPU runs are reproducible to
    the tolerances of docs/nt-transformer.md, not bit for bit)."""
    if str(device).startswith("cuda"):
        with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
            torch.manual_seed(seed)
            yield torch.Generator().manual_seed(seed)
        return
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout draws from the global RNG
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(was, warn_only=warn_only)


def training_rows(
    n: int, config: TrainConfig, *, refit: bool, val_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of one training run: every row and none for a refit on
    a fixed number of epochs, else ``val_mask``'s split or a seeded ``val_fraction`` of the rows."""
    if refit:
        val_mask = np.zeros(n, dtype=bool)
    elif n < 4:
        raise ValueError(f"need at least 4 training rows for an inner validation split, got {n}")
    elif val_mask is None:
        val_mask = inner_split(n, val_fraction=config.val_fraction, seed=config.seed)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def inner_split(n: int, *, val_fraction: float, seed: int) -> np.ndarray:
    """(n,) bool, True for the inner validation rows: a seeded share of the given rows."""
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return mask


def _forward_sym(model: nn.Module, x: torch.Tensor, gene: torch.Tensor | None) -> torch.Tensor:
    """Average over both haplotype orders: which haplotype is '1' is an accident of phasing."""
    return 0.5 * (model(x, gene) + model(x.flip(1), gene))


def predict_batched(
    model: nn.Module, X: np.ndarray, *, batch_size: int = 256, gene: np.ndarray | None = None
) -> np.ndarray:
    """(samples,) float32 predictions for (samples, 2, bins, dim) scaled inputs, in eval mode
    and without gradients; the model is left in the mode it came in."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                x = torch.as_tensor(np.ascontiguousarray(X[start : start + batch_size]), dtype=torch.float32)
                g = None if gene is None else torch.as_tensor(gene[start : start + batch_size], dtype=torch.long)
                out.append(_forward_sym(model, x, g).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_model(
    model: nn.Module,
    X,
    y: np.ndarray,
    *,
    config: TrainConfig,
    gene_index: np.ndarray | None = None,
    val_mask: np.ndarray | None = None,
    epochs: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Train ``model`` in place with AdamW on (samples, 2, bins, dim) scaled inputs X and
    (samples,) standardised targets y; stop early on an inner validation split of these rows
    and restore the weights of the best validation epoch.

    X: an array, or a row source (``len(X)`` rows and ``X.take_rows(rows)`` -> (len(rows), 2,
        bins, dim) float32, e.g. :class:`hapexpr.estimators.nt_multigene.TrainingRows`) that is
        read one mini-batch at a time, so the rows never need to be in memory together.
    gene_index: (samples,) int, multi-gene mode (the model must have ``n_genes`` > 0); the
        pairwise term then pairs rows of the same gene only.
    val_mask: (samples,) bool validation rows; default a seeded ``val_fraction`` of the rows.
    epochs: train on ALL rows for exactly this many epochs, without validation or early
        stopping, and keep the final weights (the refit of :func:`fit_with_epoch_selection`).
    device, precision: where the model trains (it comes back on the CPU) and ``"bf16"``
        autocast (CUDA only; callers check).
    Returns the history: per-epoch ``train_loss``/``val_loss``, ``best_epoch``, ``epochs_run``,
    ``best_val_loss``, ``n_train``, ``n_val``, ``val_index`` and ``seconds``.
    """
    start_time = time.perf_counter()
    n = len(X)
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train_rows, val_rows = training_rows(n, config, refit=epochs is not None, val_mask=val_mask)
    dev = torch.device(device)
    model.to(dev)
    streamed = hasattr(X, "take_rows")
    x_all = None if streamed else torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32)
    y_all = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    g_all = None if gene_index is None else torch.as_tensor(np.asarray(gene_index), dtype=torch.long)
    n_genes = getattr(getattr(model, "config", None), "n_genes", 0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def rows(idx: torch.Tensor):
        x = torch.from_numpy(X.take_rows(idx.numpy())) if streamed else x_all[idx]
        return x.to(dev), y_all[idx].to(dev), None if g_all is None else g_all[idx].to(dev)

    def loss_of(pred, yb, gb):
        return expression_loss(pred.float(), yb, pairwise_weight=config.pairwise_weight, gene=gb, n_genes=n_genes)

    def val_loss_of(val_t: torch.Tensor) -> float:
        # A streamed source is read in chunks so the validation rows are never all in memory.
        chunks = [val_t] if not streamed else val_t.split(VAL_CHUNK)
        preds, ys, gs = [], [], []
        with torch.no_grad(), amp:
            for chunk in chunks:
                xb, yb, gb = rows(chunk)
                preds.append(_forward_sym(model, xb, gb).float())
                ys.append(yb)
                gs.append(gb)
        g = None if g_all is None else torch.cat(gs)
        return float(loss_of(torch.cat(preds), torch.cat(ys), g))

    history: dict = {"train_loss": [], "val_loss": []}
    best_val, best_epoch, best_state = float("inf"), -1, None
    with deterministic(config.seed, device=str(dev)) as gen:
        optimizer = _adamw(model, config)
        val_t = torch.as_tensor(val_rows)
        train_t = torch.as_tensor(train_rows)
        for epoch in range(config.max_epochs if epochs is None else epochs):
            model.train()
            total = 0.0
            for batch in _batches(train_t, None if g_all is None else g_all[train_t], config, gen):
                xb, yb, gb = rows(batch)
                if config.swap_haplotypes:
                    swap = (torch.rand(len(xb), generator=gen) < 0.5).to(dev)
                    xb = torch.where(swap[:, None, None, None], xb.flip(1), xb)
                with amp:
                    loss = loss_of(model(xb, gb), yb, gb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(xb)
            history["train_loss"].append(total / len(train_t))
            if epochs is not None:
                continue
            model.eval()
            val_loss = val_loss_of(val_t)
            history["val_loss"].append(val_loss)
            if val_loss < best_val:
                best_val, best_epoch = val_loss, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= config.patience:
                break
        if epochs is not None:
            if not np.isfinite(history["train_loss"]).all():
                raise HapexprError(
                    "nt-transformer training diverged (the training loss was not finite)",
                    hint="lower the learning rate (TrainConfig.lr) or check the embeddings for extreme values",
                )
            best_epoch, best_val = epochs - 1, float("nan")
        elif best_state is None:
            raise HapexprError(
                "nt-transformer training diverged (the validation loss was never finite)",
                hint="lower the learning rate (TrainConfig.lr) or check the embeddings for extreme values",
            )
        else:
            model.load_state_dict(best_state)
        model.eval()
    model.to("cpu")
    history.update(
        best_epoch=best_epoch,
        epochs_run=len(history["train_loss"]),
        best_val_loss=best_val,
        n_train=len(train_rows),
        n_val=len(val_rows),
        val_index=val_rows.tolist(),
        seconds=time.perf_counter() - start_time,
    )
    return history


VAL_CHUNK = 1024
"""Rows per forward pass when a streamed source's validation loss is computed."""


def _batches(
    rows: torch.Tensor, genes: torch.Tensor | None, config: TrainConfig, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """One epoch's mini-batches of ``rows`` (a shuffled order drawn from ``gen``).

    Per-gene or ``genes_per_batch = 0``: consecutive slices of a random permutation. Multi-gene:
    each gene's rows are shuffled and cut into chunks of ``batch_size // genes_per_batch``;
    the chunks are shuffled and each batch joins ``genes_per_batch`` of them, so a batch mixes
    genes and holds several individuals of each (pairs for the within-gene pairwise term).
    """
    if genes is None or config.genes_per_batch == 0:
        order = rows[torch.randperm(len(rows), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            yield order[start : start + config.batch_size]
        return
    per_gene = max(2, config.batch_size // config.genes_per_batch)
    chunks = []
    for g in torch.unique(genes).tolist():
        mine = rows[genes == g]
        mine = mine[torch.randperm(len(mine), generator=gen)]
        chunks.extend(mine.split(per_gene))
    order = torch.randperm(len(chunks), generator=gen).tolist()
    for start in range(0, len(order), config.genes_per_batch):
        yield torch.cat([chunks[i] for i in order[start : start + config.genes_per_batch]])


def inner_folds(groups: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """(rows,) int inner fold of each row: the distinct ``groups`` (individuals) are dealt into
    ``k`` folds in a seeded random order, so all rows of an individual share a fold."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    k = min(k, len(uniq))
    fold_of = np.empty(len(uniq), dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(len(uniq))] = np.arange(len(uniq)) % k
    return fold_of[inverse]


def inner_cv(
    make_model: Callable[[], nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    *,
    config: TrainConfig,
    gene_index: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """K-fold cross-validation of the number of epochs over the given (training) rows.

    Each of ``config.inner_folds`` folds in turn is the validation set of a fresh model
    (``make_model()``) trained with early stopping on the other folds. A fold's validation curve
    that stopped early is carried forward at its last value (beyond the stop it had risen
    ``patience`` epochs in a row). ``epochs`` = 1 + argmin of the mean curve over folds.
    groups: (rows,) individual of each row (multi-gene rows of one person share a fold);
        default every row its own.
    Returns ``epochs``, ``cv_loss`` (the mean curve's minimum), ``mean_val_loss`` (the mean
    curve), ``best_epochs`` (each fold's own best epoch count) and ``fold`` ((rows,) inner fold).
    """
    groups = np.arange(len(X)) if groups is None else np.asarray(groups)
    fold = inner_folds(groups, config.inner_folds, seed=config.seed)
    curves, best = [], []
    for j in np.unique(fold):
        hist = train_model(
            make_model(),
            X,
            y,
            config=config,
            gene_index=gene_index,
            val_mask=fold == j,
            device=device,
            precision=precision,
        )
        curves.append(hist["val_loss"])
        best.append(hist["best_epoch"] + 1)
    length = max(len(c) for c in curves)
    padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
    mean_curve = padded.mean(axis=0)
    return {
        "epochs": int(np.argmin(mean_curve)) + 1,
        "cv_loss": float(mean_curve.min()),
        "mean_val_loss": mean_curve.tolist(),
        "best_epochs": best,
        "fold": fold,
    }


def fit_with_epoch_selection(
    make_model: Callable[[], nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    *,
    config: TrainConfig,
    gene_index: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    cv: dict | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> tuple[nn.Module, dict]:
    """A trained model and its history, by ``config.epoch_selection``.

    ``"kfold"``: :func:`inner_cv` (or the given ``cv`` result) chooses the number of epochs,
    then a fresh model is trained on ALL rows for that many epochs. The history then has
    ``n_train`` = all rows, ``n_val`` = 0, ``epoch_selection``, ``chosen_epochs``,
    ``inner_folds``, ``inner_best_epochs``, ``inner_val_loss`` and ``cv_loss``.
    ``"split"``: :func:`train_model` with its inner validation split (over individuals when
    ``groups`` is given) and the best epoch's weights.
    device, precision: as :func:`train_model`.
    """
    hw = {"device": device, "precision": precision}
    if config.epoch_selection == "split":
        val_mask = None
        if groups is not None:
            uniq = np.unique(groups)
            val_people = uniq[inner_split(len(uniq), val_fraction=config.val_fraction, seed=config.seed)]
            val_mask = np.isin(groups, val_people)
        model = make_model()
        history = train_model(model, X, y, config=config, gene_index=gene_index, val_mask=val_mask, **hw)
        history.update(epoch_selection="split", cv_loss=history["best_val_loss"])
        return model, history
    start = time.perf_counter()
    cv = cv or inner_cv(make_model, X, y, config=config, gene_index=gene_index, groups=groups, **hw)
    model = make_model()
    history = train_model(model, X, y, config=config, gene_index=gene_index, epochs=cv["epochs"], **hw)
    history.update(kfold_choice(cv, seconds=time.perf_counter() - start))
    return model, history


def kfold_choice(cv: dict, *, seconds: float) -> dict:
    """What a training history records of an epoch count chosen by inner K-fold CV (``cv`` as
    :func:`inner_cv` returns it) and of the time the choice and refit took."""
    return {
        "epoch_selection": "kfold",
        "chosen_epochs": cv["epochs"],
        "inner_folds": int(cv["fold"].max()) + 1,
        "inner_best_epochs": cv["best_epochs"],
        "inner_val_loss": cv["mean_val_loss"],
        "cv_loss": cv["cv_loss"],
        "seconds": seconds,
    }


def _adamw(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases, norms, embeddings and gene scale/offset: decaying
    those pulls positions and genes toward each other rather than simplifying the model."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_matrix = p.ndim >= 2 and not any(s in name for s in ("pos.", "hap.", "gene_", "cls"))
        (decay if is_matrix else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)
