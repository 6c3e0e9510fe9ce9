"""Benchmark: which method predicts expression best under each simulated genetic architecture.

For each architecture (``hapexpr simulate --architecture``) and seed, a cohort is simulated and
taken through the CLI, one process per stage:

    hapexpr prepare (--window W) ; hapexpr embed --model tiny ; hapexpr embed --model kmer:4
    hapexpr fit --method elastic-net                        (+-1 Mb, PredictDB)      --final
    hapexpr fit --method elastic-net --cis-window 0         (the sequence window)    --final
    hapexpr fit --method ridge-probe --fingerprint <tiny>                            --final
    hapexpr fit --method ridge-probe --fingerprint <kmer:4> --name ridge-probe-kmer
    hapexpr fit --method nt-transformer --fingerprint <tiny>                         (per gene)
    hapexpr fit --method nt-transformer --fingerprint <kmer:4> --name nt-transformer-kmer   (per gene)
    hapexpr fit --method nt-transformer --multi-gene --holdout-genes 0.25 --fingerprint <tiny>
                                                            --name nt-transformer-multi
    hapexpr fit --method nt-transformer --multi-gene --holdout-genes 0.25 --fingerprint <kmer:4>
                                                            --name nt-transformer-multi-kmer
    hapexpr fit --method stack --base <--stack-base>
    hapexpr fit --method stack --base <--stack-base>,nt-transformer --name stack-nt
    hapexpr evaluate ; hapexpr explain (elastic-net, ridge-probe; --explain-genes genes)

``--nt-epoch-selection split`` gives every transformer fit ``--epoch-selection split`` (one
early-stopping split instead of inner K-fold CV: ~4x less training, for the 200-gene cohort).
The stack's bases are the ``--stack-base`` fits this run makes or an earlier one left in the study.
Embedding stores are always chosen by fingerprint (read from each store's ``info.json``), never
"the most recent one". Then, per architecture and method, over all seeds' genes pooled:

- ``mean_r``: mean per-gene Pearson r (NaN counted as 0, as ``hapexpr evaluate`` does);
- ``ratio``: mean r over heritable genes / mean ceiling over them (ceiling = sqrt of the true
  ``h2_residualised``), exactly ``hapexpr.evaluate.summarise``'s ``ratio_to_ceiling``;
- ``heldout_r``: for the multi-gene fit, mean r on genes it never trained on (``-heldout`` rows);
- ``carriers_r``: r of predicted vs observed pooled over (gene, person) pairs where the person,
  in the test fold, carries an ALT allele of a window variant that nobody in that fold's
  training folds carries (``carriers_n`` such pairs). This is accuracy on those people, mostly
  from their common variants; it does not measure the effect of the unseen alleles (the elastic
  net, which ignores them, scores well here): ``benchmarks/bench_unseen.py`` does;
- ``explain_prec``: ``hapexpr explain`` on the first ``--explain-genes`` heritable genes of each
  cohort: the fraction of the top-k |mean_effect| window variants that are true causal variants
  (``truth_variants.tsv``), k = the gene's number of distinct true causal variants, averaged;
- ``diff_vs_en``, ``ci_lo``, ``ci_hi``: the headline difference from ``elastic-net``, at the
  level of cohorts: per cohort (seed), the mean over the genes both methods have of r - r(elastic
  net) (NaN r counted as 0); then the mean of those cohort means and its 95% t interval over the
  cohorts (``cohorts`` of them; no interval from one cohort). Genes of one cohort share its
  people, its fold split and overlapping windows (and, for the multi-gene rows, the same fold
  models), so they are not independent replicates; cohorts are.
- ``wilcoxon_genes_p``: the paired Wilcoxon p over the pooled genes (``hapexpr.evaluate.compare``),
  descriptive only: it treats genes as independent, which they are not.
- ``models``: which fitted models a row's genes share: ``per gene`` (each gene its own model in
  each fold) or ``K shared`` (the multi-gene rows: K fold models, each serving every gene).

Each architecture's table is headed by the mean additive and phase-dependent shares of the
genetic variance over its heritable genes (``truth.tsv``'s ``additive_share``/``phase_share``,
docs/simulate.md), so a reader sees what each regime tests; the winners table repeats them.

A gene a per-gene fit left without a model counts as r = 0 for that fit. The multi-gene fit's
``mean_r`` is over the genes it trained on (its held-out genes are in ``heldout_r``), so it is not
ranked against the others in the winners table; its paired figures are on its own genes.

Prints one markdown table per architecture, a summary of winners, and the issue's targets
(met / not met / not run, with the measured figure). ``--out FILE`` writes the per-method rows
as TSV. Cohorts, studies and logs stay in ``--workdir`` and every stage resumes there; every
fit goes through ``hapexpr fit`` again, which keeps a fit made with the same options and refuses
one made with others (e.g. older training defaults: refit it with ``--overwrite``). ``--no-run``
tabulates whatever complete fits the workdir holds, without that check.

    python benchmarks/bench_accuracy.py --smoke
    python benchmarks/bench_accuracy.py --workdir W --genes 20 --seeds 1,2 --out acc.tsv
    python benchmarks/bench_accuracy.py --workdir W --architectures motif --genes 200 \
        --methods elastic-net,elastic-net-window,ridge-probe-kmer,nt-transformer-multi-kmer \
        --nt-epoch-selection split --seeds 1

Targets (issue 13): additive: elastic net >= 0.85 of the ceiling and no method above it beyond
noise; cis-interaction: per-gene transformer beats the elastic net (cohort-level 95% interval of
the difference above 0); motif with
>= 200 genes: the multi-gene transformer's mean r on held-out genes > 0.1 and, on people
carrying unseen variants, above the elastic net's; distal: elastic net at +-1 Mb beats every
window-limited method and the stack recovers it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hapexpr.evaluate import compare, read_truth, summarise
from hapexpr.study import Study

HAPEXPR = [sys.executable, "-m", "hapexpr.cli"]
ARCHITECTURES = ("additive", "motif", "cis-interaction", "rare", "distal", "mixed")
METHODS = (
    "elastic-net",
    "elastic-net-window",
    "ridge-probe",
    "ridge-probe-kmer",
    "nt-transformer",
    "nt-transformer-kmer",
    "nt-transformer-multi",
    "nt-transformer-multi-kmer",
    "stack",
    "stack-nt",
)
MULTI = ("nt-transformer-multi", "nt-transformer-multi-kmer")
# Methods that see only the sequence window (the distal target compares the +-1 Mb elastic net with them).
WINDOW_LIMITED = (
    "elastic-net-window",
    "ridge-probe",
    "ridge-probe-kmer",
    "nt-transformer",
    "nt-transformer-kmer",
    *MULTI,
)
EXPLAINED = ("elastic-net", "ridge-probe")
ALPHA = 0.05


class StageFailed(RuntimeError):
    pass


def run(cmd: list[str], log: Path) -> float:
    """Run one stage, appending its output to ``log``; wall seconds. Raises on a non-zero exit."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise StageFailed(f"{' '.join(cmd[2:5])} exited {rc}; see {log}")
    return time.perf_counter() - t0


