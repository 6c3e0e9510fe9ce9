"""Bad input never crashes: every reader either accepts a file or raises the project's own error.

Two kinds of test:

* property-based (hypothesis): valid small files are mutated line by line (delete, duplicate,
  swap fields, replace a field with garbage, truncate, gzip-and-truncate) and fed to the
  readers, which must return or raise :class:`HapexprError` - nothing else, and never hang;
* end to end: ``hapexpr prepare`` and ``hapexpr predict`` as subprocesses on broken versions of the
  simulated cohort's files, which must exit 2 with one paragraph naming the file and the record,
  print no traceback, and leave nothing that :meth:`Study.open` would accept.

Cases already covered by test_io_tables.py, test_io_vcf_fasta.py and test_prepare.py are not
repeated here; the CLI cases below are the ones those files only test in-process or not at all.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapexpr.errors import HapexprError, StudyError
from hapexpr.io.expression import read_covariates, read_expression
from hapexpr.io.genes import read_genes
from hapexpr.study import Study

pysam = pytest.importorskip("pysam")

# --- valid seed files ----------------------------------------------------------------------------

SAMPLES = ["S1", "S2", "S3", "S4"]
EXPRESSION = (
    "#chr\tstart\tend\tgene_id\t" + "\t".join(SAMPLES) + "\n"
    "chr1\t99\t100\tG1\t1.5\t2\t-0.5\t0.25\n"
    "chr1\t199\t200\tG2\t0\t1\t2\t3\n"
    "chr2\t49\t50\tG3\t0.1\t-1e-3\t7\t1\n"
)
COVARIATES = "id\t" + "\t".join(SAMPLES) + "\nsex\t0\t1\t1\t0\nPC1\t0.1\t-0.2\t0.3\t0.05\nPC2\t1\t2\t3\t5\n"
GTF = (
    "##description: a tiny GENCODE-like annotation\n"
    'chr1\tsim\tgene\t1000\t5000\t.\t+\t.\tgene_id "G1"; gene_name "A1"; gene_type "protein_coding";\n'
    'chr1\tsim\ttranscript\t1000\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "A1";\n'
    'chr1\tsim\texon\t1000\t1200\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; exon_number 1;\n'
    'chr2\tsim\tgene\t2000\t9000\t.\t-\t.\tgene_id "G2"; gene_name "B2";\n'
    'chr2\tsim\ttranscript\t2500\t9000\t.\t-\t.\tgene_id "G2"; transcript_id "T2";\n'
)
TSS_BED = "chr1\t99\t100\tG1\t0\t+\nchr1\t500\t800\tG2\t0\t-\nchr2\t10\t11\tG3\t0\t+\n"
REF_SEQ = "ACGTACGTTGCAAGCTTAGCCGATCGATCGGATCCATGCAACGTTGCAAGCTTAGCCGA"  # 60 bp
FASTA = f">chr1 test contig\n{REF_SEQ[:30]}\n{REF_SEQ[30:]}\n>chr2\n{REF_SEQ[::-1][:30]}\n{REF_SEQ[::-1][30:]}\n"
VCF_RECORDS = [(3, "G", "T"), (5, "ACG", "A"), (12, "A", "ATT"), (20, "C", "G"), (33, "T", "C"), (41, "A", "G")]
VCF = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=chr1,length=60>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t"
    + "\t".join(SAMPLES)
    + "\n"
    + "".join(
        f"chr1\t{p}\t.\t{r}\t{a}\t.\tPASS\t.\tGT\t"
        + "\t".join(["0|1", "1|1", "0|0", "1|0"][i % 4 :] + ["0|1", "1|1", "0|0", "1|0"][: i % 4])
        + "\n"
        for i, (p, r, a) in enumerate(VCF_RECORDS)
    )
)

# --- mutations -----------------------------------------------------------------------------------

GARBAGE = st.one_of(
    st.sampled_from(
        [
            "",
            "NA",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e999",
            ".",
            "-",
            "abc",
            "0x10",
            "  ",
            '"',
            "'",
            "#",
            "chr1",
            "G1",
            "S1",
            "0|1",
            "./.",
            "1/0",
            "2|1",
            "+",
            "-1",
            "9999999999999999999999",
            "A,C",
            "<DEL>",
            "*",
            "ID=x",
            'gene_id "G1";',
            "\t",
            "\t\t",
            "\x00",
            "é",
            "\r",
        ]
    ),
    st.text(alphabet='ACGTN0123456789.-+eE|/;="#\t ', min_size=0, max_size=8),
)


@st.composite
def mutated(draw, text: str) -> str:
    """``text`` after one to three line-level mutations."""
    lines = text.splitlines(keepends=False)
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "garbage", "drop_field", "add_field", "move"]))
        fields = lines[i].split("\t")
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == "move":
            line = lines.pop(i)
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "swap" and len(fields) > 1:
            a, b = draw(st.integers(0, len(fields) - 1)), draw(st.integers(0, len(fields) - 1))
            fields[a], fields[b] = fields[b], fields[a]
            lines[i] = "\t".join(fields)
        elif op == "garbage":
            fields[draw(st.integers(0, len(fields) - 1))] = draw(GARBAGE)
            lines[i] = "\t".join(fields)
        elif op == "drop_field":
            del fields[draw(st.integers(0, len(fields) - 1))]
            lines[i] = "\t".join(fields)
        elif op == "add_field":
            fields.insert(draw(st.integers(0, len(fields))), draw(GARBAGE))
            lines[i] = "\t".join(fields)
    out = "\n".join(lines) + ("\n" if lines and draw(st.booleans()) else "")
    if draw(st.integers(0, 5)) == 0:  # truncate mid-line
        out = out[: draw(st.integers(0, len(out)))]
    return out


@st.composite
def encoded(draw, text: str) -> tuple[bytes, bool]:
    """(bytes, gzipped): a mutated file, sometimes gzipped, sometimes with its gzip stream cut
    short or a byte flipped."""
    data = draw(mutated(text)).encode("utf-8", "surrogatepass")
    if not draw(st.booleans()):
        return data, False
    gz = bytearray(gzip.compress(data, mtime=0))
    damage = draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate":
        gz = gz[: draw(st.integers(2, max(2, len(gz) - 1)))]
    elif damage == "flip":
        i = draw(st.integers(10, len(gz) - 1))
        gz[i] ^= draw(st.integers(1, 255))
    return bytes(gz), True


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (rather than hang the suite) if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise Hang(f"reader ran for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def accepts_or_hapexpr_error(read, path: Path) -> None:
    """The property: ``read(path)`` returns, or raises HapexprError naming ``path``."""
    try:
        with time_limit(20):
            read(path)
    except HapexprError as exc:
        assert exc.path is not None and Path(exc.path).name == path.name, f"error does not name the file: {exc}"
        assert "\n" not in str(exc).strip(), f"error is not one paragraph: {exc!r}"


FUZZ = settings(
    max_examples=int(os.environ.get("HAPEXPR_FUZZ_EXAMPLES", "40")),
    deadline=None,  # timing is guarded by time_limit; a loaded CI machine must not make this flaky
    database=None,
    derandomize=os.environ.get("HAPEXPR_FUZZ_RANDOM") is None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=encoded(EXPRESSION), suffix=st.sampled_from([".bed", ".bed.gz", ".tsv"]))
def test_expression_reader_accepts_or_raises_own_error(tmp_path_factory, data, suffix):
    path = _workdir(tmp_path_factory) / f"expression{suffix}"
    path.write_bytes(data[0])
    accepts_or_hapexpr_error(read_expression, path)


@FUZZ
@given(data=encoded(COVARIATES))
def test_covariates_reader_accepts_or_raises_own_error(tmp_path_factory, data):
    path = _workdir(tmp_path_factory) / "covariates.tsv"
    path.write_bytes(data[0])
    accepts_or_hapexpr_error(read_covariates, path)


@FUZZ
@given(data=encoded(GTF))
def test_gtf_reader_accepts_or_raises_own_error(tmp_path_factory, data):
    path = _workdir(tmp_path_factory) / ("genes.gtf.gz" if data[1] else "genes.gtf")
    path.write_bytes(data[0])
    accepts_or_hapexpr_error(read_genes, path)


@FUZZ
@given(data=encoded(TSS_BED))
def test_tss_bed_reader_accepts_or_raises_own_error(tmp_path_factory, data):
    path = _workdir(tmp_path_factory) / ("tss.bed.gz" if data[1] else "tss.bed")
    path.write_bytes(data[0])
    accepts_or_hapexpr_error(read_genes, path)


def _read_fasta(path: Path) -> None:
    from hapexpr.io.fasta import Reference

    with Reference(path) as ref:
        for name, length in ref.contigs.items():
            ref.fetch(name, -5, length + 5)


@FUZZ
@given(text=mutated(FASTA))
def test_fasta_reader_accepts_or_raises_own_error(tmp_path_factory, text):
    path = _workdir(tmp_path_factory) / "reference.fa"
    path.write_text(text)
    accepts_or_hapexpr_error(_read_fasta, path)


@FUZZ
@given(text=mutated(VCF), gz_damage=st.sampled_from(["none", "none", "none", "truncate"]))
def test_vcf_reader_accepts_or_raises_own_error(tmp_path_factory, text, gz_damage):
    """Mutated text VCF, bgzipped and indexed with pysam; where tabix cannot index the mutated
    file, the reader is handed the unindexed file (the 'unindexed' path)."""
    from hapexpr.io.fasta import Reference
    from hapexpr.io.vcf import VcfReader

    work = _workdir(tmp_path_factory)
    plain, path, fasta = work / "v.vcf", work / "v.vcf.gz", work / "ref.fa"
    plain.write_text(text)
    fasta.write_text(FASTA)
    pysam.tabix_compress(str(plain), str(path), force=True)
    with contextlib.suppress(Exception), _quiet_stderr():
        pysam.tabix_index(str(path), preset="vcf", force=True)
    if gz_damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])

    def read(p):
        with Reference(fasta) as reference:
            reader = VcfReader(p)
            for contig in ["chr1", "1", "chr2"]:
                if reader.resolve(contig) is not None:
                    reader.fetch(contig, 1, 60, reference=reference)

    with _quiet_stderr():
        accepts_or_hapexpr_error(read, path)


@contextlib.contextmanager
def _quiet_stderr():
    """htslib prints its own warnings on fd 2; keep the test log readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def test_seed_files_are_valid(tmp_path):
    """The fuzzers start from files the readers accept (else they would test nothing)."""
    from hapexpr.io.fasta import Reference
    from hapexpr.io.vcf import VcfReader

    for name, text, read, n in [
        ("e.bed", EXPRESSION, read_expression, 3),
        ("c.tsv", COVARIATES, read_covariates, 3),
        ("g.gtf", GTF, read_genes, 2),
        ("t.bed", TSS_BED, read_genes, 3),
    ]:
        (tmp_path / name).write_text(text)
        assert len(read(tmp_path / name)) == n
    (tmp_path / "r.fa").write_text(FASTA)
    (tmp_path / "v.vcf").write_text(VCF)
    pysam.tabix_compress(str(tmp_path / "v.vcf"), str(tmp_path / "v.vcf.gz"))
    pysam.tabix_index(str(tmp_path / "v.vcf.gz"), preset="vcf")
    variants = VcfReader(tmp_path / "v.vcf.gz").fetch("chr1", 1, 60, reference=Reference(tmp_path / "r.fa"))
    assert len(variants) == len(VCF_RECORDS)


