"""Cross-validation over individuals: the one loop every method is trained and judged by.

For each gene and outer fold k, expression is residualised on the covariates with coefficients
fitted on the training folds only, a fresh estimator is fitted on the training individuals, and
the held-out fold is predicted. Every individual thus gets exactly one out-of-fold prediction per
gene and method, and nothing about a held-out individual's expression reaches its prediction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from hapexpr.errors import StudyError
from hapexpr.io.atomic import atomic_open, study_lock, write_json
from hapexpr.normalise import transform_in_fold
from hapexpr.progress import console, track_genes
from hapexpr.study import Study, gene_file_name

PREDICTION_COLUMNS = ["method", "gene_id", "sample_id", "fold", "observed", "predicted"]


def residualise(y: np.ndarray, covariates: np.ndarray | None, train: np.ndarray) -> np.ndarray:
    """(samples,) residuals of y on an intercept and the covariates, with OLS coefficients
    fitted on the ``train`` rows only and applied to every row.

    covariates: (samples, covariates) or None (then only the training mean is removed).
    """
    design = np.ones((len(y), 1)) if covariates is None else np.column_stack([np.ones(len(y)), covariates])
    beta, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    return y - design @ beta


def study_targets(study: Study) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Expression (genes, samples) and covariates (samples, covariates) as the loop uses them."""
    cov = None
    if not study.residualised and study.covariates is not None:
        cov = study.covariates.loc[:, study.sample_ids].to_numpy(dtype=np.float64).T
    return study.expression.loc[:, study.sample_ids], cov


def cross_validate_gene(
    X: np.ndarray,
    y: np.ndarray,
    covariates: np.ndarray | None,
    folds: np.ndarray,
    make_estimator: Callable[[int], object],
    *,
    seed: int,
    train_folds: Iterable[int] | None = None,
    normalise: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (observed, predicted) for one gene, each (samples,) float64.

    X: (samples, ...) features; y: (samples,) raw expression; folds: (samples,) fold ids.
    ``train_folds`` restricts the loop to a subset of folds (used for nested CV by ``stack``):
    only those folds are predicted and only their individuals are ever trained on; the other
    rows come back as NaN. ``normalise``: the study's ``--normalise``, fitted on the training rows.
    """
    use = np.unique(folds) if train_folds is None else np.asarray(sorted(train_folds))
    observed = np.full(len(y), np.nan)
    predicted = np.full(len(y), np.nan)
    for k in use:
        test = folds == k
        train = np.isin(folds, use) & ~test
        y_k = transform_in_fold(y, train, normalise)  # prepare --normalise, learnt on train only
        y_res = residualise(y_k, covariates, train)
        est = make_estimator(seed + int(k))
        est.fit(X[train], y_res[train])
        observed[test] = y_res[test]
        predicted[test] = np.asarray(est.predict(X[test]), dtype=np.float64)
    return observed, predicted


def options_key(method: str, options: dict) -> str:
    return hashlib.sha256(json.dumps({"method": method, **options}, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FitRun:
    """Bookkeeping of one ``fit`` run: per-gene results land atomically under
    ``models/<method>/oof/`` so a killed run resumes, then are gathered into predictions.tsv."""

    def __init__(self, study: Study, method: str, options: dict, *, overwrite: bool) -> None:
        self.study = study
        self.method = method
        self.dir = study.path / "models" / method
        self.oof = self.dir / "oof"
        self.key = options_key(method, options)
        state = self.dir / "fit.json"
        previous = json.loads(state.read_text()) if state.exists() else None
        if previous is not None and previous.get("key") != self.key:
            if previous.get("complete") and not overwrite:
                raise StudyError(
                    f"{method} was already fit on this study with other options ({previous.get('options')})",
                    path=study.path, hint="pass --overwrite to refit it with the new options",
                )
            for f in self.oof.glob("*.tsv"):
                f.unlink()
        self.complete = bool(previous and previous.get("key") == self.key and previous.get("complete"))
        self.oof.mkdir(parents=True, exist_ok=True)
        write_json(state, {"key": self.key, "options": options, "complete": self.complete})
        self.options = options

    def previous_rows(self) -> pd.DataFrame | None:
        """This method's rows of predictions.tsv when an identical fit already completed (then
        there is nothing to do), else None."""
        if not (self.complete and (self.study.path / "predictions.tsv").exists()):
            return None
        console.print(f"{self.method}: already fit with these options; nothing to do")
        rows = read_predictions(self.study.path)
        # multi-gene mode files its never-trained genes under METHOD-heldout
        return rows[rows["method"].isin([self.method, f"{self.method}-heldout"])]

    def done(self, gene_id: str) -> bool:
        return (self.oof / (gene_file_name(gene_id)[:-4] + ".tsv")).exists()

    def save_gene(self, gene_id: str, observed: np.ndarray, predicted: np.ndarray) -> None:
        df = pd.DataFrame(
            {"method": self.method, "gene_id": gene_id, "sample_id": self.study.sample_ids,
             "fold": self.study.folds, "observed": observed, "predicted": predicted}
        )
        with atomic_open(self.oof / (gene_file_name(gene_id)[:-4] + ".tsv")) as fh:
            df.to_csv(fh, sep="\t", index=False, float_format="%.10g")

    def finish(self, extra: dict | None = None) -> pd.DataFrame:
        """Gather per-gene results and replace this method's rows in predictions.tsv."""
        parts = [pd.read_csv(self.oof / (gene_file_name(g)[:-4] + ".tsv"), sep="\t", dtype={"gene_id": str, "sample_id": str})
                 for g in self.study.gene_ids if self.done(g)]
        new = pd.concat(parts, ignore_index=True)
        write_predictions(self.study.path, self.method, new)
        write_json(self.dir / "fit.json", {"key": self.key, "options": self.options, "complete": True, **(extra or {})})
        return new


