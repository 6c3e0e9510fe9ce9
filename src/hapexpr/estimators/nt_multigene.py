"""Multi-gene ``nt-transformer``: one network with shared weights over many genes, a
gene-specific output scale/offset per trained gene and a neutral head for every other gene.

Inputs stream. A gene's people are ``(samples, 2)`` indices into its few distinct haplotypes
(:class:`GeneInputs`); a mini-batch of (gene, person) rows is read and scaled when it is drawn
(:class:`TrainingRows`), so memory does not grow with the number of genes: the distinct
haplotypes of a study live in a scratch file (:class:`FileInputs`) read a few rows at a time
with ``os.pread`` (not ``mmap``: pages of a mapping touched over an epoch would all count as the
process's resident memory). Rows are numbered as if every trained gene's training people were
stacked gene after gene, so the batches, and hence the model, are those of stacking the
``(samples, 2, bins, dim)`` arrays (test ``test_streamed_inputs_train_as_arrays_do``).

A fit saves itself as one checkpoint (:meth:`MultiGeneFit.save`: ``model.safetensors`` with
weights and every gene's input scaling, ``config.json`` written last). Architecture, the
neutral head and the checkpoint layout: ``docs/nt-transformer.md``.

Import this module lazily (it imports torch at the top).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hapexpr.errors import InputError, StudyError
from hapexpr.estimators.nt_batched import check_precision
from hapexpr.estimators.nt_network import (
    InputScaling,
    NTTransformer,
    NTTransformerConfig,
    check_features,
)
from hapexpr.estimators.nt_training import TrainConfig, fit_with_epoch_selection, predict_batched
from hapexpr.io.atomic import atomic_path, write_json

CHECKPOINT_FORMAT = "hapexpr.nt-transformer-multi/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------------------------
# inputs: each gene's distinct haplotypes and who carries them


class GeneInputs:
    """Every gene's embeddings as distinct haplotypes plus each person's two indices into them.

    ``genes``: gene ids in order; ``bins``, ``dim``: the embedding shape shared by all genes.
    Subclasses store the (haplotypes, bins, dim) rows and implement :meth:`haplotype_rows`.
    """

    genes: list[str]
    bins: int
    dim: int

    def __init__(self) -> None:
        self.genes, self._hap_index = [], []
        self.bins = self.dim = 0

    def _check(self, gene: str, unique: np.ndarray, hap_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unique = np.asarray(unique, dtype=np.float32)
        hap_index = np.asarray(hap_index, dtype=np.int64)
        if unique.ndim != 3 or hap_index.ndim != 2 or hap_index.shape[1] != 2:
            raise InputError(
                f"gene {gene}: expected (haplotypes, bins, dim) embeddings and (samples, 2) indices, "
                f"got {unique.shape} and {hap_index.shape}"
            )
        if self.genes and unique.shape[1:] != (self.bins, self.dim):
            raise InputError(
                f"gene {gene} has embeddings of {unique.shape[1]} bins x {unique.shape[2]} dims, the "
                f"other genes {self.bins} x {self.dim}; one multi-gene model needs one shape",
                hint="embed every gene with the same model and --bins",
            )
        if self.genes and len(hap_index) != self.n_samples:
            raise InputError(f"gene {gene} has {len(hap_index)} people, the other genes {self.n_samples}")
        if not np.isfinite(unique).all():
            raise InputError(f"gene {gene}: embeddings contain NaN or infinite values", hint="re-run `hapexpr embed`")
        self.bins, self.dim = unique.shape[1:]
        self.genes.append(gene)
        self._hap_index.append(hap_index)
        return unique, hap_index

    @property
    def n_samples(self) -> int:
        return len(self._hap_index[0]) if self._hap_index else 0

    def haplotype_rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        """(len(rows), bins, dim) float32 distinct-haplotype embeddings of gene number ``i``."""
        raise NotImplementedError

    def people(self, i: int, people: np.ndarray) -> np.ndarray:
        """(len(people), 2, bins, dim) float32 embeddings of gene ``i`` for these people."""
        index = self._hap_index[i][np.asarray(people, dtype=np.int64)]
        rows, inverse = np.unique(index, return_inverse=True)
        return self.haplotype_rows(i, rows)[inverse.reshape(index.shape)]


class ArrayInputs(GeneInputs):
    """Inputs held in memory: from ``gene -> (samples, 2, bins, dim)`` arrays (every person's
    haplotype its own row), or from distinct haplotypes with :meth:`add`."""

    def __init__(self, X_by_gene: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self._unique: list[np.ndarray] = []
        for gene, X in (X_by_gene or {}).items():
            X = check_features(X)
            n = len(X)
            self.add(gene, X.reshape(2 * n, *X.shape[2:]), np.arange(2 * n).reshape(n, 2))

    def add(self, gene: str, unique: np.ndarray, hap_index: np.ndarray) -> None:
        unique, _ = self._check(gene, unique, hap_index)
        self._unique.append(unique)

    def haplotype_rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        return self._unique[i][rows]


class FileInputs(GeneInputs):
    """Inputs in one scratch file (float32 rows, gene after gene), read with ``os.pread``; the
    file is removed by :meth:`close` (or on leaving a ``with`` block)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w+b")  # noqa: SIM115 (kept open for pread; closed by close())
        self._offset: list[int] = []
        self._end = 0

    def add(self, gene: str, unique: np.ndarray, hap_index: np.ndarray) -> None:
        unique, _ = self._check(gene, unique, hap_index)
        self._offset.append(self._end)
        data = np.ascontiguousarray(unique).tobytes()
        os.pwrite(self._fh.fileno(), data, self._end)
        self._end += len(data)

    def haplotype_rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        row_bytes = self.bins * self.dim * 4
        out = np.empty((len(rows), self.bins, self.dim), dtype=np.float32)
        flat = out.reshape(len(rows), -1)
        fd, base = self._fh.fileno(), self._offset[i]
        for j, r in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            flat[j] = np.frombuffer(os.pread(fd, row_bytes, base + r * row_bytes), dtype=np.float32)
        return out

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainingRows:
    """The (trained gene, training person) rows of one fit, scaled, read per mini-batch.

    Row ``r`` is person ``people[r % n]`` of trained gene ``genes[r // n]`` (n = len(people)):
    the order of stacking each trained gene's training people. ``take_rows`` is what
    :func:`hapexpr.estimators.nt_training.train_model` calls for a batch.
    """

    def __init__(self, inputs: GeneInputs, genes: list[int], scalings: list[InputScaling], people: np.ndarray):
        self.inputs, self.genes, self.scalings = inputs, genes, scalings
        self.people = np.asarray(people, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.genes) * len(self.people)

    def take_rows(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 2, bins, dim) float32 scaled inputs."""
        rows = np.asarray(rows, dtype=np.int64)
        gene, person = np.divmod(rows, len(self.people))
        out = np.empty((len(rows), 2, self.inputs.bins, self.inputs.dim), dtype=np.float32)
        for g in np.unique(gene).tolist():
            sel = gene == g
            raw = self.inputs.people(self.genes[g], self.people[person[sel]])
            out[sel] = self.scalings[g].apply(raw)
        return out


# --------------------------------------------------------------------------------------------
# the fitted model


@dataclass
class MultiGeneFit:
    """A shared-weight model over several genes (output of :func:`train_multi_gene`).

    trained_genes: genes with a learned output scale/offset (index = position in this list).
    input_scaling: gene -> :class:`InputScaling` of every gene the fit saw. Per gene (the
        default): each gene's own training individuals' embeddings (held-out genes' too, never
        their expression). Shared (``shared`` set): one scaling pooled over the training
        individuals of every trained gene, used for every gene (outside the study too); it
        measured worse on the motif cohort (docs/nt-transformer.md).
    shared: the shared scaling, or None.
    target_scaling: trained gene -> (mean, sd) of its training individuals' expression.
    heldout_scale: sd used to map untrained genes' standardised predictions back (median of
        the trained genes' sd; no held-out gene's expression is used).
    train_config: how it was trained (its ``scale_floor``/``input_rule`` also scale genes the
        fit has no scaling for, see :meth:`predict`).
    """

    model: torch.nn.Module
    trained_genes: list[str]
    input_scaling: dict[str, InputScaling]
    target_scaling: dict[str, tuple[float, float]]
    heldout_scale: float
    history: dict
    train_config: TrainConfig
    shared: InputScaling | None = None

    def scaling_for(self, gene: str, X: np.ndarray) -> InputScaling:
        """The input scaling of ``gene``: its own, the shared one, or, for a gene the fit never
        saw (outside the study), one fit on ``X``, the embeddings of the people predicted."""
        if gene in self.input_scaling:
            return self.input_scaling[gene]
        if self.shared is not None:
            return self.shared
        return self.train_config.fit_scaling(X)

    def predict(self, gene: str, X: np.ndarray) -> np.ndarray:
        """(samples,) float64 predictions for (samples, 2, bins, dim) embeddings of ``gene``.

        Genes not trained on (held out, or outside the study) use scale 1 and offset 0 on the
        standardised scale, then the neutral ``heldout_scale`` and mean 0: only their ranking
        (Pearson/Spearman r) is meaningful.
        """
        c = self.model.config
        X = check_features(X, bins=c.bins, dim=c.dim_in)
        Xs = self.scaling_for(gene, X).apply(X)
        batch = self.train_config.batch_size
        if gene in self.target_scaling:
            g = np.full(len(X), self.trained_genes.index(gene), dtype=np.int64)
            z = predict_batched(self.model, Xs, batch_size=batch, gene=g)
            y_mean, y_sd = self.target_scaling[gene]
            return z.astype(np.float64) * y_sd + y_mean
        z = predict_batched(self.model, Xs, batch_size=batch)
        return z.astype(np.float64) * self.heldout_scale

    def estimator(self, gene: str) -> GeneView:
        """A per-gene estimator (``predict(X)``) backed by this model."""
        return GeneView(self, gene)

    # ---- checkpoint: safetensors + JSON, never a pickle

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` (weights; every gene's input scaling as
        ``scaling.<i>.<field>``, gene ``i`` of ``scaled_genes``) and ``config.json`` (last)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"model." + k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        scaled = list(self.input_scaling)
        if self.shared is not None:
            scalings = [("shared", self.shared)]
        else:
            scalings = [(str(i), self.input_scaling[g]) for i, g in enumerate(scaled)]
        fields_json: dict = {}
        for label, sc in scalings:
            for f in dataclasses.fields(sc):
                value = getattr(sc, f.name)
                if isinstance(value, np.ndarray):
                    tensors[f"scaling.{label}.{f.name}"] = torch.from_numpy(np.ascontiguousarray(value))
                else:
                    fields_json[f.name] = value  # scalar fields (the rule) are the same for all
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
        write_json(
            directory / CONFIG_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "estimator": "MultiGeneFit",
                "model_config": self.model.config.to_dict(),
                "train_config": self.train_config.to_dict(),
                "trained_genes": self.trained_genes,
                "scaled_genes": scaled,
                "shared_scaling": self.shared is not None,
                "scaling_fields": fields_json,
                "target_scaling": {g: list(v) for g, v in self.target_scaling.items()},
                "heldout_scale": self.heldout_scale,
                "metrics": _json_metrics(self.history),
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> MultiGeneFit:
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.exists() or not (directory / WEIGHTS_FILE).exists():
            raise StudyError(
                "no complete multi-gene nt-transformer checkpoint here (config.json or model.safetensors missing)",
                path=directory,
                hint="fit it again (`hapexpr fit-final STUDY --method nt-transformer-multi --overwrite`)",
            )
        meta = json.loads(path.read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise StudyError(
                f"checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}",
                path=path,
                hint="refit the model with this version of hapexpr",
            )
        tensors = load_file(str(directory / WEIGHTS_FILE))
        model = NTTransformer(NTTransformerConfig.from_dict(meta["model_config"]))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)

        def scaling(label: str) -> InputScaling:
            prefix = f"scaling.{label}."
            arrays = {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
            return InputScaling(**arrays, **meta["scaling_fields"])

        shared = scaling("shared") if meta.get("shared_scaling") else None
        genes = meta["scaled_genes"]
        return cls(
            model=model.eval(),
            trained_genes=list(meta["trained_genes"]),
            input_scaling={g: shared or scaling(str(i)) for i, g in enumerate(genes)},
            target_scaling={g: (float(v[0]), float(v[1])) for g, v in meta["target_scaling"].items()},
            heldout_scale=float(meta["heldout_scale"]),
            history={"metrics": meta.get("metrics", {})},
            train_config=TrainConfig.from_dict(meta["train_config"]),
            shared=shared,
        )


@dataclass
class GeneView:
    """One gene of a :class:`MultiGeneFit` as a per-gene estimator (what ``predict`` and
    ``explain`` call): ``predict(X)`` with (samples, 2, bins, dim) embeddings."""

    fit: MultiGeneFit
    gene_id: str

    @property
    def trained(self) -> bool:
        """Whether the gene has its own learned output head (else the neutral one)."""
        return self.gene_id in self.fit.target_scaling

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit.predict(self.gene_id, X)


def _json_metrics(history: dict) -> dict:
    keys = ("epoch_selection", "chosen_epochs", "inner_best_epochs", "cv_loss", "best_epoch", "epochs_run", "n_train")
    out = {k: history[k] for k in keys if k in history}
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# training


def train_multi_gene(
    inputs: GeneInputs | dict[str, np.ndarray],
    y_by_gene: dict[str, np.ndarray],
    train_idx: np.ndarray,
    *,
    holdout_genes: Sequence[str] = (),
    config: TrainConfig | None = None,
    seed: int = 0,
    shared_scaling: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    **model_kwargs,
) -> MultiGeneFit:
    """Fit one shared model on the training individuals of every gene not in ``holdout_genes``.

    inputs: :class:`GeneInputs`, or gene -> (samples, 2, bins, dim) embeddings of ALL
        individuals (study order; same bins and dim for every gene); y_by_gene: gene ->
        (samples,) expression (held-out genes' is never read).
    train_idx: indices (or a bool mask) of the training individuals; only their rows of the
        trained genes are used for fitting, epoch selection and scaling.
    Each trained gene's target is standardised with its training individuals' mean and sd;
    the pairwise loss pairs individuals of the same gene; epochs are chosen as in
    :func:`fit_with_epoch_selection`, with inner folds over individuals shared by all genes.
    Per-gene scaling needs one gene's training people in memory at a time; ``shared_scaling``
    pools every trained gene's, so its memory grows with the number of genes.
    model_kwargs: NTTransformerConfig fields (d_model, n_layers, ...).
    """
    check_precision(precision, device)
    if isinstance(inputs, dict):
        inputs = ArrayInputs(inputs)
    config = replace(config or TrainConfig(batch_size=256), seed=seed)
    genes = list(inputs.genes)
    holdout = set(holdout_genes)
    trained = [i for i, g in enumerate(genes) if g not in holdout]
    if not trained:
        raise ValueError("every gene is held out; nothing to train on")
    train_idx = np.flatnonzero(_as_mask(train_idx, inputs.n_samples))

    fit_scaling = config.fit_scaling
    shared = None
    if shared_scaling:
        shared = fit_scaling(np.concatenate([inputs.people(i, train_idx) for i in trained]))
        scaling = {g: shared for g in genes}
    else:
        scaling = {g: fit_scaling(inputs.people(i, train_idx)) for i, g in enumerate(genes)}
    target, ys = {}, []
    for i in trained:
        y = np.asarray(y_by_gene[genes[i]], dtype=np.float64)[train_idx]
        sd = float(y.std())
        target[genes[i]] = (float(y.mean()), sd if sd > 0 else 1.0)
        ys.append((y - target[genes[i]][0]) / target[genes[i]][1])
    model_config = NTTransformerConfig(dim_in=inputs.dim, bins=inputs.bins, n_genes=len(trained), **model_kwargs)

    def make_model() -> NTTransformer:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return NTTransformer(model_config)

    rows = TrainingRows(inputs, trained, [scaling[genes[i]] for i in trained], train_idx)
    model, history = fit_with_epoch_selection(
        make_model,
        rows,
        np.concatenate(ys),
        config=config,
        gene_index=np.repeat(np.arange(len(trained)), len(train_idx)),
        groups=np.tile(train_idx, len(trained)),
        device=device,
        precision=precision,
    )
    history["shared_scaling"] = shared_scaling
    return MultiGeneFit(
        model=model,
        trained_genes=[genes[i] for i in trained],
        input_scaling=scaling,
        target_scaling=target,
        heldout_scale=float(np.median([sd for _, sd in target.values()])),
        history=history,
        train_config=config,
        shared=shared,
    )


def predict_people(fit: MultiGeneFit, inputs: GeneInputs, people: np.ndarray) -> dict[str, np.ndarray]:
    """gene -> (len(people),) float64 predictions of ``fit`` for every gene of ``inputs``, read
    one gene at a time."""
    return {g: fit.predict(g, inputs.people(i, people)) for i, g in enumerate(inputs.genes)}


def fit_multi_gene(
    inputs: GeneInputs | dict[str, np.ndarray],
    y_by_gene: dict[str, np.ndarray],
    train_idx: np.ndarray,
    **kwargs,
) -> tuple[MultiGeneFit, dict[str, np.ndarray]]:
    """:func:`train_multi_gene` (same arguments), then gene -> (samples,) predictions for ALL
    individuals."""
    if isinstance(inputs, dict):
        inputs = ArrayInputs(inputs)
    fit = train_multi_gene(inputs, y_by_gene, train_idx, **kwargs)
    return fit, predict_people(fit, inputs, np.arange(inputs.n_samples))


def multi_gene_fold(
    inputs: GeneInputs | dict[str, np.ndarray],
    y_by_gene: dict[str, np.ndarray],
    train_mask: np.ndarray,
    test_mask: np.ndarray,
    heldout_genes: Sequence[str],
    **kwargs,
) -> tuple[MultiGeneFit, dict[str, np.ndarray]]:
    """One outer fold of multi-gene mode: the fit and gene -> (test individuals,) float64
    predictions, in the order of ``np.flatnonzero(test_mask)``, for every gene (held-out genes
    included; their predictions come from a model that never saw those genes' expression).
    kwargs: those of :func:`train_multi_gene`."""
    if isinstance(inputs, dict):
        inputs = ArrayInputs(inputs)
    n = inputs.n_samples
    train_mask, test_mask = _as_mask(train_mask, n), _as_mask(test_mask, n)
    if (train_mask & test_mask).any():
        raise ValueError("an individual is in both the training and the test set")
    fit = train_multi_gene(inputs, y_by_gene, train_mask, holdout_genes=heldout_genes, **kwargs)
    return fit, predict_people(fit, inputs, np.flatnonzero(test_mask))


def choose_holdout_genes(genes: Sequence[str], fraction: float, *, seed: int) -> list[str]:
    """A seeded ``fraction`` of ``genes`` (at least one when fraction > 0, never all) that
    multi-gene mode never trains on; returned in the given gene order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--holdout-genes must be in [0, 1), got {fraction}")
    if fraction == 0 or len(genes) < 2:
        return []
    k = min(max(1, round(fraction * len(genes))), len(genes) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(genes))[:k].tolist())
    return [g for i, g in enumerate(genes) if i in chosen]


def _as_mask(idx: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool from a bool mask or an array of indices."""
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"mask has shape {idx.shape}, expected ({n},)")
        return idx
    mask = np.zeros(n, dtype=bool)
    mask[idx.astype(np.int64)] = True
    return mask
