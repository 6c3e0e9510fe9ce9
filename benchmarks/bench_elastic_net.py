"""Benchmark: hapexpr's elastic net vs a plain scikit-learn ``ElasticNetCV`` per gene.

Inputs: phased genotypes with realistic LD from msprime (290 people by default), one region per
gene cut to exactly 30, 300 or 3,000 variants with MAF > 1%, expression = a few causal
variants scaled to a heritability (h2 cycles 0.3, 0.1, 0.5, 0.0 across genes) plus noise.
Each gene goes through the study's outer 5-fold CV over individuals; in every training split
both estimators see the same rows, the same MAF filter and glmnet standardisation, the same 10
inner folds and the same 100-penalty grid (``ElasticNetModel``'s own, handed to ``ElasticNetCV``
as ``alphas`` and ``cv``). Reported per size: mean fit time per training split of each, their
ratio, and the pooled out-of-fold Pearson r of each over genes.

    python benchmarks/bench_elastic_net.py            # full: 290 people, 30/300/3,000 variants
    python benchmarks/bench_elastic_net.py --smoke    # seconds; the test suite runs this

Checks: mean |r_hapexpr - r_sklearn| over genes <= 0.01 at every size and (full mode only)
speed ratio >= 5 at every size. One thread for BLAS on both sides: the figure is per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402


def simulate_dosages(n_people: int, n_variants: int, seed: int) -> np.ndarray:
    """(samples, variants) ALT dosages of ``n_variants`` consecutive MAF > 1% variants."""
    import msprime

    length = max(20_000, n_variants * 1_200)  # ~1 common variant per kb at these settings
    for attempt in range(5):
        ts = msprime.sim_ancestry(
            samples=n_people, sequence_length=length, recombination_rate=1e-8,
            population_size=10_000, ploidy=2, random_seed=seed + 1 + 1000 * attempt,
        )
        ts = msprime.sim_mutations(ts, rate=1.5e-8, random_seed=seed + 1, model=msprime.BinaryMutationModel())
        haps = ts.genotype_matrix()  # (variants, haplotypes)
        dos = haps[:, 0::2] + haps[:, 1::2]
        freq = dos.mean(axis=1) / 2
        dos = dos[np.minimum(freq, 1 - freq) > 0.01]
        if dos.shape[0] >= n_variants:
            start = np.random.default_rng(seed).integers(0, dos.shape[0] - n_variants + 1)
            return dos[start : start + n_variants].T.astype(np.float64)
        length *= 2
    raise RuntimeError(f"could not simulate {n_variants} common variants")


def simulate_expression(X: np.ndarray, h2: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, p = X.shape
    y = rng.normal(size=n)
    if h2 > 0:
        causal = rng.choice(p, size=min(p, int(rng.integers(1, 6))), replace=False)
        g = X[:, causal] @ rng.normal(size=len(causal))
        if g.std() > 0:
            y = g / g.std() * np.sqrt(h2) + y * np.sqrt(1 - h2)
    return y


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def baseline_fit(X, y, *, kept, grid, inner_folds):
    """Plain ElasticNetCV on the same standardised variants, folds and penalty grid."""
    from sklearn.linear_model import ElasticNetCV

    Xk = X[:, kept]
    mu, sd = Xk.mean(axis=0), Xk.std(axis=0)
    cv = [(np.flatnonzero(inner_folds != k), np.flatnonzero(inner_folds == k)) for k in range(inner_folds.max() + 1)]
    model = ElasticNetCV(l1_ratio=0.5, alphas=grid, cv=cv).fit((Xk - mu) / sd, y)
    return lambda Xnew: model.predict((Xnew[:, kept] - mu) / sd), model.alpha_


def run_size(n_people, n_variants, n_genes, n_folds, seed):
    from hapexpr.estimators.elastic_net import ElasticNetModel

    t_ours, t_base, r_ours, r_base = [], [], [], []
    same_lambda = fits = 0
    for g in range(n_genes):
        X = simulate_dosages(n_people, n_variants, seed + 7919 * g + n_variants)
        y = simulate_expression(X, (0.3, 0.1, 0.5, 0.0)[g % 4], seed + g)
        outer = np.random.default_rng(seed + g).permutation(np.arange(n_people) % n_folds)
        pred_ours, pred_base = np.zeros(n_people), np.zeros(n_people)
        for k in range(n_folds):
            tr, te = outer != k, outer == k
            t0 = time.perf_counter()
            model = ElasticNetModel(seed=seed + k).fit(X[tr], y[tr])
            t_ours.append(time.perf_counter() - t0)
            pred_ours[te] = model.predict(X[te])
            if model.kept_.sum() == 0 or model.best_index_ < 0:
                pred_base[te] = y[tr].mean()
                t_base.append(t_ours[-1])
                continue
            t0 = time.perf_counter()
            predict, alpha = baseline_fit(X[tr], y[tr], kept=model.kept_, grid=model.lambdas_, inner_folds=model.inner_folds_)
            t_base.append(time.perf_counter() - t0)
            pred_base[te] = predict(X[te])
            fits += 1
            same_lambda += bool(np.isclose(alpha, model.lambda_))
        r_ours.append(pearson(pred_ours, y))
        r_base.append(pearson(pred_base, y))
    return dict(
        t_ours=float(np.mean(t_ours)), t_base=float(np.mean(t_base)),
        r_ours=np.array(r_ours), r_base=np.array(r_base), same_lambda=same_lambda, fits=fits,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds), no speed target")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--sizes", default="30,300,3000", help="variants per gene, comma-separated")
    ap.add_argument("--genes", default="8,4,1", help="genes per size, comma-separated")
    ap.add_argument("--folds", type=int, default=5, help="outer folds over individuals")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.smoke:
        args.individuals, args.sizes, args.genes, args.folds = 100, "30", "2", 3
    sizes = [int(s) for s in args.sizes.split(",")]
    genes = [int(s) for s in args.genes.split(",")]
    genes = (genes + genes[-1:] * len(sizes))[: len(sizes)]
    warnings.filterwarnings("ignore", category=Warning, module="sklearn")
    import sklearn.linear_model  # noqa: F401  (import once, outside the timed fits)

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, BLAS threads {os.environ['OMP_NUM_THREADS']}")
    print(f"# {args.individuals} people, {args.folds} outer folds, 10 inner folds, 100 penalties, alpha 0.5")
    print(f"{'variants':>8} {'genes':>5} {'hapexpr_s':>10} {'sklearn_s':>10} {'speed ratio':>11} "
          f"{'r_hapexpr':>9} {'r_sklearn':>9} {'mean|dr|':>8} {'max|dr|':>8} {'same_lambda':>11}")
    ok = True
    for p, n_genes in zip(sizes, genes):
        res = run_size(args.individuals, p, n_genes, args.folds, args.seed)
        ratio = res["t_base"] / res["t_ours"]
        dr = np.abs(res["r_ours"] - res["r_base"])
        print(f"{p:>8} {n_genes:>5} {res['t_ours']:>10.4f} {res['t_base']:>10.4f} {ratio:>10.1f}x "
              f"{res['r_ours'].mean():>9.4f} {res['r_base'].mean():>9.4f} {dr.mean():>8.4f} {dr.max():>8.4f} "
              f"{res['same_lambda']:>5}/{res['fits']:<5}", flush=True)
        if dr.mean() > 0.01:
            print(f"FAIL: out-of-fold r differs by {dr.mean():.4f} > 0.01 at {p} variants")
            ok = False
        if not args.smoke and ratio < 5:
            print(f"FAIL: speed ratio {ratio:.1f} < 5 at {p} variants")
            ok = False
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
