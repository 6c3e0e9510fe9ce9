"""``hapexpr fit``: build the chosen method and drive it through the cross-validation loop.

Method names in predictions.tsv: ``elastic-net``, ``ridge-probe``, ``nt-transformer``,
``enformer`` (zero-shot) or ``enformer-ridge`` (trained head), ``stack``, and for multi-gene
mode ``nt-transformer-multi`` (genes trained on) and ``nt-transformer-multi-heldout`` (genes the
shared model never saw).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hapexpr.errors import InputError, StudyError
from hapexpr.io.atomic import study_lock, write_json
from hapexpr.progress import console, track_genes
from hapexpr.study import Study
from hapexpr.train import (
    FitRun,
    fit_per_gene,
    read_predictions,
    residualise,
    study_targets,
    write_predictions,
)

METHODS = ("elastic-net", "nt-transformer", "ridge-probe", "enformer", "stack")
STACK_BASES = ("elastic-net", "ridge-probe", "nt-transformer", "enformer")


@dataclass(frozen=True)
class FitOptions:
    """Every option of ``hapexpr fit``; each method reads the ones it uses."""

    seed: int = 0
    fingerprint: str | None = None
    # elastic-net
    cis_window: int | None = None
    maf: float = 0.01
    # nt-transformer
    multi_gene: bool = False
    holdout_genes: float = 0.0
    pairwise_weight: float | None = None
    max_epochs: int | None = None
    # enformer
    model: str = "tiny"
    track: int = 5110
    head: str = "zero-shot"
    seq_len: int | None = None
    batch_size: int = 2
    device: str = "cpu"
    # stack
    base: tuple[str, ...] | None = None


def build_method(name: str, opts: FitOptions):
    """A ``Method`` for ``name`` configured from ``opts``, and the options its results depend on."""
    if name == "elastic-net":
        from hapexpr.models.elastic_net import ElasticNetMethod

        return ElasticNetMethod(cis_window=opts.cis_window, maf=opts.maf), {"cis_window": opts.cis_window, "maf": opts.maf}
    if name == "ridge-probe":
        from hapexpr.models.ridge_probe import RidgeProbeMethod

        return RidgeProbeMethod(fingerprint=opts.fingerprint), {"fingerprint": opts.fingerprint}
    if name == "nt-transformer":
        from hapexpr.models.nt_training import TrainConfig
        from hapexpr.models.nt_transformer import NTTransformerMethod

        kw = {"pairwise_weight": TrainConfig.pairwise_weight if opts.pairwise_weight is None else opts.pairwise_weight,
              "max_epochs": TrainConfig.max_epochs if opts.max_epochs is None else opts.max_epochs}
        m = NTTransformerMethod(fingerprint=opts.fingerprint, seed=opts.seed, **kw)
        # Every setting the fit depends on, so changing any of them (or a default) refits.
        return m, {"train": asdict(m.train_config), "d_model": m.d_model, "n_layers": m.n_layers,
                   "fingerprint": opts.fingerprint}
    if name == "enformer":
        from hapexpr.models.enformer import EnformerMethod

        m = EnformerMethod(model=opts.model, track=opts.track, head=opts.head, seq_len=opts.seq_len,
                           batch_size=opts.batch_size, device=opts.device, seed=opts.seed)
        if opts.head != "zero-shot":
            m.name = f"enformer-{opts.head}"
        return m, m.options
    raise InputError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}")


def run_fit(study_path: str | Path, method: str, *, options: FitOptions = FitOptions(), overwrite: bool = False,
            progress: bool = True) -> pd.DataFrame:
    """Fit ``method`` under the study's cross-validation; returns its rows of predictions.tsv."""
    study = Study.open(study_path)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    if method == "stack":
        return fit_stack(study, options, overwrite=overwrite, progress=progress)
    if method == "nt-transformer" and options.multi_gene:
        return fit_nt_multi_gene(study, options, overwrite=overwrite)
    m, method_options = build_method(method, options)
    if method == "enformer":
        from hapexpr.models.enformer import precompute

        with study_lock(study.path, "fit --method enformer (precompute)"):
            summary = precompute(study.path, method=m, progress=progress)
        console.print(summary["input"])
    if method in ("ridge-probe", "nt-transformer"):
        from hapexpr.embed import open_embeddings

        method_options["fingerprint"] = open_embeddings(study.path, fingerprint=options.fingerprint).fingerprint
    return fit_per_gene(study, m, options={**method_options, "seed": options.seed}, overwrite=overwrite,
                        seed=options.seed, progress=progress)


