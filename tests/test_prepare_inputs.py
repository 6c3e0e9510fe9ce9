"""`hapexpr prepare` on the files GEUVADIS and GTEx users bring: layouts, no silent junk,
genotype-only studies, truth, --folds-by and the cis-window dosage store."""

import gzip
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args

from hapexpr.errors import InputError, StudyError
from hapexpr.io.expression import read_covariates, read_expression_table
from hapexpr.io.fasta import Reference
from hapexpr.io.genes import read_genes
from hapexpr.prepare import prepare_study
from hapexpr.study import Study


def _args(cohort, out, **over) -> dict:
    return {**prepare_args(cohort, out), **over}


def _bed(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort / "expression.bed.gz", sep="\t")


def _qtltools_bed(cohort, path, *, variant="pid gid strand", mixed=False):
    """The simulated expression as QTLtools writes it: #chr start end pid gid strand samples
    (or gene length strand), start = TSS-1 and end = TSS on both strands."""
    genes = read_genes(cohort / "genes.gtf").set_index("gene_id")
    bed = _bed(cohort)
    ids = bed["gene_id"]
    tss = genes.loc[ids, "tss"].to_numpy()
    extra = {"pid gid strand": ("gid", ids.to_numpy()), "gene length strand": ("length", np.full(len(ids), 1000))}[
        variant
    ]
    out = pd.DataFrame(
        {
            "#chr": bed["#chr"],
            "start": tss - 1,
            "end": tss,
            variant.split()[0]: ids,
            extra[0]: extra[1],
            "strand": genes.loc[ids, "strand"].to_numpy(),
        }
    )
    out = pd.concat([out, bed.iloc[:, 4:]], axis=1)
    if not mixed:
        out.to_csv(path, sep="\t", index=False)
        return path
    # GEUVADIS's genes.simulated.chr22.bed.gz: six tab-separated fields, then samples separated by spaces
    lines = ["\t".join(out.columns)]
    for row in out.astype(str).itertuples(index=False):
        lines.append("\t".join(row[:6]) + "\t" + " ".join(row[6:]))
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("variant,mixed", [("pid gid strand", False), ("gene length strand", True)])
def test_qtltools_bed_is_read_and_carries_the_tss(tiny_cohort, tmp_path, variant, mixed):
    path = _qtltools_bed(tiny_cohort, tmp_path / ("e.bed.gz" if mixed else "e.bed"), variant=variant, mixed=mixed)
    table = read_expression_table(path)
    assert table.layout == "qtltools-bed"
    expected = read_expression_table(tiny_cohort / "expression.bed.gz").values
    pd.testing.assert_frame_equal(table.values, expected)
    gtf = read_genes(tiny_cohort / "genes.gtf").set_index("gene_id").loc[table.tss["gene_id"]]
    assert (table.tss["tss"].to_numpy() == gtf["tss"].to_numpy()).all()
    assert (table.tss["strand"].to_numpy() == gtf["strand"].to_numpy()).all()


def test_prepare_without_genes_takes_tss_from_the_qtltools_bed(tiny_cohort, tiny_study, tmp_path):
    path = _qtltools_bed(tiny_cohort, tmp_path / "e.bed")
    args = _args(tiny_cohort, tmp_path / "s", genes=None)
    args["expression"] = path
    prepare_study(**args)
    got = Study.open(tmp_path / "s").genes
    want = Study.open(tiny_study).genes
    span = ["gene_start", "gene_end"]
    pd.testing.assert_frame_equal(got.drop(columns=["gene_name", *span]), want.drop(columns=["gene_name", *span]))
    # a one-base TSS interval carries no gene body: the span is the TSS itself
    assert (got["gene_start"] == got["tss"]).all() and (got["gene_end"] == got["tss"]).all()


