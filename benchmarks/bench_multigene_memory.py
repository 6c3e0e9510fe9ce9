"""Peak memory of ``hapexpr fit --multi-gene`` as the number of genes grows (issue 19).

For each gene count: a simulated cohort (``--individuals`` people, ``motif`` architecture),
``prepare``, ``embed --model kmer:4`` (256 dims x ``--bins`` bins, the issue's input), then
``hapexpr fit STUDY --method nt-transformer --multi-gene --holdout-genes 0.1 --max-epochs E
--epoch-selection split`` in a child process whose peak resident memory (``ru_maxrss`` of the
child, what ``/usr/bin/time -f %M`` reports) is measured. Memory, not accuracy, is the point:
few epochs. Beside it, ``materialised_gb``: the size of every gene's (samples, 2, bins, dim)
float32 array, which the in-memory path held (several times over: the arrays, their training
rows, scaled copies and their concatenation; 16.5-18.4 GB measured at 290 x 300 genes).

    PYTHONPATH=src python benchmarks/bench_multigene_memory.py --genes 100,300,1000   # shared box: ~1 h
    PYTHONPATH=src python benchmarks/bench_multigene_memory.py --smoke               # seconds

Prints one line per gene count and ``RATIO multigene_memory peak_max/peak_min = ...x``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hapexpr(*args, env) -> float:
    """Run the CLI; returns the wall seconds. Exits on failure with its output."""
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "hapexpr.cli", *map(str, args)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        sys.exit(f"hapexpr {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.time() - start


def peak_rss_of(args: list, env) -> tuple[float, float]:
    """(peak resident GB, wall s) of one ``hapexpr`` child process (its own ru_maxrss: the
    children of this script run one at a time, and RUSAGE_CHILDREN keeps the largest)."""
    code = (
        "import resource, sys\n"
        "from hapexpr.cli import app\n"
        "try:\n    app(sys.argv[1:], prog_name='hapexpr')\n"
        "finally:\n    print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    start = time.time()
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    wall = time.time() - start
    lines = [x for x in done.stderr.splitlines() if x.startswith("MAXRSS_KB")]
    if not lines:
        sys.exit(f"fit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return int(lines[-1].split()[1]) / 1024**2, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", default="100,300,1000", help="gene counts, comma-separated")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--folds", type=int, default=2, help="outer folds (memory is per fold; fewer is faster)")
    ap.add_argument("--max-epochs", type=int, default=1)
    ap.add_argument("--work", default=None, help="keep the cohorts here (default: a temporary directory)")
    ap.add_argument("--smoke", action="store_true", help="30 people, 4 and 8 genes, 8 bins")
    args = ap.parse_args()
    if args.smoke:
        args.genes, args.individuals, args.bins = "4,8", 30, 8
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-multigene-"))
    peaks = []
    for n in [int(x) for x in args.genes.split(",")]:
        cohort, study = work / f"cohort-{n}", work / f"study-{n}"
        t_setup = 0.0
        if not (study / "study.json").exists():
            t_setup += hapexpr(
                "simulate", "--out", cohort, "--individuals", args.individuals, "--genes", n,
                "--window", args.window, "--architecture", "motif", "--seed", 1, env=env,
            )  # fmt: skip
            t_setup += hapexpr(
                "prepare", "--vcf", cohort / "genotypes.vcf.gz", "--fasta", cohort / "reference.fa",
                "--genes", cohort / "genes.gtf", "--expression", cohort / "expression.bed.gz",
                "--covariates", cohort / "covariates.tsv", "--window", args.window, "--folds", args.folds,
                "--out", study, env=env,
            )  # fmt: skip
            t_setup += hapexpr("embed", study, "--model", "kmer:4", "--bins", args.bins, env=env)
        shutil.rmtree(study / "models" / "nt-transformer-multi", ignore_errors=True)  # a fit from scratch
        fit = ["fit", study, "--method", "nt-transformer", "--multi-gene", "--holdout-genes", "0.1"]
        fit += ["--max-epochs", args.max_epochs, "--epoch-selection", "split", "--overwrite"]
        peak, wall = peak_rss_of(fit, env)
        materialised = n * args.individuals * 2 * args.bins * 256 * 4 / 1024**3
        peaks.append(peak)
        print(
            f"genes {n} individuals {args.individuals} bins {args.bins} folds {args.folds} "
            f"peak_rss_gb {peak:.2f} fit_s {wall:.0f} materialised_gb {materialised:.2f} setup_s {t_setup:.0f}",
            flush=True,
        )
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"(this script itself: {self_peak:.2f} GB)")
    print(f"RATIO multigene_memory peak_max/peak_min = {max(peaks) / min(peaks):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
