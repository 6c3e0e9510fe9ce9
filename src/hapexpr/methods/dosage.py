"""Methods whose features are the study's cis allele dosages (the elastic net's features).

A subclass of :class:`DosageMethod` gives only a model on a (samples, variants) float64 dosage
matrix (``dosage_estimator``/``load_dosage_estimator``); the base builds the features — the ALT
dosages (0..2) of the biallelic variants within +-``cis_window`` bp of the TSS, as columns named
``chrom:pos:ref:alt`` — and wraps the model in :class:`AlignedDosages`, which remembers the
variants it was fit on so that a new VCF with other or missing variants is aligned by name in
``predict`` (a missing one at the study's mean dosage, PrediXcan's convention; a new one has no
weight). ``explain`` removes one ALT allele from each carrier and asks the model again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.cohort import window_dosages
from hapexpr.estimators.saving import load_estimator, save_estimator
from hapexpr.methods.base import GeneModel, Method, Options, option
from hapexpr.methods.effects import EFFECT_COLUMNS, summarise_effects, window_rows

CIS_WINDOW = 1_000_000  # PredictDB's +-1 Mb


@dataclass(frozen=True)
class DosageOptions(Options):
    cis_window: int | None = option(
        CIS_WINDOW,
        "Variants within +-BP of the TSS (PredictDB: 1,000,000); 0 or a negative value: the variants "
        "of the study's sequence window.",
    )


def variant_columns(table: pd.DataFrame) -> list[str]:
    """``chrom:pos:ref:alt`` of each row of a variant table."""
    return [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(table["chrom"], table["pos"], table["ref"], table["alt"])]


class AlignedDosages:
    """A model on dosages (``fit``/``predict`` on float64 arrays, ``save``) made to take named
    dosage columns: it remembers the variants and their mean dosage at ``fit`` and aligns a
    later DataFrame to them by name before predicting."""

    KIND = "hapexpr.aligned-dosages/1"

    def __init__(self, model: GeneModel) -> None:
        self.model = model

    def fit(self, X: pd.DataFrame, y) -> AlignedDosages:
        self.columns_ = list(X.columns)
        values = X.to_numpy(dtype=np.float64)
        self.mean_dosage_ = values.mean(axis=0) if len(values) else np.zeros(len(self.columns_))
        self.model.fit(values, np.asarray(y, dtype=np.float64))
        return self

    def align(self, X: pd.DataFrame) -> np.ndarray:
        """(samples, model variants): X's columns in the model's order, a missing one at its mean."""
        if list(X.columns) == self.columns_:
            return X.to_numpy(dtype=np.float64)
        fill = pd.Series(self.mean_dosage_, index=self.columns_)
        return X.reindex(columns=self.columns_).fillna(fill).to_numpy(dtype=np.float64)

    def missing(self, X: pd.DataFrame) -> int:
        """Model variants that X lacks (``predict``'s count; every variant counts, the model's
        weights being its own business)."""
        have = set(X.columns)
        return sum(c not in have for c in self.columns_)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(self.align(X)), dtype=np.float64)

    def save(self, directory) -> None:
        self.model.save(Path(directory) / "model")
        save_estimator(
            directory,
            kind=self.KIND,
            params={},
            learned={"columns_": self.columns_},
            arrays={"mean_dosage_": np.asarray(self.mean_dosage_, dtype=np.float64)},
        )

    @classmethod
    def load(cls, directory, load_model) -> AlignedDosages:
        """Read one back; ``load_model(directory)`` reads the wrapped model."""
        _, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(load_model(Path(directory) / "model"))
        est.columns_, est.mean_dosage_ = list(learned["columns_"]), arrays["mean_dosage_"]
        return est


class DosageMethod(Method):
    """Base of methods on the cis dosages: subclass it, give ``name``, ``dosage_estimator`` and
    ``load_dosage_estimator`` (and ``Options`` subclassing :class:`DosageOptions` for options
    of your own)."""

    needs = ("genotypes",)
    Options = DosageOptions

    def dosage_estimator(self, seed: int) -> GeneModel:
        """A fresh model on (samples, variants) float64 dosages that saves itself."""
        raise NotImplementedError

    def load_dosage_estimator(self, directory: Path) -> GeneModel:
        raise NotImplementedError

    def dosages(self, cohort, gene_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(variant table, (samples, variants) float32 ALT dosages) of the cis window."""
        w = self.options.cis_window
        return window_dosages(cohort.gene(gene_id)) if w is None or w <= 0 else cohort.cis(gene_id, int(w))

    def features(self, cohort, gene_id: str) -> pd.DataFrame:
        """(samples, variants) ALT dosages, columns named ``chrom:pos:ref:alt``."""
        table, dosages = self.dosages(cohort, gene_id)
        return pd.DataFrame(dosages, columns=variant_columns(table), index=cohort.sample_ids)

    def usable(self, X: pd.DataFrame) -> bool:
        """Some variant varies among the people."""
        values = X.to_numpy(dtype=np.float64)
        return bool(values.shape[1]) and bool(np.any(values.max(axis=0) > values.min(axis=0)))

    def estimator(self, seed: int) -> AlignedDosages:
        return AlignedDosages(self.dosage_estimator(seed))

    def load_estimator(self, directory: Path) -> AlignedDosages:
        return AlignedDosages.load(directory, self.load_dosage_estimator)

    def explain(self, cohort, gene_id: str, est: AlignedDosages) -> pd.DataFrame:
        """Each carrier's change in prediction when one of their ALT alleles of a window variant
        is set back to REF (through the model); a variant the model lacks changes nothing."""
        gene = cohort.gene(gene_id)
        X = self.features(cohort, gene_id)
        base = est.predict(X)
        rows = window_rows(gene)
        changes = []
        for i, name in zip(rows, variant_columns(gene.variants.iloc[rows])):
            carriers = np.flatnonzero(gene.genotypes[i].sum(axis=1) > 0)
            if name not in X.columns:
                changes.append(np.zeros(len(carriers)))
                continue
            swapped = X.iloc[carriers].copy()
            swapped[name] -= 1.0
            changes.append(base[carriers] - est.predict(swapped))
        return summarise_effects(gene, changes)[EFFECT_COLUMNS]
