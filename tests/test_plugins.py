"""Plugins: a real distribution (tests/plugins/good: hapexpr-toy, a method and an embedder, seen by
importlib.metadata through its dist-info) passes the conformance checkers and runs from the command
line through every stage; a broken one (tests/plugins/broken: every way an entry point can fail)
costs one warning per entry point and no command; names cannot be taken over."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.embed import registry as embedders
from hapexpr.errors import PluginError
from hapexpr.methods import DosageMethod, Method, Options, option, registry
from hapexpr.registry import PluginWarning
from hapexpr.testing import PluginCheckError, check_embedder, check_method

ROOT = Path(__file__).resolve().parents[1]
GOOD, BROKEN = ROOT / "tests" / "plugins" / "good", ROOT / "tests" / "plugins" / "broken"


def load_toy():
    """The hapexpr-toy module, loaded from its file (not put on sys.path, so this process's
    registries do not pick up its entry points)."""
    if "hapexpr_toy" in sys.modules:
        return sys.modules["hapexpr_toy"]
    spec = importlib.util.spec_from_file_location("hapexpr_toy", GOOD / "hapexpr_toy" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["hapexpr_toy"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def hapexpr(*args: str, cwd: Path, plugins: tuple[Path, ...] = (GOOD,), ok: bool = True):
    """Run the ``hapexpr`` command in a fresh interpreter with ``plugins`` on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "src", *plugins))}
    done = subprocess.run(
        [sys.executable, "-c", "from hapexpr.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert done.returncode == 0, f"hapexpr {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


# -- the registry ------------------------------------------------------------------------------


def test_a_taken_name_or_a_malformed_class_is_refused():
    class Again(Method):
        name = "elastic-net"

    with pytest.raises(PluginError, match="already held by hapexpr.methods.elastic_net.ElasticNet"):
        registry.register(Again)
    assert registry.get("elastic-net").__module__ == "hapexpr.methods.elastic_net"
    registry.register(registry.get("elastic-net"))  # the same class again: nothing changes

    class Loose(Options):  # no @dataclass: `penalty` would be no option at all
        penalty: float = 1.0

    class Bad(Method):
        name = "bad-options"
        Options = Loose

    with pytest.raises(PluginError, match="not decorated with @dataclass"):
        registry.register(Bad)

    @dataclass(frozen=True)
    class Clash(Options):
        alpha: str = option("x", "a string where elastic-net's --alpha is a float")

    class AlphaClash(Method):
        name = "alpha-clash"
        Options = Clash

    with pytest.raises(PluginError, match="--alpha is a float"):
        registry.register(AlphaClash)

    class NotAnEmbedder:
        name = "not-an-embedder"

    with pytest.raises(PluginError, match="does not subclass"):
        embedders.register(NotAnEmbedder)
    assert "bad-options" not in registry.method_names() and "alpha-clash" not in registry.method_names()


@pytest.fixture()
def broken_entry_points(monkeypatch):
    """The registries reloading their plugins from hapexpr-broken's entry points alone; their
    state is put back afterwards."""
    import hapexpr.registry as base

    dist = next(importlib.metadata.distributions(path=[str(BROKEN)]))
    monkeypatch.syspath_prepend(str(BROKEN))
    monkeypatch.setattr(base, "entry_points", lambda group: dist.entry_points.select(group=group))
    saved = []
    for reg in (registry._METHODS, embedders._EMBEDDERS):
        saved.append((reg, dict(reg._items), dict(reg._dists)))
        reg._plugins_loaded = False
    yield
    for reg, items, dists in saved:
        reg._items, reg._dists, reg._plugins_loaded = items, dists, True


def test_each_broken_entry_point_costs_one_warning_and_nothing_else(broken_entry_points):
    builtins = dict(registry._METHODS._items)  # as the fixture found them, before any plugin loads
    with pytest.warns(PluginWarning) as caught:
        names = registry.method_names()
        embedder_names = [c.name for c in embedders.embedders()]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 6, messages  # five method entry points and one embedder's
    assert all("hapexpr-broken 0.1.0" in m for m in messages)
    by_ep = {
        ep: next(m for m in messages if f"entry point {ep} =" in m)
        for ep in ("broken", "elastic-net", "misnamed", "not-a-method", "twice", "broken-embedder")
    }
    assert "ModuleNotFoundError" in by_ep["broken"] and "hapexpr_no_such_dependency" in by_ep["broken"]
    assert "already held by hapexpr.methods.elastic_net.ElasticNet" in by_ep["elastic-net"]
    assert "is named 'something-else'" in by_ep["misnamed"]
    assert "does not subclass" in by_ep["not-a-method"]
    assert "'ridge-probe' is already held" in by_ep["twice"]
    # The module entry point registered `twice` before failing on its second class: taken back.
    assert "twice" not in names and "something-else" not in names
    assert {n: registry.get(n) for n in builtins} == builtins
    assert "broken-embedder" not in embedder_names and "kmer" in embedder_names


# -- the checkers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_plugin_package_passes_check_method_and_check_embedder(tmp_path):
    toy = load_toy()
    stages = check_method(toy.DosageRidge, workdir=tmp_path)
    want = {"class", "simulate", "fit", "fit-again", "evaluate", "fit-final", "predict", "explain", "stack", "report"}
    assert stages == dict.fromkeys(want, "ok")
    stages = check_embedder(toy.GCContent, "gc", workdir=tmp_path)
    assert stages == dict.fromkeys(want | {"compute", "embed"}, "ok")
    assert "toy-ridge" not in registry.method_names()  # registered for the check only
    # The toy ridge's final model is the closed-form ridge on the study's centred dosages.
    from hapexpr.cohort import StudyCohort
    from hapexpr.crossval import residualise, study_targets
    from hapexpr.final import final_estimator
    from hapexpr.study import Study

    registry.register(toy.DosageRidge)
    try:
        study = Study.open(tmp_path / "study")
        gene_id = study.gene_ids[0]
        est = final_estimator(study.path, "toy-ridge", gene_id)
        X = toy.DosageRidge().features(StudyCohort(study), gene_id).to_numpy(dtype=np.float64)
    finally:
        registry.unregister("toy-ridge")
    expr, cov = study_targets(study)
    y = residualise(expr.loc[gene_id].to_numpy(dtype=np.float64), cov, np.ones(len(X), dtype=bool))
    Xc = X - X.mean(axis=0)
    coef = np.linalg.solve(Xc.T @ Xc + 10.0 * np.eye(X.shape[1]), Xc.T @ (y - y.mean()))
    np.testing.assert_allclose(est.model.coef_, coef, rtol=1e-8, atol=1e-10)


class NaNDosages(DosageMethod):
    """Predicts NaN for some people: the checker must stop at fit."""

    name = "nan-dosages"

    def dosage_estimator(self, seed):
        class Constant:
            def fit(self, X, y):
                return self

            def predict(self, X):  # NaN for the first person of each held-out fold
                return np.where(np.arange(len(X)) == 0, np.nan, 0.0)

        return Constant()


def test_the_checkers_name_the_stage_that_fails(tmp_path):
    class Loose(Options):
        penalty: float = 1.0

    class LooseOptions(Method):
        name = "loose-options"
        Options = Loose

    with pytest.raises(PluginCheckError, match="loose-options: stage 'class' .*not decorated with @dataclass"):
        check_method(LooseOptions, workdir=tmp_path)
    with pytest.raises(PluginCheckError, match="nan-dosages: stage 'fit': gene .*NaN or infinite predictions"):
        check_method(NaNDosages, workdir=tmp_path)
    assert "nan-dosages" not in registry.method_names()

    toy = load_toy()

    class BatchDependent(toy.GCContent):
        name = "batch-dependent"

        @classmethod
        def accepts(cls, spec):
            return spec == "batchy"

        def compute(self, sequences, **kw):
            bins, mean = super().compute(sequences, **kw)
            return bins + len(sequences), mean + len(sequences)

    with pytest.raises(PluginCheckError, match="batch-dependent: stage 'compute': .*depend on the batch"):
        check_embedder(BatchDependent, "batchy", workdir=tmp_path)
    with pytest.raises(PluginCheckError, match="resolves to kmer"):
        check_embedder(BatchDependent, "kmer:2", workdir=tmp_path)


# -- from the command line ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_plugin_distribution_runs_from_the_cli_through_every_stage(tmp_path):
    hapexpr(
        "simulate",
        "--out",
        "cohort",
        "--individuals",
        "40",
        "--genes",
        "2",
        "--window",
        "1000",
        "--h2",
        "0.5",
        cwd=tmp_path,
    )
    config = {
        "study": "study",
        "prepare": {
            "vcf": "cohort/genotypes.vcf.gz",
            "fasta": "cohort/reference.fa",
            "genes": "cohort/genes.gtf",
            "expression": "cohort/expression.bed.gz",
            "covariates": "cohort/covariates.tsv",
            "window": 1000,
            "folds": 3,
        },
        "embed": {"model": "gc", "bins": 4},
        "fit": [
            {"method": "toy-ridge", "penalty": 5.0},
            {"method": "ridge-probe"},
            {"method": "stack", "base": ["toy-ridge", "ridge-probe"]},
        ],
        "evaluate": True,
        "report": True,
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    hapexpr("run", "config.yaml", cwd=tmp_path)
    study = tmp_path / "study"
    record = json.loads((study / "models" / "toy-ridge" / "fit.json").read_text())
    assert record["method"] == "toy-ridge" and record["options"]["penalty"] == 5.0
    assert record["provider"] == {"distribution": "hapexpr-toy", "version": "0.1.0"}
    store = json.loads(next((study / "embeddings").glob("*/info.json")).read_text())
    assert store["embedder"] == "gc-content" and store["weights_sha256"] == "" and store["dim"] == 1
    metrics = pd.read_csv(study / "metrics.tsv", sep="\t")
    assert {"toy-ridge", "ridge-probe", "stack"} <= set(metrics["method"])
    assert "toy-ridge" in (study / "report" / "index.html").read_text()

    hapexpr("fit-final", "study", "--method", "toy-ridge", cwd=tmp_path)
    vcf = str(tmp_path / "cohort" / "genotypes.vcf.gz")
    hapexpr("predict", "study", "--method", "toy-ridge", "--vcf", vcf, "--out", "pred.tsv", cwd=tmp_path)
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t")
    assert len(pred) == 2 * 40 and np.isfinite(pred["predicted"]).all()
    gene = str(pred["gene_id"].iloc[0])
    hapexpr("explain", "study", "--method", "toy-ridge", "--gene", gene, "--out", "e1.tsv", cwd=tmp_path)
    # ridge-probe's explain embeds the rebuilt haplotypes with the plugin embedder, rebuilt from info.json
    hapexpr("explain", "study", "--method", "ridge-probe", "--gene", gene, "--out", "e2.tsv", cwd=tmp_path)
    for out in ("e1.tsv", "e2.tsv"):
        assert pd.read_csv(tmp_path / out, sep="\t")["n_carriers"].gt(0).any()

    helped = hapexpr("fit", "--method", "toy-ridge", "--help", cwd=tmp_path).stdout
    assert "Options of toy-ridge" in helped and "--penalty" in helped and "--alpha" not in helped

    # The plugin uninstalled: the fit says which package to install.
    gone = hapexpr(
        "predict", "study", "--method", "toy-ridge", "--vcf", vcf, "--out", "p2.tsv", cwd=tmp_path, plugins=(), ok=False
    )
    assert gone.returncode == 2 and "pip install 'hapexpr-toy==0.1.0'" in gone.stderr, gone.stderr


def test_a_broken_plugin_leaves_every_other_command_working(tmp_path):
    both = (GOOD, BROKEN)
    done = hapexpr("--help", cwd=tmp_path, plugins=both)
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warned) == 5 and all("hapexpr-broken 0.1.0" in w for w in warned), done.stderr
    assert "Traceback" not in done.stderr
    listed = hapexpr("methods", cwd=tmp_path, plugins=both).stdout
    assert "toy-ridge:" in listed and "elastic-net:" in listed and "twice:" not in listed
    hapexpr(
        "simulate", "--out", "c", "--individuals", "8", "--genes", "1", "--window", "200", cwd=tmp_path, plugins=both
    )
    assert (tmp_path / "c" / "genotypes.vcf.gz").exists()


# -- options per method and fit-final --name ---------------------------------------------------


def test_help_shows_each_methods_own_options_and_defaults():
    from typer.testing import CliRunner

    from hapexpr.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["fit", "--method", "elastic-net", "--help"], terminal_width=200).stdout
    assert "Options of elastic-net" in shown and "--alpha" in shown and "0.5" in shown
    assert "--fingerprint" not in shown and "--head" not in shown
    shown = runner.invoke(app, ["fit-final", "--method", "enformer-ridge", "--help"], terminal_width=200).stdout
    assert "Options of enformer" in shown and "--track" in shown and "--cis-window" not in shown
    lines = runner.invoke(app, ["fit", "--help"]).stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "│ --device" in line)
    end = next(i for i in range(start + 1, len(lines)) if "│ --" in lines[i])
    device = " ".join(" ".join(line.strip("│ ").split()) for line in lines[start:end])
    assert "(nt-transformer) cpu, cuda, cuda:N or auto" in device  # each owner's help, not the first's alone
    assert "(enformer) cpu, cuda or auto" in device
    listed = runner.invoke(app, ["methods", "elastic-net"]).stdout
    assert "--alpha FLOAT  [default: 0.5]" in listed and "provided by: hapexpr" in listed
    fields = {f.name for f in dataclasses.fields(registry.get("elastic-net").Options)}
    assert all(f"--{f.replace('_', '-')}" in listed for f in fields)


def test_fit_final_name_stores_a_variant_without_a_cross_validated_fit(study_copy, tiny_cohort, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app
    from hapexpr.embed import run_embed
    from hapexpr.final import final_fit_method
    from hapexpr.predict import predict_new
    from hapexpr.study import Study

    kmer2 = run_embed(study_copy, model="kmer:2", bins=4, progress=False)["fingerprint"]
    run_embed(study_copy, model="kmer:3", bins=4, progress=False)  # the newer store: ridge-probe's default
    args = [
        "fit-final",
        str(study_copy),
        "--method",
        "ridge-probe",
        "--fingerprint",
        "kmer:2",
        "--name",
        "ridge-probe-kmer",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (study_copy / "models" / "ridge-probe-kmer" / "fit.json").exists()
    method = final_fit_method(Study.open(study_copy), "ridge-probe-kmer")
    assert method.name == "ridge-probe" and method.resolved["fingerprint"] == kmer2
    final = json.loads((study_copy / "models" / "ridge-probe-kmer" / "final" / "final.json").read_text())
    assert final["provider"]["distribution"] == "hapexpr"
    pred = predict_new(
        study_copy, "ridge-probe-kmer", vcf=tiny_cohort / "genotypes.vcf.gz", out=tmp_path / "p.tsv", progress=False
    )
    assert set(pred["method"]) == {"ridge-probe-kmer"} and np.isfinite(pred["predicted"]).all()
    # --name of an existing fit of another method is refused, not silently that fit's refit
    from hapexpr.errors import StudyError
    from hapexpr.final import fit_final
    from hapexpr.fit import run_fit

    run_fit(study_copy, "elastic-net", options={"cis_window": 0}, progress=False)
    with pytest.raises(
        StudyError, match="elastic-net-window is a fit of elastic-net in this study, not of ridge-probe"
    ):
        fit_final(study_copy, "ridge-probe", fit_name="elastic-net-window", progress=False)
