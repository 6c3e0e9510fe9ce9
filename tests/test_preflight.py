"""Every command checks every input it will read before it starts fitting or embedding.

For each command a bad input must give the project's one-paragraph error (exit 2) while the
function that would start the long work (a final fit, an embedding run, prepare) has not been
called, and nothing in the study or at the output path may be written.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hapexpr.cli import app


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def guarded(study_copy, monkeypatch, tmp_path):
    """The writable tiny study with a k-mer store, and every long-running entry point made to
    fail loudly."""
    from hapexpr.embed import run_embed

    run_embed(study_copy, model="kmer:4", progress=False)

    def no_work(*_args, **_kwargs):
        raise AssertionError("work started before the inputs were checked")

    for target in (
        "hapexpr.predict.ensure_final",
        "hapexpr.explain.ensure_final",
        "hapexpr.export.predictdb_tables",
        "hapexpr.fit.fit_method",
        "hapexpr.final.run_genes",
        "hapexpr.embed.run.build_embedder",
        "hapexpr.pipeline.prepare_study",
    ):
        monkeypatch.setattr(target, no_work)
    monkeypatch.chdir(tmp_path)
    return study_copy


def _refused(study: Path, args: list[str], message: str) -> None:
    before = _tree(study)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (res.output, repr(res.exception))
    assert message in " ".join(res.output.split()), res.output
    assert _tree(study) == before


def _file(tmp_path: Path, name: str, text: str = "x\n") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _other_contig_vcf(tiny_cohort: Path, tmp_path: Path) -> Path:
    """The cohort's VCF with every contig renamed (chrN -> otherN), bgzipped and indexed."""
    import pysam

    text = gzip.open(tiny_cohort / "genotypes.vcf.gz", "rt").read()
    text = re.sub(r"(?m)^chr", "other", text.replace("##contig=<ID=chr", "##contig=<ID=other"))
    plain = _file(tmp_path, "other.vcf", text)
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return Path(str(plain) + ".gz")


def test_predict_checks_vcf_and_output_before_the_final_fit(guarded, tiny_cohort, tmp_path):
    s = str(guarded)
    vcf = str(tiny_cohort / "genotypes.vcf.gz")
    _refused(
        guarded, ["predict", s, "--method", "elastic-net", "--vcf", "missing.vcf.gz", "--out", "p.tsv"], "VCF not found"
    )
    gtf = str(tiny_cohort / "genes.gtf")
    _refused(guarded, ["predict", s, "--method", "elastic-net", "--vcf", gtf, "--out", "p.tsv"], "not bgzip-compressed")
    other = str(_other_contig_vcf(tiny_cohort, tmp_path))
    _refused(
        guarded,
        ["predict", s, "--method", "elastic-net", "--vcf", other, "--out", "p.tsv"],
        "no contig of any study gene",
    )
    _file(tmp_path, "taken.tsv")
    _refused(guarded, ["predict", s, "--method", "elastic-net", "--vcf", vcf, "--out", "taken.tsv"], "already exists")
    _file(tmp_path, "afile")
    _refused(guarded, ["predict", s, "--method", "elastic-net", "--vcf", vcf, "--out", "afile/p.tsv"], "is a file")
    _refused(guarded, ["predict", s, "--method", "no-such-fit", "--vcf", vcf, "--out", "p.tsv"], "no fit named")
    assert not (tmp_path / "p.tsv").exists()


def test_explain_checks_gene_method_and_output_before_the_final_fit(guarded):
    s = str(guarded)
    _refused(guarded, ["explain", s, "--method", "elastic-net", "--gene", "NOPE", "--out", "e.tsv"], "not in the study")
    gene = "ENSG90000000001.1"
    _refused(guarded, ["explain", s, "--method", "no-such-fit", "--gene", gene, "--out", "e.tsv"], "no fit named")
    _refused(guarded, ["explain", s, "--method", "elastic-net", "--gene", gene, "--out", "."], "is a directory")


def test_export_predictdb_checks_output_rsid_map_and_method_before_fitting(guarded, tmp_path):
    s = str(guarded)
    _file(tmp_path, "taken.db")
    _refused(guarded, ["export-predictdb", s, "--out", "taken.db"], "already exists")
    _refused(guarded, ["export-predictdb", s, "--out", "w.db", "--rsid-map", "missing.tsv"], "rsid map does not exist")
    bad = _file(tmp_path, "map.tsv", "chr1\tten\tA\tG\trs1\n")
    _refused(guarded, ["export-predictdb", s, "--out", "w.db", "--rsid-map", str(bad)], "not a whole number")
    _refused(
        guarded, ["export-predictdb", s, "--out", "w.db", "--method", "ridge-probe"], "not a model of allele dosages"
    )
    assert not (tmp_path / "w.db").exists()


def test_fit_checks_method_options_store_and_device_before_writing(guarded):
    s = str(guarded)
    _refused(guarded, ["fit", s, "--method", "no-such-method"], "no-such-method")
    _refused(guarded, ["fit", s, "--method", "nt-transformer", "--epoch-selection", "nope"], "epoch_selection")
    _refused(
        guarded, ["fit", s, "--method", "ridge-probe", "--fingerprint", "tiny"], f"run `hapexpr embed {s} --model tiny`"
    )
    import torch

    if not torch.cuda.is_available():
        _refused(guarded, ["fit", s, "--method", "nt-transformer", "--device", "cuda"], "no CUDA GPU")


def test_fit_final_checks_the_fit_and_options_before_fitting(guarded):
    s = str(guarded)
    _refused(guarded, ["fit-final", s, "--method", "no-such-fit"], "no fit named")
    _refused(guarded, ["fit-final", s, "--method", "nt-transformer", "--epoch-selection", "nope"], "epoch_selection")


def test_embed_checks_model_device_and_cache_before_loading_a_model(guarded, tmp_path):
    s = str(guarded)
    _refused(guarded, ["embed", s, "--model", str(tmp_path / "no-model")], "names no embedder")
    _file(tmp_path, "afile")
    _refused(guarded, ["embed", s, "--model", "kmer:4", "--cache", "afile/cache"], "is a file")
    import torch

    if not torch.cuda.is_available():
        _refused(guarded, ["embed", s, "--model", "kmer:4", "--device", "cuda"], "no CUDA GPU")


def test_run_checks_the_whole_config_before_prepare(guarded, tiny_cohort, tmp_path):
    inputs = "\n".join(
        f"  {k}: {tiny_cohort / f}"
        for k, f in (("vcf", "genotypes.vcf.gz"), ("fasta", "reference.fa"), ("expression", "expression.bed.gz"))
    )
    config = _file(
        tmp_path, "run.yaml", f"study: new-study\nprepare:\n{inputs}\nembed:\n  model: {tmp_path / 'none'}\n"
    )
    _refused(guarded, ["run", str(config)], "names no embedder")
    config.write_text(f"study: new-study\nprepare:\n{inputs}\nfit:\n  - method: elastic-net\n    no_such_option: 7\n")
    res = CliRunner().invoke(app, ["run", str(config)])
    assert res.exit_code == 2 and "fit[0]" in res.output, res.output
    assert not (tmp_path / "new-study").exists()
    assert sorted(os.listdir(tmp_path)) == ["run.yaml", "study"]
