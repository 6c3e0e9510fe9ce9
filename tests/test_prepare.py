"""`hapexpr prepare` on a simulated cohort: windows, strands, contig edges, resume, refusals."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args

from hapexpr.errors import StudyError
from hapexpr.io.fasta import Reference
from hapexpr.prepare import prepare_study
from hapexpr.study import Study
from hapexpr.windows import reverse_complement, window_bounds


def test_study_is_self_describing(tiny_study, tiny_cohort):
    study = Study.open(tiny_study)
    meta = study.meta
    assert meta["format_version"] == 1 and meta["params"]["window"] == 2000 and meta["params"]["folds"] == 5
    assert set(meta["inputs"]) == {"vcf", "fasta", "genes", "expression", "covariates"}
    assert all(len(v["sha256"]) == 64 for v in meta["inputs"].values())
    counts = np.bincount(study.folds)
    assert len(counts) == 5 and counts.max() - counts.min() <= 1
    assert list(study.expression.columns) == study.sample_ids
    assert study.covariates.shape[1] == len(study.sample_ids)
    assert set(study.genes["strand"]) == {"+", "-"}


def _snv_only_window(gene, alleles, reference):
    """Independent oracle for a haplotype carrying only SNVs: the reference window with the
    ALT bases substituted, reverse-complemented on the minus strand."""
    lo, hi = window_bounds(gene.tss, gene.strand, gene.window)
    seq = bytearray(reference.fetch(gene.chrom, lo, hi))
    v = gene.variants
    for carried, pos, ref, alt in zip(alleles, v.pos, v.ref, v.alt):
        if carried and lo <= pos <= hi:
            seq[pos - lo] = ord(alt)
    seq = bytes(seq)
    return seq if gene.strand == "+" else reverse_complement(seq)


def test_windows_match_snv_oracle_and_keep_tss_fixed(tiny_study, tiny_cohort):
    study = Study.open(tiny_study)
    reference = Reference(tiny_cohort / "reference.fa")
    checked = 0
    for gene_id in study.gene_ids:
        gene = study.gene(gene_id)
        seqs = gene.sequences
        assert len(set(seqs)) == len(seqs), "distinct haplotypes are distinct sequences"
        assert all(len(s) == gene.window for s in seqs)
        is_snv = (gene.variants.ref.str.len() == 1) & (gene.variants.alt.str.len() == 1)
        for u, alleles in enumerate(gene.hap_alleles):
            if not alleles[~is_snv.to_numpy()].any():
                assert seqs[u] == _snv_only_window(gene, alleles, reference)
                checked += 1
    assert checked > 0


def test_hap_index_reproduces_genotypes_in_window(tiny_study):
    study = Study.open(tiny_study)
    gene = study.gene(study.gene_ids[1])
    # two people with the same window sequence must carry the same alleles in the window
    win = gene.variants.in_window.to_numpy()
    g = gene.genotypes[win]
    for h in range(2):
        idx = gene.hap_index[:, h]
        for u in np.unique(idx)[:5]:
            people = np.flatnonzero(idx == u)
            assert (g[:, people, h] == g[:, people[:1], h]).all()


def test_gene_at_contig_start_is_padded_with_n(tiny_study):
    study = Study.open(tiny_study)
    edge = study.genes[study.genes.window_start < 1]
    assert len(edge), "the simulated cohort has a gene at a contig start"
    row = edge.iloc[0]
    gene = study.gene(row.gene_id)
    n_pad = 1 - row.window_start
    for s in gene.sequences:
        if row.strand == "+":
            assert s[:n_pad] == b"N" * n_pad and s[n_pad] != ord("N")
        else:
            assert s[-n_pad:] == b"N" * n_pad


def test_resume_after_interruption_gives_same_study(tiny_cohort, tmp_path, monkeypatch):
    import hapexpr.prepare as prep

    ref = tmp_path / "ref"
    prepare_study(**prepare_args(tiny_cohort, ref))
    calls = {"n": 0}
    real = prep.build_gene

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "s"
    monkeypatch.setattr(prep, "build_gene", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_study(**prepare_args(tiny_cohort, out))
    assert not out.exists() and (tmp_path / ".s.partial").exists()
    with pytest.raises(StudyError):
        Study.open(out)
    calls["n"] = -100
    prepare_study(**prepare_args(tiny_cohort, out))
    # the 2 window genes not yet written (the Enformer context is built on first use, not here)
    assert calls["n"] == -100 + 2, "only the genes not yet written are built again"
    assert not (out / "context").exists()
    for name in [
        "samples.tsv",
        "genes.tsv",
        "expression.tsv",
        "covariates.tsv",
        "dropped_genes.tsv",
        "cis/genes.tsv",
        "cis/chr1.dosages.npy",
        "cis/chr2.variants.npz",
    ]:
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    for gene_id in Study.open(ref).gene_ids:
        a, b = Study.open(ref).gene(gene_id), Study.open(out).gene(gene_id)
        assert a.sequences == b.sequences and np.array_equal(a.hap_index, b.hap_index)


def test_existing_study_kept_without_overwrite(tiny_cohort, tmp_path):
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out))
    before = (out / "study.json").read_text()
    with pytest.raises(StudyError, match="--overwrite"):
        prepare_study(**prepare_args(tiny_cohort, out))
    assert (out / "study.json").read_text() == before
    prepare_study(**prepare_args(tiny_cohort, out, overwrite=True))
    assert json.loads((out / "study.json").read_text())["n_genes"] == 4
    other = tmp_path / "notastudy"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(StudyError, match="not a hapexpr study"):
        prepare_study(**prepare_args(tiny_cohort, other, overwrite=True))
    assert (other / "precious.txt").exists()


def _cli(*args):
    return subprocess.run(["hapexpr", *map(str, args)], capture_output=True, text=True)


def test_cli_prepare_and_bad_inputs(tiny_cohort, tmp_path):
    c = tiny_cohort
    base = [
        "prepare",
        "--vcf",
        c / "genotypes.vcf.gz",
        "--fasta",
        c / "reference.fa",
        "--genes",
        c / "genes.gtf",
        "--covariates",
        c / "covariates.tsv",
        "--window",
        1000,
    ]
    ok = _cli(*base, "--expression", c / "expression.bed.gz", "--out", tmp_path / "s")
    assert ok.returncode == 0, ok.stderr
    assert Study.open(tmp_path / "s").window == 1000

    # NaN expression: named file and record, exit 2, no traceback, no study left behind
    expr = pd.read_csv(c / "expression.bed.gz", sep="\t")
    expr.iloc[1, 6] = np.nan
    bad = tmp_path / "nan.bed"
    expr.to_csv(bad, sep="\t", index=False)
    r = _cli(*base, "--expression", bad, "--out", tmp_path / "bad")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and expr.iloc[1, 3] in r.stderr
    assert not (tmp_path / "bad").exists()

    # no shared samples
    renamed = expr.rename(columns={s: s + "_x" for s in expr.columns[4:]}).fillna(0)
    renamed.to_csv(tmp_path / "other.bed", sep="\t", index=False)
    r = _cli(*base[:-4], "--window", 1000, "--expression", tmp_path / "other.bed", "--out", tmp_path / "bad2")
    assert (
        r.returncode == 2
        and "no sample of this expression file" in r.stderr
        and str(tmp_path / "other.bed") in r.stderr
        and "Traceback" not in r.stderr
    )

    # contigs that match nothing
    gtf = (c / "genes.gtf").read_text().replace("chr", "scaffold")
    (tmp_path / "g.gtf").write_text(gtf)
    r = _cli(
        *base[:5], "--genes", tmp_path / "g.gtf", "--expression", c / "expression.bed.gz", "--out", tmp_path / "bad3"
    )
    assert r.returncode == 2 and "no gene lies on a contig" in r.stderr

    # some samples missing from one file: dropped with a message naming them
    part = expr.drop(columns=[expr.columns[4]]).fillna(0)
    part.to_csv(tmp_path / "part.bed", sep="\t", index=False)
    r = _cli(*base, "--expression", tmp_path / "part.bed", "--out", tmp_path / "s2")
    assert r.returncode == 0 and expr.columns[4] in r.stderr and "dropped 1 sample" in r.stderr


def test_chr_prefix_mismatch_is_matched(tiny_cohort, tmp_path):
    gtf = (tiny_cohort / "genes.gtf").read_text().replace("chr", "")
    (tmp_path / "g.gtf").write_text(gtf)
    args = prepare_args(tiny_cohort, tmp_path / "s")
    args["genes"] = tmp_path / "g.gtf"
    prepare_study(**args)
    assert Study.open(tmp_path / "s").genes.chrom.iloc[0] in {"1", "2"}