def test_tensorqtl_bed_without_strand_needs_genes(tiny_cohort, tmp_path):
    args = _args(tiny_cohort, tmp_path / "s", genes=None)
    with pytest.raises(InputError, match="--genes is needed") as err:
        prepare_study(**args)
    assert str(tiny_cohort / "expression.bed.gz") in str(err.value)


def test_gtex_gct(tiny_cohort, tmp_path):
    bed = _bed(tiny_cohort)
    body = bed.iloc[:, 4:].copy()
    body.insert(0, "Description", "some gene name")
    body.insert(0, "Name", bed["gene_id"])
    path = tmp_path / "e.gct"
    with open(path, "w") as fh:
        fh.write(f"#1.2\n{len(body)}\t{body.shape[1] - 2}\n")
        body.to_csv(fh, sep="\t", index=False)
    table = read_expression_table(path)
    assert table.layout == "gct" and table.tss is None
    pd.testing.assert_frame_equal(table.values, read_expression_table(tiny_cohort / "expression.bed.gz").values)
    assert (table.names == "some gene name").all() and list(table.names.index) == list(bed["gene_id"])


def test_gene_names_come_from_the_annotation_else_the_expression_file():
    """GTF names win; a gene the annotation names only by its id takes the GCT Description;
    a gene named nowhere keeps its id."""
    from hapexpr.io.genes import fill_gene_names

    genes = pd.DataFrame(
        {"gene_id": ["G1", "G2", "G3"], "gene_name": ["A1", "G2", "G3"], "chrom": "chr1", "tss": 1, "strand": "+"}
    )
    got = fill_gene_names(genes, pd.Series({"G1": "OTHER", "G2": "B2"}))
    assert list(got["gene_name"]) == ["A1", "B2", "G3"]
    assert fill_gene_names(genes, None) is genes


def test_prepare_stores_gct_descriptions_as_gene_names(tiny_cohort, tmp_path):
    """A GTF without gene_name + a GCT whose Description names the genes: genes.tsv gets the
    Description; old studies without the column read as 'no names' (the ids)."""
    import re

    from hapexpr.prepare import prepare_study
    from hapexpr.study import Study

    bed = _bed(tiny_cohort)
    body = bed.iloc[:, 4:].copy()
    body.insert(0, "Description", [f"NAME{i}" for i in range(len(bed))])
    body.insert(0, "Name", bed["gene_id"])
    gct = tmp_path / "e.gct"
    with open(gct, "w") as fh:
        fh.write(f"#1.2\n{len(body)}\t{body.shape[1] - 2}\n")
        body.to_csv(fh, sep="\t", index=False)
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(re.sub(r' gene_name "[^"]*";', "", (tiny_cohort / "genes.gtf").read_text()))
    out = tmp_path / "s"
    prepare_study(
        vcf=tiny_cohort / "genotypes.vcf.gz",
        genes=gtf,
        expression=gct,
        out=out,
        window=2000,
        folds=5,
        progress=False,
    )
    study = Study.open(out)
    want = dict(zip(bed["gene_id"], body["Description"]))
    assert dict(study.gene_names) == {g: want[g] for g in study.gene_ids}
    genes = pd.read_csv(out / "genes.tsv", sep="\t", dtype=str)
    genes.drop(columns="gene_name").to_csv(out / "genes.tsv", sep="\t", index=False)
    assert dict(Study.open(out).gene_names) == {g: g for g in study.gene_ids}


def test_bed_header_that_fits_no_layout_names_the_layouts(tmp_path):
    path = tmp_path / "e.bed"
    path.write_text("#chr\tpos\tgene\tS1\tS2\nchr1\t5\tG1\t1\t2\n")
    with pytest.raises(InputError) as err:
        read_expression_table(path)
    assert str(path) in str(err.value) and "#chr start end pid gid strand" in str(err.value)


def test_bad_value_names_the_layout_it_was_read_as(tiny_cohort, tmp_path):
    path = _qtltools_bed(tiny_cohort, tmp_path / "e.bed")
    path.write_text(path.read_text().replace("\t+\t", "\tplus\t", 1))
    with pytest.raises(InputError, match="strand 'plus' is not"):
        read_expression_table(path)


