"""``hapexpr run CONFIG.yaml`` and ``hapexpr demo``: every stage from one config.

The config is a frozen dataclass that round-trips to YAML (``examples/config.yaml`` is the
documented example). Relative paths are resolved against the config file's directory and
checked before anything runs. Stages already complete are skipped: prepare when the study exists
with the same inputs and parameters, embed and fit by their own resume logic (a finished store
or fit computes nothing), report when it is newer than the predictions.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hapexpr.embed import run_embed
from hapexpr.embed.registry import resolve as resolve_embedder
from hapexpr.errors import InputError
from hapexpr.evaluate import evaluate_study, print_summary
from hapexpr.fit import run_fit
from hapexpr.fit_records import reference_fit
from hapexpr.methods import registry
from hapexpr.preflight import torch_device, writable_folder
from hapexpr.prepare import fingerprint_file, prepare_study, resolve_context
from hapexpr.report import write_report
from hapexpr.study import Study
from hapexpr.typecheck import check_fields


@dataclass(frozen=True)
class PrepareConfig:
    vcf: str
    expression: str
    fasta: str | None = None
    genes: str | None = None
    covariates: str | None = None
    window: int = 6000
    folds: int = 5
    seed: int = 0
    residualised: bool = False
    allow_unphased: bool = False
    normalise: str = "none"
    cis_window: int = 1_000_000
    folds_by: str | None = None  # "COLUMN FILE"
    context: int | None = None  # Enformer context width; None: 196,608 with a FASTA


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "tiny"
    layer: int | None = None
    bins: int = 32
    batch_size: int = 8
    device: str = "cpu"
    engine: str = "local"
    ray_address: str | None = None


@dataclass(frozen=True)
class FitConfig:
    """One ``hapexpr fit``: the method, an optional name for the fit, and any of the method's
    Options fields."""

    method: str
    options: dict = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class RunConfig:
    study: str
    prepare: PrepareConfig
    embed: EmbedConfig | None = EmbedConfig()
    fit: tuple[FitConfig, ...] = ()
    evaluate: bool = True
    report: bool = True

    def to_yaml(self) -> str:
        d = dataclasses.asdict(self)
        d["fit"] = [
            {
                "method": f["method"],
                **({"name": f["name"]} if f["name"] else {}),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in f["options"].items()},
            }
            for f in d["fit"]
        ]
        return yaml.safe_dump(d, sort_keys=False)


def _build(cls, data, where: str, path: Path):
    if not isinstance(data, dict):
        raise InputError(f"`{where}` must be a mapping", path=path, record=where)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(unknown)} under `{where}`",
            path=path,
            record=where,
            hint=f"allowed keys: {', '.join(sorted(names))}",
        )
    check_fields(cls, data, where, path)
    try:
        return cls(**data)
    except TypeError as exc:
        raise InputError(f"`{where}` is incomplete ({exc})", path=path, record=where) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a config; paths become absolute, resolved against the config's folder."""
    path = Path(path)
    if not path.exists():
        raise InputError("the config file does not exist", path=path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"the config is not valid YAML ({str(exc).splitlines()[0]})", path=path) from None
    if not isinstance(data, dict) or "study" not in data or "prepare" not in data:
        raise InputError(
            "the config needs at least `study:` and `prepare:`", path=path, hint="see examples/config.yaml"
        )
    base = path.parent.resolve()
    prep = _build(PrepareConfig, data["prepare"], "prepare", path)
    files = {}
    for key in ("vcf", "fasta", "genes", "expression", "covariates"):
        value = getattr(prep, key)
        if value is None:
            continue
        resolved = (base / str(value)).resolve()
        if not resolved.exists():
            raise InputError(
                f"prepare.{key} points to {resolved}, which does not exist", path=path, record=f"prepare.{key}"
            )
        files[key] = str(resolved)
    prep = dataclasses.replace(prep, **files)
    embed = data.get("embed", {})
    embed = None if embed is False else _build(EmbedConfig, embed or {}, "embed", path)
    if embed is not None:  # the model and device resolve now, not after prepare has run
        try:
            resolve_embedder(embed.model)
            torch_device(embed.device, flag="embed.device")
        except InputError as exc:
            raise InputError(exc.message, path=path, record="embed", hint=exc.hint) from None
    fits = []
    if not isinstance(data.get("fit") or [], list):
        raise InputError(
            "`fit` must be a list of methods",
            path=path,
            record="fit",
            hint="write one `- method: NAME` entry per method",
        )
    for i, item in enumerate(data.get("fit") or []):
        if isinstance(item, str):
            item = {"method": item}
        names = registry.method_names()
        if not isinstance(item, dict) or item.get("method") not in names:
            raise InputError(
                f"fit entry {i + 1} needs `method:` one of {', '.join(names)}", path=path, record=f"fit[{i}]"
            )
        opts = {k: v for k, v in item.items() if k not in ("method", "name")}
        if isinstance(opts.get("base"), str):
            opts["base"] = opts["base"].split(",")
        try:  # validated now, by the method's own Options, so a typo fails before any stage runs
            registry.get(item["method"]).Options.from_dict(opts, where=f"fit[{i}]")
        except InputError as exc:
            raise InputError(exc.message, path=path, record=exc.record or f"fit[{i}]", hint=exc.hint) from None
        fits.append(FitConfig(item["method"], opts, item.get("name")))
    extra = sorted(set(data) - {f.name for f in dataclasses.fields(RunConfig)})
    if extra:
        raise InputError(f"unknown top-level key(s) {', '.join(extra)}", path=path)
    study = (base / str(data["study"])).resolve()
    writable_folder(study, what="the study folder")
    return RunConfig(
        study=str(study),
        prepare=prep,
        embed=embed,
        fit=tuple(fits),
        evaluate=bool(data.get("evaluate", True)),
        report=bool(data.get("report", True)),
    )


