"""``nt-transformer``: the 2024 study's transformer over the binned embeddings of both haplotypes.

Per gene (one model per gene, under the cross-validation loop) or, with ``multi_gene``, one
model with shared weights across genes trained per outer fold, a seeded fraction of genes never
trained on and reported under ``<name>-heldout``. The estimator and its training live in
:mod:`hapexpr.estimators` (imported when a fit starts: they import torch). Architecture,
defaults and checkpoints: ``docs/nt-transformer.md``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import residualise, study_targets, write_predictions
from hapexpr.errors import InputError
from hapexpr.methods.base import option
from hapexpr.methods.embedding import EmbeddingMethod, EmbeddingOptions
from hapexpr.methods.registry import register
from hapexpr.normalise import transform_in_fold
from hapexpr.progress import console
from hapexpr.study import GeneData


@dataclass(frozen=True)
class NTTransformerOptions(EmbeddingOptions):
    pairwise_weight: float | None = option(None, "Weight of the pairwise-difference loss (default in docs/nt-transformer.md).")
    max_epochs: int | None = option(None, "Epoch cap (early stopping usually ends sooner).")
    d_model: int = option(32, "Width of the transformer.")
    n_layers: int = option(1, "Transformer layers.")
    multi_gene: bool = option(False, "One model shared across genes (reported as NAME and NAME-heldout).")
    holdout_genes: float = option(0.0, "With multi_gene: fraction of genes never trained on.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_genes < 1.0:
            raise InputError(f"holdout_genes must be in [0, 1), got {self.holdout_genes}")
        if self.holdout_genes and not self.multi_gene:
            raise InputError("holdout_genes needs multi_gene", hint="add --multi-gene")


@register
class NTTransformer(EmbeddingMethod):
    name = "nt-transformer"
    Options = NTTransformerOptions
    summary = "the 2024 study's transformer over binned embeddings of both haplotypes"
    order = 10

    def __init__(self, options=None, *, name=None) -> None:
        super().__init__(options, name=name)
        self.final = not self.options.multi_gene

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
        given = {k: v for k, v in (("pairwise_weight", o.pairwise_weight), ("max_epochs", o.max_epochs)) if v is not None}
        return TrainConfig(seed=o.seed if seed is None else seed, **given)

    def resolve(self, study) -> dict:
        # Every training setting the fit depends on, so a change of a default refits.
        return {**super().resolve(study), "train": dataclasses.asdict(self.train_config())}

    def haplotype_features(self, gene: GeneData, sequences: list[bytes]) -> np.ndarray:
        """(unique, bins, dim) binned embeddings."""
        return self.embeddings(gene, sequences)[0]

    def estimator(self, seed: int):
        from hapexpr.estimators.nt_transformer import NTTransformerModel  # torch

        return NTTransformerModel(d_model=self.options.d_model, n_layers=self.options.n_layers,
                                  train_config=self.train_config(), seed=seed)

    def load_estimator(self, directory: Path):
        from hapexpr.estimators.nt_transformer import NTTransformerModel  # torch

        return NTTransformerModel.load(directory)

    def fit_study(self, study, run, *, progress: bool) -> pd.DataFrame | None:
        """Multi-gene mode: one shared-weight model per outer fold over every gene."""
        if not self.options.multi_gene:
            return None
        from hapexpr.estimators.nt_training import choose_holdout_genes, multi_gene_fold  # torch

        o, name = self.options, self.fit_name
        config = self.train_config()
        heldout = choose_holdout_genes(study.gene_ids, o.holdout_genes, seed=o.seed)
        start = time.time()
        expr, cov = study_targets(study)
        cohort = StudyCohort(study)
        X = {g: np.asarray(self.features(cohort, g), dtype=np.float32) for g in study.gene_ids}
        y_raw = {g: expr.loc[g].to_numpy(dtype=np.float64) for g in study.gene_ids}
        folds = study.folds
        observed = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        predicted = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        for k in np.unique(folds):
            test, train = folds == k, folds != k
            y_res = {g: residualise(transform_in_fold(y, train, study.normalise), cov, train) for g, y in y_raw.items()}
            preds = multi_gene_fold(X, y_res, train, test, heldout, config=config, seed=o.seed + int(k),
                                    d_model=o.d_model, n_layers=o.n_layers)
            for g in study.gene_ids:
                observed[g][test] = y_res[g][test]
                predicted[g][test] = preds[g]
            if progress:
                console.print(f"{name}: fold {k + 1}/{study.n_folds} done ({time.time() - start:.0f} s)")
        for g in study.gene_ids:
            run.save_gene(g, observed[g], predicted[g])
        new = run.finish({"heldout_genes": heldout, "seconds": round(time.time() - start, 2)})
        held = new["gene_id"].isin(heldout)
        write_predictions(study.path, name, new[~held])
        write_predictions(study.path, name + "-heldout", new[held].assign(method=name + "-heldout"))
        console.print(f"{name}: {len(study.gene_ids) - len(heldout)} genes trained, {len(heldout)} held out, "
                      f"{time.time() - start:.1f} s")
        return new