def fit_nt_multi_gene(study: Study, opts: FitOptions, *, overwrite: bool) -> pd.DataFrame:
    """Shared-weight transformer across genes, per outer fold; a seeded fraction of genes is
    never trained on and reported under ``nt-transformer-multi-heldout``."""
    from hapexpr.embed import open_embeddings
    from hapexpr.models.nt_training import TrainConfig, choose_holdout_genes, multi_gene_fold

    store = open_embeddings(study.path, fingerprint=opts.fingerprint)
    config = TrainConfig(
        pairwise_weight=TrainConfig.pairwise_weight if opts.pairwise_weight is None else opts.pairwise_weight,
        max_epochs=TrainConfig.max_epochs if opts.max_epochs is None else opts.max_epochs, seed=opts.seed)
    heldout = choose_holdout_genes(study.gene_ids, opts.holdout_genes, seed=opts.seed)
    name = "nt-transformer-multi"
    key_opts = {"fingerprint": store.fingerprint, "holdout_genes": opts.holdout_genes, "seed": opts.seed, **asdict(config)}
    start = time.time()
    with study_lock(study.path, "fit --method nt-transformer --multi-gene"):
        run = FitRun(study, name, key_opts, overwrite=overwrite)
        if (rows := run.previous_rows()) is not None:
            return rows
        expr, cov = study_targets(study)
        X = {g: np.asarray(store.sample_bins(study.gene(g)), dtype=np.float32) for g in study.gene_ids}
        y_raw = {g: expr.loc[g].to_numpy(dtype=np.float64) for g in study.gene_ids}
        folds = study.folds
        observed = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        predicted = {g: np.full(len(folds), np.nan) for g in study.gene_ids}
        for k in np.unique(folds):
            test, train = folds == k, folds != k
            y_res = {g: residualise(y, cov, train) for g, y in y_raw.items()}
            preds = multi_gene_fold(X, y_res, train, test, heldout, config=config, seed=opts.seed + int(k))
            for g in study.gene_ids:
                observed[g][test] = y_res[g][test]
                predicted[g][test] = preds[g]
            console.print(f"{name}: fold {k + 1}/{study.n_folds} done ({time.time() - start:.0f} s)")
        for g in study.gene_ids:
            run.save_gene(g, observed[g], predicted[g])
        new = run.finish({"heldout_genes": heldout, "seconds": round(time.time() - start, 2)})
        held = new["gene_id"].isin(heldout)
        write_predictions(study.path, name, new[~held])
        write_predictions(study.path, name + "-heldout", new[held].assign(method=name + "-heldout"))
    console.print(f"{name}: {len(study.gene_ids) - len(heldout)} genes trained, {len(heldout)} held out, "
                  f"{time.time() - start:.1f} s")
    return new


def fit_stack(study: Study, opts: FitOptions, *, overwrite: bool, progress: bool) -> pd.DataFrame:
    """Non-negative stacking of base methods, nested inside the training folds
    (``hapexpr.models.stack``). Bases: ``--base``, else every base method already fit."""
    from hapexpr.models.stack import stack_gene

    fitted = set(read_predictions(study.path)["method"])
    bases = list(opts.base) if opts.base else [m for m in STACK_BASES if m in fitted]
    if len(bases) < 2:
        raise StudyError(
            f"stack needs at least two base methods; found {', '.join(bases) or 'none'} already fit",
            path=study.path, hint="fit two or more of elastic-net, ridge-probe, nt-transformer, enformer first, or pass --base",
        )
    methods = [build_method(b, opts) for b in bases]
    start = time.time()
    expr, cov = study_targets(study)
    with study_lock(study.path, "fit --method stack"):
        run = FitRun(study, "stack", {"base": bases, "seed": opts.seed, "base_options": [o for _, o in methods]},
                     overwrite=overwrite)
        if (rows := run.previous_rows()) is not None:
            return rows
        weights = {}
        for gene_id in track_genes([g for g in study.gene_ids if not run.done(g)], "fit stack", enabled=progress):
            gene = study.gene(gene_id)
            feats = [m.features(study, gene) for m, _ in methods]
            y = expr.loc[gene_id].to_numpy(dtype=np.float64)
            obs, pred, w = stack_gene(feats, [m.estimator for m, _ in methods], y, cov, study.folds, seed=opts.seed)
            run.save_gene(gene_id, obs, pred)
            weights[gene_id] = dict(zip(bases, w.mean(axis=0).round(4).tolist()))
        write_json(run.dir / "weights.json", weights)
        if weights:
            mean_w = {b: round(float(np.mean([w[b] for w in weights.values()])), 3) for b in bases}
            console.print(f"stack: mean weight per SD of each base method's predictions {mean_w}")
        rows = run.finish({"seconds": round(time.time() - start, 2)})
    console.print(f"stack of {', '.join(bases)}: {len(study.gene_ids)} genes in {time.time() - start:.1f} s")
    return rows