def test_indexed_bcf_reads_like_the_vcf(tiny_cohort, tmp_path):
    """The BCF of the same records gives the same variants (the BCF cases below are refusals)."""
    from hapexpr.io.vcf import VcfReader

    bcf = tmp_path / "g.bcf"
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(tiny_cohort / "genotypes.vcf.gz")], check=True)
    subprocess.run(["bcftools", "index", str(bcf)], check=True)
    a = VcfReader(tiny_cohort / "genotypes.vcf.gz").fetch("chr1", 1, 30_000)
    b = VcfReader(bcf).fetch("chr1", 1, 30_000)
    assert len(a) > 0 and list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.genotypes, b.genotypes)


# --- regressions: defects the fuzzers found ---------------------------------------------------


def test_fasta_record_with_only_blank_lines_is_an_input_error(tmp_path):
    from hapexpr.errors import InputError
    from hapexpr.io.fasta import Reference

    path = tmp_path / "r.fa"
    path.write_text(">chr1 test contig\n\n\n>chr2\nACGT\nAC\n")
    with pytest.raises(InputError):
        Reference(path)


def test_fasta_non_ascii_sequence_is_an_input_error(tmp_path):
    from hapexpr.errors import InputError
    from hapexpr.io.fasta import Reference

    path = tmp_path / "r.fa"
    path.write_text(">chr1\nACGTÉCGT\n")
    with pytest.raises(InputError):
        with Reference(path) as ref:
            ref.fetch("chr1", 1, 8)


