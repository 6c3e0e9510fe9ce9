"""Final fits: one model per gene and method trained on ALL study individuals, for new people.

Cross-validation (``hapexpr fit``) judges a method; ``predict`` and ``explain`` need the model
that uses every individual. Expression is residualised on the covariates exactly as in the CV
loop (:func:`hapexpr.train.residualise`), with every individual as the training set, so
predictions are on the scale of the ``observed`` column of ``predictions.tsv``.

Layout (``docs/predict-explain.md``)::

    STUDY/models/<method>/final/final.json       key, options, complete
    STUDY/models/<method>/final/<gene>/gene.json  what was fit, how to load it (written last)
    STUDY/models/<method>/final/<gene>/...        weights.npz | model.safetensors + config.json

Every file is self-describing and unpickled (npz with ``allow_pickle=False``, safetensors,
JSON). A gene directory is written beside its final name and renamed into place, so it is whole
or absent; a killed run resumes at the first gene missing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError, StudyError
from hapexpr.io.atomic import atomic_dir, atomic_path, study_lock, write_json
from hapexpr.study import Study, gene_file_name
from hapexpr.progress import console, track_genes
from hapexpr.normalise import transform_in_fold
from hapexpr.train import options_key, residualise, study_targets

FINAL_FORMAT = "hapexpr.final/1"
GENE_JSON = "gene.json"
WEIGHTS = "weights.npz"
FINAL_METHODS = ("elastic-net", "ridge-probe", "nt-transformer", "enformer", "enformer-ridge")


def split_method(method: str, options=None):
    """(base method, FitOptions) for a method name as written in predictions.tsv;
    ``enformer-ridge`` is ``enformer`` with ``head="ridge"``."""
    from hapexpr.fit import METHODS, FitOptions

    options = options or FitOptions()
    if method == "stack":
        raise StudyError(
            "predict, explain and fit-final do not support the stack yet: its weights combine "
            "out-of-fold predictions and no final stack is fit on all individuals",
            hint="use one of its base methods (elastic-net, ridge-probe, nt-transformer, enformer)",
        )
    if method == "enformer-ridge":
        return "enformer", dataclasses.replace(options, head="ridge")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", hint=f"choose one of {', '.join(FINAL_METHODS)}")
    return method, options


def final_dir(study: Study, name: str) -> Path:
    return study.path / "models" / name / "final"


def gene_dir(study: Study, name: str, gene_id: str) -> Path:
    return final_dir(study, name) / gene_file_name(gene_id)[: -len(".npz")]


def cv_fit_options(study: Study, name: str):
    """The FitOptions ``hapexpr fit`` used for ``name`` (from its fit.json), or None."""
    path = study.path / "models" / name / "fit.json"
    if not path.exists():
        return None
    return _fit_options_from(json.loads(path.read_text()).get("options") or {})


def _build(study: Study, method: str, options):
    """(Method object, method name, options the fit depends on, FitOptions used), with the
    embedding fingerprint resolved so the key changes when the embeddings do."""
    from hapexpr.fit import build_method

    base, options = split_method(method, options)
    if base == "nt-transformer" and options.multi_gene:
        raise StudyError("final fits are per gene; the multi-gene transformer has none",
                         hint="fit-final --method nt-transformer without --multi-gene")
    m, method_options = build_method(base, options)
    if base in ("ridge-probe", "nt-transformer"):
        from hapexpr.embed import open_embeddings

        method_options["fingerprint"] = open_embeddings(study.path, fingerprint=options.fingerprint).fingerprint
        m.fingerprint = method_options["fingerprint"]
    return m, m.name, {**method_options, "seed": options.seed}, options


def fit_final(study_path, method: str, *, options=None, overwrite: bool = False, progress: bool = True) -> Path:
    """Fit ``method`` on every individual of every gene; returns ``models/<method>/final``.

    options: :class:`hapexpr.fit.FitOptions`; None means the options ``hapexpr fit`` used for
    this method (its fit.json), else the defaults. A final fit already complete with the same
    options is kept; one made with other options is refused unless ``overwrite``.
    """

    study = Study.open(study_path)
    base, _ = split_method(method)
    if options is None:
        options = cv_fit_options(study, "enformer-ridge" if method == "enformer-ridge" else base)
    m, name, method_options, options = _build(study, method, options)
    key = options_key(name, method_options)
    root = final_dir(study, name)
    with study_lock(study.path, f"fit-final --method {name}"):
        state = root / "final.json"
        previous = json.loads(state.read_text()) if state.exists() else None
        if previous is not None and previous.get("key") != key:
            if not overwrite:
                raise StudyError(
                    f"{name} already has a final fit made with other options ({previous.get('options')})",
                    path=root, hint="pass --overwrite to refit it with the new options",
                )
            shutil.rmtree(root)
        if previous is not None and previous.get("key") == key and previous.get("complete"):
            console.print(f"{name}: final fit on all individuals already complete; nothing to do")
            return root
        root.mkdir(parents=True, exist_ok=True)
        record = {"format": FINAL_FORMAT, "method": name, "key": key, "options": method_options,
                  "fit_options": _jsonable(dataclasses.asdict(options)), "complete": False}
        write_json(state, record)
        if base == "enformer":
            from hapexpr.models.enformer import precompute

            precompute(study.path, method=m, progress=progress)
        expr, cov = study_targets(study)
        everyone = np.ones(len(study.sample_ids), dtype=bool)
        todo = [g for g in study.gene_ids if not _done(study, name, g, key)]
        start = time.time()
        for gene_id in track_genes(todo, f"fit-final {name}", enabled=progress):
            gene = study.gene(gene_id)
            X = m.features(study, gene)
            y_raw = expr.loc[gene_id].to_numpy(dtype=np.float64)
            y = residualise(transform_in_fold(y_raw, everyone, study.normalise), cov, everyone)  # prepare --normalise
            est = m.estimator(options.seed).fit(X, y)
            info = {"format": FINAL_FORMAT, "method": name, "gene_id": gene_id, "key": key,
                    "options": method_options, "n_samples": int(len(y)),
                    "residualised_on": "intercept" if cov is None else f"intercept + {cov.shape[1]} covariates",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with atomic_dir(gene_dir(study, name, gene_id)) as d:
                _save(base, m, est, study, gene, d, info)
        write_json(state, {**record, "complete": True, "n_genes": len(study.gene_ids),
                           "seconds": round(time.time() - start, 2)})
    console.print(f"{name}: final fit on all {len(study.sample_ids)} individuals, {len(todo)} genes fit "
                  f"({len(study.gene_ids) - len(todo)} resumed) in {time.time() - start:.1f} s -> {root}")
    return root


def options_with(study_path, method: str, **given):
    """FitOptions for ``fit-final``: those ``hapexpr fit`` used for the method (else the
    defaults), with every option in ``given`` that is not None put over them; None when
    nothing is given (then :func:`fit_final` takes the CV fit's options itself)."""
    from hapexpr.fit import FitOptions

    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    study = Study.open(study_path)
    _, name, _ = _name_only(study, method)
    return dataclasses.replace(cv_fit_options(study, name) or FitOptions(), **given)


def ensure_final(study_path, method: str) -> str:
    """Make sure a complete final fit of ``method`` exists, fitting it (and saying so) when not;
    returns the method's name. An existing complete final fit is used whatever its options."""
    study = Study.open(study_path)
    _, name, _ = _name_only(study, method)
    state = final_dir(study, name) / "final.json"
    previous = json.loads(state.read_text()) if state.exists() else None
    if previous and previous.get("complete"):
        return name
    from hapexpr.fit import FitOptions

    if previous:  # interrupted: resume with the options it was started with
        options = _fit_options_from(previous.get("fit_options") or {})
        console.print(f"{name}: resuming the interrupted final fit on all individuals")
    else:
        options = cv_fit_options(study, name)
        console.print(f"{name}: no final fit on all individuals yet; fitting it now "
                      f"({'the options of `hapexpr fit`' if options else 'default options'}; "
                      f"`hapexpr fit-final {study.path} --method {name}` does this alone)")
    fit_final(study.path, method, options=options, progress=True)
    return name


def _fit_options_from(recorded: dict):
    from hapexpr.fit import FitOptions

    known = {f.name for f in dataclasses.fields(FitOptions)}
    return FitOptions(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items() if k in known})


