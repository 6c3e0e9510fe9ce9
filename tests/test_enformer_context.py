"""Enformer's own context haplotypes (``STUDY/context/``): recorded by prepare, built when Enformer
first needs them (resumable after kill -9, from the VCF and FASTA study.json names), equal to
``bcftools consensus``, and what Enformer reads instead of an N-padded window. Tiny widths (a 200 bp window, a 4,096 bp context, 1-2 kb model inputs) keep it fast.
The tiny random Enformer's attention output starts at zero (enformer-pytorch's init), so its TSS
bins see only the conv tower's reach, about -400..+550 bp: the window is kept smaller than that."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args

from hapexpr.cohort import NewCohort, StudyCohort
from hapexpr.context_store import ContextStore
from hapexpr.errors import InputError, StudyError
from hapexpr.haplotypes import build_haplotypes
from hapexpr.io.atomic import study_lock
from hapexpr.io.fasta import Reference
from hapexpr.prepare import prepare_study
from hapexpr.study import Study

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hapexpr.estimators import enformer_store as es  # noqa: E402
from hapexpr.fit import fit_method  # noqa: E402
from hapexpr.methods.enformer import Enformer, EnformerOptions  # noqa: E402

WINDOW, CONTEXT = 200, 4096
REACH = 350  # bp around the TSS the tiny model's TSS bins certainly see
needs_bcftools = pytest.mark.skipif(
    shutil.which("bcftools") is None or shutil.which("samtools") is None, reason="bcftools and samtools are the oracle"
)


@pytest.fixture(scope="module")
def ctx_study(tiny_cohort, tmp_path_factory):
    """The tiny cohort with a 200 bp window and a 4,096 bp context, built (read-only: copy to write)."""
    out = tmp_path_factory.mktemp("ctx") / "s"
    prepare_study(**prepare_args(tiny_cohort, out, context=CONTEXT) | {"window": WINDOW})
    build(out)
    return out


def build(path) -> None:
    """Build a study's context as a command that needs it does: under the study lock."""
    with study_lock(path, "test"):
        ContextStore.open(Study.open(path)).build(progress=False)


def copy(src, tmp_path):
    dst = tmp_path / "study"
    shutil.copytree(src, dst)
    return dst


def oracle(fasta, vcf, region: str, sample: str, hap: int) -> bytes:
    """`samtools faidx FASTA REGION | bcftools consensus -H {hap}pIu -s SAMPLE VCF`."""
    faidx = subprocess.run(["samtools", "faidx", str(fasta), region], check=True, capture_output=True)
    cons = subprocess.run(
        ["bcftools", "consensus", "-H", f"{hap}pIu", "-s", sample, str(vcf)],
        input=faidx.stdout,
        check=True,
        capture_output=True,
    )
    return b"".join(cons.stdout.split(b"\n")[1:])


def test_prepare_records_the_context_and_builds_nothing(tiny_cohort, tmp_path):
    """With a FASTA and no flag the context is 196,608 bp, recorded and not built; reading it
    before it is built says how to build it."""
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out) | {"window": WINDOW})
    study = Study.open(out)
    assert study.params["context"] == 196_608
    assert study.meta["context"] == {"width": 196_608, "directory": "context"}
    assert not (out / "context").exists()
    store = ContextStore.open(study)
    assert store.width == 196_608 and not store.built
    with pytest.raises(StudyError, match="not built yet"):
        store.gene(study.gene_ids[0])


def test_the_store_is_built_and_read_back(ctx_study):
    study = Study.open(ctx_study)
    store = ContextStore.open(study)
    assert study.params["context"] == CONTEXT and study.meta["context"]["width"] == CONTEXT
    assert store.built and store.width == CONTEXT
    assert (store.index["status"] == "ok").sum() == len(study.gene_ids)
    for g in study.gene_ids:
        gene = store.gene(g)
        assert gene.window == CONTEXT and gene.tss == study.gene(g).tss
        assert all(len(s) == CONTEXT for s in gene.sequences)
        assert np.array_equal(gene.genotypes.shape[1:], (len(study.sample_ids), 2))