# --- end to end: `hapexpr prepare` on broken cohort files ----------------------------------------


def _vcf_lines(cohort: Path) -> list[str]:
    with gzip.open(cohort / "genotypes.vcf.gz", "rt") as fh:
        return fh.read().splitlines(keepends=True)


def _write_vcf(lines: list[str], path: Path, *, index: bool = True) -> Path:
    plain = path.with_suffix("")
    plain.write_text("".join(lines))
    pysam.tabix_compress(str(plain), str(path), force=True)
    if index:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def _snv_near_tss(cohort: Path, lines: list[str]) -> int:
    """Index in ``lines`` of the SNV record closest to a gene's TSS (so prepare reads it)."""
    tss = []
    for line in (cohort / "genes.gtf").read_text().splitlines():
        f = line.split("\t")
        if len(f) == 9 and f[2] == "gene":
            tss.append((f[0], int(f[3]) if f[6] == "+" else int(f[4])))
    best = None
    for i, line in enumerate(lines):
        if line.startswith("#"):
            continue
        f = line.split("\t")
        if len(f[3]) == len(f[4]) == 1:
            d = min(abs(int(f[1]) - t) for c, t in tss if c == f[0])
            if best is None or d < best[0]:
                best = (d, i)
    return best[1]


def _edit_record(lines: list[str], i: int, edit) -> list[str]:
    f = lines[i].rstrip("\n").split("\t")
    edit(f)
    return lines[:i] + ["\t".join(f) + "\n"] + lines[i + 1 :]