def run_pipeline(config: RunConfig, *, progress: bool = True, say=print) -> None:
    """Every stage of ``config`` in order, skipping what is already complete."""
    study = Path(config.study)
    p = config.prepare
    t0 = time.time()
    total = 1 + (config.embed is not None) + len(config.fit) + config.evaluate + config.report
    done = iter(range(1, total + 1))

    def stage(name: str) -> str:  # "[fit ridge-probe] (step 4 of 11, 37 s so far)"
        return f"[{name}] (step {next(done)} of {total}, {time.time() - t0:.0f} s so far)"

    if (study / "study.json").exists() and _same_prepare(study, p):
        say(f"{stage('prepare')} {study} is already prepared with these inputs; skipped")
    else:
        say(stage("prepare"))
        optional = {k: None if getattr(p, k) is None else Path(getattr(p, k)) for k in ("fasta", "genes", "covariates")}
        folds_by = None
        if p.folds_by:
            column, _, file = p.folds_by.partition(" ")
            folds_by = (column, Path(file.strip()))
        prepare_study(
            vcf=Path(p.vcf),
            expression=Path(p.expression),
            out=study,
            window=p.window,
            folds=p.folds,
            seed=p.seed,
            residualised=p.residualised,
            allow_unphased=p.allow_unphased,
            normalise=p.normalise,
            cis_window=p.cis_window,
            folds_by=folds_by,
            context=p.context,
            progress=progress,
            **optional,
        )
    if config.embed is not None:
        say(stage("embed"))
        run_embed(study, **dataclasses.asdict(config.embed), progress=progress)
    for f in config.fit:
        say(stage(f"fit {f.method}{'' if f.name is None else ' --name ' + f.name}"))
        run_fit(study, f.method, options=dict(f.options), name=f.name, progress=progress)
    if config.evaluate:
        say(stage("evaluate"))
        _, summary, comparisons = evaluate_study(study)
        print_summary(summary, comparisons, reference=reference_fit(Study.open(study), summary["method"]))
    if config.report:
        index = study / "report" / "index.html"
        preds = study / "predictions.tsv"
        if index.exists() and preds.exists() and index.stat().st_mtime >= preds.stat().st_mtime:
            say(f"{stage('report')} {index} is newer than the predictions; skipped")
        else:
            say(stage("report"))
            write_report(study, overwrite=True)
        say(f"report: {index}")
    Study.open(study)
    say(f"done in {time.time() - t0:.0f} s")


def _same_prepare(study: Path, p: PrepareConfig) -> bool:
    """True when the existing study was prepared from the same files (by sha256) and parameters."""
    meta = json.loads((study / "study.json").read_text())
    params = meta.get("params", {})
    same_params = all(
        params.get(k, default) == getattr(p, k)
        for k, default in (
            ("window", None),
            ("folds", None),
            ("seed", None),
            ("residualised", None),
            ("allow_unphased", None),
            ("normalise", "none"),
            ("cis_window", None),
        )
    )
    context = resolve_context(p.context, fasta=p.fasta, window=p.window)
    same_params = same_params and params.get("context", 0) == context
    inputs = meta.get("inputs", {})
    for key in ("vcf", "fasta", "genes", "expression", "covariates"):
        value = getattr(p, key)
        if (value is None) != (key not in inputs):
            return False
        if value is not None and inputs[key]["sha256"] != fingerprint_file(Path(value))["sha256"]:
            return False
    return same_params
