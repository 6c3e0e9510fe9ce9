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

``--glmnet PYTHON``: against glmnet's own Fortran solver (PyPI ``python-glmnet``, the code R's
glmnet runs), installed in another interpreter's environment (it is not a dependency)::

    python -m venv /tmp/glmnet-venv && /tmp/glmnet-venv/bin/pip install python-glmnet numpy
    python benchmarks/bench_elastic_net.py --glmnet /tmp/glmnet-venv/bin/python   # 358 x 5,000

Per gene (msprime genotypes cut to ``--variants`` MAF > 1% variants, 358 people by default),
one ``ElasticNetModel.fit`` on all people is timed against cv.glmnet's work done by glmnet's
Fortran ``elnet`` in a subprocess: the same standardised variants (``standardize=FALSE`` there,
as they arrive standardised), the same 10 inner fold ids, the same 100 penalties
(``lambda=``), glmnet's default ``thresh=1e-7``; 10 fold paths plus the full-data path, the
penalty with the lowest pooled CV error (folds that stop early padded with their last fit, as
cv.glmnet does). glmnet's time is measured inside the subprocess, so its start-up is not
counted. The two run alternately, gene by gene (the machine may be shared: each ratio is
against the same-moment baseline). Printed per gene: wall and CPU seconds of each, ratios, the inner
out-of-fold r at each one's lambda.min and |dr|. Check: max |dr| <= 0.01.
``--full-grid`` also times hapexpr walking all 100 penalties (``patience=None``), wall/CPU.
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
            samples=n_people,
            sequence_length=length,
            recombination_rate=1e-8,
            population_size=10_000,
            ploidy=2,
            random_seed=seed + 1 + 1000 * attempt,
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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
            predict, alpha = baseline_fit(
                X[tr], y[tr], kept=model.kept_, grid=model.lambdas_, inner_folds=model.inner_folds_
            )
            t_base.append(time.perf_counter() - t0)
            pred_base[te] = predict(X[te])
            fits += 1
            same_lambda += bool(np.isclose(alpha, model.lambda_))
        r_ours.append(pearson(pred_ours, y))
        r_base.append(pearson(pred_base, y))
    return dict(
        t_ours=float(np.mean(t_ours)),
        t_base=float(np.mean(t_base)),
        r_ours=np.array(r_ours),
        r_base=np.array(r_base),
        same_lambda=same_lambda,
        fits=fits,
    )


# -- glmnet reference (runs in the python-glmnet interpreter: numpy + glmnet only) -----------


def glmnet_worker(src: str, dst: str) -> None:
    """cv.glmnet's work on the saved inputs with glmnet's Fortran ``elnet``; writes timings,
    out-of-fold predictions and the chosen fit to ``dst``."""
    from glmnet._glmnet import elnet, solns

    d = np.load(src)
    Xs, y, folds, grid = d["Xs"], d["y"], d["folds"], d["grid"]
    vp = d["vp"] if "vp" in d.files else np.ones(Xs.shape[1])  # glmnet's penalty.factor

    def path(X, yy):
        n, p = X.shape
        bounds = np.asfortranarray(np.vstack([np.full(p, -np.inf), np.full(p, np.inf)]))
        # elnet(ka, parm, x, y, w, jd, vp, cl, nx, flmin, ulam, thr, ne, nlam, isd, intr, maxit):
        # covariance updates when n > p else naive (glmnet's own rule), alpha 0.5, flmin 1 =
        # user penalties, thresh 1e-7, isd 0 (inputs already standardised), intercept, maxit 1e5;
        # vp: penalty factors (elnet rescales them to sum to the number of columns).
        lmu, a0, ca, ia, nin, _, _, _, jerr = elnet(
            1 if n > p else 2,
            0.5,
            np.asfortranarray(X),
            yy.astype(np.float64),
            np.ones(n),
            np.zeros(1, np.int32),
            vp,
            bounds,
            p + 1,
            1.0,
            grid,
            1e-7,
            p,
            len(grid),
            0,
            1,
            100000,
        )
        if jerr != 0:
            raise RuntimeError(f"glmnet elnet error {jerr}")
        return a0[:lmu], solns(p, ca[:, :lmu], ia, nin[:lmu])

    n, n_l = len(y), len(grid)
    t0, c0 = time.perf_counter(), time.process_time()
    oof = np.empty((n, n_l))
    for k in range(int(folds.max()) + 1):
        te = folds == k
        a0, coefs = path(Xs[~te], y[~te])
        pred = a0 + Xs[te] @ coefs
        oof[te, : pred.shape[1]] = pred
        oof[te, pred.shape[1] :] = pred[:, -1:]  # cv.glmnet pads a fold that stopped early
    mse = np.mean((y[:, None] - oof) ** 2, axis=0)
    best = int(np.argmin(mse))
    a0, coefs = path(Xs, y)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    j = min(best, coefs.shape[1] - 1)
    np.savez(dst, seconds=seconds, cpu=cpu, oof=oof, mse=mse, best=best, coef=coefs[:, j], n_path=coefs.shape[1])