def store_fingerprints(study: Path) -> dict[str, str]:
    """model_spec ('tiny', 'kmer:4') -> fingerprint of each embedding store of the study."""
    out = {}
    for info in sorted((study / "embeddings").glob("*/info.json")):
        meta = json.loads(info.read_text())
        out[meta.get("model_spec") or meta.get("model")] = meta["fingerprint"]
    return out


def fit_commands(study: Path, fps: dict[str, str], args) -> dict[str, list[str]]:
    s = str(study)
    nt_extra = ["--max-epochs", str(args.nt_max_epochs)] if args.nt_max_epochs else []
    nt_extra += ["--epoch-selection", args.nt_epoch_selection] if args.nt_epoch_selection else []
    multi = ["--method", "nt-transformer", "--multi-gene", "--holdout-genes", str(args.holdout_genes), *nt_extra]
    return {
        "elastic-net": ["fit", s, "--method", "elastic-net", "--final"],
        "elastic-net-window": ["fit", s, "--method", "elastic-net", "--cis-window", "0", "--final"],
        "ridge-probe": ["fit", s, "--method", "ridge-probe", "--fingerprint", fps["tiny"], "--final"],
        "ridge-probe-kmer": [
            "fit",
            s,
            "--method",
            "ridge-probe",
            "--name",
            "ridge-probe-kmer",
            "--fingerprint",
            fps[args.kmer],
        ],
        "nt-transformer": ["fit", s, "--method", "nt-transformer", "--fingerprint", fps["tiny"], *nt_extra],
        "nt-transformer-kmer": [
            "fit",
            s,
            "--method",
            "nt-transformer",
            "--name",
            "nt-transformer-kmer",
            "--fingerprint",
            fps[args.kmer],
            *nt_extra,
        ],
        "nt-transformer-multi": ["fit", s, *multi, "--name", "nt-transformer-multi", "--fingerprint", fps["tiny"]],
        "nt-transformer-multi-kmer": [
            "fit",
            s,
            *multi,
            "--name",
            "nt-transformer-multi-kmer",
            "--fingerprint",
            fps[args.kmer],
        ],
    }


