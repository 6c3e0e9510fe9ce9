"""``elastic-net``: PrediXcan / PredictDB-style elastic net on the allele dosages of the cis window.

Features are the ALT dosages (0..2) of every biallelic variant within +-``cis_window`` bp of the
TSS (+-1 Mb by default, whatever the sequence window), or with ``cis_from: gene`` from gene start
- ``cis_window`` to gene end + ``cis_window`` (PredictDB's window), or with ``cis_window: null``
the variants touching the study's sequence window (the variants the sequence methods see). The
estimator is :class:`hapexpr.estimators.elastic_net.ElasticNetModel`; conventions and solver in
``docs/elastic-net.md``.

Columns carry their variant (``chrom:pos:ref:alt``), so the final model predicts new people from
their own VCF by matching variants on position and alleles: a model variant the new VCF lacks
gets the study's mean dosage (PrediXcan's convention), a new variant has no weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.cohort import window_dosages
from hapexpr.errors import InputError
from hapexpr.estimators.elastic_net import ElasticNetModel
from hapexpr.estimators.saving import load_estimator, save_estimator
from hapexpr.methods.base import Method, Options, option
from hapexpr.methods.effects import EFFECT_COLUMNS, summarise_effects
from hapexpr.methods.registry import register

PREDICTDB_WINDOW = 1_000_000
CIS_FROM = ("tss", "gene")


@dataclass(frozen=True)
class ElasticNetOptions(Options):
    cis_window: int | None = option(
        PREDICTDB_WINDOW,
        "Variants within +-BP of the TSS (PredictDB: 1,000,000); 0 or a negative "
        "value: the variants of the study's sequence window.",
    )
    maf: float = option(0.01, "Keep variants with minor allele frequency above this (in the training folds).")
    alpha: float = option(0.5, "Elastic-net mixing (glmnet's alpha; 1 = lasso).")
    inner_folds: int = option(10, "Inner CV folds choosing the penalty.")
    drop_ambiguous: bool = option(False, "Leave out strand-ambiguous SNPs (A/T, C/G), as PredictDB's pipeline does.")
    cis_from: str = option(
        "tss",
        "Where the +-cis-window is measured from: tss (TSS +- window) or gene (gene start - window to "
        "gene end + window, PredictDB's window).",
    )

    def __post_init__(self) -> None:
        if self.cis_from not in CIS_FROM:
            raise InputError(f"--cis-from {self.cis_from!r} is not one of {', '.join(CIS_FROM)}")


def column_names(table: pd.DataFrame) -> list[str]:
    return [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(table["chrom"], table["pos"], table["ref"], table["alt"])]


class DosageElasticNet:
    """An :class:`ElasticNetModel` over named dosage columns (a DataFrame, one column per
    variant): remembers which variants it was fit on and their mean dosage, so a later
    DataFrame with other or missing variants is aligned by name before predicting."""

    KIND = "hapexpr.dosage-elastic-net/1"

    def __init__(self, **params) -> None:
        self.params = params

    def fit(self, X: pd.DataFrame, y) -> DosageElasticNet:
        self.columns_ = list(X.columns)
        values = X.to_numpy(dtype=np.float64)
        self.mean_dosage_ = values.mean(axis=0) if len(values) else np.zeros(len(self.columns_))
        self.model_ = ElasticNetModel(**self.params).fit(values, y)
        return self

    def align(self, X: pd.DataFrame) -> np.ndarray:
        """(samples, model variants) dosages: X's columns in the model's order, a variant X
        lacks at the training mean dosage."""
        if list(X.columns) == self.columns_:
            return X.to_numpy(dtype=np.float64)
        fill = pd.Series(self.mean_dosage_, index=self.columns_)
        return X.reindex(columns=self.columns_).fillna(fill).to_numpy(dtype=np.float64)

    def missing(self, X: pd.DataFrame) -> int:
        """Model variants with a non-zero weight that X lacks."""
        have = set(X.columns)
        return int(sum(c not in have and w != 0 for c, w in zip(self.columns_, self.model_.coef_)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self.align(X))

    @property
    def coef_(self) -> np.ndarray:
        return self.model_.coef_

    def save(self, directory) -> None:
        self.model_.save(Path(directory) / "model")
        save_estimator(
            directory,
            kind=self.KIND,
            params=self.params,
            learned={"columns_": self.columns_},
            arrays={"mean_dosage_": np.asarray(self.mean_dosage_, dtype=np.float64)},
        )

    @classmethod
    def load(cls, directory) -> DosageElasticNet:
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        est.columns_, est.mean_dosage_ = list(learned["columns_"]), arrays["mean_dosage_"]
        est.model_ = ElasticNetModel.load(Path(directory) / "model")
        return est


@register
class ElasticNet(Method):
    """Elastic net on the dosages of the cis window (PrediXcan)."""

    name = "elastic-net"
    Options = ElasticNetOptions
    needs = ("genotypes",)
    summary = "PrediXcan/PredictDB elastic net on allele dosages within +-1 Mb of the TSS"
    order = 20
    reference = True

    @classmethod
    def default_name(cls, options: ElasticNetOptions) -> str:
        w = options.cis_window
        if w is None or w <= 0:
            return f"{cls.name}-window"
        base = cls.name if w == PREDICTDB_WINDOW else f"{cls.name}-{_bp(w)}"
        return f"{base}-gene" if options.cis_from == "gene" else base

    @classmethod
    def options_for_name(cls, name: str) -> dict | None:
        if name.endswith("-gene"):
            options = cls.options_for_name(name.removesuffix("-gene"))
            return None if options is None or options.get("cis_window") == 0 else {**options, "cis_from": "gene"}
        if name == cls.name:
            return {}
        if name == f"{cls.name}-window":
            return {"cis_window": 0}
        rest = name.removeprefix(f"{cls.name}-")
        units = {"mb": 1_000_000, "kb": 1000, "bp": 1}
        for unit, scale in units.items():
            if rest != name and rest.endswith(unit) and rest[: -len(unit)].isdigit():
                return {"cis_window": int(rest[: -len(unit)]) * scale}
        return None

    def heritability_column(self, study) -> str:
        """``h2_cis_wide`` when the features reach past the sequence window (the cis store)."""
        w = self.options.cis_window
        return "h2_cis" if w is None or w <= study.window // 2 else "h2_cis_wide"

    def dosages(self, cohort, gene_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        w = self.options.cis_window
        if w is None or w <= 0:
            table, dosages = window_dosages(cohort.gene(gene_id))
        else:
            table, dosages = cohort.cis(gene_id, int(w), around=self.options.cis_from)
        if self.options.drop_ambiguous:
            keep = ~strand_ambiguous(table["ref"], table["alt"])
            table, dosages = table[keep].reset_index(drop=True), dosages[:, keep]
        return table, dosages

    def features(self, cohort, gene_id: str) -> pd.DataFrame:
        """(samples, variants) ALT dosages, columns named ``chrom:pos:ref:alt``."""
        table, dosages = self.dosages(cohort, gene_id)
        return pd.DataFrame(dosages, columns=column_names(table), index=cohort.sample_ids)

    def variant_table(self, cohort, gene_id: str) -> pd.DataFrame:
        """``variant_id chrom pos ref alt`` of every column of :meth:`features`."""
        return self.dosages(cohort, gene_id)[0]

    def usable(self, X: pd.DataFrame) -> bool:
        if X.shape[1] == 0:
            return False
        freq = X.to_numpy(dtype=np.float64).mean(axis=0) / 2
        return bool(np.any(np.minimum(freq, 1 - freq) > self.options.maf))

    def estimator(self, seed: int) -> DosageElasticNet:
        o = self.options
        return DosageElasticNet(alpha=o.alpha, maf=o.maf, inner_folds=o.inner_folds, seed=seed)

    def load_estimator(self, directory: Path) -> DosageElasticNet:
        return DosageElasticNet.load(directory)

    def explain(self, cohort, gene_id: str, est: DosageElasticNet) -> pd.DataFrame:
        """Weight of each window variant, and each carrier's change in prediction when one of
        their ALT alleles is removed (through the model, not assumed)."""
        gene = cohort.gene(gene_id)
        X = self.features(cohort, gene_id)
        base = est.predict(X)
        v = gene.variants[gene.variants["in_window"].to_numpy(dtype=bool)]
        names = column_names(v)
        column = {c: j for j, c in enumerate(est.columns_)}
        weights, changes = [], []
        for i, name in zip(np.flatnonzero(gene.variants["in_window"].to_numpy(dtype=bool)), names):
            carriers = np.flatnonzero(gene.genotypes[i].sum(axis=1) > 0)
            j = column.get(name)
            weights.append(0.0 if j is None else float(est.coef_[j]))
            if j is None or name not in X.columns:
                changes.append(np.zeros(len(carriers)))
                continue
            swapped = X.iloc[carriers].copy()
            swapped[name] -= 1.0  # one ALT allele back to REF
            changes.append(base[carriers] - est.predict(swapped))
        table = summarise_effects(gene, changes)
        table["weight"] = weights
        return table[[*EFFECT_COLUMNS, "weight"]]


def strand_ambiguous(ref, alt) -> np.ndarray:
    """(variants,) bool: SNPs whose alleles are their own reverse complement (A/T, C/G), whose
    strand cannot be told from the alleles when matching to a GWAS."""
    pairs = {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")}
    return np.array([(str(r).upper(), str(a).upper()) in pairs for r, a in zip(ref, alt)], dtype=bool)


def _bp(window: int) -> str:
    if window % 1_000_000 == 0:
        return f"{window // 1_000_000}mb"
    if window % 1000 == 0:
        return f"{window // 1000}kb"
    return f"{window}bp"