def run_glmnet(python: str, n_people: int, n_variants: int, n_genes: int, seed: int, full_grid: bool) -> bool:
    import subprocess
    import tempfile

    from hapexpr.estimators.elastic_net import ElasticNetModel

    print(
        f"# {n_people} people x {n_variants} variants (msprime, MAF > 1%), 10 inner folds, 100 penalties, "
        f"alpha 0.5; glmnet: python-glmnet elnet via {python}, thresh 1e-7"
    )
    cols = f"{'gene':>4} {'h2':>4} {'hapexpr_s':>9} {'glmnet_s':>8} {'ratio':>6} {'cpu s':>11} {'cpu ratio':>9} "
    cols += f"{'full grid s':>13} " if full_grid else ""
    print(cols + f"{'walked':>6} {'best':>9} {'r_hapexpr':>9} {'r_glmnet':>8} {'|dr|':>7} {'max|db|':>8}")
    t_ours, t_glm, t_full, drs, c_ours, c_glm = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for g in range(n_genes):
            h2 = (0.3, 0.1, 0.5, 0.05)[g % 4]
            X = simulate_dosages(n_people, n_variants, seed + 7919 * g + n_variants)
            y = simulate_expression(X, h2, seed + g)

            def ours(X=X, y=y, g=g):
                t0, c0 = time.perf_counter(), time.process_time()
                m = ElasticNetModel(seed=seed + g).fit(X, y)
                return m, (time.perf_counter() - t0, time.process_time() - c0)

            def glm(m, X=X, y=y):
                Xk = X[:, m.kept_]
                np.savez(f"{tmp}/in.npz", Xs=(Xk - m.x_mean_) / m.x_scale_, y=y, folds=m.inner_folds_, grid=m.lambdas_)
                subprocess.run([python, __file__, "--glmnet-worker", f"{tmp}/in.npz", f"{tmp}/out.npz"], check=True)
                return np.load(f"{tmp}/out.npz")

            # glmnet needs fit's kept variants, grid and folds: on odd genes an untimed fit
            # supplies them so that glmnet runs before the timed one (alternating order).
            if g % 2 == 0:
                model, (t, c) = ours()
                ref = glm(model)
            else:
                ref = glm(ours()[0])
                model, (t, c) = ours()
            full_s = float("nan")
            if full_grid:
                t0, c0 = time.perf_counter(), time.process_time()
                ElasticNetModel(seed=seed + g, patience=None).fit(X, y)
                full_s, full_c = time.perf_counter() - t0, time.process_time() - c0
                t_full.append((full_s, full_c))
            r_glm = pearson(ref["oof"][:, int(ref["best"])], y)
            dr = abs(model.cv_r_ - r_glm)
            db = float(np.max(np.abs(model.coef_[model.kept_] * model.x_scale_ - ref["coef"])))
            t_ours.append(t)
            t_glm.append(float(ref["seconds"]))
            c_ours.append(c)
            c_glm.append(float(ref["cpu"]))
            drs.append(dr)
            line = f"{g:>4} {h2:>4} {t:>9.2f} {float(ref['seconds']):>8.2f} {float(ref['seconds']) / t:>5.1f}x "
            line += f"{c:>5.2f}/{float(ref['cpu']):<5.2f} {float(ref['cpu']) / c:>8.1f}x "
            line += f"{full_s:>6.2f}/{full_c:<6.2f} " if full_grid else ""
            walked = int(np.isfinite(model.cv_mse_).sum())
            print(
                line + f"{walked:>6} {model.best_index_:>4}/{int(ref['best']):<4} {model.cv_r_:>9.4f} {r_glm:>8.4f} "
                f"{dr:>7.4f} {db:>8.1e}",
                flush=True,
            )
    mean_o, mean_g = float(np.mean(t_ours)), float(np.mean(t_glm))
    tail = ""
    if full_grid:
        fw, fc = np.mean(t_full, axis=0)
        tail = f", full grid {fw:.2f} s ({mean_g / fw:.2f}x; CPU {fc:.2f} s, {np.mean(c_glm) / fc:.2f}x)"
    cpu_o, cpu_g = float(np.mean(c_ours)), float(np.mean(c_glm))
    print(
        f"mean per gene: hapexpr {mean_o:.2f} s, glmnet {mean_g:.2f} s, ratio {mean_g / mean_o:.1f}x{tail}; "
        f"CPU hapexpr {cpu_o:.2f} s, glmnet {cpu_g:.2f} s, ratio {cpu_g / cpu_o:.1f}x; "
        f"max |dr| {max(drs):.4f}"
    )
    ok = max(drs) <= 0.01
    print("ok" if ok else "FAILED: out-of-fold r differs by more than 0.01")
    return ok