@needs_bcftools
def test_context_haplotypes_equal_bcftools_consensus(ctx_study, tiny_cohort):
    """Each person's haplotype over the stored context region is bcftools' consensus over the
    same region (N where the region runs past the contig), and its TSS-centred cut holds the
    study window's sequence in the middle."""
    study, fasta, vcf = Study.open(ctx_study), tiny_cohort / "reference.fa", tiny_cohort / "genotypes.vcf.gz"
    lengths = Reference(fasta).contigs
    store = ContextStore.open(study)
    for g in study.gene_ids:
        gene, window_gene = store.gene(g), study.gene(g)
        v = gene.variants
        start, end = gene.region_start, gene.region_start + len(gene.reference) - 1
        lo, hi = max(start, 1), min(end, lengths[gene.chrom])
        for s in (0, 7, 23):
            sample = study.sample_ids[s]
            for h in (0, 1):
                alleles = gene.genotypes[:, s, h].astype(bool)[None]
                hap = build_haplotypes(gene.reference, start, v["pos"], v["ref"], v["alt"], alleles)[0]
                want = oracle(fasta, vcf, f"{gene.chrom}:{lo}-{hi}", sample, h + 1)
                assert hap.sequence == b"N" * (lo - start) + want + b"N" * (end - hi), (g, sample, h)
                centre = gene.sequence(s, h)[CONTEXT // 2 - WINDOW // 2 :][:WINDOW]
                assert centre == window_gene.sequence(s, h), (g, sample, h)


def test_enformer_reads_the_context_not_an_n_padded_window(ctx_study, tmp_path, capsys):
    """With a 200 bp window and a 4,096 bp context, a 2,048 bp input is the context haplotype
    cropped around the TSS (no N inside the contig), and a variant outside the window but inside
    the input changes its carrier's output (batch size 1: equal inputs give equal outputs)."""
    L = 2048
    path = copy(ctx_study, tmp_path)
    study = Study.open(path)
    method = Enformer(EnformerOptions(seq_len=L, batch_size=1)).bind(study)
    method.prepare(study, progress=False)
    err = capsys.readouterr().err.replace("\n", " ")
    assert "context haplotypes" in err and "padded with N" not in err
    emb = method.embedder()
    info = emb.info()
    assert emb.input == "context" and method.resolved["input"] == "context"
    assert info["context"] == CONTEXT and info["window"] == L
    store, found = ContextStore.open(study), False
    for g in study.gene_ids:
        whole, window_gene = store.gene(g), study.gene(g)
        gene = method.input_gene(StudyCohort(study), g)  # the context cut to the input
        inputs = [es.centre_on_tss(s, whole.tss_offset, L) for s in whole.sequences]
        assert sorted(set(gene.sequences)) == sorted(set(inputs))
        inputs = [es.centre_on_tss(s, gene.tss_offset, L) for s in gene.sequences]
        assert inputs == gene.sequences
        stored = method.haplotype_features(gene, gene.sequences)
        np.testing.assert_array_equal(stored, emb.runner.predict(inputs))  # float32 store: exact
        lo, hi = window_gene.tss - L // 2 + 1, window_gene.tss + L // 2 - 1
        if 1 <= lo and hi <= Reference(study.meta["inputs"]["fasta"]["path"]).contigs[gene.chrom]:
            assert all(b"N" not in x for x in inputs)
        if found:
            continue
        # A variant outside the study window (not in the window gene's in_window set) but within
        # the central input: its carrier's haplotype with and without it embeds differently.
        w = window_gene.variants
        in_study_window = set(zip(w.loc[w["in_window"], "pos"], w.loc[w["in_window"], "alt"]))
        v = gene.variants
        for i in range(len(v)):
            pos = int(v["pos"].iloc[i])
            if (pos, v["alt"].iloc[i]) in in_study_window or abs(pos - gene.tss) >= REACH:
                continue
            carriers = np.flatnonzero(gene.hap_alleles[:, i])
            if len(carriers) == 0:
                continue
            u = int(carriers[0])
            swapped = gene.hap_alleles[[u]].copy()
            swapped[0, i] = False
            without_seq = dataclasses.replace(gene, hap_alleles=swapped).sequences[0]
            assert without_seq != gene.sequences[u]
            window_without = dataclasses.replace(
                window_gene, hap_alleles=_window_alleles(window_gene, gene, swapped[0])
            )
            window_with = dataclasses.replace(
                window_gene, hap_alleles=_window_alleles(window_gene, gene, gene.hap_alleles[u])
            )
            assert window_without.sequences == window_with.sequences  # the window cannot see it
            method.for_new_people = True  # a sequence nobody in the study may carry: compute it
            without = method.haplotype_features(gene, [without_seq])
            method.for_new_people = False
            assert not np.array_equal(without[0], stored[u]), (g, pos)
            found = True
            break
    assert found, "no variant outside the 200 bp window but within the model's reach was carried"
    rows = fit_method(study, method, overwrite=True, progress=False)
    assert rows["predicted"].notna().all() and rows["gene_id"].nunique() == len(study.gene_ids)


def _window_alleles(window_gene, gene, alleles: np.ndarray) -> np.ndarray:
    """(1, window variants) the ALT alleles of one context haplotype on the window gene's variants."""
    key = dict(zip(zip(gene.variants["pos"], gene.variants["alt"]), alleles))
    w = window_gene.variants
    return np.array([[bool(key.get(k, False)) for k in zip(w["pos"], w["alt"])]])


def test_a_context_leaving_a_fasta_excerpt_gives_that_gene_no_model(tiny_cohort, tiny_study, tmp_path, capsys):
    """A FASTA whose chr1 is a CHR:START-END excerpt around one gene's window: the window is
    covered, its 4,096 bp context is not; it gets no context (with the reason) and no Enformer
    model, and the other genes get theirs."""
    genes = Study.open(tiny_study).genes
    victim = genes[genes.chrom == "chr1"].iloc[-1]
    length = Reference(tiny_cohort / "reference.fa").contigs["chr1"]
    region = f"chr1:{int(victim.tss) - 1000}-{min(int(victim.tss) + 1000, length)}"
    fasta = tmp_path / "excerpt.fa"
    with open(fasta, "w") as fh:
        subprocess.run(["samtools", "faidx", str(tiny_cohort / "reference.fa"), region, "chr2"], stdout=fh, check=True)
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out, context=CONTEXT) | {"window": WINDOW, "fasta": fasta})
    build(out)
    assert "context_outside_fasta_excerpt" in capsys.readouterr().err.replace("\n", " ")
    study = Study.open(out)
    assert victim.gene_id in study.gene_ids  # the window itself is inside the excerpt
    index = pd.read_csv(out / "context" / "genes.tsv", sep="\t", keep_default_na=False).set_index("gene_id")
    assert index.loc[victim.gene_id, "status"] == "none"
    assert index.loc[victim.gene_id, "reason"] == "context_outside_fasta_excerpt"
    assert not (out / "context" / "genes" / f"{victim.gene_id}.npz").exists()
    others = [g for g in study.gene_ids if g != victim.gene_id]
    assert others and all(index.loc[g, "status"] == "ok" for g in others)
    method = Enformer(EnformerOptions(seq_len=1024)).bind(study)
    rows = fit_method(study, method, overwrite=True, progress=False)
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"1 gene(s) have no {CONTEXT:,} bp context and get no model" in err
    assert "context_outside_fasta_excerpt" in err
    assert set(rows["gene_id"]) == set(others)
    fit = json.loads((out / "models" / "enformer" / "fit.json").read_text())
    assert fit["genes_without_model"] == [victim.gene_id]


