"""The registries: a method and an embedder defined in this file alone (no edit under src/)
flow through embed, fit (cross-validated and final), evaluate, report, predict and explain; and
no module outside a method's own compares method names."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.embed import registry as embedders
from hapexpr.embed.base import BaseEmbedder
from hapexpr.estimators.saving import load_estimator, save_estimator
from hapexpr.methods import option, registry
from hapexpr.methods.embedding import EmbeddingMethod, EmbeddingOptions

SRC = Path(__file__).resolve().parents[1] / "src" / "hapexpr"


class GCEmbedder(BaseEmbedder):
    """GC and CpG fraction of each TSS-centred bin: 2 dimensions, no weights."""

    name = "toy-gc"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == "toy-gc"

    @classmethod
    def from_source(cls, source, *, layer, bins, window, device="cpu", batch_size=8, cache=None):
        return cls(bins=bins, window=window, batch_size=batch_size, cache=cache, source=source)

    @property
    def dim(self) -> int:
        return 2

    def keyed(self) -> dict:
        return {"embedder": self.name, "bins": self.bins, "window": self.window, "tss_offset": self.tss_offset}

    def describe(self) -> dict:
        return {"model": "toy GC content", "tiny": True, "layer": None, "weights_sha256": ""}

    def compute(
        self,
        sequences: Sequence[bytes],
        *,
        tss_offset=None,
        batch_size=None,
        on_batch: Callable[[int], None] | None = None,
    ):
        out = np.zeros((len(sequences), self.bins, 2), dtype=np.float32)
        for i, seq in enumerate(sequences):
            for b, part in enumerate(np.array_split(np.frombuffer(bytes(seq), np.uint8), self.bins)):
                text = part.tobytes()
                out[i, b] = [
                    sum(text.count(c) for c in b"GC") / max(len(text), 1),
                    text.count(b"CG") / max(len(text), 1),
                ]
        if on_batch is not None:
            on_batch(len(sequences))
        return out, out.mean(axis=1)


class LeastSquares:
    """y ~ a + X b by least squares, with a ridge of ``penalty``; saves itself."""

    KIND = "tests.least-squares/1"

    def __init__(self, *, penalty: float = 1e-3) -> None:
        self.penalty = penalty

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        self.x_mean_, self.y_mean_ = X.mean(axis=0), float(np.mean(y))
        Xc = X - self.x_mean_
        self.coef_ = np.linalg.solve(
            Xc.T @ Xc + self.penalty * np.eye(X.shape[1]), Xc.T @ (np.asarray(y) - self.y_mean_)
        )
        return self

    def predict(self, X):
        return (np.asarray(X, dtype=np.float64) - self.x_mean_) @ self.coef_ + self.y_mean_

    def save(self, directory) -> None:
        save_estimator(
            directory,
            kind=self.KIND,
            params={"penalty": self.penalty},
            learned={"y_mean_": self.y_mean_},
            arrays={"coef_": self.coef_, "x_mean_": self.x_mean_},
        )

    @classmethod
    def load(cls, directory):
        params, learned, arrays = load_estimator(directory, kind=cls.KIND)
        est = cls(**params)
        est.coef_, est.x_mean_, est.y_mean_ = arrays["coef_"], arrays["x_mean_"], learned["y_mean_"]
        return est


@dataclass(frozen=True)
class ToyOptions(EmbeddingOptions):
    penalty: float = option(1e-3, "Ridge penalty of the toy least squares.")


class ToyGC(EmbeddingMethod):
    """Least squares on each person's summed per-haplotype mean embedding."""

    name = "toy-gc"
    Options = ToyOptions
    summary = "a test method"
    order = 5

    def haplotype_features(self, gene, sequences):
        return self.embeddings(gene, sequences)[1]

    def people_features(self, per_hap, hap_index):
        return per_hap[np.asarray(hap_index)].sum(axis=1)

    def estimator(self, seed: int):
        return LeastSquares(penalty=self.options.penalty)

    def load_estimator(self, directory):
        return LeastSquares.load(directory)


@pytest.fixture()
def toys():
    registry.register(ToyGC)
    embedders.register(GCEmbedder)
    yield
    registry.unregister(ToyGC.name)
    embedders.unregister(GCEmbedder.name)


