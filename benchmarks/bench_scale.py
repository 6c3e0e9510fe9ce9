"""Benchmark: time and peak memory of each stage as genes and people grow (tiny model, CPU).

For each configuration PEOPLExGENES a cohort is made with ``hapexpr simulate`` and taken through
the four stages of the target, each as its own process so its peak memory is its own:

    hapexpr prepare ... ; hapexpr embed STUDY --model tiny ;
    hapexpr fit STUDY --method elastic-net --jobs J ; hapexpr fit STUDY --method ridge-probe --jobs J

The elastic net is the default one: variants within +-1 Mb of each TSS (PredictDB's window),
read from the study's cis store; the simulated genes are 10-18 kb apart, so +-1 Mb holds the
variation of ~140 neighbouring genes (the mean number of variants per gene is printed).
``--jobs`` (default: every core) genes are fitted at once; the peak memory reported for a fit
is the largest of its processes (driver or one worker).

Per stage: wall seconds, CPU seconds (user + sys) and peak resident memory (``ru_maxrss`` from
``os.wait4`` on that process). Checks: every stage exits 0 and ``predictions.tsv`` holds one
out-of-fold prediction per (gene, person) for both methods. Results accumulate in
``WORKDIR/scale_results.json`` so configurations can be run one command at a time. With two or
more gene counts at the same number of people, each stage's time and memory are fitted as
``a + b * genes`` and EXTRAPOLATED to ``--target-genes`` (20,000), which the output labels as
such (never below the largest run scaled per gene, nor its memory: runs under different load can
give a fit with a smaller or negative slope); the growth ratio line compares measured time growth with gene growth (1.0 = linear).

    python benchmarks/bench_scale.py --smoke
    python benchmarks/bench_scale.py --configs 290x500 --workdir W
    python benchmarks/bench_scale.py --configs 290x2000 --workdir W     # then extrapolates from both

Target (issue 14): 290 people x 20,000 genes through the four stages within 90 min on the 2-core
benchmark machine, peak memory < 8 GB, with linear growth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("prepare", "embed", "fit elastic-net", "fit ridge-probe")
TARGET_SECONDS = 90 * 60
TARGET_RSS_GB = 8.0
HAPEXPR = [sys.executable, "-m", "hapexpr.cli"]


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` to completion; wall and CPU seconds and peak RSS (GB) of that process."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        # Linux: wait4's usage includes the descendants the process reaped (a fit's --jobs
        # workers): CPU summed over the tree, ru_maxrss the largest single process.
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "rss_gb": round(usage.ru_maxrss / 1024**2, 3),  # ru_maxrss is in KiB on Linux
    }


def stage_commands(cohort: Path, study: Path, window: int, jobs: int) -> dict[str, list[str]]:
    return {
        "prepare": [
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
            str(window),
            "--out",
            str(study),
        ],
        "embed": [*HAPEXPR, "embed", str(study), "--model", "tiny"],
        "fit elastic-net": [*HAPEXPR, "fit", str(study), "--method", "elastic-net", "--jobs", str(jobs)],
        "fit ridge-probe": [*HAPEXPR, "fit", str(study), "--method", "ridge-probe", "--jobs", str(jobs)],
    }


def check_predictions(study: Path, people: int, genes: int) -> str | None:
    import pandas as pd

    pred = pd.read_csv(study / "predictions.tsv", sep="\t")
    for method in ("elastic-net", "ridge-probe"):
        rows = pred[pred["method"] == method]
        if len(rows) != people * genes or rows[["gene_id", "sample_id"]].duplicated().any():
            return f"{method}: {len(rows)} predictions, expected one per (gene, person) = {people * genes}"
        if not np.isfinite(rows["predicted"].to_numpy(dtype=float)).all():
            return f"{method}: non-finite predictions"
    return None


def cis_variants(study: Path) -> float:
    """Mean number of +-1 Mb variants per gene in the study's cis store."""
    import pandas as pd

    return float(pd.read_csv(study / "cis" / "genes.tsv", sep="\t")["n_variants"].mean())


