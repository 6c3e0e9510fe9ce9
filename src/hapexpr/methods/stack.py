"""``stack``: the predictions of fits already in the study combined by non-negative least squares.

Each base is a fit of the study by its name (``elastic-net``, ``enformer-ridge``, a variant such
as ``elastic-net-window`` ...), rebuilt from that fit's own ``fit.json``, so the stack uses the
very options the base was fit with. Nested so that no held-out individual's expression reaches
its own prediction (:func:`hapexpr.estimators.stack.stack_gene`): K(K-1)+K base fits per gene and
base, so the cost is stated before it starts and progress is shown.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import study_targets
from hapexpr.errors import StudyError
from hapexpr.estimators.stack import stack_gene
from hapexpr.fit_records import fit_record, fitted_names, load_fitted
from hapexpr.io.atomic import write_json
from hapexpr.methods.base import Method, Options, option
from hapexpr.methods.registry import register
from hapexpr.progress import console, track_genes


@dataclass(frozen=True)
class StackOptions(Options):
    base: tuple[str, ...] | None = option(
        None, "Comma-separated fits to combine (default: every per-gene fit already in the study)."
    )


@register
class Stack(Method):
    name = "stack"
    Options = StackOptions
    summary = "NNLS over the out-of-fold predictions of fits already in the study, nested"
    order = 90
    final = False

    def resolve(self, study) -> dict:
        self.bases = self._bases(study)
        return {"base_records": {b.fit_name: fit_record(study, b.fit_name)["key"] for b in self.bases}}

    def _bases(self, study) -> list[Method]:
        if self.options.base:
            names = list(self.options.base)
        else:
            names = [n for n in fitted_names(study) if n != self.fit_name]
        bases = [load_fitted(study, n) for n in names]
        if not self.options.base:  # per-gene fits only, each once
            unique = {b.fit_name: b for b in bases if b.final and not isinstance(b, Stack)}
            bases = list(unique.values())
        if len(bases) < 2:
            raise StudyError(
                f"stack needs at least two base fits; found {', '.join(b.fit_name for b in bases) or 'none'}",
                path=study.path,
                hint="fit two or more methods first (`hapexpr fit`), or pass --base",
            )
        return bases

    def models_used(self) -> list[dict]:
        return [m for b in self.bases for m in b.models_used()]

    def fit_record(self) -> dict:
        record = super().fit_record()
        record["options"]["base"] = [b.fit_name for b in self.bases]
        return record

    def fit_study(self, study, run, *, progress: bool) -> pd.DataFrame:
        names = [b.fit_name for b in self.bases]
        k = study.n_folds
        fits = k * (k - 1) + k
        todo = [g for g in study.gene_ids if not run.done(g)]
        console.print(
            f"stack of {', '.join(names)}: {len(todo)} genes x {len(names)} bases x {fits} fits each (nested {k}-fold)"
        )
        start = time.time()
        expr, cov = study_targets(study)
        cohort = StudyCohort(study)
        weights_path = run.dir / "weights.json"
        for gene_id in track_genes(todo, f"fit {self.fit_name}", enabled=progress):
            feats = [b.features(cohort, gene_id) for b in self.bases]
            y = expr.loc[gene_id].to_numpy(dtype=np.float64)
            obs, pred, w = stack_gene(
                feats,
                [b.estimator for b in self.bases],
                y,
                cov,
                study.folds,
                seed=self.options.seed,
                normalise=study.normalise,
            )
            run.save_gene(gene_id, obs, pred)
            write_json(run.gene_path(gene_id, ".weights.json"), dict(zip(names, w.mean(axis=0).round(4).tolist())))
            if gene_id == todo[0] and len(todo) > 1:
                # Measured, not guessed from the bases' fit times: those include one-off work
                # (embedding, the cis store) that the stack's refits do not repeat.
                took = time.time() - start
                console.print(f"stack: first gene in {took:.1f} s; about {took * (len(todo) - 1) / 60:.1f} min to go")
        weights = {
            g: json.loads(run.gene_path(g, ".weights.json").read_text())
            for g in study.gene_ids
            if run.gene_path(g, ".weights.json").exists()
        }
        write_json(weights_path, weights)
        if weights:
            mean_w = {b: round(float(np.mean([w[b] for w in weights.values()])), 3) for b in names}
            console.print(f"stack: mean weight per SD of each base's predictions {mean_w}")
        return run.finish({"seconds": round(time.time() - start, 2)})