def run_cohort(arch: str, seed: int, args, work: Path, methods: list[str]) -> tuple[Path, Path, dict]:
    """Simulate, prepare, embed and fit one cohort (each step resumes); (cohort, study, seconds)."""
    cohort, study = work / f"{arch}_s{seed}" / "cohort", work / f"{arch}_s{seed}" / "study"
    log = work / f"{arch}_s{seed}" / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    secs = {}
    if args.no_run:  # main() has checked that the cohort is complete
        return cohort, study, secs
    if not (cohort / "truth.tsv").exists():
        secs["simulate"] = run(
            [
                *HAPEXPR,
                "simulate",
                "--out",
                str(cohort),
                "--individuals",
                str(args.individuals),
                "--genes",
                str(args.genes),
                "--window",
                str(args.window),
                "--seed",
                str(seed),
                "--architecture",
                arch,
                "--overwrite",
            ],
            log,
        )
    if not (study / "study.json").exists():
        secs["prepare"] = run(
            [
                *HAPEXPR,
                "prepare",
                "--vcf",
                str(cohort / "genotypes.vcf.gz"),
                "--fasta",
                str(cohort / "reference.fa"),
                "--genes",
                str(cohort / "genes.gtf"),
                "--expression",
                str(cohort / "expression.bed.gz"),
                "--covariates",
                str(cohort / "covariates.tsv"),
                "--window",
                str(args.window),
                "--out",
                str(study),
            ],
            log,
        )
    models = {"tiny"} if {"ridge-probe", "nt-transformer", "nt-transformer-multi"} & set(methods) else set()
    models |= (
        {args.kmer}
        if {"ridge-probe-kmer", "nt-transformer-kmer", "nt-transformer-multi-kmer"} & set(methods)
        else set()
    )
    for model in sorted(models):
        if model not in store_fingerprints(study) or not _store_complete(study, model):
            secs[f"embed {model}"] = run([*HAPEXPR, "embed", str(study), "--model", model], log)
    fps = store_fingerprints(study)
    cmds = fit_commands(study, {m: fps.get(m, "") for m in ("tiny", args.kmer)}, args)
    # A base is one of this run's methods or a fit an earlier run left in the study.
    base = [b for b in args.stack_base.split(",") if b in methods or _fit_complete(study, b)]
    cmds["stack"] = ["fit", str(study), "--method", "stack", "--base", ",".join(base)]
    cmds["stack-nt"] = [
        "fit",
        str(study),
        "--method",
        "stack",
        "--name",
        "stack-nt",
        "--base",
        ",".join([*base, "nt-transformer"]),
    ]
    for m in methods:
        # Always through `hapexpr fit`: it resumes a fit made with the same options in seconds and
        # refuses one made with others (older defaults too), which a check of fit.json alone would
        # silently reuse.
        secs[f"fit {m}"] = run([*HAPEXPR, *cmds[m]], log)
    metrics = study / "metrics.tsv"
    if not metrics.exists() or metrics.stat().st_mtime < (study / "predictions.tsv").stat().st_mtime:
        secs["evaluate"] = run([*HAPEXPR, "evaluate", str(study)], log)
    return cohort, study, secs


def cohort_complete(folder: Path, methods: list[str], explain_genes: int) -> bool:
    """Every fit done, evaluated after the last one and the explain files written."""
    study = folder / "study"
    if not (study / "metrics.tsv").exists() or not all(_fit_complete(study, m) for m in methods):
        return False
    if (study / "metrics.tsv").stat().st_mtime < (study / "predictions.tsv").stat().st_mtime:
        return False
    explained = [m for m in EXPLAINED if m in methods]
    return all(len(list((study / "bench_explain" / m).glob("*.tsv"))) >= min(explain_genes, 1) for m in explained)


def _fit_complete(study: Path, name: str) -> bool:
    """A fit finished earlier (re-running it would do nothing but cost a process start)."""
    record = study / "models" / name / "fit.json"
    return record.exists() and bool(json.loads(record.read_text()).get("complete"))


def _store_complete(study: Path, model: str) -> bool:
    fp = store_fingerprints(study)[model]
    info = json.loads((study / "embeddings" / fp / "info.json").read_text())
    n_genes = json.loads((study / "study.json").read_text())["n_genes"]
    return len(list((study / "embeddings" / fp / "genes").iterdir())) >= n_genes and "last_run" in info


def unseen_carriers(study_path: Path) -> pd.DataFrame:
    """(gene_id, sample_id) of test-fold people carrying an ALT allele of a window variant that no
    one in that fold's training folds carries."""
    study = Study.open(study_path)
    folds, samples = np.asarray(study.folds), np.asarray(study.sample_ids)
    rows = []
    for gene_id in study.gene_ids:
        g = study.gene(gene_id)
        carries = g.genotypes[g.variants["in_window"].to_numpy(bool)].any(axis=2)  # (variants, samples)
        for k in np.unique(folds):
            test = folds == k
            novel = ~carries[:, ~test].any(axis=1)  # (variants,): absent from training
            hit = test & carries[novel].any(axis=0)
            rows += [(gene_id, s) for s in samples[hit]]
    return pd.DataFrame(rows, columns=["gene_id", "sample_id"])