def test_a_study_without_context_keeps_the_n_padded_window(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out, context=0) | {"window": WINDOW})
    study = Study.open(out)
    assert "context" not in study.meta and not (out / "context").exists() and study.params["context"] == 0
    assert ContextStore.open(study) is None
    method = Enformer(EnformerOptions(seq_len=1024)).bind(study)
    emb = method.embedder()
    assert emb.input == "window" and emb.window == WINDOW and "input" not in emb.keyed()
    assert set(method.resolved) == {"fingerprint"}  # a window fit's record and key are unchanged
    method.prepare(study, progress=False)
    err = capsys.readouterr().err.replace("\n", " ")
    assert "padded with N" in err and "--context 1024" in err and "--window" not in err
    gene = study.gene(study.gene_ids[0])
    inputs = [es.centre_on_tss(s, gene.tss_offset, 1024) for s in gene.sequences]
    assert all(x[:200] == b"N" * 200 for x in inputs)
    np.testing.assert_array_equal(method.haplotype_features(gene, gene.sequences), emb.runner.predict(inputs))


def test_context_and_window_stores_are_apart(ctx_study, tiny_cohort, tmp_path):
    """The same model on the same cohort with and without a context gives two fingerprints."""
    path = copy(ctx_study, tmp_path)
    plain = tmp_path / "plain"
    prepare_study(**prepare_args(tiny_cohort, plain, context=0) | {"window": WINDOW})
    a = Enformer(EnformerOptions(seq_len=1024)).bind(Study.open(path)).resolved["fingerprint"]
    b = Enformer(EnformerOptions(seq_len=1024)).bind(Study.open(plain)).resolved["fingerprint"]
    assert a != b


