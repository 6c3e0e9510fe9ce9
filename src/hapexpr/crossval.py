"""Cross-validation over individuals: the one loop every method is trained and judged by.

For each gene and outer fold k, expression is residualised on the covariates with coefficients
fitted on the training folds only, a fresh estimator is fitted on the training individuals, and
the held-out fold is predicted. Every individual thus gets exactly one out-of-fold prediction per
gene and method, and nothing about a held-out individual's expression reaches its prediction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import StudyError
from hapexpr.io.atomic import atomic_open, write_json
from hapexpr.normalise import transform_in_fold
from hapexpr.progress import console
from hapexpr.study import Study, gene_file_name

FIT_FORMAT = "hapexpr.fit/2"
PREDICTION_COLUMNS = ["method", "gene_id", "sample_id", "fold", "observed", "predicted"]


def residualise(y: np.ndarray, covariates: np.ndarray | None, train: np.ndarray) -> np.ndarray:
    """(samples,) residuals of y on an intercept and the covariates, with OLS coefficients
    fitted on the ``train`` rows only and applied to every row.

    covariates: (samples, covariates) or None (then only the training mean is removed).
    """
    design = np.ones((len(y), 1)) if covariates is None else np.column_stack([np.ones(len(y)), covariates])
    beta, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    return y - design @ beta


def fold_targets(y: np.ndarray, covariates: np.ndarray | None, train: np.ndarray, normalise: str) -> np.ndarray:
    """(samples,) what every model of fold ``train`` is trained and judged on: raw expression
    ``y`` normalised (``prepare --normalise``) and then residualised on the covariates, both
    with parameters learnt from the ``train`` rows only."""
    return residualise(transform_in_fold(y, train, normalise), covariates, train)


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
        y_res = fold_targets(y, covariates, train, normalise)
        est = make_estimator(seed + int(k))
        est.fit(X[train], y_res[train])
        observed[test] = y_res[test]
        predicted[test] = np.asarray(est.predict(X[test]), dtype=np.float64)
    return observed, predicted


def options_key(record: dict) -> str:
    """16 hex digits identifying a fit: its method, options and what it resolved in the study."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FitRun:
    """Bookkeeping of one ``fit`` run: per-gene results land atomically under
    ``models/<name>/oof/`` so a killed run resumes, then are gathered into predictions.tsv.

    record: what ``models/<name>/fit.json`` says of the fit (``method``, ``options``,
    ``resolved``, ...); its hash is the key that decides whether earlier results can be kept.
    provider: the package that provided the method, recorded beside it but not in the key.
    """

    def __init__(
        self,
        study: Study,
        name: str,
        record: dict,
        *,
        overwrite: bool,
        names: list[str] | None = None,
        provider: dict | None = None,
    ) -> None:
        self.study = study
        self.method = name
        self.names = names or [name]
        self.dir = study.path / "models" / name
        self.oof = self.dir / "oof"
        self.key = options_key(record)
        state = self.dir / "fit.json"
        previous = json.loads(state.read_text()) if state.exists() else None
        if previous is not None and previous.get("key") != self.key:
            if previous.get("complete") and not overwrite:
                raise StudyError(
                    f"{name} was already fit on this study with other options ({previous.get('options')})",
                    path=study.path,
                    hint="pass --overwrite to refit it with the new options, or "
                    "--name NAME to fit these options side by side under another name",
                )
            for f in self.oof.glob("*"):
                f.unlink()
        self.complete = bool(previous and previous.get("key") == self.key and previous.get("complete"))
        self.oof.mkdir(parents=True, exist_ok=True)
        self.record = {"format": FIT_FORMAT, "name": name, "names": self.names, **record}
        if provider is not None:
            self.record["provider"] = provider
        write_json(state, {"key": self.key, **self.record, "complete": self.complete})
        self._cpu_start = cpu_seconds()

    def previous_rows(self) -> pd.DataFrame | None:
        """This fit's rows of predictions.tsv when an identical fit already completed (then
        there is nothing to do), else None."""
        if not (self.complete and (self.study.path / "predictions.tsv").exists()):
            return None
        console.print(f"{self.method}: already fit with these options; nothing to do")
        rows = read_predictions(self.study.path)
        return rows[rows["method"].isin(self.names)]

    def gene_path(self, gene_id: str, suffix: str = ".tsv") -> Path:
        """Where this fit keeps one gene's results (``suffix`` for a method's own extras)."""
        return oof_path(self.study, self.method, gene_id, suffix)

    def done(self, gene_id: str) -> bool:
        return self.gene_path(gene_id).exists()

    def save_gene(self, gene_id: str, observed: np.ndarray, predicted: np.ndarray) -> None:
        df = pd.DataFrame(
            {
                "method": self.method,
                "gene_id": gene_id,
                "sample_id": self.study.sample_ids,
                "fold": self.study.folds,
                "observed": observed,
                "predicted": predicted,
            }
        )
        with atomic_open(self.gene_path(gene_id)) as fh:
            df.to_csv(fh, sep="\t", index=False, float_format="%.10g")

    def finish(self, extra: dict | None = None) -> pd.DataFrame:
        """Gather per-gene results and replace this fit's rows in predictions.tsv. Genes the
        method had nothing to learn from (every prediction missing) get no rows."""
        parts = [
            pd.read_csv(self.gene_path(g), sep="\t", dtype={"gene_id": str, "sample_id": str})
            for g in self.study.gene_ids
            if self.done(g)
        ]
        new = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PREDICTION_COLUMNS)
        empty = new.groupby("gene_id")["predicted"].transform(lambda p: p.isna().all()) if len(new) else []
        no_model = sorted(new.loc[empty, "gene_id"].unique()) if len(new) else []
        new = new[~np.asarray(empty, dtype=bool)] if len(new) else new
        write_predictions(self.study.path, self.method, new)
        write_json(
            self.dir / "fit.json",
            {
                "key": self.key,
                **self.record,
                "complete": True,
                "genes_without_model": no_model,
                "cpu_seconds": round(cpu_seconds() - self._cpu_start, 2),
                **(extra or {}),
            },
        )
        if no_model:
            console.print(
                f"{self.method}: {len(no_model)} gene(s) have no model (nothing to learn from, "
                f"e.g. no variant): {', '.join(no_model[:5])}{' ...' if len(no_model) > 5 else ''}"
            )
        return new


def cpu_seconds() -> float:
    """CPU seconds of this process and of the child processes it has reaped (``--jobs``
    workers once their pool is shut down); Ray workers are not counted."""
    import resource

    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def oof_path(study: Study, name: str, gene_id: str, suffix: str = ".tsv") -> Path:
    """Where fit ``name`` keeps one gene's out-of-fold results (``suffix`` for a method's extras)."""
    return study.path / "models" / name / "oof" / (gene_file_name(gene_id)[: -len(".npz")] + suffix)


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
