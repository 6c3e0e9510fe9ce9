"""``stack``: the predictions of fits already in the study combined by non-negative least squares.

Each base is a fit of the study by its name (``elastic-net``, ``enformer-ridge``, a variant such
as ``elastic-net-window`` ...), rebuilt from that fit's own ``fit.json``, so the stack uses the
very options the base was fit with. Nested so that no held-out individual's expression reaches
its own prediction (:func:`hapexpr.estimators.stack.stack_gene`): K(K-1)+K base fits per gene and
base, so the cost is stated before it starts and progress is shown.

The final stack (``fit-final``, for ``predict`` and ``explain``) is each base's own final fit
(made first when missing, with the base's options) and, per gene, NNLS weights fit on the bases'
out-of-fold predictions (predictions.tsv) against the expression of all individuals. Out-of-fold,
not the final fits' in-sample predictions: a base's in-sample predictions are fit to the very
expression they would be weighted against, so the weights would go to the base that overfits
most (the elastic net reproduces its training people far better than it predicts anyone else);
out-of-fold predictions are what each base does for people it was not trained on, which is what
its final fit does for new people. Features of a cohort for the final stack are the bases' final
predictions, (samples, bases), so ``predict`` runs it like any per-gene model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hapexpr.cohort import StudyCohort
from hapexpr.crossval import read_predictions, residualise, study_targets
from hapexpr.errors import InputError, StudyError
from hapexpr.estimators.stack import NNLSCombiner, stack_gene
from hapexpr.final import ensure_final, load_final
from hapexpr.fit_records import fit_record, fitted_names, load_fitted
from hapexpr.io.atomic import write_json
from hapexpr.methods.base import NEEDS, Method, Options, option
from hapexpr.methods.effects import EFFECT_COLUMNS, summarise_effects, window_rows
from hapexpr.methods.registry import register
from hapexpr.normalise import transform_in_fold
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

    def resolve(self, study) -> dict:
        self.bases = self._bases(study)
        # What a cohort must give for the bases' features (e.g. phased sequences for predict).
        self.needs = tuple(n for n in NEEDS if any(n in b.needs for b in self.bases))
        self._finals = None
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

    # -- the final stack: fit-final, predict, explain -----------------------------------------
    def final_requires(self) -> list[str]:
        """The bases, each of which must have its own final fit."""
        refused = [b.fit_name for b in self.bases if not b.final]
        if refused:
            kept = [b.fit_name for b in self.bases if b.final]
            keep = ",".join(kept if len(kept) >= 2 else [*kept, "OTHER"] if kept else ["A", "B"])
            raise StudyError(
                f"{self.fit_name} cannot be fit on all individuals: its base(s) {', '.join(refused)} have no "
                "final fit (no per-gene model on all individuals, e.g. a multi-gene model), so they cannot "
                "predict new people",
                path=self.study.path / "models" / refused[0],
                hint=f"stack bases that have one under another name: `hapexpr fit {self.study.path} --method stack "
                f"--base {keep} --name stack-final`, then `hapexpr fit-final {self.study.path} --method stack-final`",
            )
        for b in self.bases:
            record = fit_record(self.study, b.fit_name)
            if not record.get("complete"):
                raise StudyError(
                    f"{self.fit_name}: its base {b.fit_name} has no complete cross-validated fit, whose "
                    "out-of-fold predictions the stack's weights are fit on",
                    path=self.study.path / "models" / b.fit_name / "fit.json",
                    hint=f"finish it: `hapexpr fit {self.study.path} --method {b.fit_name}`",
                )
            used = self.resolved.get("base_records", {}).get(b.fit_name)
            if used is not None and used != record.get("key"):
                raise StudyError(
                    f"{self.fit_name}: its base {b.fit_name} was refit since the stack was fit",
                    path=self.study.path / "models" / self.fit_name / "fit.json",
                    hint=f"refit the stack: `hapexpr fit {self.study.path} --method {self.fit_name} --overwrite`",
                )
        return [b.fit_name for b in self.bases]

    def final_bases(self) -> list[Method]:
        """The bases' final-fit methods, in ``bases`` order (each made first when missing)."""
        if self._finals is None:
            self._finals = [ensure_final(self.study.path, b.fit_name) for b in self.bases]
            for cv, final in zip(self.bases, self._finals):
                if final.options.to_dict() != cv.options.to_dict():
                    console.print(
                        f"[yellow]{self.fit_name}: the final fit of {cv.fit_name} has other options "
                        f"({final.options.to_dict()}) than its cross-validated fit ({cv.options.to_dict()}), "
                        "whose out-of-fold predictions the stack's weights are fit on[/]"
                    )
        return self._finals

    def fit_final_genes(self, study, genes: list[str]):
        """Per gene, NNLS of the expression of all individuals (residualised as every final fit
        is) on the bases' out-of-fold predictions; None for a gene no base has a model of."""
        names = [b.fit_name for b in self.bases]
        self.final_bases()  # the weights are only usable with the bases' final fits
        oof = self._oof_predictions(study, names)
        expr, cov = study_targets(study)
        everyone = np.ones(len(study.sample_ids), dtype=bool)
        for gene_id in genes:
            P = oof.get(gene_id)
            if P is None:
                yield gene_id, None
                continue
            y = expr.loc[gene_id].to_numpy(dtype=np.float64)
            y = residualise(transform_in_fold(y, everyone, study.normalise), cov, everyone)
            yield gene_id, NNLSCombiner(bases=tuple(names)).fit(P, y)

    @staticmethod
    def _oof_predictions(study, names: list[str]) -> dict[str, np.ndarray]:
        """gene -> (samples, bases) out-of-fold predictions of the bases in study sample order;
        a base without a prediction for the gene (no model) is a column of zeros (weight 0)."""
        rows = read_predictions(study.path)
        rows = rows[rows["method"].isin(names)]
        out = {}
        for gene_id, g in rows.groupby("gene_id", sort=False):
            table = g.pivot(index="sample_id", columns="method", values="predicted")
            table = table.reindex(index=study.sample_ids, columns=names)
            if table.isna().all(axis=None):
                continue
            P = np.array(table.to_numpy(dtype=np.float64))  # writable
            missing = np.isnan(P)
            if (missing.any(axis=0) & ~missing.all(axis=0)).any():
                raise StudyError(
                    f"out-of-fold predictions of gene {gene_id} are missing for some individuals",
                    path=study.path / "predictions.tsv",
                    hint="refit the stack's bases (`hapexpr fit ... --overwrite`)",
                )
            P[:, missing.all(axis=0)] = 0.0
            out[str(gene_id)] = P
        return out

    def features(self, cohort, gene_id: str) -> np.ndarray:
        """(samples, bases) each base's final-fit prediction for ``cohort``'s people (0 where
        the base has no model of the gene: its weight is then 0)."""
        cols = []
        for base in self.final_bases():
            base.for_new_people = getattr(self, "for_new_people", False)
            est = load_final(self.study, base, gene_id)
            if est is None:
                cols.append(np.zeros(len(cohort.sample_ids)))
            else:
                cols.append(np.asarray(est.predict(base.features(cohort, gene_id)), dtype=np.float64))
        return np.column_stack(cols)

    def load_estimator(self, directory) -> NNLSCombiner:
        est = NNLSCombiner.load(directory)
        names = [b.fit_name for b in self.bases]
        if list(est.bases or []) != names:
            raise StudyError(
                f"the final {self.fit_name} of this gene combines {est.bases}, not the stack's bases {names}",
                path=directory,
                hint=f"refit it: `hapexpr fit-final {self.study.path} --method {self.fit_name} --overwrite`",
            )
        return est

    def explain(self, cohort, gene_id: str, est: NNLSCombiner) -> pd.DataFrame:
        """Per-variant effects: the weighted sum of the bases' own (exact, as the stack is
        linear in its bases' predictions); SD over carriers is not recoverable from them."""
        table, contributions = None, {}
        for base, w in zip(self.final_bases(), est.weights_):
            if w == 0.0:  # a base the gene's stack does not use needs no explaining
                contributions[base.fit_name] = 0.0
                continue
            base.for_new_people = getattr(self, "for_new_people", False)
            try:
                effects = base.explain(cohort, gene_id, load_final(self.study, base, gene_id))
            except InputError as err:
                raise InputError(
                    f"{self.fit_name} cannot explain gene {gene_id}: its base {base.fit_name} "
                    f"(weight {w:.4g}) cannot explain its predictions per variant",
                    hint=f"explain the bases one by one (`hapexpr explain ... --method NAME`); {err}",
                ) from err
            if table is None:
                table = effects[EFFECT_COLUMNS].copy()
            elif list(effects["variant_id"]) != list(table["variant_id"]):
                raise StudyError(f"the bases of {self.fit_name} explain different variants of {gene_id}")
            contributions[base.fit_name] = w * effects["mean_effect"].to_numpy(dtype=np.float64)
        if table is None:  # no base is used: the gene's stack is its intercept
            table = _window_table(cohort, gene_id)
        total = sum(np.broadcast_to(c, len(table)) for c in contributions.values())
        table["mean_effect"] = np.where(table["n_carriers"].to_numpy() > 0, total, np.nan)
        table["sd_effect"] = np.nan
        for name, c in contributions.items():
            table[f"effect_{name}"] = np.broadcast_to(c, len(table))
        return table


def _window_table(cohort, gene_id: str) -> pd.DataFrame:
    """The effect table's variant columns of ``gene_id``'s window (effects filled in by the caller)."""
    gene = cohort.gene(gene_id)
    carriers = [np.zeros(int((gene.genotypes[i].sum(axis=1) > 0).sum())) for i in window_rows(gene)]
    return summarise_effects(gene, carriers)[EFFECT_COLUMNS]
