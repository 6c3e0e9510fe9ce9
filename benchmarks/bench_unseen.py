"""Benchmark: do methods predict the effect of alleles no training person carried?

For each seed a cohort is simulated with people outside the study (``hapexpr simulate
--new-people``: one simulation, so the new people share the study's common variants and carry
their own private and rare ones) and taken through the CLI, one process per stage:

    hapexpr simulate --architecture A --new-people M ; hapexpr prepare ; hapexpr embed --model kmer:4
    hapexpr fit-final --method <each method of --methods>
    hapexpr predict --vcf new_people.vcf.gz            (the new people as they are)
    hapexpr predict --vcf reverted.vcf.gz              (the same, every unseen allele set to REF)

An unseen allele is a record of new_people.vcf.gz that genotypes.vcf.gz lacks (no study person
carries its ALT); ``reverted.vcf.gz`` drops those records (``bcftools view -e ID=@file``), which
is REF for every person. The predicted change of a (gene, person) is predict(new) -
predict(reverted); the true change is ``genetic_value - genetic_value_reverted`` of
new_people_genetic.tsv (docs/simulate.md). Over the (gene, person) pairs whose true change is at
least ``--min-change`` (default 0.001 expression units, about 0.2% of a heritable gene's genetic
sd: smaller motif-score changes exist but no method can be scored on them), per method:

- ``r``: Pearson r of predicted vs true change (NaN when the predicted change is constant, e.g.
  always 0);
- ``sign``: share of pairs where the predicted change has the sign of the true change (a
  predicted change of exactly 0 counts as wrong);
- ``slope``: least-squares slope of predicted on true change (1 = the right size; the
  prediction is on the study's residualised expression scale, g on the simulated one, which
  differ by the normalisation only);
- ``zero``: share of pairs with a predicted change of exactly 0;
- each with a 95% bootstrap interval over genes (genes resampled with replacement, 1,000 times).

The elastic net is the zero control: the unseen alleles are not among its variants. Methods are
named by ``--methods`` from METHODS below, or given as ``NAME=ARGS`` (the ``hapexpr fit-final``
arguments after the study; ``{kmer}`` is the kmer store's fingerprint), so a method that gains
``fit-final``/``predict`` later needs no change here.

``--old-src DIR`` also runs every nt-transformer method as ``<name>-oldscaling`` with
``PYTHONPATH=DIR`` (e.g. a ``git archive`` of the commit before the input-scaling change of issue
19) for fit-final and predict, in a copy of the study (``hapexpr fit-final`` has no ``--name``).
``--accuracy`` also fits every nt-transformer run cross-validated (``hapexpr fit``, same options)
and reports its mean per-gene out-of-fold r on the study (all genes, NaN as 0; and the genes with
true h2 > 0): the accuracy side of that ablation.

    python benchmarks/bench_unseen.py --smoke
    python benchmarks/bench_unseen.py --workdir W --individuals 200 --new-people 60 --genes 30 \\
        --architecture motif --seeds 1,2 --epoch-selection split --out unseen.tsv

Target (issue 19): motif, kmer:4: per-gene nt-transformer sign >= 0.8 and r >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HAPEXPR = [sys.executable, "-m", "hapexpr.cli"]
# fit-final names a fit by its method's default name, so each method runs on the kmer store
# (the only store these studies embed) under that name.
METHODS = {
    "elastic-net": "--method elastic-net",
    "ridge-probe": "--method ridge-probe --fingerprint {kmer}",
    "nt-transformer": "--method nt-transformer --fingerprint {kmer}",
    "nt-transformer-multi": "--method nt-transformer --multi-gene --fingerprint {kmer}",
    "stack": "--method stack",
}
DEFAULT_METHODS = "elastic-net,ridge-probe,nt-transformer"
RESAMPLES = 1000


class StageFailed(RuntimeError):
    pass


def run(cmd: list[str], log: Path, *, pythonpath: str | None = None) -> float:
    """One stage, its output appended to ``log``; wall seconds. Raises on a non-zero exit."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise StageFailed(f"{' '.join(cmd[3:6])} exited {rc}; see {log}")
    return time.perf_counter() - t0


def kmer_fingerprint(study: Path, spec: str) -> str:
    for info in sorted((study / "embeddings").glob("*/info.json")):
        meta = json.loads(info.read_text())
        if (meta.get("model_spec") or meta.get("model")) == spec:
            return meta["fingerprint"]
    raise StageFailed(f"no {spec} store in {study}")


def vcf_ids(vcf: Path) -> list[str]:
    out = subprocess.run(["bcftools", "query", "-f", "%ID\n", str(vcf)], check=True, capture_output=True, text=True)
    return out.stdout.split()