def read_predictions(study_path: Path) -> pd.DataFrame:
    path = Path(study_path) / "predictions.tsv"
    if not path.exists():
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return pd.read_csv(path, sep="\t", dtype={"method": str, "gene_id": str, "sample_id": str})


def write_predictions(study_path: Path, method: str, rows: pd.DataFrame) -> None:
    """Replace ``method``'s rows of STUDY/predictions.tsv with ``rows``, atomically; the
    other methods' rows are kept and the file is sorted by method, gene, sample order."""
    old = read_predictions(study_path)
    both = pd.concat([old[old["method"] != method], rows[PREDICTION_COLUMNS]], ignore_index=True)
    both = both.sort_values(["method", "gene_id", "fold", "sample_id"], kind="stable")
    with atomic_open(Path(study_path) / "predictions.tsv") as fh:
        both.to_csv(fh, sep="\t", index=False, float_format="%.10g")


def fit_per_gene(study: Study, method, *, options: dict, overwrite: bool = False, seed: int = 0,
                 progress: bool = True) -> pd.DataFrame:
    """Cross-validate ``method`` (``hapexpr.models.Method``) on every gene of the study."""
    with study_lock(study.path, f"fit --method {method.name}"):
        run = FitRun(study, method.name, options, overwrite=overwrite)
        if (rows := run.previous_rows()) is not None:
            return rows
        expr, cov = study_targets(study)
        folds = study.folds
        start = time.time()
        todo = [g for g in study.gene_ids if not run.done(g)]
        for gene_id in track_genes(todo, f"fit {method.name}", enabled=progress):
            gene = study.gene(gene_id)
            X = method.features(study, gene)
            y = expr.loc[gene_id].to_numpy(dtype=np.float64)
            obs, pred = cross_validate_gene(X, y, cov, folds, method.estimator, seed=seed, normalise=study.normalise)
            run.save_gene(gene_id, obs, pred)
        rows = run.finish({"seconds": round(time.time() - start, 2)})
    console.print(f"{method.name}: {rows['gene_id'].nunique()} genes x {study.samples.shape[0]} individuals "
                  f"out-of-fold ({len(study.gene_ids) - len(todo)} genes resumed) in {time.time() - start:.1f} s")
    return rows