def explain_precision(cohort: Path, study: Path, n_genes: int, log: Path, methods: list[str]) -> list[dict]:
    """Per explained (method, gene): precision of the top-k |mean_effect| variants at the true ones."""
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", keep_default_na=False, dtype={"gene_id": str})
    tv = pd.read_csv(cohort / "truth_variants.tsv", sep="\t", dtype={"gene_id": str, "variant_id": str})
    causal = tv.groupby("gene_id")["variant_id"].apply(lambda s: set(s)).to_dict()
    genes = [g for g in truth.loc[truth["h2"].astype(float) > 0, "gene_id"] if g in causal][:n_genes]
    out = []
    for method in [m for m in EXPLAINED if m in methods]:
        for gene in genes:
            dest = study / "bench_explain" / method / f"{gene}.tsv"
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                run([*HAPEXPR, "explain", str(study), "--method", method, "--gene", gene, "--out", str(dest)], log)
            eff = pd.read_csv(dest, sep="\t", dtype={"variant_id": str}).dropna(subset=["mean_effect"])
            k = len(causal[gene])
            top = eff.reindex(eff["mean_effect"].abs().sort_values(ascending=False).index).head(k)
            out.append(
                {
                    "method": method,
                    "gene_id": gene,
                    "k": k,
                    "k_in_window": int(eff["variant_id"].isin(causal[gene]).sum()),
                    "precision": len(set(top["variant_id"]) & causal[gene]) / k,
                }
            )
    return out


def every_gene(metrics: pd.DataFrame, study_path: Path) -> pd.DataFrame:
    """Give every per-gene fit a row for every gene of the study: a gene a method left without a
    model (an elastic net with no variant in its window, say) predicts a constant, so r is NaN,
    counted as 0 like ``hapexpr evaluate`` counts constant predictions. Without this, a method's
    mean would be over the genes it chose to fit and the paired tests over fewer genes."""
    study = Study.open(study_path)
    truth = read_truth(study)
    h2 = truth.set_index("gene_id")["h2"] if truth is not None else None
    out = [metrics[metrics["method"].str.endswith("-heldout")]]
    for method, df in metrics[~metrics["method"].str.endswith("-heldout")].groupby("method"):
        genes = [g for g in study.gene_ids if g not in set(df["gene_id"])]
        if f"{method}-heldout" in set(metrics["method"]):  # a multi-gene fit's held-out genes are not missing
            genes = [g for g in genes if g not in set(metrics.loc[metrics["method"] == f"{method}-heldout", "gene_id"])]
        missing = pd.DataFrame({"method": method, "gene_id": genes, "n": study.folds.size, "pearson_r": np.nan})
        if h2 is not None:
            missing["h2"] = h2.reindex(genes).to_numpy()
            missing["ceiling"] = np.sqrt(missing["h2"].clip(lower=0))
        out += [df, missing]
    return pd.concat(out, ignore_index=True)


def pooled_r(pred: pd.DataFrame) -> float:
    return _r(pred["observed"].to_numpy(), pred["predicted"].to_numpy())