def reverted_vcf(cohort: Path) -> tuple[Path, int]:
    """new_people.vcf.gz without the records the study lacks (every unseen allele -> REF)."""
    new, study = cohort / "new_people.vcf.gz", cohort / "genotypes.vcf.gz"
    unseen = sorted(set(vcf_ids(new)) - set(vcf_ids(study)))
    ids = cohort / "unseen_ids.txt"
    ids.write_text("".join(f"{i}\n" for i in unseen))
    out = cohort / "reverted.vcf.gz"
    subprocess.run(["bcftools", "view", "-e", f"ID=@{ids}", "-Oz", "-o", str(out), str(new)], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(out)], check=True)
    if len(vcf_ids(out)) != len(vcf_ids(new)) - len(unseen):
        raise StageFailed("reverted.vcf.gz does not hold exactly the records the study also has")
    return out, len(unseen)


def prepare_cohort(root: Path, seed: int, args) -> tuple[Path, Path, dict]:
    cohort, study, log = root / "cohort", root / "study", root / "log.txt"
    secs = {}
    if not (cohort / "truth.tsv").exists():
        secs["simulate"] = run(
            [
                *HAPEXPR,
                "simulate",
                "--out",
                str(cohort),
                "--individuals",
                str(args.individuals),
                "--new-people",
                str(args.new_people),
                "--genes",
                str(args.genes),
                "--window",
                str(args.window),
                "--architecture",
                args.architecture,
                "--seed",
                str(seed),
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
    secs["embed"] = run([*HAPEXPR, "embed", str(study), "--model", args.kmer], log)
    return cohort, study, secs


def method_args(spec: str, fingerprint: str, args) -> tuple[str, list[str]]:
    name, _, given = spec.partition("=")
    text = given or METHODS.get(name)
    if text is None:
        raise SystemExit(f"unknown method {name!r}: one of {', '.join(METHODS)}, or NAME=ARGS")
    extra = []
    if "nt-transformer" in text and args.epoch_selection:
        extra = ["--epoch-selection", args.epoch_selection]
    if "nt-transformer" in text and args.max_epochs:
        extra += ["--max-epochs", str(args.max_epochs)]
    return name, text.format(kmer=fingerprint).split() + extra


def changes(study: Path, cohort: Path, name: str, vcfs: dict[str, Path], log: Path, pythonpath) -> pd.DataFrame:
    """(gene_id, sample_id, predicted_change, true_change) for one final fit."""
    preds = {}
    for label, vcf in vcfs.items():
        out = study.parent / f"pred_{study.name}_{name}_{label}.tsv"
        run(
            [*HAPEXPR, "predict", str(study), "--method", name, "--vcf", str(vcf), "--out", str(out), "--overwrite"],
            log,
            pythonpath=pythonpath,
        )
        preds[label] = pd.read_csv(out, sep="\t").set_index(["gene_id", "sample_id"])["predicted"]
    truth = pd.read_csv(cohort / "new_people_genetic.tsv", sep="\t").set_index(["gene_id", "sample_id"])
    df = pd.DataFrame({"predicted_change": preds["new"] - preds["reverted"]}).join(truth, how="inner")
    if len(df) != len(truth):
        raise StageFailed(f"{name}: {len(df)} predictions for {len(truth)} (gene, new person) pairs")
    df["true_change"] = df["genetic_value"] - df["genetic_value_reverted"]
    return df.reset_index()[["gene_id", "sample_id", "predicted_change", "true_change"]]


def cv_accuracy(study: Path, name: str, log: Path, pythonpath) -> dict:
    """Mean per-gene out-of-fold r of fit ``name`` (NaN as 0, as ``hapexpr evaluate`` does) and
    over the heritable genes (true h2 > 0)."""
    run([*HAPEXPR, "evaluate", str(study)], log, pythonpath=pythonpath)
    m = pd.read_csv(study / "metrics.tsv", sep="\t")
    m = m[m["method"] == name]
    h2 = pd.read_csv(study.parent / "cohort" / "truth.tsv", sep="\t").set_index("gene_id")["h2"]
    r = m.set_index("gene_id")["pearson_r"].fillna(0.0)
    heritable = r[h2.reindex(r.index).fillna(0) > 0]
    return {"genes": len(r), "mean_r": float(r.mean()), "mean_r_heritable": float(heritable.mean())}


def figures(df: pd.DataFrame) -> dict[str, float]:
    """r, sign agreement, slope and share of exact zeros of predicted vs true change."""
    p, t = df["predicted_change"].to_numpy(float), df["true_change"].to_numpy(float)
    out = {"sign": float(np.mean(np.sign(p) == np.sign(t))), "zero": float(np.mean(p == 0))}
    tc, pc = t - t.mean(), p - p.mean()
    out["slope"] = float(tc @ pc / (tc @ tc)) if tc @ tc > 0 else float("nan")
    out["r"] = float(tc @ pc / np.sqrt((tc @ tc) * (pc @ pc))) if (pc @ pc) > 0 and (tc @ tc) > 0 else float("nan")
    return out


def summarise(pairs: pd.DataFrame, *, min_change: float, seed: int = 0) -> pd.DataFrame:
    """One row per method: each figure and its 95% bootstrap interval over genes."""
    rows = []
    rng = np.random.default_rng(seed)
    for method, df in pairs.groupby("method", sort=False):
        df = df[df["true_change"].abs() >= min_change]
        row = {"method": method, "pairs": len(df), "genes": df["gene_id"].nunique()}
        if not len(df):
            rows.append(row)
            continue
        row.update(figures(df))
        by_gene = [g for _, g in df.groupby("gene_id")]
        boot = []
        for _ in range(RESAMPLES):
            pick = rng.integers(len(by_gene), size=len(by_gene))
            boot.append(figures(pd.concat([by_gene[i] for i in pick])))
        for k in ("r", "sign", "slope"):
            vals = np.array([b[k] for b in boot])
            vals = vals[np.isfinite(vals)]
            lo, hi = np.quantile(vals, [0.025, 0.975]) if vals.size else (np.nan, np.nan)
            row[f"{k}_ci"] = f"[{lo:.2f}, {hi:.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, cols: list[str] | None = None) -> str:
    order = ("method", "genes", "pairs", "r", "r_ci", "sign", "sign_ci", "slope", "slope_ci", "zero")
    cols = cols or [c for c in order if c in table]

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(row[c]) for c in cols) + " |" for _, row in table.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--individuals", type=int, default=200)
    ap.add_argument("--new-people", type=int, default=60)
    ap.add_argument("--genes", type=int, default=30)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--architecture", default="motif")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--kmer", default="kmer:4")
    ap.add_argument("--min-change", type=float, default=1e-3, help="score pairs with |true change| >= this")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated names of METHODS or NAME=ARGS")
    ap.add_argument("--epoch-selection", default=None, help="nt-transformer methods: kfold or split")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--old-src", default=None, help="also run nt-transformer methods with PYTHONPATH=DIR")
    ap.add_argument(
        "--accuracy",
        action="store_true",
        help="also `hapexpr fit` (cross-validated) each nt-transformer run and report its mean per-gene r",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the per-pair table here (TSV)")
    ap.add_argument("--smoke", action="store_true", help="one tiny cohort, seconds to a minute")
    args = ap.parse_args(argv)
    if args.smoke:
        args.individuals, args.new_people, args.genes, args.window, args.seeds = 40, 12, 4, 3000, "1"
        args.epoch_selection, args.max_epochs = "split", 3
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_unseen_"))
    specs = [s for s in args.methods.split(",") if s]
    all_pairs, accuracy = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        root = workdir / f"{args.architecture}-s{seed}"
        root.mkdir(parents=True, exist_ok=True)
        cohort, study, secs = prepare_cohort(root, seed, args)
        reverted, n_unseen = reverted_vcf(cohort)
        vcfs = {"new": cohort / "new_people.vcf.gz", "reverted": reverted}
        fp = kmer_fingerprint(study, args.kmer)
        log = root / "log.txt"
        print(f"seed {seed}: {n_unseen} unseen alleles among {args.new_people} new people", flush=True)
        for spec in specs:
            name, fit_args = method_args(spec, fp, args)
            runs = [(name, study, None)]
            if args.old_src and "nt-transformer" in fit_args:
                # fit-final has no --name: the old code fits the same method in a copy of the study
                old_study = root / "study_oldscaling"
                if not old_study.exists():
                    shutil.copytree(study, old_study, ignore=shutil.ignore_patterns("models", "final"))
                runs.append((f"{name}-oldscaling", old_study, args.old_src))
            for label, where, path in runs:
                secs[f"fit-final {label}"] = run(
                    [*HAPEXPR, "fit-final", str(where), *fit_args, "--overwrite"], log, pythonpath=path
                )
                pairs = changes(where, cohort, name, vcfs, log, path)
                all_pairs.append(pairs.assign(method=label, seed=seed))
                if args.accuracy and "nt-transformer" in fit_args:
                    secs[f"fit {label}"] = run([*HAPEXPR, "fit", str(where), *fit_args], log, pythonpath=path)
                    accuracy.append({"method": label, "seed": seed, **cv_accuracy(where, name, log, path)})
        print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()), flush=True)
    pairs = pd.concat(all_pairs, ignore_index=True)
    pairs["gene_id"] = "s" + pairs["seed"].astype(str) + ":" + pairs["gene_id"]
    if args.out:
        pairs.to_csv(args.out, sep="\t", index=False)
    table = summarise(pairs, min_change=args.min_change)
    print(
        f"\n{args.architecture}, {args.individuals} study + {args.new_people} new people, {args.genes} genes x seeds {args.seeds}"
    )
    print(markdown(table))
    if accuracy:
        acc = pd.DataFrame(accuracy)
        print("\nout-of-fold accuracy on the study (hapexpr fit + evaluate), per seed")
        print(markdown(acc, list(acc.columns)))
    control = table[table["method"] == "elastic-net"]
    if len(control) and control["pairs"].iloc[0] and control["zero"].iloc[0] != 1.0:
        print("CHECK FAILED: the elastic net's predicted change is not 0 everywhere", file=sys.stderr)
        return 1
    nt = table[table["method"] == "nt-transformer"]
    if len(nt) and "r" in nt:
        met = nt["sign"].iloc[0] >= 0.8 and nt["r"].iloc[0] >= 0.5
        print(f"TARGET nt-transformer ({args.kmer}) sign >= 0.8 and r >= 0.5: {'met' if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
