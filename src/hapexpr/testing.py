"""Conformance checks for plugins: a method or an embedder through every stage of a tiny study.

``check_method(cls)`` simulates a tiny cohort (40 people, 2 genes), prepares it and runs the
method through fit, a second fit (same seed, same predictions), evaluate, fit-final (a saved and
reloaded model predicts as the fresh one), predict (a study person's prediction from their own
VCF equals the final model on their study features), explain, report and stack, failing with a
:class:`PluginCheckError` that names the stage and what was wrong. ``check_embedder(cls, spec)``
checks the embedder's own contract (``--model SPEC`` resolves to it, a complete ``info()``,
shapes, dtypes, batch-size invariance, determinism) and then runs ``ridge-probe`` on its store
through every stage, so ``predict`` and ``explain`` rebuild it from the store. scikit-learn's
``check_estimator`` is the model; both return the stages run, each ``"ok"`` or why skipped.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np

from hapexpr.cohort import StudyCohort
from hapexpr.embed import load_embedder, run_embed
from hapexpr.embed import registry as embedders
from hapexpr.embed.base import BaseEmbedder
from hapexpr.engines import fit_final_one
from hapexpr.errors import InputError
from hapexpr.evaluate import evaluate_study
from hapexpr.explain import explain_gene
from hapexpr.final import final_estimator, final_fit_method, fit_final
from hapexpr.fit import run_fit
from hapexpr.methods import registry
from hapexpr.methods.base import Method
from hapexpr.methods.effects import EFFECT_COLUMNS
from hapexpr.predict import predict_new
from hapexpr.prepare import prepare_study
from hapexpr.report import write_report
from hapexpr.simulate import simulate_cohort
from hapexpr.study import Study

WINDOW, BINS = 1000, 4
INFO_FIELDS = ("fingerprint", "dim", "bins", "window", "model", "tiny", "layer", "weights_sha256", "source")


class PluginCheckError(AssertionError):
    """A plugin failed a conformance check; the message names the stage and the fault."""


def check_method(
    cls: type[Method], *, options: dict | None = None, embedder: str = "kmer:2", workdir: str | Path | None = None
) -> dict[str, str]:
    """Run method class ``cls`` (with ``options``) through every stage of a tiny simulated
    study; ``embedder``: the ``--model`` of the study's embeddings when the method needs them.
    Returns ``{stage: "ok" or why skipped}``; raises :class:`PluginCheckError` on a fault."""
    check = _Check(getattr(cls, "name", repr(cls)))
    with _registered(check, registry, cls), _workdir(workdir) as work:
        with check.stage("class"):
            opts = cls.Options.from_dict(options or {})
            back = cls.Options.from_dict(json.loads(json.dumps(opts.to_dict())))
            _require(back == opts, f"options do not survive fit.json's JSON round trip ({opts} -> {back})")
        cohort, study = _tiny_study(check, work)
        if "embeddings" in cls.needs:
            with check.stage("embed"):
                run_embed(study, model=embedder, bins=BINS, progress=False)
        _run_stages(check, cls, options or {}, cohort, study, work)
        return check.done


def check_embedder(
    cls: type[BaseEmbedder], spec: str | None = None, *, workdir: str | Path | None = None
) -> dict[str, str]:
    """Check embedder class ``cls`` under ``--model SPEC`` (default its name), then run
    ``ridge-probe`` on its store through every stage. Returns ``{stage: "ok" or why skipped}``;
    raises :class:`PluginCheckError` on a fault."""
    spec = spec or cls.name
    check = _Check(getattr(cls, "name", repr(cls)))
    with _registered(check, embedders, cls), _workdir(workdir) as work:
        with check.stage("class"):
            chosen = embedders.resolve(spec)
            _require(chosen is cls, f"--model {spec} resolves to {chosen.name}, not {cls.name} (accepts())")
        cohort, study = _tiny_study(check, work)
        with check.stage("compute"):
            _check_compute(cls, spec, Study.open(study))
        with check.stage("embed"):
            summary = run_embed(study, model=spec, bins=BINS, progress=False)
            info = json.loads((study / "embeddings" / summary["fingerprint"] / "info.json").read_text())
            missing = [k for k in INFO_FIELDS if k not in info]
            _require(not missing, f"info.json lacks {', '.join(missing)} (BaseEmbedder.info() adds them)")
            rebuilt = load_embedder(study, summary["fingerprint"])
            _require(type(rebuilt) is cls, f"load_embedder rebuilt a {type(rebuilt).__name__} from info.json")
        probe = registry.get("ridge-probe")
        _run_stages(check, probe, {"fingerprint": summary["fingerprint"]}, cohort, study, work)
        return check.done


class _Check:
    def __init__(self, name: str) -> None:
        self.name, self.done = name, {}

    @contextlib.contextmanager
    def stage(self, stage: str):
        try:
            yield
        except PluginCheckError as exc:
            raise PluginCheckError(f"{self.name}: stage {stage!r}: {exc}") from exc
        except Exception as exc:
            raise PluginCheckError(f"{self.name}: stage {stage!r} raised {type(exc).__name__}: {exc}") from exc
        self.done.setdefault(stage, "ok")  # a stage may have noted why it skipped


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PluginCheckError(message)


@contextlib.contextmanager
def _registered(check: _Check, reg, cls):
    """``cls`` registered for the check (and taken back after) unless it already is; the
    registry's own checks of the class are the ``class`` stage's first."""
    with check.stage("class"):
        held = reg.lookup(cls.name)
        if held is None:
            reg.register(cls)
        else:
            _require(held is cls, f"the name is held by {held.__module__}.{held.__qualname__}")
    try:
        yield
    finally:
        if held is None:
            reg.unregister(cls.name)


@contextlib.contextmanager
def _workdir(workdir):
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="hapexpr-check-") as tmp:
        yield Path(tmp)


def _tiny_study(check: _Check, work: Path) -> tuple[Path, Path]:
    cohort, study = work / "cohort", work / "study"
    with check.stage("simulate"):
        if not (cohort / "expression.bed.gz").exists():
            simulate_cohort(cohort, individuals=40, genes=2, window=WINDOW, h2=0.5, seed=0)
        if not (study / "study.json").exists():
            prepare_study(
                vcf=cohort / "genotypes.vcf.gz",
                fasta=cohort / "reference.fa",
                genes=cohort / "genes.gtf",
                expression=cohort / "expression.bed.gz",
                covariates=cohort / "covariates.tsv",
                out=study,
                window=WINDOW,
                folds=3,
                progress=False,
            )
    return cohort, study


def _check_compute(cls: type[BaseEmbedder], spec: str, study: Study) -> None:
    emb = cls.from_source(cls.source_for(spec), layer=None, bins=BINS, window=WINDOW, batch_size=2)
    info = emb.info()
    json.dumps(info)  # info.json must be JSON
    missing = [k for k in INFO_FIELDS if k not in info]
    _require(not missing, f"info() lacks {', '.join(missing)}")
    gene = study.gene(study.gene_ids[0])
    seqs = list(gene.sequences[:3])
    bins, mean = emb.compute(seqs, tss_offset=gene.tss_offset)
    shapes = ((len(seqs), BINS, emb.dim), (len(seqs), emb.dim))
    _require((bins.shape, mean.shape) == shapes, f"compute returned {bins.shape}, {mean.shape}; expected {shapes}")
    _require(bins.dtype == np.float32 and mean.dtype == np.float32, f"compute returned {bins.dtype}, not float32")
    _require(bool(np.isfinite(bins).all() and np.isfinite(mean).all()), "compute returned NaN or infinite values")
    one_bins, one_mean = emb.compute(seqs[:1], tss_offset=gene.tss_offset, batch_size=1)
    _require(
        np.allclose(one_bins[0], bins[0], rtol=1e-4, atol=1e-5)
        and np.allclose(one_mean[0], mean[0], rtol=1e-4, atol=1e-5),
        "a sequence's numbers depend on the batch it is computed in",
    )


def _run_stages(check: _Check, cls: type[Method], options: dict, cohort: Path, study_path: Path, work: Path) -> None:
    study = Study.open(study_path)
    n = len(study.sample_ids)
    with check.stage("fit"):
        rows = run_fit(study_path, cls.name, options=options, overwrite=True, progress=False)
        _require(len(rows) > 0, "fit predicted no gene of a study whose genes are heritable (h2 = 0.5)")
        name = str(rows["method"].iloc[0])
        for gene_id, part in rows.groupby("gene_id"):
            _require(
                len(part) == n and set(part["sample_id"]) == set(study.sample_ids),
                f"gene {gene_id}: {len(part)} rows, not one per individual ({n})",
            )
            _require(bool(np.isfinite(part["predicted"]).all()), f"gene {gene_id}: NaN or infinite predictions")
        record = json.loads((study_path / "models" / name / "fit.json").read_text())
        _require(record.get("complete") and "provider" in record, "fit.json is not complete or names no provider")
    with check.stage("fit-again"):
        again = run_fit(study_path, cls.name, options=options, name=f"{name}-again", overwrite=True, progress=False)
        a, b = (r.sort_values(["gene_id", "sample_id"])["predicted"].to_numpy() for r in (rows, again))
        _require(np.allclose(a, b, rtol=1e-5, atol=1e-8), "a second fit with the same seed predicts otherwise")
    with check.stage("evaluate"):
        metrics = evaluate_study(study_path)[0]
        _require(name in set(metrics["method"]), f"metrics.tsv has no rows of {name}")
    if cls.final:
        _final_stages(check, name, cohort, study_path, work)
    else:
        for stage in ("fit-final", "predict", "explain", "stack"):
            check.done[stage] = f"skipped: {cls.name} has no per-gene final model (final = False)"
    with check.stage("report"):
        page = write_report(study_path, overwrite=True).read_text()
        _require(name in page, f"the report does not show {name}")


def _final_stages(check: _Check, name: str, cohort: Path, study_path: Path, work: Path) -> None:
    study = Study.open(study_path)
    with check.stage("fit-final"):
        fit_final(study_path, name, overwrite=True, progress=False)
        method = final_fit_method(study, name)
        models = {}
        for gene_id in study.gene_ids:
            loaded = final_estimator(study_path, name, gene_id)
            if loaded is None:
                continue
            fresh = fit_final_one(study, method, gene_id)[1]
            X = method.features(StudyCohort(study), gene_id)
            _require(
                np.allclose(np.asarray(fresh.predict(X)), np.asarray(loaded.predict(X)), rtol=1e-5, atol=1e-8),
                f"gene {gene_id}: the saved and reloaded model predicts otherwise than the fitted one",
            )
            models[gene_id] = (loaded, np.asarray(loaded.predict(X), dtype=np.float64))
        _require(bool(models), "fit-final fitted no gene")
    with check.stage("predict"):
        pred = predict_new(study_path, name, vcf=cohort / "genotypes.vcf.gz", out=work / "predict.tsv", overwrite=True)
        for gene_id, (_, want) in models.items():
            got = pred[pred["gene_id"] == gene_id].set_index("sample_id").loc[study.sample_ids, "predicted"]
            _require(
                np.allclose(got.to_numpy(), want, rtol=1e-4, atol=1e-6),
                f"gene {gene_id}: predict on the study's own VCF differs from the final model on the study's features",
            )
    with check.stage("explain"):
        gene_id = next(iter(models))
        try:
            table = explain_gene(study_path, name, gene_id, out=work / "explain.tsv", overwrite=True)
        except InputError as exc:
            if "cannot explain" not in str(exc):
                raise
            check.done["explain"] = f"skipped: {exc}"
        else:
            missing = [c for c in EFFECT_COLUMNS if c not in table.columns]
            _require(not missing, f"the effects table lacks {', '.join(missing)}")
            n_window = int(study.gene(gene_id).variants["in_window"].sum())
            _require(len(table) == n_window, f"{len(table)} effect rows for {n_window} window variants")
    with check.stage("stack"):
        run_fit(study_path, "elastic-net", options={"cis_window": 0}, progress=False)
        stacked = run_fit(
            study_path, "stack", options={"base": (name, "elastic-net-window")}, name=f"stack-{name}", progress=False
        )
        _require(len(stacked) > 0 and bool(np.isfinite(stacked["predicted"]).all()), "stack made no finite predictions")
