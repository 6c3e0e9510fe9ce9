"""Final fits: one model per gene of a fit trained on ALL study individuals, for new people.

Cross-validation (``hapexpr fit``) judges a method; ``predict`` and ``explain`` need the model
that uses every individual. Expression is residualised on the covariates exactly as in the CV
loop (:func:`hapexpr.crossval.residualise`), with every individual as the training set, so
predictions are on the scale of the ``observed`` column of ``predictions.tsv``. The method and
its options are those of the fit of the same name (its ``fit.json``) unless given.

Layout (``docs/predict-explain.md``)::

    STUDY/models/<name>/final/final.json       format, method, options, key, complete
    STUDY/models/<name>/final/<gene>/gene.json  what was fit (written last)
    STUDY/models/<name>/final/<gene>/...        the estimator's own files (estimator.json +
                                                weights.safetensors, or a checkpoint)

Every file is self-describing and unpickled. A gene directory is written beside its final name
and renamed into place, so it is whole or absent; a killed run resumes at the first gene missing.

A method whose final model is shared by every gene (``Method.shared_final``: the multi-gene
transformer) writes one checkpoint instead of gene directories, also renamed into place whole
(a killed run fits it again)::

    STUDY/models/<name>/final/final.json       as above, plus "shared": "shared" and what the
                                                method records (trained and held-out genes)
    STUDY/models/<name>/final/shared/...       the method's own checkpoint

Its ``estimator(gene_id)`` serves every study gene, and genes outside the study
(:func:`load_final_new_gene`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from hapexpr.crossval import options_key, study_targets
from hapexpr.engines import run_genes
from hapexpr.errors import StudyError
from hapexpr.fit_records import fitted_or_default
from hapexpr.io.atomic import atomic_dir, study_lock, write_json
from hapexpr.methods.base import Method
from hapexpr.methods.registry import build, provider
from hapexpr.progress import console, track_genes
from hapexpr.study import Study, gene_file_name

FINAL_FORMAT = "hapexpr.final/2"
GENE_JSON = "gene.json"
SHARED_DIR = "shared"


def final_dir(study: Study, name: str) -> Path:
    return study.path / "models" / name / "final"


def gene_dir(study: Study, name: str, gene_id: str) -> Path:
    return final_dir(study, name) / gene_file_name(gene_id)[: -len(".npz")]


def final_method(study: Study, name: str, options: dict | None = None, *, fit_name: str | None = None) -> Method:
    """The method of fit ``name`` (from its fit.json), with ``options`` put over its options;
    ``fit_name``: store it under that name instead (a variant with no cross-validated fit)."""
    if fit_name is not None and (study.path / "models" / fit_name / "fit.json").exists():
        held, wanted = fitted_or_default(study, fit_name).name, fitted_or_default(study, name).name
        if held != wanted:
            raise StudyError(
                f"{fit_name} is a fit of {held} in this study, not of {wanted}",
                path=study.path / "models" / fit_name,
                hint="choose another --name",
            )
        name, fit_name = fit_name, None  # a fit of that name exists: its own record decides
    m = fitted_or_default(study, name, options, where=f"fit-final --method {name}")
    if fit_name is not None:
        m = build(m.name, m.options.to_dict(), fit_name=fit_name, where=f"fit-final --method {name}").bind(study)
    if not (m.final or m.shared_final):
        raise StudyError(
            f"{name} has no model to fit on all individuals",
            hint="use one of the per-gene fits of the study",
        )
    return m


def fit_final(
    study_path,
    name: str,
    *,
    options: dict | None = None,
    fit_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
) -> Path:
    """Fit ``name`` on every individual of every gene; returns ``models/<name>/final``
    (``models/<fit_name>/final`` when ``fit_name`` is given: e.g. ``ridge-probe`` on another
    embedding store, stored as ``ridge-probe-kmer`` without a cross-validated fit first).

    A final fit already complete with the same options is kept; one made with other options is
    refused unless ``overwrite``. ``engine``/``jobs``: where the per-gene fits run
    (:mod:`hapexpr.engines`; estimators come back to this process, which writes them).
    """
    study = Study.open(study_path)
    m = final_method(study, name, options, fit_name=fit_name)
    for required in m.final_requires():  # e.g. a stack's bases; each takes the study's lock itself
        ensure_final(study.path, required)
    record = {"format": FINAL_FORMAT, **m.fit_record(), "name": m.fit_name}
    key = options_key(record)
    record["provider"] = provider(m.name)  # not part of the key: a new version of the package is the same fit
    root = final_dir(study, m.fit_name)
    with study_lock(study.path, f"fit-final --method {m.fit_name}"):
        state = root / "final.json"
        previous = json.loads(state.read_text()) if state.exists() else None
        if previous is not None and previous.get("key") != key:
            if not overwrite and previous.get("complete"):
                raise StudyError(
                    f"{m.fit_name} already has a final fit made with other options ({previous.get('options')})",
                    path=root,
                    hint="pass --overwrite to refit it with the new options",
                )
            shutil.rmtree(root)
        if previous is not None and previous.get("key") == key and previous.get("complete"):
            console.print(f"{m.fit_name}: final fit on all individuals already complete; nothing to do")
            return root
        root.mkdir(parents=True, exist_ok=True)
        write_json(state, {**record, "key": key, "complete": False})
        m.prepare(study, progress=progress)
        if m.shared_final:
            return _fit_shared(study, m, {**record, "key": key}, root, progress=progress)
        cov = study_targets(study)[1]
        todo = [g for g in study.gene_ids if not _done(study, m.fit_name, g, key)]
        start, no_model = time.time(), []
        results = m.fit_final_genes(study, todo)
        if results is None:
            results = run_genes(
                study, m, {**record, "key": key}, todo, engine=engine, jobs=jobs, ray_address=ray_address, kind="final"
            )
        for gene_id, est in track_genes(results, f"fit-final {m.fit_name}", enabled=progress, total=len(todo)):
            if est is None:
                no_model.append(gene_id)
                continue
            info = {
                "format": FINAL_FORMAT,
                "method": m.name,
                "name": m.fit_name,
                "gene_id": gene_id,
                "key": key,
                "options": m.options.to_dict(),
                "n_samples": len(study.sample_ids),
                "residualised_on": "intercept" if cov is None else f"intercept + {cov.shape[1]} covariates",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            with atomic_dir(gene_dir(study, m.fit_name, gene_id)) as d:
                est.save(d)
                write_json(d / GENE_JSON, info)
        write_json(
            state,
            {
                **record,
                "key": key,
                "complete": True,
                "n_genes": len(study.gene_ids),
                "genes_without_model": no_model,
                "seconds": round(time.time() - start, 2),
            },
        )
    console.print(
        f"{m.fit_name}: final fit on all {len(study.sample_ids)} individuals, {len(todo)} genes fit "
        f"({len(study.gene_ids) - len(todo)} resumed) in {time.time() - start:.1f} s -> {root}"
    )
    return root


def _fit_shared(study: Study, m: Method, record: dict, root: Path, *, progress: bool) -> Path:
    """The final fit of a method with one model for every gene, written whole into
    ``root/shared`` (caller holds the study lock)."""
    start = time.time()
    with atomic_dir(root / SHARED_DIR) as d:
        info = m.fit_final_shared(study, d, progress=progress)
    seconds = round(time.time() - start, 2)
    write_json(
        root / "final.json",
        {**record, **info, "complete": True, "shared": SHARED_DIR, "n_genes": len(study.gene_ids), "seconds": seconds},
    )
    console.print(
        f"{m.fit_name}: final fit of one model on all {len(study.sample_ids)} individuals x "
        f"{len(study.gene_ids)} genes in {seconds:.1f} s -> {root / SHARED_DIR}"
    )
    return root


def ensure_final(study_path, name: str) -> Method:
    """The method of a complete final fit of ``name``, fitting it (and saying so) when there is
    none yet; an existing complete final fit is used whatever its options."""
    study = Study.open(study_path)
    if not (final_dir(study, name) / "final.json").exists():  # a final fit alone (fit-final --name) has no fit.json
        name = fitted_or_default(study, name).fit_name
    state = final_dir(study, name) / "final.json"
    previous = json.loads(state.read_text()) if state.exists() else None
    if previous and previous.get("format") != FINAL_FORMAT:
        raise StudyError(
            f"the final fit of {name} was made by an older hapexpr ({previous.get('format')})",
            path=state,
            hint=f"refit it: `hapexpr fit-final {study.path} --method {name} --overwrite`",
        )
    if not (previous and previous.get("complete")):
        console.print(
            f"{name}: {'resuming the interrupted' if previous else 'no'} final fit on all individuals"
            f"{'' if previous else ' yet; fitting it now with the options of `hapexpr fit`'} "
            f"(`hapexpr fit-final {study.path} --method {name}` does this alone)"
        )
        if previous:  # resume with the interrupted run's own method, options and name
            fit_final(study.path, previous["method"], options=previous["options"], fit_name=name, progress=True)
        else:
            fit_final(study.path, name, progress=True)
    return final_fit_method(study, name)


def final_or_fitted(study: Study, name: str) -> Method:
    """The method ``predict``/``explain`` would use for ``name``, without fitting anything: its
    final fit's (a ``fit-final --name`` variant has no fit.json), else the fit's or the default's.
    For checking inputs before :func:`ensure_final` starts a long fit."""
    state = final_dir(study, name) / "final.json"
    if state.exists() and not (study.path / "models" / name / "fit.json").exists():
        record = json.loads(state.read_text())
        return build(record["method"], record["options"], fit_name=name)
    return fitted_or_default(study, name)


def final_fit_method(study: Study, name: str) -> Method:
    """The method, bound to the study, of the complete final fit ``name`` (as it was fit)."""
    state = final_dir(study, name) / "final.json"
    if not state.exists():
        raise StudyError(
            f"no final {name} fit", path=state.parent, hint=f"run `hapexpr fit-final {study.path} --method {name}`"
        )
    record = json.loads(state.read_text())
    if record.get("format") != FINAL_FORMAT or not record.get("complete"):
        raise StudyError(
            f"the final fit of {name} is {'incomplete' if record.get('format') == FINAL_FORMAT else 'from an older hapexpr'}",
            path=state,
            hint=f"run `hapexpr fit-final {study.path} --method {name}` (with --overwrite for an old one)",
        )
    m = build(record["method"], record["options"], fit_name=name, provider=record.get("provider")).bind(study)
    if record.get("resolved"):
        m.resolved = record["resolved"]
    return m


def final_estimator(study_path, name: str, gene_id: str):
    """The final estimator of fit ``name`` for one gene (None: the gene has no model)."""
    study = Study.open(study_path)
    return load_final(study, final_fit_method(study, name), gene_id)


def load_final(study: Study, method: Method, gene_id: str):
    """The final estimator of ``method`` (a bound Method of a complete final fit) for one gene,
    or None when the gene has no model (nothing to learn from)."""
    if method.shared_final:
        if gene_id not in study.gene_ids:
            raise StudyError(f"{gene_id} is not a gene of the study", path=study.path)
        return load_final_new_gene(study, method, gene_id)
    directory = gene_dir(study, method.fit_name, gene_id)
    path = directory / GENE_JSON
    if not path.exists():
        state = json.loads((final_dir(study, method.fit_name) / "final.json").read_text())
        if gene_id in state.get("genes_without_model", []):
            return None
        raise StudyError(
            f"no final {method.fit_name} fit for gene {gene_id}",
            path=directory,
            hint=f"run `hapexpr fit-final {study.path} --method {method.fit_name}`",
        )
    info = json.loads(path.read_text())
    if info.get("format") != FINAL_FORMAT:
        raise StudyError(
            f"final fit format {info.get('format')!r} is not {FINAL_FORMAT!r}",
            path=path,
            hint="refit it with `hapexpr fit-final --overwrite`",
        )
    est = method.load_estimator(directory)
    est.final_info_ = info
    return est


def _done(study: Study, name: str, gene_id: str, key: str) -> bool:
    path = gene_dir(study, name, gene_id) / GENE_JSON
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def load_final_new_gene(study: Study, method: Method, gene_id: str):
    """A per-gene estimator of ``method``'s shared final model (``Method.shared_final``) for
    any gene, in the study or not; the shared model is read once per method object."""
    if not method.shared_final:
        raise StudyError(
            f"{method.fit_name} has one model per study gene; it cannot predict a gene it was not fit on",
            hint="predict genes outside the study with a multi-gene fit (`--multi-gene`)",
        )
    shared = method.__dict__.get("_final_shared")
    if shared is None:
        shared = method._final_shared = method.load_final_shared(final_dir(study, method.fit_name) / SHARED_DIR)
    est = shared.estimator(gene_id)
    est.final_info_ = json.loads((final_dir(study, method.fit_name) / "final.json").read_text())
    return est
