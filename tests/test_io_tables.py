"""Readers of annotations, expression and covariates: good input parsed, bad input named."""

import gzip

import pytest

from hapexpr.errors import InputError
from hapexpr.io.expression import read_covariates, read_expression
from hapexpr.io.genes import read_genes


def write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


GTF = (
    'chr1\tsim\tgene\t1000\t5000\t.\t+\t.\tgene_id "G1"; gene_name "A1"; gene_type "protein_coding";\n'
    'chr1\tsim\ttranscript\t1000\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "A1";\n'
    'chr2\tsim\tgene\t2000\t9000\t.\t-\t.\tgene_id "G2"; gene_name "B2";\n'
)


def test_gtf_tss_is_strand_aware(tmp_path):
    g = read_genes(write(tmp_path / "g.gtf", GTF)).set_index("gene_id")
    assert g.loc["G1", "tss"] == 1000 and g.loc["G1", "strand"] == "+"
    assert g.loc["G2", "tss"] == 9000 and g.loc["G2", "gene_name"] == "B2"


def test_gtf_without_gene_lines_uses_transcripts(tmp_path):
    text = "".join(line.replace("\tgene\t", "\ttranscript\t") + "\n" for line in GTF.splitlines() if "\tgene\t" in line)
    g = read_genes(write(tmp_path / "g.gtf.gz", text, gz=True)).set_index("gene_id")
    assert g.loc["G2", "tss"] == 9000


def test_gff3(tmp_path):
    text = "##gff-version 3\nchr1\ts\tgene\t10\t20\t.\t-\t.\tID=gene:G9;Name=X\n"
    g = read_genes(write(tmp_path / "g.gff3", text))
    assert list(g.gene_id) == ["G9"] and g.tss[0] == 20


def test_tss_bed_and_table(tmp_path):
    bed = read_genes(write(tmp_path / "t.bed", "chr1\t99\t100\tG1\t0\t+\nchr1\t500\t800\tG2\t0\t-\n"))
    assert list(bed.tss) == [100, 800]
    tsv = read_genes(write(tmp_path / "t.tsv", "gene_id\tchrom\ttss\tstrand\nG1\t1\t100\t-\n"))
    assert tsv.tss[0] == 100 and tsv.strand[0] == "-"


@pytest.mark.parametrize(
    "name,text,needle",
    [
        ("dup.gtf", GTF + GTF.splitlines()[0] + "\n", "'G1' appears more than once"),
        ("cols.gtf", "chr1\tsim\tgene\t1\t2\t.\t+\n", "line 1"),
        ("strand.gtf", GTF.replace("\t-\t", "\t?\t"), "line 3"),
        ("empty.gtf", "# nothing\n", "no gene or transcript records"),
        ("miss.tsv", "gene_id\tchrom\ttss\nG1\t1\t5\n", "strand"),
    ],
)
def test_bad_annotations_name_file_and_record(tmp_path, name, text, needle):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError) as err:
        read_genes(path)
    assert str(path) in str(err.value) and needle in str(err.value)


BED = "#chr\tstart\tend\tgene_id\tS1\tS2\tS3\nchr1\t99\t100\tG1\t1.5\t2\t-0.5\nchr1\t199\t200\tG2\t0\t1\t2\n"


def test_expression_bed_gz_and_tsv(tmp_path):
    e = read_expression(write(tmp_path / "e.bed.gz", BED, gz=True))
    assert list(e.columns) == ["S1", "S2", "S3"] and e.loc["G1", "S3"] == -0.5
    t = read_expression(write(tmp_path / "e.tsv", "gene\tS1\tS2\nG1\t1\t2\n"))
    assert t.loc["G1", "S2"] == 2.0


def test_expression_parquet(tmp_path):
    import pandas as pd

    pd.DataFrame({"gene_id": ["G1"], "S1": [1.0], "S2": [3.0]}).to_parquet(tmp_path / "e.parquet")
    assert read_expression(tmp_path / "e.parquet").loc["G1", "S2"] == 3.0


@pytest.mark.parametrize(
    "text,needle",
    [
        (BED.replace("\t2\t-0.5", "\tNaN\t-0.5"), "gene G1, sample S2 is missing (NaN)"),
        (BED.replace("\t2\t-0.5", "\tabc\t-0.5"), "not a number ('abc')"),
        (BED.replace("G2", "G1"), "gene id 'G1' appears more than once"),
        (BED.replace("S3", "S1"), "sample id 'S1' appears more than once"),
        (BED + "chr1\t1\t2\tG3\t1\n", "tab-separated"),
        ("", "empty"),
    ],
)
def test_bad_expression(tmp_path, text, needle):
    path = write(tmp_path / "e.bed", text)
    with pytest.raises(InputError) as err:
        read_expression(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_truncated_gzip_expression(tmp_path):
    path = write(tmp_path / "e.bed.gz", BED * 200, gz=True)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_expression(path)


def test_covariates(tmp_path):
    c = read_covariates(write(tmp_path / "c.tsv", "id\tS1\tS2\tS3\nsex\t0\t1\t1\nPC1\t0.1\t-0.2\t0.3\n"))
    assert list(c.index) == ["sex", "PC1"]
    with pytest.raises(InputError, match="constant"):
        read_covariates(write(tmp_path / "k.tsv", "id\tS1\tS2\nk\t1\t1\n"))
    with pytest.raises(InputError, match="covariate sex, sample S2 is missing"):
        read_covariates(write(tmp_path / "n.tsv", "id\tS1\tS2\nsex\t1\tNA\n"))
