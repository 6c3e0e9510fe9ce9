"""Benchmark: what each simulated architecture tests, as measured shares of the genetic variance.

For each architecture and seed, ``hapexpr.simulate.simulate`` builds a cohort in memory (no
files) and the per-gene ``additive_share`` and ``phase_share`` of truth.tsv (docs/simulate.md)
are averaged over its heritable genes. Prints one row per architecture and seed and one per
architecture over all seeds (genes pooled): heritable genes, mean shares, and the range of the
per-seed means. Simulation only: seconds per cohort.

    python benchmarks/bench_architecture_shares.py --smoke
    python benchmarks/bench_architecture_shares.py --architectures cis-interaction --seeds 1-10 --genes 10
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from hapexpr.simulate import SimulationConfig, simulate


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--architectures", default="additive,motif,cis-interaction,mixed")
    ap.add_argument("--seeds", default="1-5", help="comma-separated seeds or a range A-B")
    ap.add_argument("--genes", type=int, default=10)
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--window", type=int, default=6000)
    ap.add_argument("--smoke", action="store_true", help="one tiny cohort per architecture")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.genes, args.individuals, args.window = "1", 3, 60, 1000
    print("| architecture | seed | genes | heritable | additive_share | phase_share | seconds |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for arch in [a for a in args.architectures.split(",") if a]:
        pooled, per_seed = [], []
        for seed in _seeds(args.seeds):
            t0 = time.perf_counter()
            config = SimulationConfig(
                individuals=args.individuals, genes=args.genes, window=args.window, seed=seed, architecture=arch
            )
            shares = np.array([(t.additive_share, t.phase_share) for t in simulate(config).truths if t.h2 > 0])
            shares = shares.reshape(-1, 2)
            pooled.append(shares)
            mean = shares.mean(axis=0) if len(shares) else np.full(2, np.nan)
            if len(shares):
                per_seed.append(mean)
            print(
                f"| {arch} | {seed} | {args.genes} | {len(shares)} | {mean[0]:.3f} | {mean[1]:.3f} "
                f"| {time.perf_counter() - t0:.1f} |",
                flush=True,
            )
        allg = np.concatenate(pooled)
        seeds = np.array(per_seed).reshape(-1, 2)
        summary.append(
            f"{arch}: {len(allg)} heritable genes of {args.genes * len(pooled)}; mean additive_share "
            f"{allg[:, 0].mean():.3f}, mean phase_share {allg[:, 1].mean():.3f} (per-seed means "
            f"{seeds[:, 1].min():.3f}-{seeds[:, 1].max():.3f} over {len(seeds)} seeds with a heritable gene)"
            if len(allg)
            else f"{arch}: no heritable gene"
        )
    print()
    for line in summary:
        print(line)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