def run_config(root: Path, people: int, genes: int, window: int, seed: int, jobs: int) -> dict:
    import shutil

    tag = f"n{people}_g{genes}_w{window}_s{seed}"
    cohort, study, log = root / f"cohort_{tag}", root / f"study_{tag}", root / f"log_{tag}.txt"
    shutil.rmtree(study, ignore_errors=True)  # every stage from scratch
    result = {"people": people, "genes": genes, "window": window, "seed": seed, "jobs": jobs, "stages": {}}
    if not (cohort / "truth.tsv").exists():
        sim = measure(
            [
                *HAPEXPR,
                "simulate",
                "--out",
                str(cohort),
                "--individuals",
                str(people),
                "--genes",
                str(genes),
                "--window",
                str(window),
                "--seed",
                str(seed),
            ],
            log,
        )
        result["simulate"] = sim
        if sim["rc"]:
            raise SystemExit(f"FAIL: hapexpr simulate exited {sim['rc']} (log {log})")
    print(f"\n## {people} people x {genes} genes, {window} bp windows, --jobs {jobs} (log {log})")
    print(f"{'stage':<16} {'wall_s':>9} {'cpu_s':>9} {'peak_GB':>8}", flush=True)
    for name, cmd in stage_commands(cohort, study, window, jobs).items():
        m = measure(cmd, log)
        result["stages"][name] = m
        print(f"{name:<16} {m['wall_s']:>9.1f} {m['cpu_s']:>9.1f} {m['rss_gb']:>8.3f}", flush=True)
        if m["rc"]:
            raise SystemExit(f"FAIL: {name} exited {m['rc']} (log {log})")
        if name == "prepare":
            result["cis_variants_per_gene"] = round(cis_variants(study), 1)
            print(f"  (+-1 Mb: {result['cis_variants_per_gene']:.0f} variants per gene on average)", flush=True)
    total = sum(m["wall_s"] for m in result["stages"].values())
    print(
        f"{'total':<16} {total:>9.1f} {sum(m['cpu_s'] for m in result['stages'].values()):>9.1f} "
        f"{max(m['rss_gb'] for m in result['stages'].values()):>8.3f}"
    )
    problem = check_predictions(study, people, genes)
    if problem:
        raise SystemExit(f"FAIL: {problem}")
    print("checked: predictions.tsv has one out-of-fold prediction per (gene, person) for both methods")
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    return result