# -- GEUVADIS at +-1 Mb: merged identical columns against today's solver and glmnet ------------


def geuvadis_genes(directory: str, n_genes: int, shard: tuple[int, int] = (0, 1), window: int = 1_000_000):
    """[(index, (gene_id, (samples, variants) ALT dosages within +-window of the TSS, (samples,)
    expression residualised on the 50 covariates by OLS))] for ``n_genes`` genes evenly spaced
    over the 608 chr22 genes of Debian's qtltools-example (``scripts/geuvadis.sh DIR``); of
    those, the indices K, K+N, ... for ``shard`` (K, N)."""
    import pandas as pd

    from hapexpr.cohort import read_cis
    from hapexpr.io.vcf import VcfReader

    bed = pd.read_csv(f"{directory}/genes.50percent.chr22.bed.gz", sep="\t")
    samples = list(bed.columns[6:])
    cov = pd.read_csv(f"{directory}/genes.covariates.pc50.txt.gz", sep=r"\s+", index_col=0)[samples]
    C = np.column_stack([np.ones(len(samples)), cov.to_numpy(dtype=np.float64).T])
    reader = VcfReader(f"{directory}/genotypes.chr22.vcf.gz", samples=samples)
    genes = []
    for g, i in enumerate(np.linspace(0, len(bed) - 1, n_genes).round().astype(int)):
        if g % shard[1] != shard[0]:
            continue
        row = bed.iloc[i]
        y = row.iloc[6:].to_numpy(dtype=np.float64)
        y = y - C @ np.linalg.lstsq(C, y, rcond=None)[0]
        _, X = read_cis(reader, str(row["#chr"]), int(row["end"]), window)  # BED end: the TSS, 1-based
        genes.append((g, (str(row["gene"]), X.astype(np.float64), y)))
    return genes