def test_new_people_get_context_haplotypes_like_the_study_people(ctx_study, tiny_cohort):
    """NewCohort over the study's own VCF rebuilds the same context haplotypes per person."""
    study = Study.open(ctx_study)
    new, own = NewCohort(study, tiny_cohort / "genotypes.vcf.gz"), StudyCohort(study)
    at = [new.sample_ids.index(s) for s in study.sample_ids]
    for g in study.gene_ids:
        a, b = own.context_gene(g), new.context_gene(g)
        assert a is not None and b.window == CONTEXT
        for s, t in enumerate(at[:10]):
            for h in (0, 1):
                assert a.sequence(s, h) == b.sequence(t, h)


def test_prepare_refuses_a_context_it_cannot_make(tiny_cohort, tmp_path):
    with pytest.raises(InputError, match="between the window"):
        prepare_study(**prepare_args(tiny_cohort, tmp_path / "a", context=WINDOW - 50) | {"window": WINDOW})
    args = prepare_args(tiny_cohort, tmp_path / "b", context=CONTEXT)
    args["fasta"] = None
    with pytest.raises(InputError, match="needs --fasta"):
        prepare_study(**args)
    args["context"] = None  # the default without a FASTA: no context
    prepare_study(**args)
    assert Study.open(tmp_path / "b").params["context"] == 0


def test_explain_mutates_the_variants_of_the_model_input(ctx_study, tmp_path):
    """explain on a context fit: every variant within the model input (1,024 bp for the tiny
    model on a 200 bp window study), those outside the study window included."""
    from hapexpr.explain import explain_gene
    from hapexpr.windows import window_bounds

    path = copy(ctx_study, tmp_path)
    study = Study.open(path)
    gene = study.gene(study.gene_ids[1])
    table = explain_gene(path, "enformer", gene.gene_id, out=tmp_path / "e.tsv")
    lo, hi = window_bounds(gene.tss, gene.strand, 1024)
    w_lo, w_hi = window_bounds(gene.tss, gene.strand, WINDOW)
    context = ContextStore.open(study).gene(gene.gene_id).variants
    inside = context[(context["pos"] + context["ref"].str.len() - 1 >= lo) & (context["pos"] <= hi)]
    assert list(table["pos"]) == list(inside["pos"]) and len(table) > 0
    assert ((table["pos"] < w_lo) | (table["pos"] > w_hi)).any()
    assert (table["n_carriers"] > 0).any() and table.loc[table["n_carriers"] > 0, "mean_effect"].notna().all()


