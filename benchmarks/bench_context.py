"""Enformer's context: what ``prepare`` pays, and what the first Enformer fit pays to build it.

A simulated cohort (``hapexpr simulate --individuals 290 --genes 20 --seed 1``, 6 kb windows) is
prepared with each source tree given (``--src NAME=PATH``, e.g. ``main=/work/main/src`` for
hapexpr before lazy contexts, ``branch=src``) in each context setting (``--contexts default 0
196608``), each run under ``/usr/bin/time -v`` (user+sys CPU s, wall s, peak RSS); the study's
size on disk is ``du``. Then, on the branch's default study, ``hapexpr fit --method enformer
--seq-len SEQ_LEN`` (tiny model) is timed twice from copies of it: first with the context not
built (the fit builds it), then again on the fitted copy's built context with a fresh model
directory (the fit alone); and the build alone (``ContextStore.build`` under the study lock).
Prints one table; the machine's load average is printed before and after.

    python benchmarks/bench_context.py --src main=/work/main/src --src branch=src --out /tmp/bc
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BUILD = """
import sys
from hapexpr.context_store import ContextStore
from hapexpr.io.atomic import study_lock
from hapexpr.study import Study
with study_lock(sys.argv[1], "bench build"):
    ContextStore.open(Study.open(sys.argv[1])).build(progress=False)
"""


def timed(cmd: list[str], src: str, log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v with hapexpr from ``src``; CPU, wall and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        rc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    if rc != 0:
        raise SystemExit(f"FAIL ({rc}): {' '.join(cmd)}; log {log}")

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (.+)", text).group(1).strip()

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    return {
        "cpu_s": float(field("User time (seconds)")) + float(field("System time (seconds)")),
        "wall_s": sum(float(x) * 60**i for i, x in enumerate(reversed(wall))),
        "peak_mb": int(field("Maximum resident set size (kbytes)")) / 1024,
    }


def disk_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1024


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", action="append", required=True, help="NAME=PATH of a hapexpr source tree (src/)")
    ap.add_argument("--contexts", nargs="+", default=["default", "0", "196608"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--genes", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--fit-src", default="branch", help="the --src NAME whose default study is fitted")
    ap.add_argument("--no-fit", action="store_true", help="prepare only")
    args = ap.parse_args()
    srcs = dict(s.split("=", 1) for s in args.src)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {load()}")
    cohort = out / "cohort"
    if not (cohort / "genotypes.vcf.gz").exists():
        sim = ["simulate", "--individuals", "290", "--genes", str(args.genes), "--seed", "1", "--out", str(cohort)]
        timed(
            [sys.executable, "-m", "hapexpr.cli", *sim],
            srcs.get(args.fit_src, next(iter(srcs.values()))),
            out / "simulate.log",
        )
    inputs = ["--vcf", cohort / "genotypes.vcf.gz", "--fasta", cohort / "reference.fa"]
    inputs += ["--genes", cohort / "genes.gtf", "--expression", cohort / "expression.bed.gz", "--window", "6000"]
    rows = []
    for name, src in srcs.items():
        for ctx in args.contexts:
            study = out / f"{name}-context-{ctx}"
            shutil.rmtree(study, ignore_errors=True)
            flag = [] if ctx == "default" else ["--context", ctx]
            cmd = [sys.executable, "-m", "hapexpr.cli", "prepare", *map(str, inputs), *flag, "--out", str(study)]
            r = timed(cmd, src, out / f"prepare-{name}-{ctx}.log")
            built = (study / "context" / "genes.tsv").exists()
            rows.append(
                (f"prepare [{name}] --context {ctx}" + (" (context built)" if built else ""), r, disk_mb(study))
            )
    base = out / f"{args.fit_src}-context-default"
    if base.exists() and not args.no_fit:
        src = srcs[args.fit_src]
        lazy, again, alone = out / "fit-lazy", out / "fit-again", out / "build-alone"
        for p in (lazy, again, alone):
            shutil.rmtree(p, ignore_errors=True)
        shutil.copytree(base, lazy)
        shutil.copytree(base, alone)
        fit = [sys.executable, "-m", "hapexpr.cli", "fit", "--method", "enformer", "--seq-len", str(args.seq_len)]
        r = timed([*fit[:4], str(lazy), *fit[4:]], src, out / "fit-lazy.log")
        rows.append((f"fit enformer --seq-len {args.seq_len}, context built on first use", r, disk_mb(lazy)))
        shutil.copytree(lazy, again)
        shutil.rmtree(again / "models")
        shutil.rmtree(again / "embeddings", ignore_errors=True)
        r = timed([*fit[:4], str(again), *fit[4:]], src, out / "fit-again.log")
        rows.append((f"fit enformer --seq-len {args.seq_len}, context already built", r, disk_mb(again)))
        r = timed([sys.executable, "-c", BUILD, str(alone)], src, out / "build-alone.log")
        rows.append(("the context build alone (ContextStore.build)", r, disk_mb(alone / "context")))
    print(f"{'run':<70} {'CPU s':>7} {'wall s':>7} {'peak MB':>8} {'disk MB':>8}")
    for label, r, mb in rows:
        print(f"{label:<70} {r['cpu_s']:>7.2f} {r['wall_s']:>7.2f} {r['peak_mb']:>8.0f} {mb:>8.1f}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