@pytest.mark.parametrize("header", ["id", "SampleID", None])
def test_whitespace_covariates_with_or_without_a_header_name(tiny_cohort, tmp_path, header):
    cov = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t", index_col=0)
    lines = [" ".join(([header] if header else []) + list(cov.columns))]
    lines += [" ".join([i] + [repr(float(v)) for v in row]) for i, row in zip(cov.index, cov.to_numpy())]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    got = read_covariates(path)
    np.testing.assert_allclose(got.to_numpy(), cov.to_numpy())
    assert list(got.columns) == list(cov.columns)


def test_covariates_with_unknown_samples_blame_the_covariates_file(tiny_cohort, tmp_path):
    cov = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t", index_col=0)
    cov.columns = [c + "_x" for c in cov.columns]
    cov.to_csv(tmp_path / "c.tsv", sep="\t")
    args = _args(tiny_cohort, tmp_path / "s")
    args["covariates"] = tmp_path / "c.tsv"
    with pytest.raises(InputError) as err:
        prepare_study(**args)
    assert str(err.value).startswith(str(tmp_path / "c.tsv"))


# --- no silent junk -------------------------------------------------------------------------


def _excerpt(cohort, tmp_path, region):
    """The reference excerpt `samtools faidx REF REGION` writes (record named REGION)."""
    out = tmp_path / "excerpt.fa"
    with open(out, "w") as fh:
        subprocess.run(["samtools", "faidx", str(cohort / "reference.fa"), region], stdout=fh, check=True)
    return out


def test_fasta_excerpt_is_a_sub_region_of_its_contig(tiny_cohort, tmp_path):
    full = Reference(tiny_cohort / "reference.fa")
    ex = Reference(_excerpt(tiny_cohort, tmp_path, "chr1:10001-26375"))
    name = ex.resolve("chr1")
    assert name == "chr1:10001-26375" and ex.span(name) == (10001, 26375) and ex.is_excerpt(name)
    assert ex.fetch("chr1", 12000, 12100) == full.fetch("chr1", 12000, 12100)
    assert ex.fetch("chr1", 9995, 10005) == b"N" * 6 + full.fetch("chr1", 10001, 10005)
    assert ex.resolve("chr2") is None


def test_excerpt_keeps_the_genes_it_covers_and_drops_the_rest(tiny_cohort, tiny_study, tmp_path):
    args = _args(tiny_cohort, tmp_path / "s")
    args["fasta"] = _excerpt(tiny_cohort, tmp_path, "chr1:10001-26375")
    prepare_study(**args)
    study, full = Study.open(tmp_path / "s"), Study.open(tiny_study)
    genes = full.genes
    covered = genes[(genes.chrom == "chr1") & (genes.window_start >= 10001) & (genes.window_end <= 26375)]
    assert len(covered) >= 1 and study.gene_ids == list(covered.gene_id)
    for g in study.gene_ids:  # the same haplotype windows as with the whole reference
        assert study.gene(g).sequences == full.gene(g).sequences
    dropped = pd.read_csv(tmp_path / "s" / "dropped_genes.tsv", sep="\t")
    reasons = dict(zip(dropped.gene_id, dropped.reason))
    assert set(reasons) == set(genes.gene_id) - set(covered.gene_id)
    for g in reasons:
        chrom = genes.set_index("gene_id").loc[g, "chrom"]
        assert reasons[g] == ("contig_not_in_fasta" if chrom == "chr2" else "window_outside_fasta_excerpt")
    assert study.meta["dropped_genes"] == dict(pd.Series(list(reasons.values())).value_counts())