def test_cli_prepare_takes_context(tiny_cohort, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    c = tiny_cohort
    args = ["prepare", "--vcf", c / "genotypes.vcf.gz", "--fasta", c / "reference.fa", "--genes", c / "genes.gtf"]
    args += ["--expression", c / "expression.bed.gz", "--window", "200", "--context", "1024", "--out", tmp_path / "s"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    study = Study.open(tmp_path / "s")
    assert study.params["context"] == 1024 and ContextStore.open(study).width == 1024


def _same_store(a, b) -> None:
    """Two studies' context stores hold the same genes with identical arrays."""
    assert (a / "context" / "genes.tsv").read_bytes() == (b / "context" / "genes.tsv").read_bytes()
    names = sorted(p.name for p in (a / "context" / "genes").iterdir())
    assert names == sorted(p.name for p in (b / "context" / "genes").iterdir()) and names
    for name in names:
        with np.load(a / "context" / "genes" / name) as x, np.load(b / "context" / "genes" / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                assert np.array_equal(x[k], y[k]), (name, k)


@needs_bcftools
def test_the_default_context_built_on_first_use_equals_bcftools_consensus(tiny_cohort, tmp_path):
    """No flag: the first Enformer fit builds each person's 196,608 bp haplotypes (equal to
    bcftools consensus over the region), and a second fit reuses them."""
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out) | {"window": WINDOW})
    study = Study.open(out)
    fit_method(study, Enformer(EnformerOptions(seq_len=1024)).bind(study), progress=False)
    store = ContextStore.open(Study.open(out))
    assert store.built and store.width == 196_608
    fasta, vcf = tiny_cohort / "reference.fa", tiny_cohort / "genotypes.vcf.gz"
    lengths = Reference(fasta).contigs
    for g in study.gene_ids[:2]:
        gene = store.gene(g)
        start, end = gene.region_start, gene.region_start + len(gene.reference) - 1
        lo, hi = max(start, 1), min(end, lengths[gene.chrom])
        for s in (0, 31):
            for h in (0, 1):
                alleles = gene.genotypes[:, s, h].astype(bool)[None]
                v = gene.variants
                hap = build_haplotypes(gene.reference, start, v["pos"], v["ref"], v["alt"], alleles)[0]
                want = oracle(fasta, vcf, f"{gene.chrom}:{lo}-{hi}", study.sample_ids[s], h + 1)
                assert hap.sequence == b"N" * (lo - start) + want + b"N" * (end - hi), (g, s, h)
                assert len(gene.sequence(s, h)) == 196_608
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "context" / "genes").iterdir()}
    fit_method(study, Enformer(EnformerOptions(seq_len=1024, head="ridge")).bind(study), progress=False)
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (out / "context" / "genes").iterdir()}


SLOW_BUILD = """
import sys, time
import hapexpr.context_store as store
from hapexpr.context_store import ContextStore
from hapexpr.io.atomic import study_lock
from hapexpr.study import Study

real = store.build_gene
def slow(*a, **k):
    gene = real(*a, **k)
    time.sleep(2)
    return gene
store.build_gene = slow
with study_lock(sys.argv[1], "test build"):
    ContextStore.open(Study.open(sys.argv[1])).build(progress=False)
"""


