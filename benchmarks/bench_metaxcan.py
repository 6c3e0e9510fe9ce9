"""Check: MetaXcan's own software reads hapexpr's PredictDB export and agrees with hapexpr.

MetaXcan (hakyimlab/MetaXcan, ``software/``) is not a dependency and is never imported here: it
runs unchanged, as a user would run it, in its own interpreter (it needs numpy<2)::

    python -m venv /tmp/mxvenv
    /tmp/mxvenv/bin/pip install 'numpy<2' pandas scipy cyvcf2 patsy statsmodels pyliftover h5py
    python benchmarks/bench_metaxcan.py --metaxcan /path/to/MetaXcan/software --python /tmp/mxvenv/bin/python

``--smoke`` (200 people, 8 genes) is what ``tests/test_benchmarks_smoke.py`` runs when the
environment names MetaXcan (``HAPEXPR_METAXCAN`` = its ``software/``, ``HAPEXPR_METAXCAN_PYTHON``
= that interpreter); otherwise that test is skipped, saying so.

Steps (all in ``--out``, default a temporary directory):

1. ``hapexpr simulate`` a cohort (``--individuals``, ``--genes``); the first half of the people
   are the study (``prepare``, then ``export-predictdb --all-genes --rsid-map``), the second
   half are new people: their VCF, with the rsIDs of the map written into its ID column
   (``bcftools annotate``), is what ``Predict.py`` and ``hapexpr predict`` read, and they are
   the GWAS cohort.
2. **Predict.py** vs ``hapexpr predict --method elastic-net`` on the new VCF: per gene, the
   Pearson r of the two predictions over people and the spread (SD) of their difference, which
   is a constant per gene (PredictDB weights carry no intercept) — reported as the SD of the
   difference relative to the SD of hapexpr's prediction.
3. **SPrediXcan.py** on the database, the exported covariance file and a GWAS of a simulated
   trait: trait = sum over a third of the genes of b_g x (standardised predicted expression of
   the new people, b_g = +-0.4) + N(0, 1) noise; per-SNP marginal OLS beta, se, z (numpy) over the new
   people. Compared with (a) the S-PrediXcan formula computed here, z_g = sum_l w_l s_l z_l /
   s_g with s_l^2 the covariance file's diagonal and s_g^2 = w' C w (max |dz|), and (b) the
   individual-level association: z of the OLS of the trait on hapexpr's predicted expression
   of the same people (Pearson r over genes, max |dz|).

Checks (exit 1 otherwise): Predict.py covers every gene hapexpr predicts; r >= 0.9999 and
relative SD of the difference <= 1e-4 on every gene; SPrediXcan.py uses every model SNP of every
gene and finds each in the covariance; |z_SPrediXcan - z_formula| <= 1e-3;
r(z_SPrediXcan, z_individual) >= 0.9.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gzip  # noqa: E402
import platform  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def run(cmd: list[str], **kw) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n{(done.stdout + done.stderr)[-4000:]}")


def hapexpr(*args: str) -> None:
    run([sys.executable, "-c", "from hapexpr.cli import app; app()", *map(str, args)])


def make_inputs(out: Path, individuals: int, genes: int, seed: int) -> dict:
    """Simulate, split the people in two, write the study's inputs, the new people's VCF with
    rsIDs and the rsid map (chrom pos ref alt rsid)."""
    hapexpr("simulate", "--out", out / "sim", "--individuals", individuals, "--genes", genes, "--seed", seed)
    sim = out / "sim"
    expr = pd.read_csv(sim / "expression.bed.gz", sep="\t")
    samples = list(expr.columns[4:])
    train, new = samples[: len(samples) // 2], samples[len(samples) // 2 :]
    expr[list(expr.columns[:4]) + train].to_csv(out / "train.bed", sep="\t", index=False)
    cov = pd.read_csv(sim / "covariates.tsv", sep="\t")
    cov[[cov.columns[0], *train]].to_csv(out / "train.covariates.tsv", sep="\t", index=False)
    # rsIDs for every site, as dbSNP would give them
    sites = subprocess.run(
        ["bcftools", "query", "-f", "%CHROM\t%POS\t%REF\t%ALT\n", sim / "genotypes.vcf.gz"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = pd.DataFrame([line.split("\t") for line in sites.splitlines()], columns=["chrom", "pos", "ref", "alt"])
    table["rsid"] = [f"rs{100000 + i}" for i in range(len(table))]
    table.to_csv(out / "rsid_map.tsv", sep="\t", index=False)
    annot = out / "annot.tsv"
    table.to_csv(annot, sep="\t", index=False, header=False)
    run(["bgzip", "-f", annot])
    run(["tabix", "-f", "-s1", "-b2", "-e2", f"{annot}.gz"])
    (out / "new.samples").write_text("\n".join(new) + "\n")
    new_vcf = out / "new.vcf.gz"
    run(
        ["bcftools", "annotate", "-a", f"{annot}.gz", "-c", "CHROM,POS,REF,ALT,ID", "-Oz", "-o", out / "all.vcf.gz"]
        + [sim / "genotypes.vcf.gz"]
    )
    run(["bcftools", "view", "-S", out / "new.samples", "-Oz", "-o", new_vcf, out / "all.vcf.gz"])
    run(["tabix", "-f", "-p", "vcf", new_vcf])
    return {"sim": sim, "train": train, "new": new, "vcf": new_vcf}


def predictdb_weights(db: Path) -> pd.DataFrame:
    con = sqlite3.connect(db)
    try:
        return pd.read_sql("SELECT * FROM weights", con)
    finally:
        con.close()


def read_covariance(path: Path) -> dict[str, pd.DataFrame]:
    df = pd.read_csv(path, sep=r"\s+", dtype={"RSID1": str, "RSID2": str})
    out = {}
    for gene, rows in df.groupby("GENE", sort=False):
        ids = list(dict.fromkeys(rows["RSID1"]))
        m = pd.DataFrame(np.nan, index=ids, columns=ids)
        for a, b, v in rows[["RSID1", "RSID2", "VALUE"]].itertuples(index=False):
            m.loc[a, b] = m.loc[b, a] = v
        out[gene] = m
    return out


def dosages_by_rsid(vcf: Path, rsids: set[str], samples: list[str]) -> pd.DataFrame:
    """(snps, samples) ALT dosages of the VCF records whose ID is in ``rsids``."""
    text = subprocess.run(
        ["bcftools", "query", "-f", "%ID[\t%GT]\n", vcf], capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in text.splitlines():
        rid, *gts = line.split("\t")
        if rid in rsids:
            rows[rid] = [g.count("1") for g in gts]
    return pd.DataFrame.from_dict(rows, orient="index", columns=samples, dtype=np.float64)


def gwas(dosages: pd.DataFrame, trait: np.ndarray) -> pd.DataFrame:
    """Per-SNP marginal OLS of the trait on the dosage (with an intercept): beta, se, z."""
    X = dosages.to_numpy()
    xc = X - X.mean(axis=1, keepdims=True)
    yc = trait - trait.mean()
    sxx = (xc**2).sum(axis=1)
    beta = xc @ yc / sxx
    resid = yc[None, :] - beta[:, None] * xc
    se = np.sqrt((resid**2).sum(axis=1) / (len(trait) - 2) / sxx)
    return pd.DataFrame({"SNP": dosages.index, "beta": beta, "se": se, "zscore": beta / se})


def formula_z(w: pd.Series, cov: pd.DataFrame, z: pd.Series) -> float:
    """S-PrediXcan: z_g = sum_l w_l s_l z_l / s_g (SNPs missing from the GWAS left out)."""
    ids = [i for i in w.index if i in z.index]
    c = cov.loc[ids, ids].to_numpy()
    wv = w[ids].to_numpy()
    return float(np.sum(wv * np.sqrt(np.diag(c)) * z[ids].to_numpy()) / np.sqrt(wv @ c @ wv))


def ols_z(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    fit = stats.linregress(x, y)
    return float(fit.slope / fit.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metaxcan", type=Path, required=True, help="MetaXcan's software/ directory")
    ap.add_argument("--python", required=True, help="interpreter with MetaXcan's requirements (numpy<2)")
    ap.add_argument("--individuals", type=int, default=600)
    ap.add_argument("--genes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="200 people x 8 genes: minutes, for the test suite")
    args = ap.parse_args()
    if args.smoke:
        args.individuals, args.genes = 200, 8
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-metaxcan-"))
    out.mkdir(parents=True, exist_ok=True)
    sw = args.metaxcan.resolve()
    print(f"machine: {platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; out {out}")

    t0 = time.perf_counter()
    d = make_inputs(out, args.individuals, args.genes, args.seed)
    study = out / "study"
    hapexpr(
        "prepare", "--vcf", d["sim"] / "genotypes.vcf.gz", "--genes", d["sim"] / "genes.gtf",
        "--expression", out / "train.bed", "--covariates", out / "train.covariates.tsv", "--out", study,
    )  # fmt: skip
    db, covariance = out / "hapexpr.db", out / "hapexpr.covariances.txt.gz"
    hapexpr("export-predictdb", study, "--out", db, "--all-genes", "--rsid-map", out / "rsid_map.tsv")
    hapexpr("predict", study, "--method", "elastic-net", "--vcf", d["vcf"], "--out", out / "hapexpr_pred.tsv")
    t_hapexpr = time.perf_counter() - t0
    weights = predictdb_weights(db)
    print(
        f"study: {len(d['train'])} people; new/GWAS: {len(d['new'])}; genes in the database: {weights.gene.nunique()}"
    )

    # -- 2. Predict.py -----------------------------------------------------------------------
    t0 = time.perf_counter()
    mx_pred = out / "mx_predict.txt"
    run(
        [args.python, sw / "Predict.py", "--model_db_path", db, "--vcf_genotypes", d["vcf"], "--vcf_mode", "genotyped"]
        + ["--prediction_output", mx_pred, "--prediction_summary_output", out / "mx_predict_summary.txt"],
        cwd=sw,
    )
    t_predict = time.perf_counter() - t0
    mx = pd.read_csv(mx_pred, sep="\t", dtype={"IID": str}).set_index("IID")
    hx = pd.read_csv(out / "hapexpr_pred.tsv", sep="\t", dtype={"sample_id": str})
    hx = hx.pivot(index="sample_id", columns="gene_id", values="predicted").loc[mx.index]
    rows = []
    for gene in hx.columns:
        if gene not in weights["gene"].values:
            continue  # no model: hapexpr predicts the training mean, PredictDB holds nothing
        if gene not in mx.columns:
            rows.append((gene, np.nan, np.nan))
            continue
        a, b = hx[gene].to_numpy(), mx[gene].to_numpy()
        r = np.corrcoef(a, b)[0, 1] if np.ptp(a) > 0 else np.nan
        rows.append((gene, r, np.std(a - b) / np.std(a)))
    pred = pd.DataFrame(rows, columns=["gene", "r", "rel_sd_diff"])
    covered = pred["r"].notna().sum()
    print(
        f"Predict.py vs hapexpr predict: {covered} of {len(pred)} genes with a model predicted by both; "
        f"min r {pred['r'].min():.10f}; max SD(difference)/SD(hapexpr) {pred['rel_sd_diff'].max():.2e} "
        f"(the difference is the per-gene intercept PredictDB weights do not carry)"
    )

    # -- 3. S-PrediXcan ----------------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    hx_new = hx.loc[list(mx.index)]
    genes_with_model = sorted(weights["gene"].unique())
    causal = rng.choice(genes_with_model, size=max(1, len(genes_with_model) // 3), replace=False)
    trait = rng.normal(size=len(hx_new))
    for g in causal:
        e = hx_new[g].to_numpy()
        trait += rng.choice([-0.4, 0.4]) * (e - e.mean()) / e.std()
    dos = dosages_by_rsid(d["vcf"], set(weights["rsid"]), list(mx.index))
    sumstats = gwas(dos, trait)
    alleles = weights.drop_duplicates("rsid").set_index("rsid")
    sumstats["effect_allele"] = alleles.loc[sumstats["SNP"], "eff_allele"].to_numpy()
    sumstats["non_effect_allele"] = alleles.loc[sumstats["SNP"], "ref_allele"].to_numpy()
    gwas_file = out / "gwas.txt.gz"
    with gzip.open(gwas_file, "wt") as fh:
        sumstats.to_csv(fh, sep="\t", index=False)
    t0 = time.perf_counter()
    spx_out = out / "spredixcan.csv"
    run(
        [args.python, sw / "SPrediXcan.py", "--model_db_path", db, "--covariance", covariance, "--gwas_file", gwas_file]
        + ["--snp_column", "SNP", "--effect_allele_column", "effect_allele"]
        + ["--non_effect_allele_column", "non_effect_allele", "--beta_column", "beta", "--se_column", "se"]
        + ["--output_file", spx_out, "--throw"],
        cwd=sw,
    )
    t_spx = time.perf_counter() - t0
    spx = pd.read_csv(spx_out).set_index("gene")
    # every model SNP found in the GWAS and in the covariance (the ids agree across the three files)
    all_snps = bool(
        ((spx["n_snps_used"] == spx["n_snps_in_model"]) & (spx["n_snps_in_cov"] == spx["n_snps_in_model"])).all()
    )
    cov = read_covariance(covariance)
    z = sumstats.set_index("SNP")["zscore"]
    rows = []
    for gene, w in weights.groupby("gene"):
        z_formula = formula_z(w.set_index("rsid")["weight"], cov[gene], z)
        x = hx_new[gene].to_numpy()
        z_ind = ols_z(x, trait) if np.ptp(x) > 0 else np.nan
        rows.append((gene, spx.loc[gene, "zscore"] if gene in spx.index else np.nan, z_formula, z_ind))
    zs = pd.DataFrame(rows, columns=["gene", "z_spredixcan", "z_formula", "z_individual"]).dropna()
    zs.to_csv(out / "zscores.tsv", sep="\t", index=False)
    d_formula = np.abs(zs["z_spredixcan"] - zs["z_formula"]).max()
    r_ind = np.corrcoef(zs["z_spredixcan"], zs["z_individual"])[0, 1]
    d_ind = np.abs(zs["z_spredixcan"] - zs["z_individual"])
    print(
        f"SPrediXcan.py: {len(zs)} of {len(genes_with_model)} genes; max |z - formula| {d_formula:.2e}; "
        f"vs individual-level z: r {r_ind:.4f}, median |dz| {d_ind.median():.3f}, max |dz| {d_ind.max():.3f}; "
        f"|z| > 3 for {int((zs['z_spredixcan'].abs() > 3).sum())} genes ({len(causal)} causal); "
        f"every model SNP used and in the covariance: {all_snps}"
    )
    print(f"seconds: hapexpr simulate+prepare+export+predict {t_hapexpr:.1f}, Predict.py {t_predict:.1f}, "
          f"SPrediXcan.py {t_spx:.1f}")  # fmt: skip

    ok = (
        covered == len(pred)
        and pred["r"].min() >= 0.9999
        and pred["rel_sd_diff"].max() <= 1e-4
        and len(zs) == len(genes_with_model)
        and d_formula <= 1e-3
        and all_snps
        and r_ind >= 0.9
    )
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