def test_mostly_n_window_is_dropped(tiny_cohort, tiny_study, tmp_path):
    genes = Study.open(tiny_study).genes
    victim = genes.iloc[-1]
    ref = Reference(tiny_cohort / "reference.fa")
    with open(tmp_path / "r.fa", "w") as fh:
        for name, length in ref.contigs.items():
            seq = bytearray(ref.fetch(name, 1, length))
            if name == victim.chrom:
                seq[victim.window_start - 1 : victim.window_end] = b"N" * (victim.window_end - victim.window_start + 1)
            fh.write(f">{name}\n{seq.decode()}\n")
    args = _args(tiny_cohort, tmp_path / "s")
    args["fasta"] = tmp_path / "r.fa"
    # No Enformer context: a wide one would reach the masked stretch from a neighbouring gene,
    # whose VCF records there (REF != N) are then, rightly, refused.
    args["context"] = 0
    prepare_study(**args)
    dropped = pd.read_csv(tmp_path / "s" / "dropped_genes.tsv", sep="\t")
    assert dropped.values.tolist() == [[victim.gene_id, "mostly_n"]]
    assert victim.gene_id not in Study.open(tmp_path / "s").gene_ids


def _vcf_positions(cohort, chrom):
    out = subprocess.run(
        ["bcftools", "query", "-r", chrom, "-f", "%POS\n", str(cohort / "genotypes.vcf.gz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return np.array([int(x) for x in out.split()])


def test_gene_without_a_cis_variant_is_dropped_and_nothing_left_is_an_error(tiny_cohort, tmp_path):
    genes = read_genes(tiny_cohort / "genes.gtf")
    pos = _vcf_positions(tiny_cohort, "chr1")
    gaps = np.diff(np.sort(pos))
    i = int(np.argmax(gaps))
    tss = int(np.sort(pos)[i] + gaps[i] // 2)  # middle of the widest gap
    genes.loc[0, ["chrom", "tss", "gene_start", "gene_end"]] = ["chr1", tss, tss, tss]
    w = int(gaps[i] // 2 - 10)
    assert w > 1000
    genes.to_csv(tmp_path / "tss.tsv", sep="\t", index=False)
    args = _args(tiny_cohort, tmp_path / "s", cis_window=w)
    args["genes"] = tmp_path / "tss.tsv"
    prepare_study(**args)
    expected = set()
    for g in genes.itertuples():
        p = _vcf_positions(tiny_cohort, g.chrom)
        if not ((p >= g.tss - w) & (p <= g.tss + w)).any():
            expected.add(g.gene_id)
    assert genes.gene_id[0] in expected
    dropped = pd.read_csv(tmp_path / "s" / "dropped_genes.tsv", sep="\t")
    assert set(dropped.gene_id) == expected and set(dropped.reason) == {"no_cis_variant"}

    args = _args(tiny_cohort, tmp_path / "s2", cis_window=w)
    args["fasta"] = _excerpt(tiny_cohort, tmp_path, "chr2:1-50")
    with pytest.raises(InputError, match="no gene is left"):
        prepare_study(**args)
    assert not (tmp_path / "s2").exists()


def test_warnings_are_summarised_not_flooded(tiny_cohort, tmp_path, capsys, monkeypatch):
    import warnings

    from hapexpr.io import vcf as vcf_module

    fetch = vcf_module.VcfReader.fetch

    def noisy(self, *a, **k):
        warnings.warn("reversed interval chr1:10-5")
        return fetch(self, *a, **k)

    monkeypatch.setattr(vcf_module.VcfReader, "fetch", noisy)
    prepare_study(**_args(tiny_cohort, tmp_path / "s"))
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("reversed interval") == 1 and "warning(s) while reading" in err


# --- normalisation, genotype-only, truth, folds-by, cis store -------------------------------


def test_normalise_is_recorded_and_raw_scale_warned(tiny_cohort, tmp_path, capsys):
    bed = _bed(tiny_cohort)
    bed.iloc[:, 4:] = np.round(np.exp(bed.iloc[:, 4:].to_numpy() * 3 + 3))  # count-like
    bed.to_csv(tmp_path / "counts.bed", sep="\t", index=False)
    args = _args(tiny_cohort, tmp_path / "s")
    args["expression"] = tmp_path / "counts.bed"
    prepare_study(**args)
    assert "looks like raw counts" in " ".join(capsys.readouterr().err.split())
    prepare_study(**{**args, "out": tmp_path / "s2", "normalise": "inverse-normal"})
    assert "looks like raw counts" not in " ".join(capsys.readouterr().err.split())
    assert Study.open(tmp_path / "s2").normalise == "inverse-normal"
    with pytest.raises(InputError, match="log2 needs non-negative"):
        prepare_study(**_args(tiny_cohort, tmp_path / "s3", normalise="log2"))


def test_genotype_only_study(tiny_cohort, tiny_study, tmp_path):
    from hapexpr.fit import run_fit

    prepare_study(**_args(tiny_cohort, tmp_path / "s", fasta=None))
    study = Study.open(tmp_path / "s")
    assert not study.has_sequence and Study.open(tiny_study).has_sequence
    assert json.loads((tmp_path / "s" / "study.json").read_text())["has_sequence"] is False
    with pytest.raises(StudyError, match="nt-transformer needs haplotype sequences"):
        study.require_sequence("nt-transformer")
    gene = study.gene(study.gene_ids[0])
    with pytest.raises(StudyError, match="without --fasta"):
        gene.sequences
    full = Study.open(tiny_study).gene(study.gene_ids[0])
    np.testing.assert_array_equal(gene.genotypes, full.genotypes)
    rows = run_fit(tmp_path / "s", "elastic-net")
    assert rows["gene_id"].nunique() == len(study.gene_ids)
    for method in ("ridge-probe", "enformer"):  # sequence methods refuse it, naming themselves
        with pytest.raises(StudyError, match=f"{method} needs haplotype sequences"):
            run_fit(tmp_path / "s", method)


def test_truth_is_copied_into_the_study(tiny_cohort, tiny_study):
    assert (tiny_study / "truth.tsv").read_bytes() == (tiny_cohort / "truth.tsv").read_bytes()
    assert Study.open(tiny_study).meta["truth"] == ["truth.tsv", "truth_genetic.tsv", "truth_variants.tsv"]
    assert (tiny_study / "truth_variants.tsv").exists()


def test_folds_by_a_sample_column(tiny_cohort, tmp_path):
    ids = list(_bed(tiny_cohort).columns[4:])
    pops = ["GBR", "FIN", "TSI"]
    ann = pd.DataFrame({"sample": ids, "population": [pops[i % 3] for i in range(len(ids))]})
    ann.to_csv(tmp_path / "pop.tsv", sep="\t", index=False)
    prepare_study(**_args(tiny_cohort, tmp_path / "s", folds_by=("population", tmp_path / "pop.tsv")))
    study = Study.open(tmp_path / "s")
    groups = sorted(pops)
    assert study.params["folds_by"]["groups"] == groups and study.n_folds == 3
    want = dict(zip(ann["sample"], ann["population"]))
    assert [groups[k] for k in study.folds] == [want[s] for s in study.sample_ids]
    from hapexpr.report import split_note  # the report states the split

    assert split_note(study).startswith("folds by population from pop.tsv (3 folds: FIN, GBR, TSI")
    ann.iloc[:-1].to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="have no row") as err:
        prepare_study(**_args(tiny_cohort, tmp_path / "s2", folds_by=("population", tmp_path / "short.tsv")))
    assert str(tmp_path / "short.tsv") in str(err.value)
    with pytest.raises(InputError, match="no column 'pop'"):
        prepare_study(**_args(tiny_cohort, tmp_path / "s3", folds_by=("pop", tmp_path / "pop.tsv")))


def test_cis_store_matches_bcftools(tiny_cohort, tmp_path):
    w = 5000
    prepare_study(**_args(tiny_cohort, tmp_path / "s", cis_window=w))
    study = Study.open(tmp_path / "s")
    assert study.cis_window == w
    for g in study.genes.itertuples():
        cis = study.cis_genotypes(g.gene_id)
        region = f"{g.chrom}:{max(1, g.tss - w)}-{g.tss + w}"
        out = subprocess.run(
            [
                "bcftools",
                "query",
                "-r",
                region,
                "-s",
                ",".join(study.sample_ids),
                "-f",
                "%ID\t%POS[\t%GT]\n",
                str(tiny_cohort / "genotypes.vcf.gz"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        rows = [r for r in rows if int(r[1]) >= g.tss - w]  # -r also returns records overlapping the start
        want = np.array([[sum(int(a) for a in gt.replace("|", "/").split("/")) for gt in r[2:]] for r in rows])
        assert cis.dosages.shape == (len(rows), len(study.sample_ids)) and cis.dosages.dtype == np.int8
        np.testing.assert_array_equal(cis.dosages, want)
        assert list(cis.variants.pos) == [int(r[1]) for r in rows]


def test_evaluate_reads_the_truth_from_the_study(tiny_study, tmp_path):
    from hapexpr.evaluate import read_truth

    dst = tmp_path / "s"
    shutil.copytree(tiny_study, dst)
    meta = json.loads((dst / "study.json").read_text())
    meta["inputs"]["expression"]["path"] = str(tmp_path / "moved" / "expression.bed.gz")
    (dst / "study.json").write_text(json.dumps(meta))
    truth = read_truth(Study.open(dst))
    assert truth is not None and set(truth.gene_id) == set(Study.open(dst).gene_ids)


def test_cli_qtltools_bed_without_genes_with_normalise_and_folds_by(tiny_cohort, tmp_path):
    c = tiny_cohort
    bed = _qtltools_bed(c, tmp_path / "e.bed.gz", variant="gene length strand", mixed=True)
    ids = list(_bed(c).columns[4:])
    pd.DataFrame({"sample": ids, "pop": ["A" if i < 30 else "B" for i in range(len(ids))]}).to_csv(
        tmp_path / "pop.tsv", sep="\t", index=False
    )
    args = [
        "prepare",
        "--vcf",
        c / "genotypes.vcf.gz",
        "--expression",
        bed,
        "--covariates",
        c / "covariates.tsv",
        "--window",
        1000,
        "--normalise",
        "inverse-normal",
        "--folds-by",
        "pop",
        tmp_path / "pop.tsv",
        "--out",
        tmp_path / "s",
    ]
    r = subprocess.run(["hapexpr", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    study = Study.open(tmp_path / "s")
    assert study.normalise == "inverse-normal" and not study.has_sequence and study.n_folds == 2
    assert study.meta["expression_layout"] == "qtltools-bed"
    bad = subprocess.run(
        ["hapexpr", *map(str, args[:-1]), tmp_path / "s2", "--normalise", "rank"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--normalise 'rank' is not one of" in bad.stderr


def test_cis_store_resumes_by_contig(tiny_cohort, tmp_path, monkeypatch):
    import hapexpr.cis_store as cis_store

    real = cis_store._write_contig
    written = []

    def dying(base, reader, contig, *a):
        if contig == "chr2" and "killed" not in written:
            written.append("killed")
            raise KeyboardInterrupt
        written.append(contig)
        return real(base, reader, contig, *a)

    monkeypatch.setattr(cis_store, "_write_contig", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_study(**_args(tiny_cohort, tmp_path / "s"))
    assert written == ["chr1", "killed"]
    prepare_study(**_args(tiny_cohort, tmp_path / "s"))
    assert written == ["chr1", "killed", "chr2"], "the finished contig is not read again"
    prepare_study(**_args(tiny_cohort, tmp_path / "ref"))
    for name in ["cis/genes.tsv", "cis/chr1.dosages.npy", "cis/chr2.dosages.npy", "cis/chr2.variants.npz"]:
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