def unseen_contrast(on_unseen: pd.DataFrame, a: str, b: str, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Pooled r of methods ``a`` and ``b`` over the unseen-variant (gene, person) pairs both
    predicted, and a bootstrap over genes (resampled with replacement, every pair of a drawn gene
    kept) of r(a) - r(b): its 95% interval and ``p`` = the share of resamples with r(a) <= r(b)
    (one-sided). Genes, not pairs, are resampled: pairs of one gene share its model."""
    wide = (
        on_unseen[on_unseen["method"].isin([a, b])]
        .pivot_table(index=["gene_id", "sample_id"], columns="method", values=["observed", "predicted"])
        .dropna()
    )
    if a not in set(on_unseen["method"]) or b not in set(on_unseen["method"]) or len(wide) < 3:
        return {"n": len(wide), "genes": 0, "r_a": np.nan, "r_b": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan}
    obs = wide[("observed", a)].to_numpy()
    pa, pb = wide[("predicted", a)].to_numpy(), wide[("predicted", b)].to_numpy()
    gene = pd.factorize(wide.index.get_level_values("gene_id"))[0]
    members = [np.flatnonzero(gene == g) for g in range(gene.max() + 1)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        diffs.append(_r(obs[rows], pa[rows]) - _r(obs[rows], pb[rows]))
    diffs = np.asarray(diffs)
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {
        "n": len(wide),
        "genes": len(members),
        "r_a": _r(obs, pa),
        "r_b": _r(obs, pb),
        "lo": lo,
        "hi": hi,
        "p": float(np.mean(diffs[~np.isnan(diffs)] <= 0)),
    }


def _r(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() > 0 and y.std() > 0 else np.nan


def architecture_table(arch: str, runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method rows for one architecture (genes of every seed pooled), and pooled comparisons."""
    metrics, preds, unseen, expl = [], [], [], []
    for r in runs:
        tag = f"s{r['seed']}:"
        m = every_gene(pd.read_csv(r["study"] / "metrics.tsv", sep="\t", dtype={"gene_id": str}), r["study"])
        metrics.append(m.assign(gene_id=tag + m["gene_id"]))
        p = pd.read_csv(r["study"] / "predictions.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
        preds.append(p.assign(gene_id=tag + p["gene_id"]))
        u = unseen_carriers(r["study"])
        unseen.append(u.assign(gene_id=tag + u["gene_id"]))
        expl += r["explain"]
    metrics, preds, unseen = pd.concat(metrics), pd.concat(preds), pd.concat(unseen)
    summary = summarise(metrics).set_index("method")
    per_gene = metrics[~metrics["method"].str.endswith("-heldout")]
    comparisons = paired_comparisons(per_gene)
    n_folds = Study.open(runs[0]["study"]).n_folds
    on_unseen = preds.merge(unseen, on=["gene_id", "sample_id"])
    expl = pd.DataFrame(expl, columns=["method", "gene_id", "k", "k_in_window", "precision"])
    rows = []
    for method in summary.index:
        if method.endswith("-heldout"):
            continue
        s = summary.loc[method]
        u = on_unseen[on_unseen["method"] == method]
        e = expl[expl["method"] == method]
        held = f"{method}-heldout"
        row = {
            "architecture": arch,
            "method": method,
            "genes": int(s["genes"]),
            "mean_r": s["mean_r"],
            "mean_r_heritable": s.get("mean_r_heritable", np.nan),
            "ceiling": s.get("mean_ceiling_heritable", np.nan),
            "ratio": s.get("ratio_to_ceiling", np.nan),
            "heldout_genes": int(summary.loc[held, "genes"]) if held in summary.index else 0,
            "heldout_r": summary.loc[held, "mean_r"] if held in summary.index else np.nan,
            "carriers_n": len(u),
            "carriers_r": pooled_r(u),
            "explain_genes": len(e),
            "explain_prec": e["precision"].mean() if len(e) else np.nan,
            "models": f"{n_folds} shared" if method in MULTI else "per gene",
        }
        c = cohort_contrast(per_gene, method, "elastic-net")
        row.update(diff_vs_en=c["diff"], ci_lo=c["lo"], ci_hi=c["hi"], cohorts=c["cohorts"])
        row["wilcoxon_genes_p"] = _vs(comparisons, method, "elastic-net")["p_vs_en"]
        row.update(shares(runs))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("mean_r", ascending=False, ignore_index=True)
    table.attrs["per_gene"] = per_gene
    # Each multi-gene fit against the elastic net on the same unseen-variant (gene, person) pairs,
    # of its trained genes and of its held-out genes, for the motif target.
    for multi in [m for m in MULTI if m in set(preds["method"])]:
        table.attrs[multi] = {
            "trained": unseen_contrast(on_unseen, multi, "elastic-net"),
            "heldout": unseen_contrast(on_unseen, f"{multi}-heldout", "elastic-net"),
        }
    return table, comparisons


def cohort_contrast(metrics: pd.DataFrame, a: str, b: str) -> dict:
    """r(a) - r(b) at the level of cohorts: each cohort's (the ``sN:`` tag of gene_id) mean over the
    genes both methods have (NaN r counted as 0, as compare() does), then the mean over cohorts,
    its 95% t interval and two-sided t p (NaN with fewer than two cohorts)."""
    if a == b:
        cohorts = len({g.split(":")[0] for g in _genes(metrics, a)})
        return {"diff": 0.0, "lo": np.nan, "hi": np.nan, "p": np.nan, "cohorts": cohorts}
    genes = _genes(metrics, a) & _genes(metrics, b)
    if not genes:
        return {"diff": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan, "cohorts": 0}
    sub = metrics[metrics["method"].isin([a, b]) & metrics["gene_id"].isin(genes)]
    r = sub.pivot(index="gene_id", columns="method", values="pearson_r").fillna(0.0)
    d = (r[a] - r[b]).groupby(r.index.str.split(":").str[0]).mean()
    n = len(d)
    mean = float(d.mean()) if n else np.nan
    if n < 2:
        return {"diff": mean, "lo": np.nan, "hi": np.nan, "p": np.nan, "cohorts": n}
    se = float(d.std(ddof=1)) / np.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else (0.0 if mean != 0 else 1.0)
    return {"diff": mean, "lo": mean - half, "hi": mean + half, "p": p, "cohorts": n}


def _genes(metrics: pd.DataFrame, method: str) -> set:
    return set(metrics.loc[metrics["method"] == method, "gene_id"])


def shares(runs: list[dict]) -> dict:
    """Mean additive and phase-dependent shares of var(g) over the heritable genes of the runs'
    cohorts (truth.tsv; NaN for cohorts simulated before the shares were recorded)."""
    parts = []
    for r in runs:
        truth = pd.read_csv(r["study"].parent / "cohort" / "truth.tsv", sep="\t", keep_default_na=False)
        if {"additive_share", "phase_share"} <= set(truth.columns):
            heritable = truth[truth["h2"].astype(float) > 0]
            parts.append(heritable[["additive_share", "phase_share"]].apply(pd.to_numeric))
    if not parts:
        return {"additive_share": np.nan, "phase_share": np.nan, "heritable_genes": 0}
    both = pd.concat(parts)
    return {
        "additive_share": both["additive_share"].mean(),
        "phase_share": both["phase_share"].mean(),
        "heritable_genes": len(both),
    }


def paired_comparisons(metrics: pd.DataFrame) -> pd.DataFrame:
    """``hapexpr.evaluate.compare`` for every pair of methods, each pair on the genes both were
    evaluated on (compare() alone would count the multi-gene fit's held-out genes as r = 0)."""
    genes = metrics.groupby("method")["gene_id"].apply(set).to_dict()
    full = [m for m, g in genes.items() if g == set(metrics["gene_id"])]
    rows = [compare(metrics[metrics["method"].isin(full)])]
    for partial in [m for m in genes if m not in full]:
        shared = metrics[metrics["gene_id"].isin(genes[partial])]
        c = compare(shared)
        rows.append(c[(c["method_a"] == partial) | (c["method_b"] == partial)])
    return pd.concat(rows, ignore_index=True)


def _vs(comparisons: pd.DataFrame, a: str, b: str) -> dict:
    """Mean r(a) - r(b) and the paired Wilcoxon p from compare()'s (alphabetical) rows."""
    if a == b:
        return {"diff_vs_en": 0.0, "p_vs_en": np.nan}
    row = comparisons[
        ((comparisons["method_a"] == a) & (comparisons["method_b"] == b))
        | ((comparisons["method_a"] == b) & (comparisons["method_b"] == a))
    ]
    if row.empty:
        return {"diff_vs_en": np.nan, "p_vs_en": np.nan}
    row = row.iloc[0]
    sign = 1.0 if row["method_a"] == a else -1.0
    return {"diff_vs_en": sign * row["mean_diff"], "p_vs_en": row["wilcoxon_p"]}


def pair(table: pd.DataFrame, a: str, b: str) -> dict:
    """The cohort-level contrast r(a) - r(b) on an architecture's per-gene r (see cohort_contrast)."""
    return cohort_contrast(table.attrs["per_gene"], a, b)


def above(c: dict) -> bool:
    """The cohort-level 95% interval lies above 0 (never with fewer than two cohorts)."""
    return bool(c["lo"] > 0)


def _ci(c: dict) -> str:
    return f"{fmt(c['diff'])} (95% CI {fmt(c['lo'])} to {fmt(c['hi'])} over {c['cohorts']} cohorts)"


def fmt(x, nd=3) -> str:
    if isinstance(x, (int, np.integer)):
        return str(x)
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"


def markdown(table: pd.DataFrame) -> str:
    cols = [
        "method",
        "genes",
        "mean_r",
        "ratio",
        "heldout_r",
        "carriers_r",
        "carriers_n",
        "explain_prec",
        "diff_vs_en",
        "ci_lo",
        "ci_hi",
        "cohorts",
        "wilcoxon_genes_p",
        "models",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) if c not in ("method", "models") else r[c] for c in cols) + " |")
    return "\n".join(lines)