def test_a_method_and_an_embedder_from_a_test_file_flow_through_every_stage(toys, study_copy, tiny_cohort, tmp_path):
    from hapexpr.embed import run_embed
    from hapexpr.evaluate import evaluate_study
    from hapexpr.explain import explain_gene
    from hapexpr.final import final_estimator, fit_final
    from hapexpr.fit import run_fit
    from hapexpr.method_options import options_for
    from hapexpr.predict import predict_new
    from hapexpr.report import write_report

    assert "toy-gc" in registry.method_names()
    assert options_for("toy-gc", {"penalty": 0.5, "seed": None}) == {"penalty": 0.5}
    summary = run_embed(study_copy, model="toy-gc", bins=4, progress=False)
    info = json.loads((study_copy / "embeddings" / summary["fingerprint"] / "info.json").read_text())
    assert info["embedder"] == "toy-gc" and info["dim"] == 2
    rows = run_fit(study_copy, "toy-gc", options={"penalty": 0.01}, progress=False)
    assert set(rows["method"]) == {"toy-gc"} and rows["predicted"].notna().all()
    record = json.loads((study_copy / "models" / "toy-gc" / "fit.json").read_text())
    assert record["method"] == "toy-gc" and record["options"]["penalty"] == 0.01
    assert record["resolved"]["fingerprint"] == summary["fingerprint"]
    run_fit(study_copy, "elastic-net", options={"cis_window": 0}, progress=False)
    metrics = evaluate_study(study_copy)[0]
    assert {"toy-gc", "elastic-net-window"} <= set(metrics["method"])
    page = write_report(study_copy).read_text()
    assert "toy-gc" in page and "toy GC content" in page  # provenance from the fit record
    fit_final(study_copy, "toy-gc", progress=False)
    gene_id = pd.read_csv(study_copy / "genes.tsv", sep="\t")["gene_id"].iloc[0]
    est = final_estimator(study_copy, "toy-gc", gene_id)
    assert isinstance(est, LeastSquares) and est.final_info_["options"]["penalty"] == 0.01
    vcf = tiny_cohort / "genotypes.vcf.gz"
    pred = predict_new(study_copy, "toy-gc", vcf=vcf, out=tmp_path / "p.tsv", progress=False)
    # the cohort's own VCF: every person's prediction is the final model on their own features
    from hapexpr.cohort import StudyCohort
    from hapexpr.final import final_fit_method
    from hapexpr.study import Study

    study = Study.open(study_copy)
    want = est.predict(final_fit_method(study, "toy-gc").features(StudyCohort(study), gene_id))
    got = pred[pred["gene_id"] == gene_id].set_index("sample_id").loc[study.sample_ids, "predicted"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    effects = explain_gene(study_copy, "toy-gc", gene_id, out=tmp_path / "e.tsv")
    assert len(effects) and effects["n_carriers"].gt(0).any() and effects["mean_effect"].notna().any()


def test_unknown_names_are_clear_errors():
    from hapexpr.errors import InputError

    with pytest.raises(InputError, match="unknown method 'nope'"):
        registry.get("nope")
    with pytest.raises(InputError, match="unknown option"):
        registry.build("elastic-net", {"window": 5})
    with pytest.raises(InputError, match="names no embedder"):
        embedders.resolve("/no/such/checkpoint")


def _names_compared(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison (==, !=, in) against a string literal in ``names``."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                consts = part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
                for c in consts:
                    if isinstance(c, ast.Constant) and c.value in names:
                        hits.append((node.lineno, c.value))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("startswith", "endswith"):
            for a in node.args:
                if (
                    isinstance(a, ast.Constant)
                    and isinstance(a.value, str)
                    and any(n.startswith(a.value) for n in names)
                    and len(a.value) > 3
                ):
                    hits.append((node.lineno, a.value))
    return hits


def test_no_method_name_is_compared_outside_its_own_module():
    names = set(registry.method_names()) | {
        "enformer-ridge",
        "elastic-net-window",
        "nt-transformer-multi",
        "nt-transformer-multi-heldout",
    }
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "methods":
            continue
        found += [
            (str(path.relative_to(SRC)), line, name)
            for line, name in _names_compared(ast.parse(path.read_text()), names)
        ]
    assert not found, found


def test_fits_written_before_the_registry_are_refused_with_what_to_do(study_copy, tmp_path):
    """A hapexpr 0.1 fit.json (no method record) or final fit (format 1): evaluate still reads
    the predictions, and the commands that rebuild the method say which version and what to run."""
    from hapexpr.errors import StudyError
    from hapexpr.evaluate import evaluate_study
    from hapexpr.final import final_estimator, fit_final
    from hapexpr.fit import run_fit

    run_fit(study_copy, "elastic-net", options={"cis_window": 0}, name="old-en", progress=False)
    state = study_copy / "models" / "old-en" / "fit.json"
    record = json.loads(state.read_text())
    state.write_text(json.dumps({"key": "0123", "options": {"cis_window": None, "maf": 0.01}, "complete": True}))
    assert "old-en" in set(evaluate_study(study_copy)[0]["method"])
    with pytest.raises(StudyError, match="older hapexpr") as err:
        fit_final(study_copy, "old-en", progress=False)
    assert "--overwrite" in str(err.value)
    state.write_text(json.dumps(record))
    fit_final(study_copy, "old-en", progress=False)
    final = study_copy / "models" / "old-en" / "final" / "final.json"
    final.write_text(json.dumps({**json.loads(final.read_text()), "format": "hapexpr.final/1"}))
    gene_id = pd.read_csv(study_copy / "genes.tsv", sep="\t")["gene_id"].iloc[0]
    with pytest.raises(StudyError, match="older hapexpr"):
        final_estimator(study_copy, "old-en", gene_id)
