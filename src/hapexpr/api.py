"""The Python API, for notebooks: the same stages as the command line, returning tables.

>>> import hapexpr.api as hx
>>> study = hx.open_study("s")
>>> hx.fit(study, "elastic-net")                       # +-1 Mb, PredictDB conventions
>>> hx.fit(study, "elastic-net", cis_window=0)         # another fit: elastic-net-window
>>> metrics = hx.evaluate(study)                       # one row per fit and gene
>>> new = hx.predict(study, "elastic-net", vcf="new.vcf.gz", out="pred.tsv")

Every function takes a study (a :class:`~hapexpr.study.Study` or its path). Methods and
embedders are the registered ones (:func:`methods`, :func:`hapexpr.methods.register` to add one).
See ``docs/python-api.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hapexpr.crossval import read_predictions
from hapexpr.embed import run_embed
from hapexpr.evaluate import evaluate_study
from hapexpr.explain import explain_gene
from hapexpr.final import final_estimator, fit_final
from hapexpr.fit import run_fit
from hapexpr.fit_records import fitted_names
from hapexpr.methods import method_names
from hapexpr.predict import predict_new
from hapexpr.study import Study

__all__ = [
    "embed",
    "evaluate",
    "explain",
    "final_model",
    "fit",
    "fit_final_all",
    "fits",
    "methods",
    "open_study",
    "predict",
    "predictions",
]


def _path(study: Study | str | Path) -> Path:
    return study.path if isinstance(study, Study) else Path(study)


def open_study(path: str | Path) -> Study:
    """A prepared study directory (``hapexpr prepare``), read-only."""
    return Study.open(path)


def methods() -> list[str]:
    """Names of the registered methods."""
    return method_names()


def embed(study, *, model: str = "tiny", **options) -> dict:
    """``hapexpr embed``: every distinct haplotype once into the study's store; a summary dict."""
    return run_embed(_path(study), model=model, progress=False, **options)


def fit(study, method: str, *, name: str | None = None, overwrite: bool = False, **options) -> pd.DataFrame:
    """``hapexpr fit``: cross-validate ``method`` with ``options`` (its Options fields); returns
    its rows of predictions.tsv (``method gene_id sample_id fold observed predicted``)."""
    return run_fit(_path(study), method, options=options, name=name, overwrite=overwrite, progress=False)


def fits(study) -> list[str]:
    """Names of the completed fits in the study (as in predictions.tsv)."""
    return fitted_names(open_study(_path(study)))


def predictions(study) -> pd.DataFrame:
    """STUDY/predictions.tsv: the out-of-fold predictions of every fit."""
    return read_predictions(_path(study))


def evaluate(study) -> pd.DataFrame:
    """``hapexpr evaluate``: per fit and gene metrics (also written to STUDY/metrics.tsv)."""
    return evaluate_study(_path(study))[0]


def final_model(study, name: str, gene_id: str):
    """The estimator of fit ``name`` trained on every individual for one gene (``fit_final``
    first); None when the gene has no model."""
    return final_estimator(_path(study), name, gene_id)


def predict(study, name: str, *, vcf: str | Path, out: str | Path, overwrite: bool = False) -> pd.DataFrame:
    """``hapexpr predict``: expression of the people of a new VCF (final fit made if needed)."""
    return predict_new(_path(study), name, vcf=vcf, out=out, overwrite=overwrite, progress=False)


def explain(study, name: str, gene_id: str, *, out: str | Path, overwrite: bool = False) -> pd.DataFrame:
    """``hapexpr explain``: per-variant effects on one gene's prediction."""
    return explain_gene(_path(study), name, gene_id, out=out, overwrite=overwrite)


def fit_final_all(study, name: str, **options) -> Path:
    """``hapexpr fit-final``: fit ``name`` on every individual (options over the CV fit's)."""
    return fit_final(_path(study), name, options=options or None, progress=False)
