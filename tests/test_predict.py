"""``hapexpr fit-final`` and ``hapexpr predict``: new people given as study samples under new
names, so the right answer is what the final model gives those study individuals."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.cohort import StudyCohort
from hapexpr.errors import InputError, StudyError
from hapexpr.final import final_dir, final_estimator, final_fit_method, fit_final, gene_dir
from hapexpr.predict import PRED_COLUMNS, predict_new
from hapexpr.study import Study

PICK = ["S0005", "S0011", "S0023", "S0042"]  # study samples that become "new" people


def make_vcf(src: Path, out: Path, *, samples, rename: dict, drop=(), edit=None, add=()) -> Path:
    """A bgzipped, indexed VCF of ``samples`` (renamed), without the records at ``drop``
    ((chrom, pos) pairs), with ``edit(fields)`` applied to each record and ``add`` lines added."""
    text = subprocess.run(
        ["bcftools", "view", "-s", ",".join(samples), str(src)], check=True, capture_output=True, text=True
    ).stdout
    lines = []
    for line in text.splitlines():
        if line.startswith("#CHROM"):
            line = "\t".join(rename.get(f, f) for f in line.split("\t"))
        elif not line.startswith("#"):
            fields = line.split("\t")
            if (fields[0], int(fields[1])) in set(drop):
                continue
            if edit is not None:
                fields = edit(fields)
            line = "\t".join(fields)
        lines.append(line)
    lines += list(add)
    plain = out.with_suffix("").with_suffix(".unsorted.vcf")
    plain.write_text("\n".join(lines) + "\n")
    subprocess.run(["bcftools", "sort", "-Oz", "-o", str(out), str(plain)], check=True, capture_output=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(out)], check=True)
    return out


def renamed(samples):
    return {s: f"NEW_{s}" for s in samples}


def study_rows(study: Study, samples) -> np.ndarray:
    ids = study.sample_ids
    return np.array([ids.index(s) for s in samples])


@pytest.fixture(scope="module")
def new_vcf(tiny_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vcf") / "new.vcf.gz"
    return make_vcf(tiny_cohort / "genotypes.vcf.gz", out, samples=PICK, rename=renamed(PICK[:3]))


def test_elastic_net_new_people_get_what_the_final_model_gives_their_twins(en_study, new_vcf, tmp_path):
    table = predict_new(en_study, "elastic-net", vcf=new_vcf, out=tmp_path / "p.tsv", progress=False)
    disk = pd.read_csv(tmp_path / "p.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
    assert list(disk.columns) == PRED_COLUMNS
    study = Study.open(en_study)
    method = final_fit_method(study, "elastic-net")
    assert set(disk["gene_id"]) == set(study.gene_ids)
    for gene_id in study.gene_ids:
        est = final_estimator(en_study, "elastic-net", gene_id)
        want = est.predict(method.features(StudyCohort(study), gene_id))[study_rows(study, PICK)]
        got = disk[disk["gene_id"] == gene_id].set_index("sample_id").loc[[*renamed(PICK[:3]).values(), PICK[3]]]
        np.testing.assert_allclose(got["predicted"], want, rtol=1e-9, atol=1e-12)
        assert (got["n_study_variants_missing"] == 0).all() and (got["n_new_variants"] == 0).all()
        assert list(got["in_study"]) == [False, False, False, True]
    # the people differ, so the test could tell rows apart
    assert disk.groupby("gene_id")["predicted"].nunique().max() > 1
    assert len(table) == len(disk)
    # gene names from the simulated GTF (gene_name "SIMG<n>"), beside each id, as genes.tsv has them
    names = study.genes.set_index("gene_id")["gene_name"]
    assert disk["gene_name"].str.fullmatch(r"SIMG\d+").all()
    assert (disk["gene_name"] == disk["gene_id"].map(names)).all()


def test_missing_study_variants_get_the_study_mean_dosage(en_study, tiny_cohort, tmp_path):
    study = Study.open(en_study)
    gene_id = next(
        g for g in study.gene_ids if np.count_nonzero(final_estimator(en_study, "elastic-net", g).coef_) >= 2
    )
    est = final_estimator(en_study, "elastic-net", gene_id)
    weighted = np.flatnonzero(est.coef_)[:2]
    unweighted = np.flatnonzero(est.coef_ == 0)[:1]
    feats = pd.DataFrame([c.split(":") for c in est.columns_], columns=["chrom", "pos", "ref", "alt"])
    drop = [(feats["chrom"][j], int(feats["pos"][j])) for j in [*weighted, *unweighted]]
    vcf = make_vcf(
        tiny_cohort / "genotypes.vcf.gz", tmp_path / "m.vcf.gz", samples=PICK, rename=renamed(PICK), drop=drop
    )
    table = predict_new(en_study, "elastic-net", vcf=vcf, out=tmp_path / "p.tsv", progress=False)
    rows = table[table["gene_id"] == gene_id]
    assert (rows["n_study_variants_missing"] == len(weighted)).all()
    # independent oracle: the study's dosages, the dropped columns at their mean over the study
    study_X = final_fit_method(study, "elastic-net").features(StudyCohort(study), gene_id)[est.columns_]
    X = study_X.to_numpy(dtype=np.float64)[study_rows(study, PICK)]
    for j in [*weighted, *unweighted]:
        X[:, j] = study_X.iloc[:, j].mean()
    np.testing.assert_allclose(rows["predicted"], X @ est.coef_ + est.model_.intercept_, rtol=1e-9, atol=1e-12)
    # and it is not what the full genotypes give (the dropped variants mattered)
    full = study_X.to_numpy(dtype=np.float64)[study_rows(study, PICK)] @ est.coef_ + est.model_.intercept_
    assert not np.allclose(rows["predicted"], full)
    other = table[table["gene_id"] != gene_id]
    assert (other["n_study_variants_missing"] == 0).all()


def test_ref_mismatch_names_the_file_and_record(en_study, tiny_cohort, tmp_path):
    study = Study.open(en_study)
    gene = study.gene(study.gene_ids[-1])
    snv = gene.variants[(gene.variants["ref"].str.len() == 1) & gene.variants["in_window"]].iloc[0]
    wrong = next(b for b in "ACGT" if b not in (snv["ref"], snv["alt"]))

    def edit(fields):
        if fields[0] == gene.chrom and int(fields[1]) == int(snv["pos"]):
            fields[3] = wrong
        return fields

    vcf = make_vcf(tiny_cohort / "genotypes.vcf.gz", tmp_path / "bad.vcf.gz", samples=PICK, rename={}, edit=edit)
    with pytest.raises(InputError) as err:
        predict_new(en_study, "elastic-net", vcf=vcf, out=tmp_path / "p.tsv", progress=False)
    msg = str(err.value)
    assert str(vcf) in msg and f"{gene.chrom}:{int(snv['pos'])} {wrong}>{snv['alt']}" in msg
    assert "REF" in msg and not (tmp_path / "p.tsv").exists()


def test_refuses_to_overwrite_the_output(en_study, new_vcf, tmp_path):
    out = tmp_path / "p.tsv"
    out.write_text("keep me\n")
    with pytest.raises(InputError, match="already exists"):
        predict_new(en_study, "elastic-net", vcf=new_vcf, out=out, progress=False)
    assert out.read_text() == "keep me\n"
    predict_new(en_study, "elastic-net", vcf=new_vcf, out=out, overwrite=True, progress=False)
    assert out.read_text().startswith("\t".join(PRED_COLUMNS))


def test_stack_without_two_fitted_bases_is_refused_with_a_clear_error(en_study, new_vcf, tmp_path):
    # the study holds no cross-validated fit, so a stack has no out-of-fold predictions to weigh
    with pytest.raises(StudyError, match="stack needs at least two base fits"):
        predict_new(en_study, "stack", vcf=new_vcf, out=tmp_path / "p.tsv", progress=False)


def test_final_fit_refuses_other_options_and_resumes_per_gene(en_study, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(en_study, work)
    with pytest.raises(StudyError, match="other options"):
        fit_final(work, "elastic-net", options=dict(maf=0.05), progress=False)
    study = Study.open(work)
    # resume: one gene lost, run marked unfinished -> only that gene is fit again
    first, lost = study.gene_ids[0], study.gene_ids[1]
    stamp = (gene_dir(study, "elastic-net", first) / "gene.json").stat().st_mtime_ns
    shutil.rmtree(gene_dir(study, "elastic-net", lost))
    state = final_dir(study, "elastic-net") / "final.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "complete": False}))
    fit_final(work, "elastic-net", progress=False)
    assert (gene_dir(study, "elastic-net", lost) / "gene.json").exists()
    assert (gene_dir(study, "elastic-net", first) / "gene.json").stat().st_mtime_ns == stamp
    # the refit gene is the same model as before (deterministic), loaded from npz + JSON
    refit, before = final_estimator(work, "elastic-net", lost), final_estimator(en_study, "elastic-net", lost)
    np.testing.assert_array_equal(refit.coef_, before.coef_)
    fit_final(work, "elastic-net", options=dict(maf=0.05), overwrite=True, progress=False)
    info = final_estimator(work, "elastic-net", lost).final_info_
    assert info["options"]["maf"] == 0.05
    assert not list(final_dir(study, "elastic-net").glob(".tmp-*"))


def test_cli_predict_fits_implicitly_and_refuses_overwrite(tiny_study, new_vcf, tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    work = tmp_path / "study"
    shutil.copytree(tiny_study, work)
    out = tmp_path / "p.tsv"
    args = ["predict", str(work), "--method", "elastic-net", "--vcf", str(new_vcf), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "no final fit" in res.output and "study variants missing" in res.output
    assert len(pd.read_csv(out, sep="\t")) == len(PICK) * len(Study.open(work).gene_ids)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output


# -- sequence methods (tiny NT embeddings) ---------------------------------------------------


@pytest.fixture(scope="module")
def seq_study(embedded_tiny_study, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("predict-seq") / "study"
    shutil.copytree(embedded_tiny_study, dst)
    return dst


def new_snv_line(study: Study, samples: list[str]) -> tuple[str, str, str]:
    """(gene id, VCF line, variant key) of an SNV in a gene's window the study does not have,
    carried (heterozygous) by the first of ``samples`` only."""
    gene = study.gene(study.gene_ids[-1])
    lo, hi = int(gene.variants["pos"].min()), int(gene.variants["pos"].max())
    taken = set(gene.variants["pos"])
    centre = gene.tss
    pos = next(p for p in range(centre, hi) if p not in taken and p - 1 not in taken and p + 1 not in taken)
    assert lo < pos < hi
    ref = chr(gene.reference[pos - gene.region_start])
    alt = next(b for b in "ACGT" if b != ref)
    gts = ["1|0"] + ["0|0"] * (len(samples) - 1)
    line = "\t".join([gene.chrom, str(pos), f"new_{pos}", ref, alt, ".", "PASS", ".", "GT", *gts])
    return gene.gene_id, line, f"{pos}{ref}>{alt}"


@pytest.mark.parametrize("method", ["ridge-probe", "nt-transformer", "enformer-ridge"])
def test_sequence_methods_match_the_final_model_and_use_new_variants(method, seq_study, tiny_cohort, tmp_path):
    study = Study.open(seq_study)
    if method == "nt-transformer":
        fit_final(seq_study, method, options=dict(max_epochs=3), progress=False)
    gene_new, line, _ = new_snv_line(study, PICK)
    vcf = make_vcf(
        tiny_cohort / "genotypes.vcf.gz", tmp_path / "n.vcf.gz", samples=PICK, rename=renamed(PICK), add=[line]
    )
    table = predict_new(seq_study, method, vcf=vcf, out=tmp_path / "p.tsv", progress=False)
    feats = final_fit_method(study, method)
    for gene_id in study.gene_ids:
        want = final_estimator(seq_study, method, gene_id).predict(feats.features(StudyCohort(study), gene_id))
        want = want[study_rows(study, PICK)]
        got = table[table["gene_id"] == gene_id].set_index("sample_id").loc[list(renamed(PICK).values())]
        n_new = 1 if gene_id == gene_new else 0
        assert (got["n_new_variants"] == n_new).all() and (got["n_study_variants_missing"] == 0).all()
        # the carrier of the new variant has another sequence, everyone else their twin's
        np.testing.assert_allclose(got["predicted"].iloc[n_new:], want[n_new:], rtol=1e-5, atol=1e-6)
        if n_new:
            assert abs(got["predicted"].iloc[0] - want[0]) > 1e-6


def test_elastic_net_ignores_new_variants_but_counts_them(en_study, tiny_cohort, tmp_path):
    study = Study.open(en_study)
    gene_new, line, _ = new_snv_line(study, PICK)
    vcf = make_vcf(
        tiny_cohort / "genotypes.vcf.gz", tmp_path / "n.vcf.gz", samples=PICK, rename=renamed(PICK), add=[line]
    )
    plain = make_vcf(tiny_cohort / "genotypes.vcf.gz", tmp_path / "o.vcf.gz", samples=PICK, rename=renamed(PICK))
    with_new = predict_new(en_study, "elastic-net", vcf=vcf, out=tmp_path / "a.tsv", progress=False)
    without = predict_new(en_study, "elastic-net", vcf=plain, out=tmp_path / "b.tsv", progress=False)
    np.testing.assert_array_equal(with_new["predicted"], without["predicted"])
    assert set(with_new.loc[with_new["n_new_variants"] > 0, "gene_id"]) == {gene_new}
    assert gzip.open(vcf, "rt").read().count("new_") == 1


def test_final_fit_in_parallel_processes_is_the_same_model(tiny_study, tmp_path):
    """fit-final --jobs 2: the estimators come back to the driver, which writes them; the saved
    models are byte-identical to the in-process fit."""
    saved = {}
    for label, jobs in (("one", 1), ("two", 2)):
        work = tmp_path / label
        shutil.copytree(tiny_study, work)
        fit_final(work, "elastic-net-window", progress=False, jobs=jobs)
        root = final_dir(Study.open(work), "elastic-net-window")
        saved[label] = {
            p.relative_to(root): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("gene.json", "final.json")
        }
    assert saved["one"] == saved["two"] and len(saved["one"]) > 0