def test_a_build_killed_by_sigkill_resumes_on_the_next_fit(ctx_study, tiny_cohort, tmp_path, capsys):
    """kill -9 in the middle of the build: no genes.tsv (not built), the lock is released, and
    the next Enformer fit builds only the genes not yet written, to the same store."""
    out = tmp_path / "s"
    prepare_study(**prepare_args(tiny_cohort, out, context=CONTEXT) | {"window": WINDOW})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(out)], env=env, stderr=subprocess.PIPE)
    genes_dir, deadline = out / "context" / "genes", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if genes_dir.is_dir() and len(list(genes_dir.glob("*.npz"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = {p.name: p.stat().st_ino for p in genes_dir.glob("*.npz")}
    n_genes = len(Study.open(out).gene_ids)
    assert 1 <= len(done) < n_genes and not (out / "context" / "genes.tsv").exists()
    assert not ContextStore.open(Study.open(out)).built
    import hapexpr.context_store as store

    calls = {"n": 0}
    real = store.build_gene

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    store.build_gene = counted
    try:
        study = Study.open(out)
        fit_method(study, Enformer(EnformerOptions(seq_len=1024)).bind(study), progress=False)
    finally:
        store.build_gene = real
    assert calls["n"] == n_genes - len(done), "only the genes not yet written are built again"
    assert done == {name: (genes_dir / name).stat().st_ino for name in done}
    assert not list(genes_dir.glob(".*.tmp"))
    _same_store(out, ctx_study)


def test_the_build_refuses_a_vcf_that_moved_or_changed(tiny_cohort, tmp_path):
    """The context is built from the VCF study.json names: gone or changed (sha256) -> a clear
    StudyError naming it, and nothing built."""
    cohort = tmp_path / "c"
    shutil.copytree(tiny_cohort, cohort)
    out = tmp_path / "s"
    prepare_study(**prepare_args(cohort, out, context=CONTEXT) | {"window": WINDOW})
    vcf = cohort / "genotypes.vcf.gz"
    vcf.rename(tmp_path / "moved.vcf.gz")
    study = Study.open(out)
    method = Enformer(EnformerOptions(seq_len=1024)).bind(study)
    with pytest.raises(StudyError, match="VCF this study was prepared from is gone") as err:
        fit_method(study, method, progress=False)
    assert str(vcf.resolve()) in str(err.value)
    data = bytearray((tmp_path / "moved.vcf.gz").read_bytes())
    data[-40] ^= 1  # same size, other bytes
    vcf.write_bytes(bytes(data))
    with pytest.raises(StudyError, match="VCF changed since the study was prepared"):
        fit_method(study, method, progress=False)
    assert not (out / "context" / "genes.tsv").exists()


def test_an_old_study_with_a_prepared_context_reads_it_without_the_vcf(ctx_study, tmp_path):
    """A study whose context prepare wrote (hapexpr before lazy contexts: study.json ``context``
    with ``n_genes`` and ``no_context``) is read as it is: its VCF is not needed."""
    path = copy(ctx_study, tmp_path)
    meta = json.loads((path / "study.json").read_text())
    meta["context"] = {"width": CONTEXT, "directory": "context", "n_genes": 4, "no_context": {}}
    meta["inputs"]["vcf"]["path"] = str(tmp_path / "no-such.vcf.gz")
    (path / "study.json").write_text(json.dumps(meta))
    study = Study.open(path)
    method = Enformer(EnformerOptions(seq_len=1024)).bind(study)
    assert method.embedder().input == "context"
    rows = fit_method(study, method, progress=False)
    assert rows["gene_id"].nunique() == len(study.gene_ids)


def test_a_genotype_only_study_says_what_enformer_gets(tiny_cohort, tmp_path):
    """Without a FASTA there is no context and no sequence: Enformer refuses, saying why."""
    args = prepare_args(tiny_cohort, tmp_path / "s") | {"window": WINDOW, "fasta": None}
    prepare_study(**args)
    study = Study.open(tmp_path / "s")
    assert ContextStore.open(study) is None and "context" not in study.meta
    with pytest.raises(StudyError, match="genotype-only") as err:
        fit_method(study, Enformer(EnformerOptions(seq_len=1024)).bind(study), progress=False)
    assert "--fasta" in str(err.value)
