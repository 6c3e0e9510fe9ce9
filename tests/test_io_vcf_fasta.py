"""Bad VCF/FASTA inputs give one InputError naming the file, the record and the fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hapexpr.errors import InputError
from hapexpr.haplotypes import haplotypes_fasta
from hapexpr.io.fasta import Reference, resolve_contig
from hapexpr.io.vcf import VcfReader

pysam = pytest.importorskip("pysam")

REF = "ACGTACGTTGCAAGCTTAGCCGATCGATCGGATCCATGCA"  # 40 bp
GOOD = [
    ("chr1", 3, "G", "T", ["0|1", "1|1"]),
    ("chr1", 5, "ACG", "A", ["1|0", "0|0"]),
    ("chr1", 12, "A", "ATT", ["1|1", "0|1"]),
]


def vcf_text(records, samples=("A", "B"), contig="chr1", extra_lines: str = "") -> str:
    text = (
        "##fileformat=VCFv4.2\n"
        f"##contig=<ID={contig},length=40>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n"
    )
    for chrom, pos, ref, alt, gts in records:
        text += f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gts) + "\n"
    return text + extra_lines


def make_vcf(tmp_path: Path, records=GOOD, name="v.vcf.gz", index=True, **kw) -> Path:
    plain = tmp_path / name.removesuffix(".gz")
    plain.write_text(vcf_text(records, **kw))
    path = tmp_path / name
    pysam.tabix_compress(str(plain), str(path), force=True)
    if index:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def make_fasta(tmp_path: Path, name="chr1", seq=REF) -> Path:
    path = tmp_path / "ref.fa"
    path.write_text(f">{name} some description\n{seq[:25]}\n{seq[25:]}\n")
    return path


def expect(exc_info, path: Path, *fragments: str) -> None:
    text = str(exc_info.value)
    assert str(path) in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in: {text}"


# --- container problems ------------------------------------------------------------------------


def test_plain_text_vcf_is_refused(tmp_path):
    path = tmp_path / "v.vcf"
    path.write_text(vcf_text(GOOD))
    with pytest.raises(InputError) as e:
        VcfReader(path)
    expect(e, path, "not bgzip", "bcftools index")


def test_plain_gzip_vcf_is_refused(tmp_path):
    path = tmp_path / "v.vcf.gz"
    path.write_bytes(gzip.compress(vcf_text(GOOD).encode()))
    with pytest.raises(InputError) as e:
        VcfReader(path)
    expect(e, path, "not bgzip", "bgzip")


def test_missing_index_is_refused(tmp_path):
    path = make_vcf(tmp_path, index=False)
    with pytest.raises(InputError) as e:
        VcfReader(path)
    expect(e, path, "no index", "tabix -p vcf")


def test_truncated_vcf_is_refused(tmp_path):
    records = [("chr1", p, REF[p - 1], "A" if REF[p - 1] != "A" else "C", ["0|1", "1|0"]) for p in range(1, 41)]
    path = make_vcf(tmp_path, records)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError) as e:
        VcfReader(path)
    expect(e, path, "truncated")


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        VcfReader(tmp_path / "nope.vcf.gz")
    expect(e, tmp_path / "nope.vcf.gz", "not found")


# --- record problems ---------------------------------------------------------------------------


def test_multiallelic_record_names_record_and_norm(tmp_path):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", "G,T", ["1|2", "0|0"])])
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, "chr1:20 C>G,T", "multi-allelic", "bcftools norm -m-")
    assert len(VcfReader(path).fetch("chr1", 1, 19)) == 3  # outside the region it is not read


@pytest.mark.parametrize("alt", ["<DEL>", "*"])
def test_symbolic_alt_is_refused(tmp_path, alt):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", alt, ["0|1", "0|0"])])
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, f"chr1:20 C>{alt}", "symbolic")


def test_unphased_genotypes_name_first_records_and_samples(tmp_path):
    records = GOOD + [("chr1", 20, "C", "G", ["0|0", "0/1"]), ("chr1", 25, "C", "T", ["1/0", "0|0"])]
    path = make_vcf(tmp_path, records)
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, "unphased", "chr1:20 sample B", "chr1:25 sample A", "--allow-unphased")
    variants = VcfReader(path, allow_unphased=True).fetch("chr1", 1, 40)
    # used in the order written: 1/0 gives ALT on the first haplotype
    np.testing.assert_array_equal(variants.genotypes[4], [[1, 0], [0, 0]])
    assert not variants.phased[4, 0] and variants.phased[4, 1]


def test_unphased_homozygous_genotypes_are_accepted(tmp_path):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", "G", ["1/1", "0/0"])])
    variants = VcfReader(path).fetch("chr1", 1, 40)
    np.testing.assert_array_equal(variants.genotypes[3], [[1, 1], [0, 0]])


@pytest.mark.parametrize("gt", ["./.", ".|.", "0|."])
def test_missing_genotype_is_refused(tmp_path, gt):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", "G", ["0|1", gt])])
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, "chr1:20 C>G", "missing", "sample B", "impute")


def test_haploid_genotype_is_refused(tmp_path):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", "G", ["0|1", "1"])])
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, "chr1:20 C>G", "diploid")


def test_ref_mismatch_names_record_and_check_ref(tmp_path):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "A", "G", ["0|1", "0|0"])])
    fasta = make_fasta(tmp_path)
    reader = VcfReader(path)
    assert len(reader.fetch("chr1", 1, 40)) == 4  # without the reference nothing to compare
    with pytest.raises(InputError) as e:
        reader.fetch("chr1", 1, 40, reference=Reference(fasta))
    expect(e, path, "chr1:20 A>G", "does not match", "--check-ref")


def test_ref_case_does_not_matter(tmp_path):
    path = make_vcf(tmp_path, GOOD + [("chr1", 20, "c", "g", ["0|1", "0|0"])])
    variants = VcfReader(path).fetch("chr1", 1, 40, reference=Reference(make_fasta(tmp_path)))
    assert variants.ref[3] == "c" and variants.ids[3] == "chr1_20_c_g"


def test_malformed_line_names_neighbouring_record(tmp_path):
    bad = "chr1\t30\t.\tG\tA\t.\tPASS\t.\tGT\t0|1\n"  # one sample column short
    path = tmp_path / "v.vcf.gz"
    plain = tmp_path / "v.vcf"
    plain.write_text(vcf_text(GOOD, extra_lines=bad))
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    with pytest.raises(InputError) as e:
        VcfReader(path).fetch("chr1", 1, 40)
    expect(e, path, "malformed", "after chr1:12")


# --- samples, contigs, regions -----------------------------------------------------------------


def test_samples_in_requested_order_and_unknown_sample(tmp_path):
    path = make_vcf(tmp_path)
    reader = VcfReader(path, samples=["B", "A"])
    assert reader.samples == ["B", "A"]
    variants = reader.fetch("chr1", 1, 40)
    np.testing.assert_array_equal(variants.genotypes[0], [[1, 1], [0, 1]])
    with pytest.raises(InputError) as e:
        VcfReader(path, samples=["A", "Z"])
    expect(e, path, "Z", "bcftools query -l")


def test_fetch_window_semantics_and_ids(tmp_path):
    path = make_vcf(tmp_path)
    variants = VcfReader(path).fetch("chr1", 6, 40)
    # the deletion at 5 reaches into the window but starts before it: left out, like bcftools
    assert variants.pos.tolist() == [12]
    assert variants.ids.tolist() == ["chr1_12_A_ATT"]
    assert variants.genotypes.dtype == np.int8 and variants.genotypes.shape == (1, 2, 2)
    empty = VcfReader(path).fetch("chr1", 30, 40)
    assert empty.genotypes.shape == (0, 2, 2) and empty.pos.dtype == np.int64


def test_contig_7_matches_chr7_both_ways(tmp_path):
    records = [("7", 3, "G", "T", ["0|1", "1|1"])]
    vcf = make_vcf(tmp_path, records, contig="7")
    fasta = make_fasta(tmp_path, name="chr7")
    reader, reference = VcfReader(vcf), Reference(fasta)
    assert reader.resolve("chr7") == "7" and reference.resolve("7") == "chr7"
    out = tmp_path / "h.fa"
    for region in ("chr7:1-10", "7:1-10"):
        haplotypes_fasta(vcf, fasta, region, samples=["B"], out=out, allow_unphased=False)
        assert out.read_text() == ">B_1\nACTTACGTTG\n>B_2\nACTTACGTTG\n"


def test_resolve_rules():
    assert resolve_contig("chrM", ["MT", "1"]) == "MT"
    assert resolve_contig("X", ["chrX"]) == "chrX"
    assert resolve_contig("Chr7", ["7", "chr7"]) is None  # ambiguous: never guess
    assert resolve_contig("8", ["chr7"]) is None


def test_contig_that_matches_nothing(tmp_path):
    vcf, fasta = make_vcf(tmp_path), make_fasta(tmp_path)
    assert VcfReader(vcf).resolve("chr2") is None and Reference(fasta).resolve("chr2") is None
    with pytest.raises(InputError) as e:
        VcfReader(vcf).fetch("chr2", 1, 10)
    expect(e, vcf, "chr2")
    with pytest.raises(InputError) as e:
        Reference(fasta).fetch("chr2", 1, 10)
    expect(e, fasta, "chr2", "chr1")


# --- FASTA ---------------------------------------------------------------------------------------


def test_fasta_index_is_created_and_fetch_pads_with_n(tmp_path):
    fasta = make_fasta(tmp_path, seq=REF[:20] + REF[20:].lower())
    assert not Path(str(fasta) + ".fai").exists()
    reference = Reference(fasta)
    assert Path(str(fasta) + ".fai").exists()
    assert reference.contigs == {"chr1": 40}
    assert reference.fetch("chr1", 1, 40) == REF.encode()  # upper case
    assert reference.fetch("chr1", -2, 2) == b"NNNAC"
    assert reference.fetch("chr1", 38, 45) == b"GCANNNNN"
    assert reference.fetch("chr1", 50, 52) == b"NNN"
    assert len(reference.fetch("chr1", -100, 200)) == 301


def test_bad_fasta_is_one_error(tmp_path):
    fasta = tmp_path / "bad.fa"
    fasta.write_text(">chr1\nACGTACGT\nACG\nACGTACGT\n")  # a short line in the middle
    with pytest.raises(InputError) as e:
        Reference(fasta)
    expect(e, fasta, "samtools faidx")
    gz = tmp_path / "ref.fa.gz"
    gz.write_bytes(gzip.compress(b">chr1\nACGT\n"))
    with pytest.raises(InputError) as e:
        Reference(gz)
    expect(e, gz, "gzip")


def test_cli_error_is_one_paragraph_and_leaves_no_output(tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    vcf = make_vcf(tmp_path, GOOD + [("chr1", 20, "C", "G", ["0|0", "0/1"])])
    fasta, out = make_fasta(tmp_path), tmp_path / "h.fa"
    args = ["haplotypes", "--vcf", str(vcf), "--fasta", str(fasta), "--region", "chr1:1-40", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unphased" in result.output and not out.exists()
    result = CliRunner().invoke(app, args + ["--allow-unphased"])
    assert result.exit_code == 0 and out.read_text().startswith(">A_1\n")
