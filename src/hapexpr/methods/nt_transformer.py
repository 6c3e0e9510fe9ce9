"""``nt-transformer``: the 2024 study's transformer over the binned embeddings of both haplotypes.

Per gene (one model per gene, under the cross-validation loop) or, with ``multi_gene``, one
model with shared weights across genes trained per outer fold, a seeded fraction of genes never
trained on and reported under ``<name>-heldout``. The estimator and its training live in
:mod:`hapexpr.estimators` (imported when a fit starts: they import torch). Architecture,
defaults and checkpoints: ``docs/nt-transformer.md``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import (
    cross_validate_gene,
    residualise,
    study_targets,
    write_predictions,
)
from hapexpr.embed.store import open_embeddings
from hapexpr.errors import InputError
from hapexpr.io.atomic import atomic_dir, atomic_open, write_json
from hapexpr.methods.base import option
from hapexpr.methods.embedding import EmbeddingMethod, EmbeddingOptions
from hapexpr.methods.registry import register
from hapexpr.normalise import transform_in_fold
from hapexpr.preflight import torch_device
from hapexpr.progress import console, track_genes
from hapexpr.study import GeneData


@dataclass(frozen=True)
class NTTransformerOptions(EmbeddingOptions):
    pairwise_weight: float | None = option(
        None, "Weight of the pairwise-difference loss (default in docs/nt-transformer.md)."
    )
    max_epochs: int | None = option(None, "Epoch cap (early stopping usually ends sooner).")
    d_model: int = option(32, "Width of the transformer.")
    n_layers: int = option(1, "Transformer layers.")
    multi_gene: bool = option(False, "One model shared across genes (reported as NAME and NAME-heldout).")
    holdout_genes: float = option(0.0, "With multi_gene: fraction of genes never trained on.")
    epoch_selection: str = option(
        "kfold",
        "kfold: epochs chosen by inner K-fold CV, then refit on all training "
        "individuals; split: one 20% early-stopping split (faster, trains on 80%).",
    )
    epoch_folds: int = option(4, "Inner folds of --epoch-selection kfold (and of the --fingerprints choice).")
    seeds: int = option(1, "Models per fold (seeds); predictions are their mean, per-seed r in models/NAME/seeds.tsv.")
    fingerprints: tuple[str, ...] | None = option(
        None,
        "Comma-separated embedding stores (e.g. layers of one model) to choose from per gene and fold "
        "by inner CV on the training individuals; choices in models/NAME/choices.tsv.",
    )
    shared_scaling: bool = option(
        False,
        "With multi_gene: input scaling pooled over the trained genes "
        "(default: each gene's own; shared measured worse, docs/nt-transformer.md).",
    )
    gene_batch: int = option(
        1,
        "Per-gene models trained this many genes at a time as one batched network (fit and "
        "fit-final; same predictions as 1 within the tolerance of docs/nt-transformer.md).",
    )
    device: str = option("cpu", "cpu, cuda, cuda:N or auto.")
    precision: str = option("fp32", "nt-transformer training: fp32, or bf16 (autocast; CUDA only).")

    def __post_init__(self) -> None:
        if self.epoch_selection not in ("kfold", "split"):
            raise InputError(f"epoch_selection must be kfold or split, got {self.epoch_selection!r}")
        if self.epoch_folds < 2 or self.seeds < 1:
            raise InputError(f"epoch_folds must be >= 2 and seeds >= 1, got {self.epoch_folds}, {self.seeds}")
        if self.fingerprints is not None and (self.multi_gene or self.fingerprint is not None):
            raise InputError(
                "fingerprints chooses among stores per gene; it cannot be combined with multi_gene or fingerprint",
                hint="drop --fingerprint / --multi-gene",
            )
        if not 0.0 <= self.holdout_genes < 1.0:
            raise InputError(f"holdout_genes must be in [0, 1), got {self.holdout_genes}")
        if self.holdout_genes and not self.multi_gene:
            raise InputError("holdout_genes needs multi_gene", hint="add --multi-gene")
        if self.gene_batch < 1:
            raise InputError(f"gene_batch must be >= 1, got {self.gene_batch}")
        if self.precision not in ("fp32", "bf16"):
            raise InputError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.precision == "bf16" and self.device == "cpu":
            raise InputError("--precision bf16 needs a CUDA device", hint="add --device cuda, or use fp32 on CPU")
        if self.gene_batch > 1 and self.multi_gene:
            raise InputError(
                "--gene-batch trains per-gene models; it cannot be combined with --multi-gene "
                "(one shared model; --device and --precision apply to it)",
                hint="drop --gene-batch",
            )
        if self.batched and self.fingerprints is not None:
            raise InputError(
                "--gene-batch / --device trains per-gene models of one store; it cannot be combined "
                "with --fingerprints",
                hint="drop --gene-batch and --device (or --fingerprints)",
            )

    @property
    def batched(self) -> bool:
        """Whether per-gene models train G at a time (:mod:`hapexpr.estimators.nt_batched`)."""
        return not self.multi_gene and (self.gene_batch > 1 or self.device != "cpu")


HARDWARE_OPTIONS = ("gene_batch", "device", "precision")


@register
class NTTransformer(EmbeddingMethod):
    name = "nt-transformer"
    Options = NTTransformerOptions
    summary = "the 2024 study's transformer over binned embeddings of both haplotypes"
    order = 10

    def __init__(self, options=None, *, name=None) -> None:
        super().__init__(options, name=name)
        # multi-gene: no per-gene estimators, one final model for every gene (hapexpr.final's
        # shared layout)
        self.final = not self.options.multi_gene
        self.shared_final = self.options.multi_gene

    @classmethod
    def default_name(cls, options: NTTransformerOptions) -> str:
        return f"{cls.name}-multi" if options.multi_gene else cls.name

    @classmethod
    def options_for_name(cls, name: str) -> dict | None:
        return {"multi_gene": True} if name == f"{cls.name}-multi" else ({} if name == cls.name else None)

    def names(self) -> list[str]:
        return [self.fit_name, f"{self.fit_name}-heldout"] if self.options.multi_gene else [self.fit_name]

    def train_config(self, seed: int | None = None):
        from hapexpr.estimators.nt_training import TrainConfig  # torch

        o = self.options
        given = {
            k: v for k, v in (("pairwise_weight", o.pairwise_weight), ("max_epochs", o.max_epochs)) if v is not None
        }
        return TrainConfig(
            seed=o.seed if seed is None else seed, epoch_selection=o.epoch_selection, inner_folds=o.epoch_folds, **given
        )

    def resolve(self, study) -> dict:
        # Every training setting the fit depends on, so a change of a default refits; the
        # embedding store(s) and their layer(s). The device is checked before anything is written.
        torch_device(self.options.device)
        out = {**super().resolve(study), "train": dataclasses.asdict(self.train_config())}
        if self.options.fingerprints:
            stores = [open_embeddings(study.path, fingerprint=f) for f in self.options.fingerprints]
            fps = [st.fingerprint for st in stores]
            if len(set(fps)) != len(fps):
                raise InputError(f"--fingerprints names one store twice ({', '.join(self.options.fingerprints)})")
            self._stores = {st.fingerprint: st for st in stores}
            out.update(fingerprint=fps[0], fingerprints=fps, layers=[st.info.get("layer") for st in stores])
        else:
            out["layers"] = [open_embeddings(study.path, fingerprint=out["fingerprint"]).info.get("layer")]
        return out

    def fit_record(self) -> dict:
        # The training-hardware options at their defaults are left out of the record (and so of
        # the fit's key): fits made before they existed stay valid and resumable.
        record = super().fit_record()
        defaults = {f.name: f.default for f in dataclasses.fields(self.Options) if f.name in HARDWARE_OPTIONS}
        record["options"] = {k: v for k, v in record["options"].items() if not (k in defaults and v == defaults[k])}
        return record

    def models_used(self) -> list[dict]:
        fps = self.resolved.get("fingerprints") or [self.resolved["fingerprint"]]
        used = []
        for fp in fps:
            self._use_store(fp)
            used += [{**u, "layer": self.store.info.get("layer")} for u in super().models_used()]
        self._use_store(fps[0])
        return used

    def _use_store(self, fingerprint: str) -> None:
        """Point :attr:`store` (and the on-request embedder) at one of the candidate stores."""
        stores = self.__dict__.setdefault("_stores", {})
        embedders = self.__dict__.setdefault("_embedders", {})
        current = getattr(self, "_store", None)
        if current is not None:
            stores.setdefault(current.fingerprint, current)
            embedders[current.fingerprint] = getattr(self, "_embedder", None)
        self.resolved["fingerprint"] = fingerprint
        if fingerprint in stores:
            self._store, self._embedder = stores[fingerprint], embedders.get(fingerprint)

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(unique, bins, dim) binned embeddings; with ``fingerprints`` (unique, candidates,
        bins, dim): the same sequences' embeddings from each candidate store."""
        fps = self.resolved.get("fingerprints")
        if not fps:
            return self.embeddings(gene, sequences)[0]
        per = []
        for fp in fps:
            self._use_store(fp)
            per.append(np.asarray(self.embeddings(gene, sequences)[0], dtype=np.float32))
        self._use_store(fps[0])
        if len({x.shape for x in per}) != 1:
            raise InputError(
                f"the --fingerprints stores give {gene.gene_id} embeddings of different shapes "
                f"({', '.join(str(x.shape[1:]) for x in per)})",
                hint="choose among stores of one model (e.g. layers) with the same bins",
            )
        return np.stack(per, axis=1)

    def people_features(self, per_hap: np.ndarray, hap_index: np.ndarray) -> np.ndarray:
        """(samples, 2, bins, dim), or (samples, candidates, 2, bins, dim) with ``fingerprints``."""
        X = per_hap[np.asarray(hap_index, dtype=np.int64)]
        return np.moveaxis(X, 2, 1) if X.ndim == 5 else X

    def estimator(self, seed: int):
        from hapexpr.estimators.nt_transformer import NTTransformerModel  # torch

        return NTTransformerModel(
            d_model=self.options.d_model,
            n_layers=self.options.n_layers,
            train_config=self.train_config(),
            seed=seed,
            n_seeds=self.options.seeds,
        )

    def load_estimator(self, directory: Path):
        from hapexpr.estimators.nt_transformer import NTTransformerModel  # torch

        return NTTransformerModel.load(directory)

    def fit_study(self, study, run, *, progress: bool) -> pd.DataFrame | None:
        """Multi-gene mode: one shared-weight model per outer fold over every gene. Per gene with
        several seeds or candidate stores: the usual per-gene loop, plus the side files."""
        if not self.options.multi_gene:
            if self.options.seeds == 1 and not self.options.fingerprints and not self.options.batched:
                return None
            return self._fit_per_gene_recorded(study, run, progress=progress)
        return self._fit_multi_gene(study, run, progress=progress)

    # ---- multi-gene mode

    def _fit_multi_gene(self, study, run, *, progress: bool) -> pd.DataFrame:
        """One shared-weight model per outer fold, each fold checkpointed under
        ``models/NAME/folds/fold-K/`` as it finishes (a killed fit resumes at the first fold
        without a checkpoint of this fit's key); inputs streamed from a scratch file."""
        from hapexpr.estimators.nt_multigene import choose_holdout_genes  # torch

        o, name = self.options, self.fit_name
        heldout = choose_holdout_genes(study.gene_ids, o.holdout_genes, seed=o.seed)
        start = time.time()
        expr, cov = study_targets(study)
        y_raw = {g: expr.loc[g].to_numpy(dtype=np.float64) for g in study.gene_ids}
        folds = study.folds
        observed = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        predicted = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        inputs = None
        try:
            for k in np.unique(folds):
                test, train = folds == k, folds != k
                y_res = {
                    g: residualise(transform_in_fold(y, train, study.normalise), cov, train) for g, y in y_raw.items()
                }
                preds = _read_fold(run.dir / FOLDS_DIR / f"fold-{k}", run.key, study.gene_ids)
                if preds is None:
                    inputs = inputs or self._gene_inputs(study, run.dir / SCRATCH, progress=progress)
                    preds = self._fit_fold(run, inputs, y_res, train, test, heldout, int(k))
                elif progress:
                    console.print(f"{name}: fold {k + 1}/{study.n_folds} resumed from its checkpoint")
                for g in study.gene_ids:
                    observed[g][test] = y_res[g][test]
                    predicted[g][test] = preds[g]
                if progress:
                    console.print(f"{name}: fold {k + 1}/{study.n_folds} done ({time.time() - start:.0f} s)")
        finally:
            if inputs is not None:
                inputs.close()
        for g in study.gene_ids:
            run.save_gene(g, observed[g], predicted[g])
        new = run.finish({"heldout_genes": heldout, "seconds": round(time.time() - start, 2)})
        held = new["gene_id"].isin(heldout)
        write_predictions(study.path, name, new[~held])
        write_predictions(study.path, name + "-heldout", new[held].assign(method=name + "-heldout"))
        console.print(
            f"{name}: {len(study.gene_ids) - len(heldout)} genes trained, {len(heldout)} held out, "
            f"{time.time() - start:.1f} s"
        )
        return new

    def _fit_fold(self, run, inputs, y_res: dict, train, test, heldout: list[str], k: int) -> dict:
        """Train fold ``k``'s model, write its checkpoint (model + test predictions, fold.json
        last, the whole directory atomically) and return gene -> test predictions."""
        from hapexpr.estimators.nt_multigene import multi_gene_fold  # torch

        start = time.time()
        fit, preds = multi_gene_fold(
            inputs, y_res, train, test, heldout, seed=self.options.seed + k, **self._multi_kwargs()
        )
        with atomic_dir(run.dir / FOLDS_DIR / f"fold-{k}") as d:
            fit.save(d)
            _save_predictions(d / FOLD_PREDICTIONS, inputs.genes, preds)
            write_json(
                d / FOLD_JSON,
                {"key": run.key, "fold": k, "n_test": int(np.count_nonzero(test)), "seconds": time.time() - start},
            )
        return preds

    def _multi_kwargs(self) -> dict:
        o = self.options
        return {
            "config": self.train_config(),
            "d_model": o.d_model,
            "n_layers": o.n_layers,
            "shared_scaling": o.shared_scaling,
            "device": self._train_device(),
            "precision": o.precision,
        }

    def _gene_inputs(self, study, path: Path, *, progress: bool):
        """Every study gene's distinct-haplotype embeddings in a scratch file at ``path`` (read
        from the store one gene at a time) and each person's indices into them."""
        from hapexpr.estimators.nt_multigene import FileInputs  # torch

        cohort = StudyCohort(study)
        inputs = FileInputs(path)
        try:
            for g in track_genes(study.gene_ids, f"read embeddings {self.fit_name}", enabled=progress):
                gene = cohort.gene(g)
                inputs.add(g, self.haplotype_features(gene, gene.sequences), gene.hap_index)
        except BaseException:
            inputs.close()
            raise
        return inputs

    def fit_final_shared(self, study, directory: Path, *, progress: bool) -> dict:
        """Multi-gene final fit: one model on every individual of every gene (the
        ``--holdout-genes`` genes still held out, as in ``fit``), written to ``directory``."""
        if not self.options.multi_gene:
            return super().fit_final_shared(study, directory, progress=progress)
        from hapexpr.estimators.nt_multigene import choose_holdout_genes, train_multi_gene  # torch

        o = self.options
        heldout = choose_holdout_genes(study.gene_ids, o.holdout_genes, seed=o.seed)
        expr, cov = study_targets(study)
        everyone = np.ones(len(study.sample_ids), dtype=bool)
        y = {
            g: residualise(
                transform_in_fold(expr.loc[g].to_numpy(dtype=np.float64), everyone, study.normalise), cov, everyone
            )
            for g in study.gene_ids
            if g not in heldout
        }
        with self._gene_inputs(study, directory / SCRATCH, progress=progress) as inputs:
            fit = train_multi_gene(inputs, y, everyone, holdout_genes=heldout, seed=o.seed, **self._multi_kwargs())
        fit.save(directory)
        return {"trained_genes": fit.trained_genes, "heldout_genes": heldout}

    def load_final_shared(self, directory: Path):
        from hapexpr.estimators.nt_multigene import MultiGeneFit  # torch

        return MultiGeneFit.load(directory)

    def _fit_per_gene_recorded(self, study, run, *, progress: bool) -> pd.DataFrame:
        """The per-gene CV loop (:func:`cross_validate_gene`, as ``fit_per_gene`` runs it, or
        ``gene_batch`` genes at a time), with each fold's estimator kept to record, per gene:
        each seed's out-of-fold Pearson r (``models/NAME/seeds.tsv``) and each fold's chosen
        store, layer and number of epochs (``models/NAME/choices.tsv``)."""
        expr, cov = study_targets(study)
        cohort = StudyCohort(study)
        start = time.time()
        todo = [g for g in study.gene_ids if not run.done(g)]
        genes = (self._cv_batched if self.options.batched else self._cv_one_at_a_time)(study, cohort, expr, cov, todo)
        for gene_id, X, obs, pred, fitted in track_genes(genes, f"fit {run.method}", enabled=progress, total=len(todo)):
            self._record_gene(study, run, gene_id, X, obs, pred, fitted)
        for suffix in (".seeds.tsv", ".choices.tsv"):
            parts = [
                pd.read_csv(run.gene_path(g, suffix), sep="\t", dtype={"gene_id": str})
                for g in study.gene_ids
                if run.gene_path(g, suffix).exists()
            ]
            if parts:
                with atomic_open(run.dir / suffix.lstrip(".")) as fh:
                    pd.concat(parts, ignore_index=True).to_csv(fh, sep="\t", index=False, float_format="%.6g")
        extra = {"gene_batch": self.options.gene_batch, "device": self._train_device()} if self.options.batched else {}
        rows = run.finish({"seconds": round(time.time() - start, 2), **extra})
        console.print(
            f"{run.method}: {rows['gene_id'].nunique()} genes, {self.options.seeds} seed(s) per fold, "
            f"{time.time() - start:.1f} s; per-seed r in {run.dir / 'seeds.tsv'}"
        )
        return rows

    def _cv_one_at_a_time(self, study, cohort, expr, cov, genes: list[str]) -> Iterator[tuple]:
        """(gene_id, X, observed, predicted, each fold's estimator) of :func:`cross_validate_gene`."""
        for gene_id in genes:
            X = self.features(cohort, gene_id)
            y = expr.loc[gene_id].to_numpy(dtype=np.float64)
            fitted: list = []

            def make(s: int, fitted: list = fitted):
                est = self.estimator(s)
                fitted.append(est)
                return est

            obs, pred = cross_validate_gene(
                X, y, cov, study.folds, make, seed=self.options.seed, normalise=study.normalise
            )
            yield gene_id, X, obs, pred, fitted

    def _cv_batched(self, study, cohort, expr, cov, genes: list[str]) -> Iterator[tuple]:
        """What :meth:`_cv_one_at_a_time` yields, computed ``gene_batch`` genes at a time: per
        outer fold, the same targets (normalised and residualised on the training folds) and
        seeds as :func:`cross_validate_gene`, one batched fit for the genes of the chunk."""
        from hapexpr.estimators.nt_batched import fit_genes_batched  # torch

        folds, seed, device = study.folds, self.options.seed, self._train_device()
        for first in range(0, len(genes), self.options.gene_batch):
            chunk = genes[first : first + self.options.gene_batch]
            X = {g: self.features(cohort, g) for g in chunk}
            y = {g: expr.loc[g].to_numpy(dtype=np.float64) for g in chunk}
            obs = {g: np.full(len(folds), np.nan) for g in chunk}
            pred = {g: np.full(len(folds), np.nan) for g in chunk}
            fitted: dict[str, list] = {g: [] for g in chunk}
            for k in np.unique(folds):
                test = folds == k
                train = ~test
                y_res = {g: residualise(transform_in_fold(y[g], train, study.normalise), cov, train) for g in chunk}
                for group in _same_shape(chunk, X):
                    ests = fit_genes_batched(
                        [self.estimator(seed + int(k)) for _ in group],
                        [X[g][train] for g in group],
                        [y_res[g][train] for g in group],
                        device=device,
                        precision=self.options.precision,
                    )
                    for g, est in zip(group, ests):
                        obs[g][test] = y_res[g][test]
                        pred[g][test] = est.predict(X[g][test])
                        fitted[g].append(est)
            for g in chunk:
                yield g, X[g], obs[g], pred[g], fitted[g]

    def fit_final_genes(self, study, genes: list[str]) -> Iterator[tuple] | None:
        """With ``gene_batch`` / ``device``: the final models, ``gene_batch`` genes at a time,
        on targets made as :func:`hapexpr.engines.fit_final_one` makes them."""
        if not self.options.batched:
            return None
        return self._final_batched(study, genes)

    def _final_batched(self, study, genes: list[str]) -> Iterator[tuple]:
        from hapexpr.estimators.nt_batched import fit_genes_batched  # torch

        expr, cov = study_targets(study)
        cohort = StudyCohort(study)
        everyone = np.ones(len(study.sample_ids), dtype=bool)
        for first in range(0, len(genes), self.options.gene_batch):
            chunk = genes[first : first + self.options.gene_batch]
            X = {g: self.features(cohort, g) for g in chunk}
            y = {
                g: residualise(
                    transform_in_fold(expr.loc[g].to_numpy(dtype=np.float64), everyone, study.normalise), cov, everyone
                )
                for g in chunk
            }
            done = {}
            for group in _same_shape(chunk, X):
                ests = fit_genes_batched(
                    [self.estimator(self.options.seed) for _ in group],
                    [X[g] for g in group],
                    [y[g] for g in group],
                    device=self._train_device(),
                    precision=self.options.precision,
                )
                done.update(zip(group, ests))
            for g in chunk:
                yield g, done[g]

    def _train_device(self) -> str:
        """The torch device of batched training (``auto``: CUDA when there is one)."""
        if self.options.device != "auto":
            return self.options.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _record_gene(self, study, run, gene_id: str, X, obs, pred, fitted: list) -> None:
        """Write one gene's seeds.tsv and choices.tsv parts, then its out-of-fold predictions."""
        folds, seed = study.folds, self.options.seed
        fps = self.resolved.get("fingerprints") or [self.resolved["fingerprint"]]
        layers = self.resolved.get("layers") or [None] * len(fps)
        per_seed = np.full((self.options.seeds, len(obs)), np.nan)
        choices = []
        for k, est in zip(np.unique(folds), fitted):
            test = folds == k
            per_seed[:, test] = est.predict_seeds(X[test])
            c = est.candidate_ or 0
            choices.append(
                {
                    "gene_id": gene_id,
                    "fold": int(k),
                    "fingerprint": fps[c],
                    "layer": layers[c],
                    "epochs": est.history_.get("chosen_epochs", est.history_.get("best_epoch", -1) + 1),
                }
            )
        seeds = pd.DataFrame(
            {
                "gene_id": gene_id,
                "seed": [s - fitted[0].seed + seed for s in fitted[0].seeds_],
                "pearson_r": [_pearson(obs, p) for p in per_seed],
            }
        )
        with atomic_open(run.gene_path(gene_id, ".seeds.tsv")) as fh:
            seeds.to_csv(fh, sep="\t", index=False, float_format="%.6g")
        with atomic_open(run.gene_path(gene_id, ".choices.tsv")) as fh:
            pd.DataFrame(choices).to_csv(fh, sep="\t", index=False)
        run.save_gene(gene_id, obs, pred)


