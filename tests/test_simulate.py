"""`hapexpr simulate`: standard, valid, deterministic files with a known genetic architecture.

Oracles: bcftools (parsing, REF check, left-alignment), samtools (FASTA index), pandas and numpy
least squares (heritability), BGZF magic bytes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.errors import InputError
from hapexpr.simulate import simulate_cohort

SMALL = {"individuals": 40, "genes": 4, "window": 3000, "seed": 3}
LARGE = {"individuals": 300, "genes": 30, "window": 4000, "seed": 11}
FILES = {
    "reference.fa",
    "reference.fa.fai",
    "genotypes.vcf.gz",
    "genotypes.vcf.gz.tbi",
    "genes.gtf",
    "expression.bed.gz",
    "covariates.tsv",
    "samples.tsv",
    "truth.tsv",
    "truth_variants.tsv",
    "truth_genetic.tsv",
}
needs_bcftools = pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "small"
    simulate_cohort(out, **SMALL)
    return out


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "large"
    simulate_cohort(out, **LARGE)
    return out


def _query(vcf: Path, fmt: str) -> list[list[str]]:
    text = subprocess.run(["bcftools", "query", "-f", fmt, str(vcf)], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in text.splitlines()]


def _records(vcf: Path) -> pd.DataFrame:
    """CHROM POS ID REF ALT and the (haplotypes,) 0/1 ALT indicators of every record, via bcftools."""
    rows = _query(vcf, "%CHROM\t%POS\t%ID\t%REF\t%ALT\t[%GT\t]\n")
    df = pd.DataFrame([r[:5] for r in rows], columns=["chrom", "pos", "id", "ref", "alt"])
    df["pos"] = df["pos"].astype(int)
    df["gt"] = [r[5:-1] for r in rows]
    return df


def _haplotypes(df: pd.DataFrame) -> np.ndarray:
    """(variants, samples * 2) ALT indicators from phased GT strings."""
    return np.array([[int(a) for gt in gts for a in gt.split("|")] for gts in df["gt"]], dtype=np.int8)


def _gtf_genes(path: Path) -> pd.DataFrame:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        attrs = dict(re.findall(r'(\S+) "([^"]*)";', f[8]))
        rows.append({"chrom": f[0], "feature": f[2], "start": int(f[3]), "end": int(f[4]), "strand": f[6], **attrs})
    return pd.DataFrame(rows)


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    again = tmp_path / "again"
    simulate_cohort(again, **SMALL)
    assert {p.name for p in small.iterdir()} == FILES == {p.name for p in again.iterdir()}
    for name in sorted(FILES):
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    simulate_cohort(other, **{**SMALL, "seed": 4})
    assert (other / "genotypes.vcf.gz").read_bytes() != (small / "genotypes.vcf.gz").read_bytes()


@needs_bcftools
def test_vcf_is_valid_phased_biallelic_sorted_and_matches_reference(small):
    vcf, fasta = small / "genotypes.vcf.gz", small / "reference.fa"
    view = subprocess.run(["bcftools", "view", "-H", str(vcf)], capture_output=True, text=True)
    assert view.returncode == 0 and len(view.stdout.splitlines()) > 20
    # --check-ref e exits non-zero on the first REF that disagrees with the FASTA.
    norm = subprocess.run(
        ["bcftools", "norm", "--check-ref", "e", "-f", str(fasta), "-Ou", "-o", "/dev/null", str(vcf)],
        capture_output=True,
        text=True,
    )
    assert norm.returncode == 0, norm.stderr
    # Indels are written left-aligned: bcftools norm realigns nothing.
    total, split, realigned, skipped = map(int, re.search(r"(\d+)/(\d+)/(\d+)/(\d+)", norm.stderr).groups())
    assert total == len(view.stdout.splitlines()) and (split, realigned, skipped) == (0, 0, 0)

    df = _records(vcf)
    assert df["id"].is_unique and not df["alt"].str.contains(",").any()
    for _, sub in df.groupby("chrom"):
        assert (np.diff(sub["pos"].to_numpy()) > 0).all(), "sorted, one record per position"
    assert all(re.fullmatch(r"[01]\|[01]", gt) for gts in df["gt"] for gt in gts)
    assert (df["id"] == df["chrom"] + "_" + df["pos"].astype(str) + "_" + df["ref"] + "_" + df["alt"]).all()
    header = subprocess.run(["bcftools", "view", "-h", str(vcf)], capture_output=True, text=True, check=True).stdout
    contigs = dict(re.findall(r"##contig=<ID=(\w+),length=(\d+)>", header))
    fai = pd.read_csv(small / "reference.fa.fai", sep="\t", header=None)
    assert contigs == {str(r[0]): str(r[1]) for r in fai.itertuples(index=False)}
    assert "##FORMAT=<ID=GT" in header
    samples = header.splitlines()[-1].split("\t")[9:]
    assert samples == [f"S{i:04d}" for i in range(1, SMALL["individuals"] + 1)]
    # tabix index answers a region query
    region = subprocess.run(["bcftools", "view", "-H", "-r", "chr1", str(vcf)], capture_output=True, text=True)
    assert region.returncode == 0 and region.stdout.startswith("chr1\t")


@pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools not installed")
def test_fasta_index_matches_samtools_and_composition_is_human_like(small, large, tmp_path):
    fai = tmp_path / "ref.fai"
    subprocess.run(["samtools", "faidx", str(small / "reference.fa"), "--fai-idx", str(fai)], check=True)
    assert fai.read_bytes() == (small / "reference.fa.fai").read_bytes()
    seq = "".join(
        line.strip() for line in (large / "reference.fa").read_text().splitlines() if not line.startswith(">")
    )
    assert set(seq) == set("ACGT")
    gc = (seq.count("G") + seq.count("C")) / len(seq)
    assert 0.39 < gc < 0.43
    cpg_ratio = seq.count("CG") / len(seq) / (gc / 2) ** 2
    assert cpg_ratio < 0.5, "CpG depleted as in the human genome"


@needs_bcftools
def test_indels_about_ten_percent_and_never_ambiguous(large):
    df = _records(large / "genotypes.vcf.gz")
    is_indel = df["ref"].str.len() != df["alt"].str.len()
    assert 0.07 < is_indel.mean() < 0.13, is_indel.mean()
    size = (df["ref"].str.len() - df["alt"].str.len()).abs()[is_indel]
    assert size.min() >= 1 and size.max() <= 20 and (size > 1).any()
    assert (df["ref"].str.len() > 1).any() and (df["alt"].str.len() > 1).any(), "both insertions and deletions"
    # No two deletions/records overlap on the same haplotype.
    haps = _haplotypes(df)
    pos = df["pos"].to_numpy()
    inside = 0
    for i in np.flatnonzero(df["ref"].str.len() > 1):
        end = pos[i] + len(df["ref"].iat[i]) - 1
        for j in np.flatnonzero((df["chrom"] == df["chrom"].iat[i]) & (pos > pos[i]) & (pos <= end)):
            inside += 1
            assert not (haps[i] & haps[j]).any(), (df["id"].iat[i], df["id"].iat[j])
    assert inside <= 0.01 * len(df), "records inside deletions are rare"


def test_genes_both_strands_and_contig_edges(small):
    gtf = _gtf_genes(small / "genes.gtf")
    genes = gtf[gtf.feature == "gene"].reset_index(drop=True)
    assert len(genes) == SMALL["genes"] and genes["gene_id"].str.match(r"ENSG\d{11}\.\d+$").all()
    assert set(genes["gene_type"]) == {"protein_coding"} and genes["gene_name"].is_unique
    assert (genes.strand == "-").sum() >= 2 and (genes.strand == "+").sum() >= 1
    tss = np.where(genes.strand == "+", genes.start, genes.end)
    half = SMALL["window"] // 2
    lengths = dict(pd.read_csv(small / "reference.fa.fai", sep="\t", header=None).iloc[:, :2].to_numpy())
    assert (tss - half < 1).any(), "one TSS window runs off a contig start"
    assert (tss + half > genes.chrom.map(lengths).to_numpy()).any(), "one runs off a contig end"
    for gene_id, sub in gtf.groupby("gene_id"):
        gene, tx = sub[sub.feature == "gene"].iloc[0], sub[sub.feature == "transcript"]
        exons = sub[sub.feature == "exon"]
        assert len(tx) == 1 and (tx.start.iat[0], tx.end.iat[0]) == (gene.start, gene.end)
        assert tx["transcript_id"].iat[0].startswith("ENST") and len(exons) >= 1
        assert (exons.start >= gene.start).all() and (exons.end <= gene.end).all()
        first = exons.iloc[0]  # exon 1 holds the TSS
        assert (first.start == gene.start) if gene.strand == "+" else (first.end == gene.end)
    bed = pd.read_csv(small / "expression.bed.gz", sep="\t")
    assert list(bed.columns[:4]) == ["#chr", "start", "end", "gene_id"]
    merged = bed.iloc[:, :4].merge(pd.DataFrame({"gene_id": genes.gene_id, "tss": tss}), on="gene_id")
    assert len(merged) == len(genes) and (merged.end == merged.tss).all() and (merged.end - merged.start == 1).all()


@needs_bcftools
def test_variation_covers_every_tss_window(small):
    df = _records(small / "genotypes.vcf.gz")
    truth = pd.read_csv(small / "truth.tsv", sep="\t")
    half = SMALL["window"] // 2
    for g in truth.itertuples():
        near = df[(df.chrom == g.chrom) & ((df.pos - g.tss).abs() <= half)]
        assert (near.pos < g.tss).any() or g.tss <= 300
        assert (near.pos > g.tss).any()


def test_files_are_bgzf_and_tables_line_up(small):
    for name in ["genotypes.vcf.gz", "expression.bed.gz"]:
        head = (small / name).read_bytes()[:16]
        assert head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC", f"{name} is BGZF"
    cov = pd.read_csv(small / "covariates.tsv", sep="\t")
    bed = pd.read_csv(small / "expression.bed.gz", sep="\t")
    pops = pd.read_csv(small / "samples.tsv", sep="\t")
    assert cov.columns[0] == "id" and list(cov["id"]) == ["sex", "PC1", "PC2", "PC3", "PC4", "PC5"]
    assert list(cov.columns[1:]) == list(bed.columns[4:]) == list(pops.sample_id)
    values = cov.set_index("id").astype(float)
    assert set(values.loc["sex"]) == {0.0, 1.0}
    pcs = values.drop(index="sex").to_numpy()
    assert np.allclose(pcs.mean(axis=1), 0, atol=1e-5) and np.allclose(pcs.std(axis=1), 1, atol=1e-4)
    assert np.allclose(np.corrcoef(pcs), np.eye(5), atol=1e-4), "PCs are orthogonal"
    assert np.isfinite(bed.iloc[:, 4:].to_numpy(dtype=float)).all()


@needs_bcftools
def test_truth_refers_to_vcf_ids_near_the_tss(small):
    ids = set(_records(small / "genotypes.vcf.gz")["id"])
    truth = pd.read_csv(small / "truth.tsv", sep="\t", keep_default_na=False)
    assert list(truth.columns[:5]) == ["gene_id", "gene_name", "chrom", "tss", "strand"]
    for g in truth.itertuples():
        causal = [v for v in g.causal_variants.split(",") if v]
        effects = [float(x) for x in str(g.causal_effects).split(",") if x]
        assert len(causal) == len(effects) == g.n_causal and g.n_causal <= 5
        assert (g.n_causal == 0) == (g.h2 == 0)
        for v in causal:
            chrom, pos, *_ = v.split("_")
            assert v in ids and chrom == g.chrom and abs(int(pos) - g.tss) <= SMALL["window"] // 2


@needs_bcftools
def test_heritability_recovered_by_regression(large):
    """Partial R^2 of the causal dosages (given sex and PCs) matches truth's residualised h2."""
    df = _records(large / "genotypes.vcf.gz").set_index("id")
    truth = pd.read_csv(large / "truth.tsv", sep="\t", keep_default_na=False)
    bed = pd.read_csv(large / "expression.bed.gz", sep="\t").set_index("gene_id")
    cov = pd.read_csv(large / "covariates.tsv", sep="\t").set_index("id").to_numpy(dtype=float).T
    base = np.column_stack([np.ones(len(cov)), cov])
    h2 = truth["h2"].to_numpy()
    assert (h2 == 0).sum() >= 2 and (h2 > 0).sum() >= 15 and h2.max() <= 0.6 and len(set(h2)) > 10

    def rss(design, y):
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        return float(((y - design @ beta) ** 2).sum())

    indel_causal = 0
    for g in truth.itertuples():
        y = bed.loc[g.gene_id].to_numpy()[3:].astype(float)
        if g.n_causal == 0:
            continue
        ids = g.causal_variants.split(",")
        indel_causal += sum(len(df.at[v, "ref"]) != len(df.at[v, "alt"]) for v in ids)
        dosage = _haplotypes(df.loc[ids]).reshape(len(ids), -1, 2).sum(axis=2).T
        reduced = rss(base, y)
        partial = 1 - rss(np.column_stack([base, dosage]), y) / reduced
        assert abs(partial - g.h2_residualised) < 0.03, (g.gene_id, partial, g.h2_residualised)
        assert g.h2_residualised <= g.h2 + 1e-6 and g.h2_residualised > 0.5 * g.h2
    assert indel_causal >= 1, "some causal variants are indels"