def final_method(study: Study, name: str):
    """(Method object, final.json) of a complete final fit: the method rebuilt with the options
    the final fit used, so features for new sequences come from the same model and embeddings."""
    from hapexpr.fit import build_method

    state_path = final_dir(study, name) / "final.json"
    if not state_path.exists():
        raise StudyError(f"no final {name} fit", path=state_path.parent,
                         hint=f"run `hapexpr fit-final {study.path} --method {name}`")
    state = json.loads(state_path.read_text())
    base, options = split_method(name, _fit_options_from(state.get("fit_options") or {}))
    m, _ = build_method(base, options)
    if "fingerprint" in state["options"] and hasattr(m, "fingerprint"):
        m.fingerprint = state["options"]["fingerprint"]
    return m, state


def _name_only(study: Study, method: str):
    base, options = split_method(method)
    name = "enformer-ridge" if options.head == "ridge" and base == "enformer" else base
    return base, name, options


def _done(study: Study, name: str, gene_id: str, key: str) -> bool:
    path = gene_dir(study, name, gene_id) / GENE_JSON
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _savez(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _save(base: str, method, est, study: Study, gene, directory: Path, info: dict) -> None:
    """Write one fitted estimator's parameters into ``directory``; gene.json last."""
    if base == "elastic-net":
        names = method.feature_names(study, gene)
        X = method.features(study, gene)
        _savez(directory / WEIGHTS, variant_id=names["variant_id"].to_numpy(dtype=str),
               pos=names["pos"].to_numpy(dtype=np.int64), ref=names["ref"].to_numpy(dtype=str),
               alt=names["alt"].to_numpy(dtype=str), coef=est.coef_, intercept=np.float64(est.intercept_),
               kept=est.kept_, x_mean=est.x_mean_, x_scale=est.x_scale_,
               study_mean_dosage=np.asarray(X, dtype=np.float64).mean(axis=0))
        info.update(kind="linear-dosage", chrom=str(gene.chrom), alpha=est.alpha, lambda_=_f(est.lambda_),
                    cv_r2=_f(est.cv_r2_), cv_r=_f(est.cv_r_), n_variants=int(len(names)),
                    n_nonzero=int(np.count_nonzero(est.coef_)))
    elif base == "ridge-probe":
        _savez(directory / WEIGHTS, coef=est.coef_, intercept=np.float64(est.intercept_),
               x_mean=est.x_mean_, x_scale=est.x_scale_)
        info.update(kind="linear-embedding", alpha=_f(est.alpha_), fingerprint=method.fingerprint,
                    features="sum over the two haplotypes of the mean-pooled embedding")
    elif base == "nt-transformer":
        est.save(directory)
        info.update(kind="nt-transformer", fingerprint=method.fingerprint, checkpoint="config.json + model.safetensors")
    elif base == "enformer":
        info.update(_enformer_info(method, study))
        if method.head == "ridge":
            scaler, ridge = est.pipeline_[0], est.pipeline_[-1]
            _savez(directory / WEIGHTS, scaler_mean=scaler.mean_, scaler_scale=scaler.scale_,
                   coef=ridge.coef_, intercept=np.float64(ridge.intercept_))
            info.update(kind="enformer-ridge", alpha=est.alpha_)
        else:
            info.update(kind="enformer-zero-shot", track=est.track, shift=est.shift_, scale=est.scale_,
                        note="nothing is learned unless calibrate; the score is the model's own")
    write_json(directory / GENE_JSON, info)


def _enformer_info(method, study) -> dict:
    runner = method.runner(study)
    return {"enformer": {**method.options, "seq_len": runner.seq_len, "fingerprint": runner.fingerprint}}


def _f(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def load_final(study_path, method: str, gene_id: str):
    """The fitted estimator of ``method`` for ``gene_id`` (``predict(X)`` on the method's
    features). ``final_info_`` holds gene.json; the elastic net also has
    ``feature_variants_`` (variant_id pos ref alt) and ``study_mean_dosage_`` (variants,)."""
    study = Study.open(study_path)
    _, name, _ = _name_only(study, method)
    directory = gene_dir(study, name, gene_id)
    path = directory / GENE_JSON
    if not path.exists():
        raise StudyError(f"no final {name} fit for gene {gene_id}", path=directory,
                         hint=f"run `hapexpr fit-final {study.path} --method {name}`")
    info = json.loads(path.read_text())
    if info.get("format") != FINAL_FORMAT:
        raise StudyError(f"final fit format {info.get('format')!r} is not {FINAL_FORMAT!r}", path=path,
                         hint="refit it with `hapexpr fit-final --overwrite`")
    kind = info["kind"]
    z = _load_npz(directory / WEIGHTS) if (directory / WEIGHTS).exists() else {}
    if kind == "linear-dosage":
        from hapexpr.models.elastic_net import ElasticNetModel

        est = ElasticNetModel(alpha=float(info.get("alpha", 0.5)))
        est.coef_, est.intercept_ = z["coef"], float(z["intercept"])
        est.kept_, est.x_mean_, est.x_scale_ = z["kept"], z["x_mean"], z["x_scale"]
        est.n_features_in_ = len(z["coef"])
        est.feature_variants_ = pd.DataFrame({"variant_id": z["variant_id"].astype(object), "pos": z["pos"],
                                              "ref": z["ref"].astype(object), "alt": z["alt"].astype(object)})
        est.study_mean_dosage_ = z["study_mean_dosage"]
    elif kind == "linear-embedding":
        from hapexpr.models.ridge_probe import RidgeProbeModel

        est = RidgeProbeModel()
        est.coef_, est.intercept_ = z["coef"], float(z["intercept"])
        est.x_mean_, est.x_scale_ = z["x_mean"], z["x_scale"]
        est.n_features_in_, est.alpha_ = len(z["coef"]), info.get("alpha")
    elif kind == "nt-transformer":
        from hapexpr.models.nt_transformer import NTTransformerModel

        est = NTTransformerModel.load(directory)
    elif kind == "enformer-zero-shot":
        from hapexpr.models.enformer import ZeroShotEnformer

        est = ZeroShotEnformer(track=int(info["track"]))
        est.shift_, est.scale_ = float(info["shift"]), float(info["scale"])
    elif kind == "enformer-ridge":
        est = _enformer_ridge(z, info)
    else:
        raise StudyError(f"unknown final fit kind {kind!r}", path=path, hint="refit with `hapexpr fit-final --overwrite`")
    est.final_info_ = info
    return est


def _load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _enformer_ridge(z: dict, info: dict):
    """An EnformerRidgeHead whose pipeline is rebuilt from the saved parameters."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hapexpr.models.enformer import EnformerRidgeHead

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = z["scaler_mean"], z["scaler_scale"]
    scaler.var_, scaler.n_features_in_ = z["scaler_scale"] ** 2, len(z["scaler_mean"])
    scaler.n_samples_seen_ = int(info["n_samples"])
    ridge = Ridge(alpha=float(info["alpha"]))
    ridge.coef_, ridge.intercept_, ridge.n_features_in_ = z["coef"], float(z["intercept"]), len(z["coef"])
    est = EnformerRidgeHead()
    est.pipeline_, est.alpha_ = make_pipeline(scaler, ridge), float(info["alpha"])
    return est
