"""``hapexpr fit``: a registered method, bound to the study, driven through cross-validation.

Nothing here knows a method by name: the registry (:mod:`hapexpr.methods`) builds it from its
options, the method says what it needs and may fit the whole study itself (multi-gene models,
stacking); otherwise the per-gene loop of :mod:`hapexpr.crossval` runs it. Each fit is stored
under its own name (``--name``, or the method's default name for its options), so variants of
one method live side by side.
"""

from __future__ import annotations

import time

import pandas as pd

from hapexpr.crossval import FitRun
from hapexpr.engines import run_genes
from hapexpr.io.atomic import study_lock
from hapexpr.methods import Method, build, provider
from hapexpr.progress import console, track_genes
from hapexpr.study import Study


def run_fit(
    study_path,
    method: str,
    *,
    options: dict | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Fit registered ``method`` with ``options`` (a dict of its Options' fields) under the
    study's cross-validation; returns its rows of predictions.tsv. ``engine``/``jobs``: where
    the per-gene work runs (:mod:`hapexpr.engines`)."""
    study = Study.open(study_path)
    m = build(method, options, fit_name=name, where=f"fit --method {method}").bind(study)
    return fit_method(
        study, m, overwrite=overwrite, progress=progress, engine=engine, jobs=jobs, ray_address=ray_address
    )


def fit_method(
    study: Study,
    m: Method,
    *,
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Cross-validate a bound method; resumable, refuses to replace a fit made with other options."""
    with study_lock(study.path, f"fit --method {m.name} --name {m.fit_name}"):
        run = FitRun(
            study,
            m.fit_name,
            {**m.fit_record(), "models_used": m.models_used()},
            overwrite=overwrite,
            names=m.names(),
            provider=provider(m.name),
        )
        if (rows := run.previous_rows()) is not None:
            return rows
        start = time.time()
        m.prepare(study, progress=progress)
        rows = m.fit_study(study, run, progress=progress)
        if rows is None:
            rows = fit_per_gene(study, m, run, progress=progress, engine=engine, jobs=jobs, ray_address=ray_address)
    # The time of everything the stage did (the method's own preparation included).
    console.print(
        f"{m.fit_name}: {rows['gene_id'].nunique()} genes x {len(study.sample_ids)} individuals "
        f"out-of-fold in {time.time() - start:.1f} s"
    )
    return rows


def fit_per_gene(
    study: Study,
    method,
    run: FitRun,
    *,
    progress: bool = True,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Cross-validate ``method`` (a bound :class:`hapexpr.methods.Method`) on every gene not
    done yet, here or on ``engine`` with ``jobs`` workers (:mod:`hapexpr.engines`); returns its
    rows of predictions.tsv. Each gene's result is written as it arrives, so a killed run
    resumes where it stopped."""
    start = time.time()
    todo = [g for g in study.gene_ids if not run.done(g)]
    results = run_genes(
        study, method, {**run.record, "key": run.key}, todo, engine=engine, jobs=jobs, ray_address=ray_address
    )
    for gene_id, obs, pred in track_genes(results, f"fit {run.method}", enabled=progress, total=len(todo)):
        run.save_gene(gene_id, obs, pred)
    if len(todo) < len(study.gene_ids):
        console.print(f"{run.method}: {len(study.gene_ids) - len(todo)} genes resumed from an earlier run")
    return run.finish({"seconds": round(time.time() - start, 2), "engine": engine, "jobs": jobs})