def test_pcs_reflect_ancestry(large):
    cov = pd.read_csv(large / "covariates.tsv", sep="\t").set_index("id").T
    pops = pd.read_csv(large / "samples.tsv", sep="\t").set_index("sample_id").loc[cov.index, "population"]
    assert set(pops) == {"AFR", "EUR", "EAS"}
    onehot = pd.get_dummies(pops).to_numpy(dtype=float)
    pcs = cov[["PC1", "PC2"]].to_numpy()
    beta, *_ = np.linalg.lstsq(onehot, pcs, rcond=None)
    r2 = 1 - ((pcs - onehot @ beta) ** 2).sum() / ((pcs - pcs.mean(axis=0)) ** 2).sum()
    assert r2 > 0.8


def test_refuses_non_empty_dir_and_overwrites_when_asked(small, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as err:
        simulate_cohort(out, individuals=10, genes=1)
    assert str(out) in str(err.value) and "--overwrite" in str(err.value)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    simulate_cohort(out, **SMALL, overwrite=True)
    assert (out / "truth.tsv").read_bytes() == (small / "truth.tsv").read_bytes()
    with pytest.raises(InputError):
        simulate_cohort(tmp_path / "new", individuals=10, genes=1, h2=1.5)


def test_failed_write_leaves_no_half_file(tmp_path, monkeypatch):
    import hapexpr.simulate.writers as writers

    def broken(genes, expression, samples):
        yield "#chr\tstart\tend\tgene_id\n"
        raise OSError("disk full")

    monkeypatch.setattr(writers, "expression_lines", broken)
    out = tmp_path / "c"
    with pytest.raises(OSError):
        simulate_cohort(out, individuals=10, genes=2)
    names = {p.name for p in out.iterdir()}
    assert "expression.bed.gz" not in names and "truth.tsv" not in names
    assert not any(n.endswith(".tmp") for n in names)


def test_cli_simulate(tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(out), "--individuals", "30", "--genes", "3", "--h2", "0.3"]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == FILES
    truth = pd.read_csv(out / "truth.tsv", sep="\t")
    assert len(truth) == 3 and (truth.h2 == 0.3).all()
    again = CliRunner().invoke(app, ["simulate", "--out", str(out), "--genes", "3"])
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output


def test_import_does_not_load_msprime():
    code = "import sys, hapexpr.simulate; assert 'msprime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