def shares_line(table: pd.DataFrame) -> str:
    r = table.iloc[0]
    return (
        f"Architecture measured on its heritable genes ({r['heritable_genes']}): mean additive share of var(g) "
        f"{fmt(r['additive_share'])}, mean phase-dependent share {fmt(r['phase_share'])} (truth.tsv). "
        "Headline differences are means over cohorts with a 95% t interval over cohorts; the Wilcoxon p over "
        "pooled genes is descriptive (genes share people, folds and windows). Rows marked 'K shared' use K fold "
        "models shared by all their genes."
    )


def winners(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> str:
    lines = [
        "| architecture | genes | ceiling | winner | winner mean r | runner-up | margin (95% CI over cohorts) "
        "| elastic-net mean r | winner - elastic-net (95% CI over cohorts) | additive share | phase share |",
        "|" + "---|" * 11,
    ]
    for arch, (t, _) in tables.items():
        # Methods with a mean over fewer genes (the multi-gene fit's trained genes) are not ranked
        # against means over every gene; their paired difference is in the per-method table.
        ranked = t[t["genes"] == t["genes"].max()]
        best, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else None
        en = t[t["method"] == "elastic-net"]
        en_r = en["mean_r"].iloc[0] if len(en) else np.nan
        margin = pair(t, best["method"], second["method"]) if second is not None else None
        vs_en = pair(t, best["method"], "elastic-net")
        lines.append(
            f"| {arch} | {best['genes']} | {fmt(best['ceiling'])} | {best['method']} | {fmt(best['mean_r'])} | "
            f"{second['method'] if second is not None else '-'} | {_ci(margin) if margin else '-'} | {fmt(en_r)} | "
            f"{_ci(vs_en)} | {fmt(best['additive_share'])} | {fmt(best['phase_share'])} |"
        )
    return "\n".join(lines)


def targets(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]], genes_per_cohort: dict[str, int]) -> list[str]:
    """One line per issue target: MET / NOT MET / NOT RUN, with the measured figures."""
    out = []

    def get(t, method, col):
        row = t[t["method"] == method]
        return row[col].iloc[0] if len(row) else np.nan

    if "additive" in tables:
        t, _ = tables["additive"]
        ratio = get(t, "elastic-net", "ratio")
        better = [m for m in t["method"] if m != "elastic-net" and above(pair(t, m, "elastic-net"))]
        met = ratio >= 0.85 and not better
        out.append(
            f"additive: elastic-net ratio to ceiling = {fmt(ratio)} (target >= 0.85); methods above it (95% CI "
            f"over cohorts above 0): {', '.join(better) or 'none'} -> {'MET' if met else 'NOT MET'}"
        )
    else:
        out.append("additive: NOT RUN")
    if "cis-interaction" in tables:
        t, _ = tables["cis-interaction"]
        per_gene = [m for m in ("nt-transformer", "nt-transformer-kmer") if m in set(t["method"])]
        phase = get(t, "elastic-net", "phase_share") if "elastic-net" in set(t["method"]) else t["phase_share"].iloc[0]
        for m in per_gene:
            d = pair(t, m, "elastic-net")
            w = pair(t, m, "elastic-net-window")
            out.append(
                f"cis-interaction (mean phase-dependent share {fmt(phase)}): {m} - elastic-net mean r = {_ci(d)}; "
                f"vs elastic-net-window {_ci(w)} -> {'MET' if above(d) else 'NOT MET'} (95% CI over cohorts above 0)"
            )
        if not per_gene:
            out.append("cis-interaction: NOT RUN (no per-gene transformer fit)")
    else:
        out.append("cis-interaction: NOT RUN")
    fitted = [m for m in MULTI if "motif" in tables and m in set(tables["motif"][0]["method"])]
    for multi in fitted:
        t = tables["motif"][0]
        held = get(t, multi, "heldout_r")
        tr, ho = t.attrs[multi]["trained"], t.attrs[multi]["heldout"]
        big = genes_per_cohort["motif"] >= 200
        met = held > 0.1 and tr["r_a"] > tr["r_b"] and tr["p"] < ALPHA
        verdict = (
            ("MET" if met else "NOT MET")
            if big
            else ("would be MET" if met else "would be NOT MET") + " (size below target)"
        )
        out.append(
            f"motif ({genes_per_cohort['motif']} genes per cohort{'' if big else ', FEWER THAN the 200 the target asks'}): "
            f"{multi} held-out-gene mean r = {fmt(held)} (target > 0.1) over "
            f"{int(get(t, multi, 'heldout_genes'))} held-out genes; unseen-variant carriers, trained genes: "
            f"{_contrast(tr)}; held-out genes: {_contrast(ho)} -> {verdict} (beating the elastic net on "
            f"unseen-variant carriers is read as a higher pooled r with bootstrap p < {ALPHA})"
        )
    if not fitted:
        out.append("motif: NOT RUN (no multi-gene transformer fit)")
    if "distal" in tables:
        t, _ = tables["distal"]
        en = get(t, "elastic-net", "mean_r")
        worse = {m: pair(t, "elastic-net", m) for m in WINDOW_LIMITED if m in set(t["method"])}
        beats = all(above(c) for c in worse.values())
        detail = "; ".join(f"{m} {_ci(c)}" for m, c in worse.items())
        st = get(t, "stack", "mean_r")
        ds = pair(t, "stack", "elastic-net")
        recovers = st >= 0.9 * en and not ds["hi"] < 0
        out.append(
            f"distal: elastic-net mean r = {fmt(en)}; its margin over each window-limited method: {detail} "
            f"-> {'MET' if beats else 'NOT MET'} (every 95% CI over cohorts above 0); stack mean r = {fmt(st)} "
            f"(stack - elastic-net = {_ci(ds)}) -> recovers it: "
            f"{'MET' if recovers else 'NOT MET'} (stack >= 0.9 x elastic-net and its CI not below 0)"
        )
    else:
        out.append("distal: NOT RUN")
    return out