def _record_name(line: str) -> str:
    f = line.split("\t")
    return f"{f[0]}:{f[1]}"


def _build_cases(cohort: Path, work: Path) -> dict[str, tuple[dict, Path, list[str]]]:
    """name -> (prepare arguments to replace, file the message must name, other needles)."""
    cases: dict[str, tuple[dict, Path, list[str]]] = {}
    expr_gz = (cohort / "expression.bed.gz").read_bytes()
    expr_text = gzip.decompress(expr_gz).decode()
    expr_lines = expr_text.splitlines(keepends=True)
    cov_lines = (cohort / "covariates.tsv").read_text().splitlines(keepends=True)
    gtf_text = (cohort / "genes.gtf").read_text()

    def put(name: str, data: str | bytes) -> Path:
        path = work / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    # expression
    p = put("truncated.bed.gz", expr_gz[: len(expr_gz) // 2])
    cases["expression truncated gzip"] = ({"expression": p}, p, ["truncated or corrupt"])
    corrupt = bytearray(expr_gz)
    for i in range(len(corrupt) // 3, len(corrupt) // 3 + 16):
        corrupt[i] ^= 0x5A
    p = put("corrupt.bed.gz", bytes(corrupt))
    cases["expression corrupt gzip"] = ({"expression": p}, p, ["truncated or corrupt"])
    short = expr_lines[2].rstrip("\n").rsplit("\t", 1)[0] + "\n"
    p = put("short.bed", "".join(expr_lines[:2] + [short] + expr_lines[3:]))
    cases["expression line with a missing field"] = ({"expression": p}, p, ["line 3", "tab-separated fields"])
    p = put("dup.bed", "".join(expr_lines + [expr_lines[1]]))
    gene1 = expr_lines[1].split("\t")[3]
    cases["expression duplicate gene"] = ({"expression": p}, p, [f"gene id {gene1}", "more than once"])
    f = expr_lines[2].split("\t")
    f[7] = "high"
    p = put("text.bed", "".join(expr_lines[:2] + ["\t".join(f)] + expr_lines[3:]))
    cases["expression non-numeric"] = ({"expression": p}, p, [f"gene {f[3]}", "'high'"])
    p = put("empty.bed", "")
    cases["expression empty"] = ({"expression": p}, p, ["empty"])

    # covariates
    p = put("cov_long.tsv", "".join(cov_lines[:2] + [cov_lines[2].rstrip("\n") + "\t0.5\n"] + cov_lines[3:]))
    cases["covariates line with an extra field"] = ({"covariates": p}, p, ["line 3"])
    header = cov_lines[0].split("\t")
    header[2] = header[1]
    p = put("cov_dupsample.tsv", "\t".join(header) + "".join(cov_lines[1:]))
    cases["covariates duplicate sample"] = ({"covariates": p}, p, [f"sample id {header[1]}"])
    f = cov_lines[2].split("\t")
    f[5] = "NaN"
    p = put("cov_nan.tsv", "".join(cov_lines[:2] + ["\t".join(f)] + cov_lines[3:]))
    cases["covariates NaN"] = ({"covariates": p}, p, [f"covariate {f[0]}", "missing (NaN)"])
    renamed = "\t".join([header[0]] + [s.strip() + "_X" for s in cov_lines[0].split("\t")[1:]]) + "\n"
    p = put("cov_other.tsv", renamed + "".join(cov_lines[1:]))
    cases["covariates share no sample"] = (
        {"covariates": p},
        p,
        ["no sample", "covariates"],
    )  # blamed on the covariates
    p = put("cov_empty.tsv", "")
    cases["covariates empty"] = ({"covariates": p}, p, ["empty"])

    # annotations
    gtf_gz = gzip.compress(gtf_text.encode(), mtime=0)
    p = put("truncated.gtf.gz", gtf_gz[: len(gtf_gz) - 30])
    cases["GTF truncated gzip"] = ({"genes": p}, p, ["truncated or corrupt"])
    gtf_lines = gtf_text.splitlines(keepends=True)
    k = next(i for i, line in enumerate(gtf_lines) if "\tgene\t" in line)
    p = put(
        "cols.gtf",
        "".join(
            gtf_lines[:k]
            + [gtf_lines[k].replace("\t.\t+\t", "\t+\t", 1).replace("\t.\t-\t", "\t-\t", 1)]
            + gtf_lines[k + 1 :]
        ),
    )
    cases["GTF line with 8 fields"] = ({"genes": p}, p, [f"line {k + 1}", "9 tab-separated"])
    p = put("tss.bed", "chr1\t298\t299\tG1\t0\t+\nchr1\tten\t11\tG2\t0\t+\n")
    cases["TSS BED non-integer start"] = ({"genes": p}, p, ["data line 2", "not integers"])
    p = put("tss_dup.bed", "chr1\t298\t299\tG1\t0\t+\nchr2\t10\t11\tG1\t0\t-\n")
    cases["TSS BED duplicate gene"] = ({"genes": p}, p, ["'G1' appears more than once"])

    # genotypes
    vcf_lines = _vcf_lines(cohort)
    i = _snv_near_tss(cohort, vcf_lines)
    rec = _record_name(vcf_lines[i])
    p = _write_vcf(vcf_lines, work / "noindex.vcf.gz", index=False)
    cases["VCF without index"] = ({"vcf": p}, p, ["no index", "tabix"])
    swapped = [line for line in vcf_lines if line.startswith("#")] + sorted(
        (line for line in vcf_lines if not line.startswith("#")), key=lambda line: -int(line.split("\t")[1])
    )
    p = _write_vcf(swapped, work / "unsorted.vcf.gz", index=False)
    with contextlib.suppress(Exception), _quiet_stderr():
        pysam.tabix_index(str(p), preset="vcf", force=True)  # tabix refuses unsorted input
    cases["VCF unsorted (cannot be indexed)"] = ({"vcf": p}, p, ["no index"])
    p = work / "stale.vcf.gz"
    shutil.copy(cohort / "genotypes.vcf.gz.tbi", str(p) + ".tbi")
    _write_vcf(swapped, p, index=False)
    os.utime(str(p) + ".tbi", (p.stat().st_mtime - 100,) * 2)  # the index predates the data
    cases["VCF unsorted with a stale index"] = ({"vcf": p}, p, [])

    def ref_mismatch(f):
        f[3] = {"A": "C", "C": "G", "G": "T", "T": "A"}[f[3]]
        f[4] = "A" if f[3] != "A" else "C"

    p = _write_vcf(_edit_record(vcf_lines, i, ref_mismatch), work / "refmis.vcf.gz")
    cases["VCF REF disagrees with FASTA"] = ({"vcf": p}, p, [rec, "REF does not match", "--check-ref"])
    p = _write_vcf(
        _edit_record(
            vcf_lines,
            i,
            lambda f: f.__setitem__(slice(9, None), [g.replace("|", "/").replace("0/0", "0/1") for g in f[9:]]),
        ),
        work / "unphased.vcf.gz",
    )
    cases["VCF unphased"] = ({"vcf": p}, p, [rec, "unphased", "--allow-unphased"])
    p = _write_vcf(_edit_record(vcf_lines, i, lambda f: f.__setitem__(12, ".|.")), work / "missing.vcf.gz")
    cases["VCF missing genotype"] = ({"vcf": p}, p, [rec, "missing genotypes"])

    def multi(f):
        others = [b for b in "ACGT" if b != f[3]]
        f[4] = f"{others[0]},{others[1]}"
        f[7] = "."

    p = _write_vcf(_edit_record(vcf_lines, i, multi), work / "multi.vcf.gz")
    cases["VCF multi-allelic"] = ({"vcf": p}, p, [rec, "multi-allelic", "bcftools norm"])
    p = _write_vcf([line.replace("chr", "scaffold") for line in vcf_lines], work / "contigs.vcf.gz")
    cases["VCF contigs match nothing"] = ({"vcf": p}, cohort / "genes.gtf", ["no gene lies on a contig"])
    head = [line for line in vcf_lines if line.startswith("##")]
    cols = vcf_lines[len(head)].rstrip("\n").split("\t")
    cols[10] = cols[9]
    dup = head + ["\t".join(cols) + "\n"] + vcf_lines[len(head) + 1 :]
    p = _write_vcf(dup, work / "dupsample.vcf.gz", index=False)
    with contextlib.suppress(Exception), _quiet_stderr():
        pysam.tabix_index(str(p), preset="vcf", force=True)
    cases["VCF duplicate sample"] = ({"vcf": p}, p, [])
    bcf = work / "genotypes.bcf"
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(cohort / "genotypes.vcf.gz")], check=True)
    cases["BCF without index"] = ({"vcf": bcf}, bcf, ["no index", "bcftools index"])
    p = put("truncated.bcf", bcf.read_bytes()[: bcf.stat().st_size * 2 // 3])
    shutil.copy(bcf, work / "indexed.bcf")
    subprocess.run(["bcftools", "index", "-f", str(work / "indexed.bcf")], check=True)
    shutil.copy(str(work / "indexed.bcf") + ".csi", str(p) + ".csi")
    cases["BCF truncated"] = ({"vcf": p}, p, ["truncated"])
    p = put("empty.vcf.gz", b"")
    cases["VCF empty"] = ({"vcf": p}, p, ["not bgzip"])
    p = _write_vcf(head + [vcf_lines[len(head)]], work / "norecords.vcf.gz")
    cases["VCF header only"] = ({"vcf": p}, p, [])  # accepted (no variation) or refused, never a crash

    # reference
    p = put("empty.fa", "")
    cases["FASTA empty"] = ({"fasta": p}, p, ["samtools faidx"])
    p = work / "renamed.fa"
    p.write_text((cohort / "reference.fa").read_text().replace(">chr", ">contig"))
    cases["FASTA contigs match nothing"] = ({"fasta": p}, cohort / "genes.gtf", ["no gene lies on a contig"])
    return cases


def _prepare_cmd(cohort: Path, out: Path, **replace) -> list[str]:
    args = {
        "vcf": cohort / "genotypes.vcf.gz",
        "fasta": cohort / "reference.fa",
        "genes": cohort / "genes.gtf",
        "expression": cohort / "expression.bed.gz",
        "covariates": cohort / "covariates.tsv",
        **replace,
    }
    cmd = [sys.executable, "-m", "hapexpr.cli", "prepare", "--window", "1000", "--out", str(out)]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    return cmd


@pytest.fixture(scope="module")
def cli_results(tiny_cohort, tmp_path_factory):
    """Run every broken-input case as its own `hapexpr prepare` process, a few at a time."""
    work = tmp_path_factory.mktemp("broken")
    cohort = work / "cohort"  # a private copy: a case must not be able to damage the shared one
    shutil.copytree(tiny_cohort, cohort)
    cases = _build_cases(cohort, work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

    def run(item):
        name, (replace, _, _) = item
        out = work / ("out_" + re.sub(r"\W", "_", name))
        proc = subprocess.run(
            _prepare_cmd(cohort, out, **replace), capture_output=True, text=True, env=env, timeout=120
        )
        return name, (proc, out)

    def run_in_process(item):
        from typer.testing import CliRunner

        from hapexpr.cli import app

        name, (replace, _, _) = item
        out = work / ("out_" + re.sub(r"\W", "_", name))
        result = CliRunner().invoke(app, _prepare_cmd(cohort, out, **replace)[3:], env={"COLUMNS": "200"})
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        return name, (subprocess.CompletedProcess([], result.exit_code, result.stdout, result.stderr), out)

    # The pure-Python table readers run in this process (fast); anything that goes through
    # htslib or pyfaidx runs in its own process, so that a crash in C would show as one.
    local = {k: v for k, v in cases.items() if k.split()[0] in IN_PROCESS}
    results = dict(map(run_in_process, local.items()))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results.update(pool.map(run, [kv for kv in cases.items() if kv[0] not in local]))
    return cases, results


IN_PROCESS = {"expression", "covariates", "GTF", "TSS"}


CASE_NAMES = [
    "expression truncated gzip",
    "expression corrupt gzip",
    "expression line with a missing field",
    "expression duplicate gene",
    "expression non-numeric",
    "expression empty",
    "covariates line with an extra field",
    "covariates duplicate sample",
    "covariates NaN",
    "covariates share no sample",
    "covariates empty",
    "GTF truncated gzip",
    "GTF line with 8 fields",
    "TSS BED non-integer start",
    "TSS BED duplicate gene",
    "VCF without index",
    "VCF unsorted (cannot be indexed)",
    "VCF REF disagrees with FASTA",
    "VCF unphased",
    "VCF missing genotype",
    "VCF multi-allelic",
    "VCF contigs match nothing",
    "VCF duplicate sample",
    "VCF empty",
    "VCF header only",
    "BCF without index",
    "BCF truncated",
    "FASTA empty",
    "FASTA contigs match nothing",
]


def assert_one_paragraph_error(proc: subprocess.CompletedProcess, named: Path, needles: list[str]) -> None:
    """Exit 2, no traceback, one 'error:' paragraph naming ``named`` and each needle."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err
    assert len(re.findall(r"^error:", err, re.M)) == 1, err
    message = err[re.search(r"^error:", err, re.M).start() :].strip()
    assert "\n" not in message, f"not one paragraph:\n{message}"
    assert str(named) in message, f"{named} not named in: {message}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_prepare_cli_refuses_broken_input(cli_results, name):
    cases, results = cli_results
    assert set(cases) == set(CASE_NAMES) | {STALE}
    _, named, needles = cases[name]
    proc, out = results[name]
    if name == "VCF header only" and proc.returncode == 0:
        assert Study.open(out).genes["n_variants"].sum() == 0
        return
    assert_one_paragraph_error(proc, named, needles)
    if out.exists():  # nothing left behind that looks like a study
        with pytest.raises(StudyError):
            Study.open(out)


STALE = "VCF unsorted with a stale index"


def test_prepare_cli_refuses_vcf_with_stale_index(cli_results):
    cases, results = cli_results
    _, named, needles = cases[STALE]
    assert_one_paragraph_error(results[STALE][0], named, needles)


# --- end to end: `hapexpr predict` on a broken new-sample VCF ------------------------------------

PREDICT_CASES = [
    "VCF without index",
    "VCF truncated",
    "VCF multi-allelic",
    "VCF missing genotype",
    "VCF contigs match nothing",
    "VCF empty",
    "VCF duplicate sample",
    "VCF header only",
]


@pytest.fixture(scope="module")
def predict_results(cli_results, tiny_study, tmp_path_factory):
    """The broken VCFs of the prepare cases given to `hapexpr predict` on a study with a final
    elastic net (fit once here, so each process only reads)."""
    from hapexpr.final import fit_final

    cases, _ = cli_results
    work = tmp_path_factory.mktemp("predict")
    study = work / "study"
    shutil.copytree(tiny_study, study)
    fit_final(study, "elastic-net", progress=False)
    vcfs = {name: cases[name][0]["vcf"] for name in PREDICT_CASES if name in cases}
    good = cases["VCF without index"][0]["vcf"].parent / "cohort" / "genotypes.vcf.gz"
    data = good.read_bytes()
    truncated = work / "truncated.vcf.gz"
    truncated.write_bytes(data[: len(data) // 2])
    shutil.copy(str(good) + ".tbi", str(truncated) + ".tbi")
    vcfs["VCF truncated"] = truncated
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

    def run(name):
        out = work / ("pred_" + re.sub(r"\W", "_", name) + ".tsv")
        cmd = [
            sys.executable,
            "-m",
            "hapexpr.cli",
            "predict",
            str(study),
            "--method",
            "elastic-net",
            "--vcf",
            str(vcfs[name]),
            "--out",
            str(out),
        ]
        return name, (subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120), out, vcfs[name])

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, PREDICT_CASES))


@pytest.mark.parametrize("name", PREDICT_CASES)
def test_predict_cli_refuses_broken_new_vcf(predict_results, cli_results, name):
    proc, out, vcf = predict_results[name]
    if name == "VCF header only" and proc.returncode == 0:
        return  # no variants: every person gets the model's intercept; accepting it is fine
    needles = {"VCF truncated": ["truncated"], "VCF contigs match nothing": ["no contig"]}.get(
        name, cli_results[0][name][2] if name in cli_results[0] else []
    )
    needles = [n for n in needles if n != "no gene lies on a contig"]
    assert_one_paragraph_error(proc, vcf, needles)
    assert not out.exists(), "a failed predict left its output behind"
