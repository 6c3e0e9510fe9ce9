"""Where the per-gene work runs: in this process, in N local processes, or on Ray.

Every engine computes the same thing per gene (:func:`cross_validate_one` for ``fit``,
:func:`fit_final_one` for ``fit-final``: the method rebuilt from its fit record, its features,
the study's folds, normalisation and residualisation), so results are the same byte for byte
whichever runs them. Workers only compute and return them; the driver, which holds the study
lock, writes each gene's result as it arrives (one writer per study), so a killed driver or
worker loses only the genes not yet written and the same command resumes. Workers rebuild the method from the registry, so
a method must be importable in a fresh process (a module, or an entry point).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import cross_validate_gene, residualise, study_targets
from hapexpr.errors import InputError
from hapexpr.methods.registry import build
from hapexpr.normalise import transform_in_fold
from hapexpr.study import Study

ENGINES = ("local", "ray")

_WORKER: dict = {}  # per worker process: (study path, fit key) -> (study, method, targets)


def cross_validate_one(study: Study, method, gene_id: str, targets=None) -> tuple[str, np.ndarray, np.ndarray]:
    """(gene_id, observed, predicted) of one gene; NaN predictions when the method has nothing
    to learn from for it."""
    expr, cov = targets if targets is not None else study_targets(study)
    X = method.features(StudyCohort(study), gene_id)
    y = expr.loc[gene_id].to_numpy(dtype=np.float64)
    if not method.usable(X):
        return gene_id, np.full(len(y), np.nan), np.full(len(y), np.nan)
    obs, pred = cross_validate_gene(
        X, y, cov, study.folds, method.estimator, seed=method.options.seed, normalise=study.normalise
    )
    return gene_id, obs, pred


def fit_final_one(study: Study, method, gene_id: str, targets=None):
    """(gene_id, estimator fit on every individual, or None when the method has nothing to learn
    from for this gene)."""
    expr, cov = targets if targets is not None else study_targets(study)
    X = method.features(StudyCohort(study), gene_id)
    if not method.usable(X):
        return gene_id, None
    everyone = np.ones(len(study.sample_ids), dtype=bool)
    y = expr.loc[gene_id].to_numpy(dtype=np.float64)
    y = residualise(transform_in_fold(y, everyone, study.normalise), cov, everyone)  # prepare --normalise
    return gene_id, method.estimator(method.options.seed).fit(X, y)


WORK = {"cv": cross_validate_one, "final": fit_final_one}


def _rebuild(study_path: str, record: dict):
    key = (study_path, record["key"])
    if key not in _WORKER:
        study = Study.open(study_path)
        # a worker (a Ray node) without the method's plugin says which package to install
        method = build(
            record["method"], record["options"], fit_name=record["name"], provider=record.get("provider")
        ).bind(study)
        method.resolved = record["resolved"]
        _WORKER.clear()
        _WORKER[key] = (study, method, study_targets(study))
    return _WORKER[key]


def _worker_gene(kind: str, study_path: str, record: dict, gene_id: str):
    study, method, targets = _rebuild(study_path, record)
    return WORK[kind](study, method, gene_id, targets)


def _init_worker() -> None:
    # One core per worker: N workers on N cores, not N x BLAS threads.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    _die_with_parent()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _die_with_parent() -> None:
    """Linux: a worker is sent SIGTERM when the driver dies (killed or interrupted), so no orphan
    keeps computing; elsewhere nothing is done."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_genes(
    study: Study,
    method,
    record: dict,
    genes: list[str],
    *,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    kind: str = "cv",
) -> Iterator[tuple]:
    """For every gene of ``genes``, as they finish: ``(gene_id, observed, predicted)`` of the
    cross-validation (``kind="cv"``), or ``(gene_id, estimator or None)`` of the fit on every
    individual (``kind="final"``)."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", hint="use --engine local or --engine ray")
    if jobs < 1:
        raise InputError(f"--jobs {jobs} must be at least 1")
    if engine == "ray":
        yield from _ray_genes(kind, study, record, genes, ray_address=ray_address)
    elif jobs == 1:
        targets = study_targets(study)
        for gene_id in genes:
            yield WORK[kind](study, method, gene_id, targets)
    else:
        yield from _pool_genes(kind, study, record, genes, jobs)


def _pool_genes(kind: str, study: Study, record: dict, genes: list[str], jobs: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        futures = [pool.submit(_worker_gene, kind, str(study.path), record, g) for g in genes]
        for fut in as_completed(futures):
            yield fut.result()


def _ray_genes(kind: str, study: Study, record: dict, genes: list[str], *, ray_address: str | None):
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray", hint="pip install 'hapexpr[distributed]'") from None
    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(_ray_task)
        pending = [task.remote(kind, str(study.path.resolve()), record, g) for g in genes]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def _ray_task(kind: str, study_path: str, record: dict, gene_id: str):
    _init_worker()
    return _worker_gene(kind, study_path, record, gene_id)