def _contrast(c: dict) -> str:
    return (
        f"r = {fmt(c['r_a'])} vs elastic-net {fmt(c['r_b'])} on the same {c['n']} (gene, person) pairs of "
        f"{c['genes']} genes (difference 95% CI {fmt(c['lo'])} to {fmt(c['hi'])}, bootstrap over genes, "
        f"one-sided p = {fmt(c['p'])})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one tiny cohort, every method, seconds")
    ap.add_argument("--architectures", default=",".join(ARCHITECTURES))
    ap.add_argument("--seeds", default="1,2", help="comma-separated simulation seeds (>= 2 for the full table)")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--genes", type=int, default=20)
    ap.add_argument("--window", type=int, default=6000)
    ap.add_argument("--methods", default=",".join(METHODS), help="subset of: " + ",".join(METHODS))
    ap.add_argument(
        "--stack-base",
        default="elastic-net,elastic-net-window,ridge-probe,ridge-probe-kmer",
        help="fits the stack combines (it refits each 25 times per gene, so the per-gene "
        "transformer is left out by default)",
    )
    ap.add_argument("--kmer", default="kmer:4", help="the k-mer embedder of ridge-probe-kmer")
    ap.add_argument("--holdout-genes", type=float, default=0.25)
    ap.add_argument("--explain-genes", type=int, default=2, help="heritable genes explained per cohort")
    ap.add_argument(
        "--nt-max-epochs",
        type=int,
        default=None,
        help="cap the transformer's epochs (smoke mode only uses this; default: the method's own)",
    )
    ap.add_argument(
        "--nt-epoch-selection",
        choices=("kfold", "split"),
        default=None,
        help="the transformers' --epoch-selection (default: the method's own, kfold; split is ~4x faster)",
    )
    ap.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: tabulate the cohorts of --workdir that are complete (evaluated), skip the rest",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep cohorts, studies and logs here (resumes)")
    ap.add_argument("--out", type=Path, default=None, help="TSV of the per-architecture, per-method rows")
    args = ap.parse_args()
    if args.smoke:
        args.architectures, args.seeds, args.individuals, args.genes, args.window = "additive", "1", 60, 4, 600
        args.explain_genes, args.nt_max_epochs = 1, 2
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    archs = [a for a in args.architectures.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_accuracy_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_accuracy: {len(archs)} architectures x seeds {seeds}: {args.individuals} people x {args.genes} genes, "
        f"window {args.window}; methods {', '.join(methods)}; workdir {args.workdir}",
        flush=True,
    )
    tables, failed = {}, []
    for arch in archs:
        runs = []
        for seed in seeds:
            t0 = time.perf_counter()
            if args.no_run:
                if not cohort_complete(args.workdir / f"{arch}_s{seed}", methods, args.explain_genes):
                    failed.append(f"{arch} seed {seed}: not complete in {args.workdir} (--no-run: skipped)")
                    continue
            try:
                cohort, study, secs = run_cohort(arch, seed, args, args.workdir, methods)
                expl = explain_precision(cohort, study, args.explain_genes, study.parent / "log.txt", methods)
            except StageFailed as e:
                failed.append(f"{arch} seed {seed}: {e}")
                print(f"FAILED {arch} seed {seed}: {e}", flush=True)
                continue
            runs.append({"seed": seed, "study": study, "explain": expl})
            print(
                f"{arch} seed {seed}: {time.perf_counter() - t0:.0f} s ("
                + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
                + ")",
                flush=True,
            )
        if runs:
            tables[arch] = architecture_table(arch, runs)
            print(f"\n### {arch} ({len(runs)} seeds x {args.genes} genes, {args.individuals} people)\n", flush=True)
            print(shares_line(tables[arch][0]) + "\n", flush=True)
            print(markdown(tables[arch][0]) + "\n", flush=True)
    if not tables:
        print("no cohort completed")
        return 1
    print("\n### Winners (differences: mean over cohorts of the per-cohort mean difference, 95% t CI)\n")
    print(winners(tables))
    print("\n### Targets\n")
    for line in targets(tables, {a: args.genes for a in archs}):
        print(f"- {line}")
    if args.out:
        pd.concat([t for t, _ in tables.values()]).to_csv(args.out, sep="\t", index=False, float_format="%.6g")
        print(f"\nwrote {args.out}")
    if failed:
        print("\nFAILED cohorts:\n" + "\n".join(failed))
        return 1
    if tmp is not None:
        tmp.cleanup()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