def baseline_module(rev: str):
    """``hapexpr.estimators.elastic_net`` as it was at git revision ``rev`` (today's solver)."""
    import importlib.util
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(
        ["git", "-C", root, "show", f"{rev}:src/hapexpr/estimators/elastic_net.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = os.path.join(tempfile.mkdtemp(), "baseline_elastic_net.py")
    with open(path, "w") as fh:
        fh.write(src)
    spec = importlib.util.spec_from_file_location("baseline_elastic_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu(make, X, y):
    c0 = time.process_time()
    model = make().fit(X, y)
    return model, time.process_time() - c0


def run_geuvadis(args) -> bool:
    import tempfile

    from hapexpr.estimators.elastic_net import ElasticNetModel, identical_columns

    old = baseline_module(args.baseline_rev).ElasticNetModel
    k, n_shards = (int(x) for x in args.shard.split("/"))
    genes = geuvadis_genes(args.geuvadis, args.geuvadis_genes, (k, n_shards))
    n_glm = min(args.glmnet_genes, args.geuvadis_genes) if args.glmnet else 0
    glm_at = set(np.linspace(0, args.geuvadis_genes - 1, n_glm).round().astype(int)) if n_glm else set()
    print(
        f"# GEUVADIS {args.geuvadis}: {len(genes)} of {args.geuvadis_genes} chr22 genes (shard {args.shard}), +-1 Mb, {len(genes[0][1][2])} people, expression "
        f"residualised on 50 PCs; today's solver = git {args.baseline_rev}; load average at start "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{'gene':<19} {'kept':>5} {'distinct':>8} {'today_cpu':>9} {'new_cpu':>7} {'ratio':>5} {'lambda.min':>10} "
        f"{'|dpred|':>7} {'tight|dpred|':>12} {'tight_best':>10}"
        + (f" {'glm_cpu':>7} {'glm_vp_cpu':>10} {'glm best/vp':>11} {'glm|doof|':>9}" if n_glm else "")
    )
    c_old, c_new, same, same_tight, tight = [], [], 0, 0, []
    X0, y0 = genes[0][1][1], genes[0][1][2]
    ElasticNetModel(seed=0).fit(X0[:, :200], y0)  # imports outside the timing
    old(seed=0).fit(X0[:, :200], y0)
    with tempfile.TemporaryDirectory() as tmp:
        for g, (gene, X, y) in genes:
            runs = [("old", lambda: old(seed=0)), ("new", lambda: ElasticNetModel(seed=0))]
            fits = dict((name, _cpu(make, X, y)) for name, make in (runs if g % 2 == 0 else runs[::-1]))
            (a, ca), (b, cb) = fits["old"], fits["new"]
            c_old.append(ca)
            c_new.append(cb)
            same += a.best_index_ == b.best_index_
            # The 1e-6 oracle needs both solves tight: merged against unmerged, tol 1e-9.
            kw = {"seed": 0, "tol": 1e-9, "max_iter": 100_000}
            tm, tp = ElasticNetModel(**kw).fit(X, y), ElasticNetModel(merge=False, **kw).fit(X, y)
            d_tight = max(
                float(np.max(np.abs(tm.predict(X) - tp.predict(X)))), float(np.max(np.abs(tm.cv_pred_ - tp.cv_pred_)))
            )
            tight.append(d_tight)
            same_tight += tm.best_index_ == tp.best_index_
            line = (
                f"{gene:<19} {int(b.kept_.sum()):>5} {b.n_distinct_:>8} {ca:>9.2f} {cb:>7.2f} {cb / ca:>5.2f} "
                f"{a.best_index_:>4}/{b.best_index_:<5} {np.max(np.abs(a.predict(X) - b.predict(X))):>7.1e} "
                f"{d_tight:>12.1e} {tm.best_index_:>4}/{tp.best_index_:<5}"
            )
            if g in glm_at and b.best_index_ >= 0:
                line += " " + _glmnet_merged(args.glmnet, tmp, X, y, b, identical_columns)
            print(line, flush=True)
    mo, mn = float(np.mean(c_old)), float(np.mean(c_new))
    print(
        f"mean CPU s per gene: today {mo:.3f}, merged {mn:.3f}, ratio {mn / mo:.2f}; lambda.min equal to today's "
        f"{same}/{len(genes)}; merged vs unmerged at tol 1e-9: max |dpred| {max(tight):.1e}, lambda.min equal "
        f"{same_tight}/{len(genes)}; load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    ok = max(tight) <= 1e-6 and same_tight == len(genes)
    print("ok" if ok else "FAILED: merged and unmerged fits differ")
    return ok


def _glmnet_merged(python: str, tmp: str, X, y, model, identical_columns) -> str:
    """glmnet's Fortran on the unmerged standardised columns and on the merged ones with
    penalty factors (column k*z, ``penalty.factor`` k, lambda scaled by p/m because elnet
    rescales the factors to sum to the m columns): CPU seconds of each, lambda.min index of
    each (and of ``model``), max |difference| of their out-of-fold predictions."""
    import subprocess

    Xk = X[:, model.kept_]
    Xs = (Xk - model.x_mean_) / model.x_scale_
    first, _, count = identical_columns(Xk)
    out = []
    for name, cols, vp, grid in (
        ("plain", Xs, np.ones(Xs.shape[1]), model.lambdas_),
        ("vp", Xs[:, first] * count, count.astype(np.float64), model.lambdas_ * Xs.shape[1] / len(first)),
    ):
        np.savez(f"{tmp}/in.npz", Xs=cols, y=y, folds=model.inner_folds_, grid=grid, vp=vp)
        subprocess.run([python, __file__, "--glmnet-worker", f"{tmp}/in.npz", f"{tmp}/{name}.npz"], check=True)
        out.append(np.load(f"{tmp}/{name}.npz"))
    (p, v) = out
    doof = float(np.max(np.abs(p["oof"][:, int(p["best"])] - v["oof"][:, int(v["best"])])))
    return (
        f"{float(p['cpu']):>7.2f} {float(v['cpu']):>10.2f} {int(p['best']):>3}/{int(v['best']):<3}({model.best_index_:>2}) "
        f"{doof:>9.1e}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds), no speed target")
    ap.add_argument("--individuals", type=int, help="people (default 290; 358 with --glmnet)")
    ap.add_argument("--sizes", default="30,300,3000", help="variants per gene, comma-separated")
    ap.add_argument("--genes", default="8,4,1", help="genes per size, comma-separated")
    ap.add_argument("--folds", type=int, default=5, help="outer folds over individuals")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--glmnet", metavar="PYTHON", help="compare with python-glmnet run by this interpreter")
    ap.add_argument("--variants", type=int, default=5000, help="variants per gene with --glmnet")
    ap.add_argument("--glmnet-genes", type=int, default=10, help="genes with --glmnet")
    ap.add_argument("--full-grid", action="store_true", help="with --glmnet: also time patience=None")
    ap.add_argument("--geuvadis", metavar="DIR", help="real genes: the qtltools-example files (scripts/geuvadis.sh)")
    ap.add_argument("--geuvadis-genes", type=int, default=38, help="genes with --geuvadis")
    ap.add_argument("--baseline-rev", default="aba90e3", help="git revision of today's solver (--geuvadis)")
    ap.add_argument("--shard", default="0/1", help="K/N: with --geuvadis, genes K, K+N, ... (parallel runs)")
    ap.add_argument("--glmnet-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.glmnet_worker:
        glmnet_worker(*args.glmnet_worker)
        return 0
    if args.geuvadis:
        import sklearn.linear_model  # noqa: F401  (import once, outside the timed fits)

        print(
            f"# {platform.node()} {_cpu_model()}, {os.cpu_count()} cores, BLAS threads {os.environ['OMP_NUM_THREADS']}"
        )
        return 0 if run_geuvadis(args) else 1
    if args.smoke:
        args.individuals, args.sizes, args.genes, args.folds = 100, "30", "2", 3
    if args.glmnet:
        import sklearn.linear_model  # import once, outside the timed fits

        print(
            f"# {platform.node()} {_cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"BLAS threads {os.environ['OMP_NUM_THREADS']}"
        )
        ok = run_glmnet(
            args.glmnet, args.individuals or 358, args.variants, args.glmnet_genes, args.seed, args.full_grid
        )
        return 0 if ok else 1
    args.individuals = args.individuals or 290
    sizes = [int(s) for s in args.sizes.split(",")]
    genes = [int(s) for s in args.genes.split(",")]
    genes = (genes + genes[-1:] * len(sizes))[: len(sizes)]
    warnings.filterwarnings("ignore", category=Warning, module="sklearn")
    import sklearn.linear_model  # noqa: F401  (import once, outside the timed fits)

    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, BLAS threads {os.environ['OMP_NUM_THREADS']}"
    )
    print(f"# {args.individuals} people, {args.folds} outer folds, 10 inner folds, 100 penalties, alpha 0.5")
    print(
        f"{'variants':>8} {'genes':>5} {'hapexpr_s':>10} {'sklearn_s':>10} {'speed ratio':>11} "
        f"{'r_hapexpr':>9} {'r_sklearn':>9} {'mean|dr|':>8} {'max|dr|':>8} {'same_lambda':>11}"
    )
    ok = True
    for p, n_genes in zip(sizes, genes):
        res = run_size(args.individuals, p, n_genes, args.folds, args.seed)
        ratio = res["t_base"] / res["t_ours"]
        dr = np.abs(res["r_ours"] - res["r_base"])
        print(
            f"{p:>8} {n_genes:>5} {res['t_ours']:>10.4f} {res['t_base']:>10.4f} {ratio:>10.1f}x "
            f"{res['r_ours'].mean():>9.4f} {res['r_base'].mean():>9.4f} {dr.mean():>8.4f} {dr.max():>8.4f} "
            f"{res['same_lambda']:>5}/{res['fits']:<5}",
            flush=True,
        )
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