FOLDS_DIR = "folds"
FOLD_JSON = "fold.json"
FOLD_PREDICTIONS = "predictions.safetensors"
SCRATCH = ".inputs.scratch"


def _save_predictions(path: Path, genes: list[str], preds: dict[str, np.ndarray]) -> None:
    """One (test people,) float64 tensor per gene, in gene order (names ``0``, ``1``, ...)."""
    from safetensors.numpy import save_file

    save_file(
        {str(i): np.ascontiguousarray(preds[g], dtype=np.float64) for i, g in enumerate(genes)},
        str(path),
        metadata={"genes": json.dumps(genes)},
    )


def _read_fold(directory: Path, key: str, genes: list[str]) -> dict[str, np.ndarray] | None:
    """gene -> test predictions of a finished fold checkpoint of this fit (``key``), else None."""
    from safetensors import safe_open

    state = directory / FOLD_JSON
    if not state.exists():
        return None
    try:
        if json.loads(state.read_text()).get("key") != key:
            return None
    except json.JSONDecodeError:
        return None
    with safe_open(str(directory / FOLD_PREDICTIONS), framework="numpy") as fh:
        if json.loads(fh.metadata()["genes"]) != list(genes):
            return None
        return {g: fh.get_tensor(str(i)) for i, g in enumerate(genes)}


def _same_shape(genes: list[str], X: dict[str, np.ndarray]) -> list[list[str]]:
    """``genes`` grouped by the shape of their features (one batched network per shape)."""
    groups: dict[tuple, list[str]] = {}
    for g in genes:
        groups.setdefault(np.shape(X[g]), []).append(g)
    return list(groups.values())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