def summarise(results: list[dict], *, target_genes: int, smoke: bool) -> bool:
    """Growth ratios and the linear extrapolation to ``target_genes`` at each number of people."""
    ok = True
    by_people: dict[int, list[dict]] = {}
    for r in results:
        by_people.setdefault(r["people"], []).append(r)
    for people, rows in sorted(by_people.items()):
        rows = sorted(rows, key=lambda r: r["genes"])
        if len(rows) < 2:
            continue
        g = np.array([r["genes"] for r in rows], dtype=float)
        print(f"\n## growth with genes at {people} people: genes {', '.join(str(int(x)) for x in g)}")
        lo, hi = rows[0], rows[-1]
        total_at, rss_at = 0.0, 0.0
        for name in STAGES:
            t = np.array([r["stages"][name]["wall_s"] for r in rows])
            m = np.array([r["stages"][name]["rss_gb"] for r in rows])
            b, a = np.polyfit(g, t, 1)
            mb, ma = np.polyfit(g, m, 1)
            # Runs under different machine load can give a fit that predicts less than simply
            # scaling the largest run per gene (even a negative slope): judge on the larger.
            t_pred = max(a + b * target_genes, t[-1] / g[-1] * target_genes)
            m_pred = max(ma + mb * target_genes, m[-1])
            total_at += t_pred
            rss_at = max(rss_at, m_pred)
            growth = (t[-1] / t[0]) / (g[-1] / g[0])
            print(
                f"{name:<16} {b:8.3f} s/gene + {a:6.1f} s; time x{t[-1] / t[0]:.1f} for genes x{g[-1] / g[0]:.0f} "
                f"(growth/linear {growth:.2f}); EXTRAPOLATED at {target_genes} genes: {t_pred:7.0f} s, {m_pred:.2f} GB"
            )
        first = sum(s["wall_s"] for s in lo["stages"].values())
        last = sum(s["wall_s"] for s in hi["stages"].values())
        print(
            f"RATIO scale total_time {int(g[-1])}/{int(g[0])} genes = {last / first:.1f}x for {g[-1] / g[0]:.0f}x genes "
            f"(at {people} people)"
        )
        print(
            f"EXTRAPOLATED (linear fit, not measured): {people} people x {target_genes} genes through the four stages "
            f"~ {total_at / 60:.1f} min, peak memory ~ {rss_at:.2f} GB "
            f"(target {TARGET_SECONDS // 60} min, {TARGET_RSS_GB:.0f} GB)",
            flush=True,
        )
        if not smoke and people == 290 and (total_at > TARGET_SECONDS or rss_at > TARGET_RSS_GB):
            print("FAIL: the extrapolated run misses the target")
            ok = False
    by_genes: dict[int, list[dict]] = {}
    for r in results:
        by_genes.setdefault(r["genes"], []).append(r)
    for genes, rows in sorted(by_genes.items()):
        rows = sorted(rows, key=lambda r: r["people"])
        if len(rows) < 2:
            continue
        lo, hi = rows[0], rows[-1]
        k = hi["people"] / lo["people"]
        print(f"\n## growth with people at {genes} genes: {lo['people']} -> {hi['people']} people (x{k:.1f})")
        for name in STAGES:
            a, b = lo["stages"][name], hi["stages"][name]
            print(
                f"{name:<16} time x{b['wall_s'] / a['wall_s']:.1f}, peak memory x{b['rss_gb'] / a['rss_gb']:.2f} "
                f"({b['wall_s']:.1f} s, {b['rss_gb']:.2f} GB at {hi['people']} people)"
            )
        print(
            f"RATIO scale total_time {hi['people']}/{lo['people']} people = "
            f"{sum(s['wall_s'] for s in hi['stages'].values()) / sum(s['wall_s'] for s in lo['stages'].values()):.1f}x "
            f"for {k:.1f}x people (at {genes} genes)"
        )
    measured_max = max((max(s["rss_gb"] for s in r["stages"].values()) for r in results), default=0)
    if not smoke and measured_max > TARGET_RSS_GB:
        print(f"FAIL: a stage peaked at {measured_max:.2f} GB > {TARGET_RSS_GB:.0f} GB")
        ok = False
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="two tiny configurations (seconds to a minute), no target")
    ap.add_argument(
        "--configs",
        default="290x20,290x200",
        help="PEOPLExGENES, comma-separated; empty: only summarise the results in --workdir",
    )
    ap.add_argument("--genes", type=int, default=None, help="shorthand: one configuration --individuals x --genes")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--window", type=int, default=6000)
    ap.add_argument("--target-genes", type=int, default=20000, help="extrapolate to this many genes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fit --jobs (default: every core)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep cohorts, studies, logs and results here")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.smoke:
        args.configs, args.window = "10x1,10x2", 600
    elif args.genes is not None:
        args.configs = f"{args.individuals}x{args.genes}"
    # --configs "" runs nothing and only summarises WORKDIR/scale_results.json
    configs = [tuple(int(v) for v in c.lower().split("x")) for c in args.configs.split(",") if c.strip()]
    print(f"# {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.workdir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        store = root / "scale_results.json"
        results = json.loads(store.read_text()) if store.exists() else []
        for people, genes in configs:
            new = run_config(root, people, genes, args.window, args.seed, args.jobs)
            results = [
                r
                for r in results
                if (r["people"], r["genes"], r["window"], r["seed"]) != (people, genes, args.window, args.seed)
            ] + [new]
            store.write_text(json.dumps(results, indent=1) + "\n")
        same = [r for r in results if r["window"] == args.window and r["seed"] == args.seed]
        ok = summarise(same, target_genes=args.target_genes, smoke=args.smoke)
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
