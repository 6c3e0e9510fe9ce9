"""`hapexpr haplotypes` against the `bcftools consensus -H 1pIu/2pIu` oracle, plus its helpers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hapexpr.errors import InputError
from hapexpr.haplotypes import build_haplotypes, haplotypes_fasta, parse_region, unique_haplotypes
from hapexpr.io.fasta import Reference
from hapexpr.io.vcf import VcfReader

pysam = pytest.importorskip("pysam")
needs_oracle = pytest.mark.skipif(
    shutil.which("bcftools") is None or shutil.which("samtools") is None,
    reason="bcftools and samtools are the oracle (apt-get install bcftools samtools)",
)
HEADER = '##fileformat=VCFv4.2\n##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'


def write_fasta(path: Path, contigs: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i : i + width] + "\n")
    return path


def write_vcf(path: Path, contigs: dict[str, int], samples: list[str], records: list[tuple]) -> Path:
    """records: (chrom, pos, ref, alt, [GT strings]) -> bgzipped + tabix-indexed VCF at ``path``."""
    text = HEADER + "".join(f"##contig=<ID={c},length={n}>\n" for c, n in contigs.items())
    text += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n"
    for chrom, pos, ref, alt, gts in records:
        text += f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gts) + "\n"
    plain = path.with_suffix("")  # x.vcf.gz -> x.vcf
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def oracle(fasta: Path, vcf: Path, region: str, sample: str, hap: int) -> bytes:
    """`samtools faidx FASTA REGION | bcftools consensus -H {hap}pIu -s SAMPLE VCF`, sequence only."""
    faidx = subprocess.run(["samtools", "faidx", str(fasta), region], check=True, capture_output=True)
    cons = subprocess.run(
        ["bcftools", "consensus", "-H", f"{hap}pIu", "-s", sample, str(vcf)],
        input=faidx.stdout,
        check=True,
        capture_output=True,
    )
    lines = cons.stdout.split(b"\n")
    assert lines[0].startswith(b">")
    return b"".join(lines[1:])


def read_fasta_records(data: bytes) -> dict[str, bytes]:
    records, name = {}, None
    for line in data.split(b"\n"):
        if line.startswith(b">"):
            name = line[1:].decode()
            records[name] = b""
        elif name is not None:
            records[name] += line
    return records


def ours(fasta: Path, vcf: Path, region: str, samples=None) -> dict[str, bytes]:
    """Both haplotypes of every sample from the library, keyed SAMPLE_1 / SAMPLE_2."""
    chrom, start, end = parse_region(region)
    reference = Reference(fasta)
    reader = VcfReader(vcf, samples=samples)
    variants = reader.fetch(chrom, start, end, reference=reference)
    alleles, index = unique_haplotypes(variants.genotypes)
    built = build_haplotypes(
        reference.fetch(chrom, start, end), start, variants.pos, variants.ref, variants.alt, alleles
    )
    return {f"{s}_{h + 1}": built[index[i, h]].sequence for i, s in enumerate(reader.samples) for h in range(2)}


def assert_matches_oracle(fasta: Path, vcf: Path, region: str, samples: list[str]) -> None:
    got = ours(fasta, vcf, region)
    for s in samples:
        for h in (1, 2):
            want = oracle(fasta, vcf, region, s, h)
            assert got[f"{s}_{h}"] == want, f"{region} {s}_{h}:\n ours {got[f'{s}_{h}']!r}\n bcftools {want!r}"


# ---------------------------------------------------------------------------------------------
# Hand-written cases: each record layout bcftools has a rule for.

REF40 = "ACGTACGTTGCAAGCTTAGCCGATCGATCGGATCCATGCA"  # 40 bp, positions 1..40


def _case(tmp_path: Path, records: list[tuple], n_samples: int = 3, ref: str = REF40):
    """records: (pos, ref, alt, [gts]); checks REF against REF40 so the case is valid."""
    for pos, r, _a, _g in records:
        assert ref[pos - 1 : pos - 1 + len(r)].upper() == r.upper(), (pos, r)
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": ref})
    samples = [f"S{i}" for i in range(n_samples)]
    vcf = write_vcf(
        tmp_path / "v.vcf.gz", {"chr1": len(ref)}, samples, [("chr1", p, r, a, g) for p, r, a, g in records]
    )
    return fasta, vcf, samples


HAND_CASES = {
    "snvs": [(3, "G", "T", ["0|1", "1|1", "0|0"]), (10, "G", "A", ["1|0", "0|1", "1|1"])],
    "insertion_deletion": [(5, "A", "ATTT", ["1|0", "0|1", "1|1"]), (12, "AAGC", "A", ["0|1", "1|1", "1|0"])],
    "snv_right_after_deletion": [(5, "ACGT", "A", ["1|1", "1|0", "0|1"]), (9, "T", "C", ["1|0", "1|1", "0|1"])],
    "snv_on_last_deleted_base": [(5, "ACGT", "A", ["1|1", "1|0", "0|1"]), (8, "T", "C", ["1|0", "1|1", "0|1"])],
    "deletion_right_after_snv": [(4, "T", "G", ["1|1", "1|0", "0|1"]), (5, "ACG", "A", ["1|0", "1|1", "1|1"])],
    "deletion_at_snv_position": [(5, "A", "G", ["1|1", "1|0", "0|1"]), (5, "ACG", "A", ["1|0", "1|1", "1|1"])],
    "insertion_at_snv_position": [(5, "A", "G", ["1|1", "1|0", "0|1"]), (5, "A", "ATT", ["1|1", "1|1", "0|1"])],
    "two_insertions_same_position": [(5, "A", "AC", ["1|1", "1|0", "0|1"]), (5, "A", "AGG", ["1|1", "1|1", "0|1"])],
    "record_inside_deletion": [(5, "ACGTTG", "A", ["1|1", "1|0", "0|1"]), (7, "G", "C", ["1|1", "1|1", "1|0"])],
    "insertion_on_deletion_end": [(5, "ACG", "A", ["1|1", "1|0", "0|1"]), (7, "G", "GAAA", ["1|1", "1|1", "1|0"])],
    "deletion_on_deletion_end": [(5, "ACG", "A", ["1|1", "1|0", "0|1"]), (7, "GTT", "G", ["1|1", "1|1", "1|0"])],
    "snv_after_insertion": [(5, "A", "ACC", ["1|1", "1|0", "0|1"]), (6, "C", "T", ["1|1", "1|1", "1|0"])],
    "mnp_and_complex": [
        (5, "ACG", "TTA", ["1|1", "1|0", "0|1"]),
        (14, "GCTT", "CA", ["1|1", "0|1", "1|0"]),
        (20, "C", "GTT", ["1|0", "1|1", "0|1"]),
    ],
    "lowercase_alleles": [
        (5, "a", "g", ["1|1", "1|0", "0|1"]),
        (5, "a", "aTT", ["1|1", "1|1", "0|1"]),
        (12, "aagc", "a", ["0|1", "1|1", "1|0"]),
    ],
    "insertion_at_first_and_last_base": [
        (1, "A", "AGG", ["1|1", "1|0", "0|1"]),
        (40, "A", "ATTT", ["1|0", "1|1", "0|1"]),
    ],
    "deletion_past_region_end": [(37, "TGCA", "T", ["1|1", "1|0", "0|1"])],
    "complex_insertion_past_region_end": [(38, "GC", "GTTT", ["1|1", "1|0", "0|1"])],
    "mixed_case_indel_after_snv": [(5, "A", "G", ["1|1", "1|0", "0|1"]), (5, "AcG", "ACGTT", ["1|1", "1|1", "0|1"])],
}


@needs_oracle
@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_hand_cases_match_bcftools(tmp_path, name):
    fasta, vcf, samples = _case(tmp_path, HAND_CASES[name])
    for region in ("chr1:1-40", "chr1:2-39", "chr1:5-36", "chr1:6-38", "chr1:8-40"):
        assert_matches_oracle(fasta, vcf, region, samples)


@needs_oracle
def test_deletion_starting_before_region_is_ignored(tmp_path):
    fasta, vcf, samples = _case(
        tmp_path, [(3, "GTACGT", "G", ["1|1", "1|0", "0|1"]), (9, "T", "A", ["1|1", "0|1", "1|0"])]
    )
    assert_matches_oracle(fasta, vcf, "chr1:5-30", samples)
    got = ours(fasta, vcf, "chr1:5-30")
    assert got["S0_1"] == REF40[4:8].encode() + b"A" + REF40[9:30].encode()


@needs_oracle
def test_soft_masked_reference_case_is_kept_like_bcftools(tmp_path):
    # build_haplotypes keeps the case it is given; bcftools writes ALT in the case of the base
    ref = REF40[:10] + REF40[10:30].lower() + REF40[30:]
    records = [
        (12, "AAGC", "A", ["0|1", "1|1", "1|0"]),
        (15, "C", "CGG", ["1|1", "1|0", "0|1"]),
        (20, "C", "T", ["1|1", "1|1", "1|0"]),
    ]
    fasta, vcf, samples = _case(tmp_path, records, ref=ref)
    reader = VcfReader(vcf)
    v = reader.fetch("chr1", 1, 40)
    alleles, index = unique_haplotypes(v.genotypes)
    built = build_haplotypes(ref.encode(), 1, v.pos, v.ref, v.alt, alleles)
    for i, s in enumerate(samples):
        for h in (1, 2):
            assert built[index[i, h - 1]].sequence == oracle(fasta, vcf, "chr1:1-40", s, h)


# ---------------------------------------------------------------------------------------------
# Randomised, indel-rich cohorts.


def random_cohort(rng: np.random.Generator, length: int, n_records: int, n_samples: int):
    """A random reference and sorted records dense in indels, overlaps and shared positions."""
    seq = "".join(rng.choice(list("ACGT"), size=length))
    positions = np.sort(rng.integers(1, length - 2, size=n_records))
    # re-use some positions and put some records right after or inside the previous one
    for i in range(1, n_records):
        u = rng.random()
        if u < 0.15:
            positions[i] = positions[i - 1]
        elif u < 0.3:
            positions[i] = positions[i - 1] + int(rng.integers(1, 4))
    positions = np.sort(np.clip(positions, 1, length - 1))
    records = []
    for p in positions.tolist():
        kind = rng.choice(["snv", "del", "ins", "complex"], p=[0.35, 0.3, 0.25, 0.1])
        base = seq[p - 1]
        if kind == "snv":
            ref, alt = base, rng.choice([b for b in "ACGT" if b != base])
        elif kind == "del":
            k = int(rng.integers(1, 9))
            ref = seq[p - 1 : p + k]
            alt = ref[0]
        elif kind == "ins":
            ref = base
            alt = base + "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 9))))
        else:
            k = int(rng.integers(1, 5))
            ref = seq[p - 1 : p - 1 + k]
            alt = "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 5))))
        if alt == ref or len(ref) == 0:
            continue
        if rng.random() < 0.05:
            ref, alt = ref.lower(), alt.lower()
        freq = rng.uniform(0.1, 0.9)
        gts = [f"{int(rng.random() < freq)}|{int(rng.random() < freq)}" for _ in range(n_samples)]
        records.append(("chr1", p, ref, alt, gts))
    return seq, records


@needs_oracle
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_indel_rich_cohorts_match_bcftools(tmp_path, seed):
    rng = np.random.default_rng(seed)
    length, n_samples = 700, 20
    seq, records = random_cohort(rng, length, n_records=90, n_samples=n_samples)
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    samples = [f"ind{i}" for i in range(n_samples)]
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chr1": length}, samples, records)
    starts = [1, int(rng.integers(2, 200)), records[len(records) // 2][1], records[len(records) // 3][1] + 1]
    for start in starts:
        end = min(length, start + int(rng.integers(150, 500)))
        assert_matches_oracle(fasta, vcf, f"chr1:{start}-{end}", samples)


@needs_oracle
def test_cli_output_matches_bcftools(tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    rng = np.random.default_rng(7)
    seq, records = random_cohort(rng, 400, n_records=50, n_samples=6)
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    samples = [f"p{i}" for i in range(6)]
    vcf = write_vcf(tmp_path / "v.vcf.gz", {"chr1": 400}, samples, records)
    out = tmp_path / "haps.fa"
    result = CliRunner().invoke(
        app,
        [
            "haplotypes",
            "--vcf",
            str(vcf),
            "--fasta",
            str(fasta),
            "--region",
            "1:20-380",
            "--samples",
            "p4,p1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    got = read_fasta_records(out.read_bytes())
    assert list(got) == ["p4_1", "p4_2", "p1_1", "p1_2"]
    assert max(len(line) for line in out.read_bytes().split(b"\n")) <= 60
    for name, sequence in got.items():
        sample, hap = name.rsplit("_", 1)
        assert sequence == oracle(fasta, vcf, "chr1:20-380", sample, int(hap))


def test_cli_bad_region_is_one_paragraph(tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    fasta, vcf, _ = _case(tmp_path, HAND_CASES["snvs"])
    for region in ("chr1:30-10", "chr1", "chr1:a-b"):
        result = CliRunner().invoke(app, ["haplotypes", "--vcf", str(vcf), "--fasta", str(fasta), "--region", region])
        assert result.exit_code == 2
        assert "region" in result.output and "Traceback" not in result.output
    with pytest.raises(InputError, match="contig"):
        haplotypes_fasta(vcf, fasta, "chr9:1-10", samples=None, out=tmp_path / "x.fa", allow_unphased=False)
    assert not (tmp_path / "x.fa").exists()


# ---------------------------------------------------------------------------------------------
# offset_of, unique_haplotypes, scale.


def test_offset_of_across_insertions_and_deletions():
    reference = b"AAAACCCCGGGGTTTT"  # positions 101..116
    pos = np.array([103, 106, 110])
    ref = np.array(["A", "CCCG", "G"], dtype=object)
    alt = np.array(["ATTT", "C", "T"], dtype=object)
    (hap,) = build_haplotypes(reference, 101, pos, ref, alt, np.ones((1, 3), bool))
    # 101 A, 102 A, 103 A+TTT, 104 A, 105 C, 106 C, [107-109 deleted], 110 G>T, 111.. GGTTTT
    seq = hap.sequence
    assert seq == b"AAATTTACCTGGTTTT"
    assert hap.applied.all()
    assert hap.offset_of(101) == 0
    assert hap.offset_of(103) == 2  # anchor of the insertion
    assert hap.offset_of(104) == 6  # first base after the 3 inserted T
    assert hap.offset_of(106) == 8  # anchor C of the deletion
    for deleted in (107, 108, 109):
        assert hap.offset_of(deleted) == 9  # first base after the deleted CCG
    assert hap.offset_of(110) == 9 and seq[9] == ord("T")  # the SNV
    assert hap.offset_of(116) == len(seq) - 1
    assert hap.offset_of(117) == len(seq)
    assert hap.offset_of(100) == -1
    offsets = [hap.offset_of(p) for p in range(101, 117)]
    assert offsets == sorted(offsets)


def test_offset_of_reference_haplotype_is_identity():
    (hap,) = build_haplotypes(
        b"ACGTACGT", 11, np.array([13]), np.array(["G"]), np.array(["GA"]), np.zeros((1, 1), bool)
    )
    assert hap.sequence == b"ACGTACGT" and not hap.applied.any()
    assert [hap.offset_of(p) for p in range(11, 19)] == list(range(8))


def test_unique_haplotypes_round_trip():
    rng = np.random.default_rng(0)
    genotypes = (rng.random((30, 50, 2)) < 0.2).astype(np.int8)
    genotypes[:, 3, :] = 0  # an all-REF haplotype exists
    alleles, index = unique_haplotypes(genotypes)
    assert alleles.dtype == bool and index.dtype == np.int32 and index.shape == (50, 2)
    np.testing.assert_array_equal(alleles[index].transpose(2, 0, 1), genotypes.astype(bool))
    assert len(np.unique(alleles, axis=0)) == len(alleles)
    assert not alleles[0].any()  # all-REF first
    again, index2 = unique_haplotypes(genotypes[:, ::-1])
    np.testing.assert_array_equal(again, alleles)  # order does not depend on sample order
    a0, i0 = unique_haplotypes(np.zeros((0, 4, 2), np.int8))
    assert a0.shape == (1, 0) and (i0 == 0).all()


def test_many_samples_and_variants_work(tmp_path):
    rng = np.random.default_rng(3)
    seq, records = random_cohort(rng, 6000, n_records=200, n_samples=300)
    reference = seq.encode()
    pos = np.array([r[1] for r in records])
    ref = np.array([r[2] for r in records], dtype=object)
    alt = np.array([r[3] for r in records], dtype=object)
    genotypes = np.array([[[int(g[0]), int(g[2])] for g in r[4]] for r in records], dtype=np.int8)
    alleles, index = unique_haplotypes(genotypes)
    built = build_haplotypes(reference, 1, pos, ref, alt, alleles)
    assert len(built) == len(alleles) <= 600
    assert all(abs(len(h.sequence) - 6000) < 2000 for h in built)


def test_offset_of_points_at_every_untouched_base():
    # independent of how offsets are computed: a reference base no applied record touched must sit
    # at its offset, and offsets never decrease along the reference
    rng = np.random.default_rng(11)
    seq, records = random_cohort(rng, 800, n_records=120, n_samples=10)
    pos = np.array([r[1] for r in records])
    ref = np.array([r[2] for r in records], dtype=object)
    alt = np.array([r[3] for r in records], dtype=object)
    genotypes = np.array([[[int(g[0]), int(g[2])] for g in r[4]] for r in records], dtype=np.int8)
    alleles, _ = unique_haplotypes(genotypes)
    start = 51
    region = seq[start - 1 : 750].encode()
    for hap in build_haplotypes(region, start, pos, ref, alt, alleles):
        touched = np.zeros(len(region) + 1, bool)
        for k in np.flatnonzero(hap.applied):
            o = pos[k] - start
            touched[o : o + len(ref[k])] = True
        offsets = [hap.offset_of(p) for p in range(start, start + len(region) + 1)]
        assert offsets == sorted(offsets) and offsets[-1] == len(hap.sequence)
        for x in np.flatnonzero(~touched[: len(region)]):
            assert hap.sequence[offsets[x]] == region[x]


def test_fast_path_equals_the_record_by_record_path():
    """build_haplotypes joins reference stretches and ALTs in one go when the carried records
    are disjoint and the reference upper case; it must equal _build_one, the bcftools-rule path
    checked against bcftools above, in sequence, applied records and coordinate mapping."""
    import hapexpr.haplotypes as hp

    rng = np.random.default_rng(7)
    checked_fast = 0
    for _ in range(30):
        length = 400
        reference = rng.choice(list(b"ACGT"), size=length).astype(np.uint8).tobytes()
        pos, ref, alt = [], [], []
        p = 1
        while True:
            p += int(rng.integers(1, 12))  # close together: some records overlap others
            if p > length:
                break
            kind = rng.integers(3)
            if kind == 0:
                r = chr(reference[p - 1])
                a = "ACGT"[(("ACGT".index(r)) + 1) % 4]
            elif kind == 1:
                r = reference[p - 1 : p - 1 + int(rng.integers(2, 8))].decode()
                a = r[0]
            else:
                r = chr(reference[p - 1])
                a = r + "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 6))))
            pos.append(p + 100), ref.append(r), alt.append(a)  # region starts at 101
        alleles = rng.random((40, len(pos))) < 0.35
        fast = hp.build_haplotypes(reference, 101, pos, ref, alt, alleles)
        plan_haps = hp.build_haplotypes(
            reference.lower(), 101, pos, [x.lower() for x in ref], [x.lower() for x in alt], alleles
        )  # lower case: slow path
        for row, h, slow in zip(alleles, fast, plan_haps):
            assert h.sequence.upper() == slow.sequence.upper()
            assert np.array_equal(h.applied, slow.applied)
            assert np.array_equal(h._edits, slow._edits)
            for x in range(95, 101 + length + 5):
                assert h.offset_of(x) == slow.offset_of(x)
            o = np.asarray(pos)[row] - 101
            r = np.asarray([len(x) for x in ref])[row]
            checked_fast += int(np.all(o[1:] > o[:-1] + r[:-1] - 1))
    assert checked_fast > 100, "the fast path was exercised"
