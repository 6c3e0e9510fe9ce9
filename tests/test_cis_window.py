"""The elastic net's cis window, measured from the TSS or (``--cis-from gene``) from the gene's
span, PredictDB's gene start - window to gene end + window: checked against dosages read
straight from the VCF with cyvcf2 over spans parsed from the GTF here, not by hapexpr."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args

WINDOW = 1000  # smaller than the simulated genes (several kb), so the two windows differ


def _gtf_spans(path) -> dict[str, tuple[str, int, int, str]]:
    """gene_id -> (chrom, start, end, strand) of each ``gene`` line (1-based inclusive)."""
    out = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if line.startswith("#") or len(f) < 9 or f[2] != "gene":
            continue
        gene_id = f[8].split('gene_id "')[1].split('"')[0]
        out[gene_id] = (f[0], int(f[3]), int(f[4]), f[6])
    return out


def _vcf_dosages(vcf_path, chrom: str, lo: int, hi: int, samples: list[str]) -> pd.DataFrame:
    """(samples, variants) ALT dosages of every record at lo..hi, columns chrom:pos:ref:alt."""
    from cyvcf2 import VCF

    vcf = VCF(str(vcf_path))
    order = [vcf.samples.index(s) for s in samples]
    cols, values = [], []
    for v in vcf(f"{chrom}:{max(1, lo)}-{hi}"):
        if v.POS < lo or v.POS > hi:  # cyvcf2 also returns records whose REF overlaps the region
            continue
        cols.append(f"{chrom}:{v.POS}:{v.REF}:{v.ALT[0]}")
        values.append(v.genotype.array()[order, :2].sum(axis=1))
    return pd.DataFrame(np.array(values, dtype=float).T.reshape(len(samples), -1), columns=cols, index=samples)


@pytest.fixture(scope="module")
def wide_cohort(tmp_path_factory):
    """40 people x 3 genes with variation over 20 kb around each TSS, past the gene bodies."""
    from hapexpr.simulate import simulate_cohort

    out = tmp_path_factory.mktemp("cis-from") / "c"
    simulate_cohort(out, individuals=40, genes=3, window=20_000, seed=2)
    return out


@pytest.fixture(scope="module")
def gene_study(wide_cohort, tmp_path_factory):
    from hapexpr.prepare import prepare_study

    out = tmp_path_factory.mktemp("cis-from") / "s"
    prepare_study(**prepare_args(wide_cohort, out, cis_window=WINDOW))
    return out


@pytest.mark.parametrize("cis_from", ["tss", "gene"])
def test_features_are_the_vcf_records_of_the_chosen_window(wide_cohort, gene_study, cis_from):
    from hapexpr.cohort import NewCohort, StudyCohort
    from hapexpr.methods.registry import build
    from hapexpr.study import Study

    study = Study.open(gene_study)
    spans = _gtf_spans(wide_cohort / "genes.gtf")
    method = build("elastic-net", {"cis_window": WINDOW, "cis_from": cis_from}).bind(study)
    new = NewCohort(study, wide_cohort / "genotypes.vcf.gz")
    wider = 0
    for gene_id in study.gene_ids:
        chrom, start, end, strand = spans[gene_id]
        tss = start if strand == "+" else end
        lo, hi = (tss - WINDOW, tss + WINDOW) if cis_from == "tss" else (start - WINDOW, end + WINDOW)
        want = _vcf_dosages(wide_cohort / "genotypes.vcf.gz", chrom, lo, hi, study.sample_ids)
        got = method.features(StudyCohort(study), gene_id)
        assert list(got.columns) == list(want.columns)
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
        # a new VCF's people get the same features (predict reads the VCF, not the store)
        from_vcf = method.features(new, gene_id)
        assert list(from_vcf.columns) == list(want.columns)
        np.testing.assert_array_equal(from_vcf.to_numpy(), want.to_numpy())
        tss_only = _vcf_dosages(wide_cohort / "genotypes.vcf.gz", chrom, tss - WINDOW, tss + WINDOW, study.sample_ids)
        wider += want.shape[1] > tss_only.shape[1]
    if cis_from == "gene":
        assert wider == len(study.gene_ids)  # the gene body reaches past TSS + window on every gene
    assert method.fit_name == ("elastic-net-1kb-gene" if cis_from == "gene" else "elastic-net-1kb")


def test_gene_window_is_refused_on_a_study_without_gene_spans(gene_study, tmp_path):
    """A study prepared before hapexpr stored gene spans says what to do."""
    import shutil

    from hapexpr.cohort import StudyCohort
    from hapexpr.errors import StudyError
    from hapexpr.methods.registry import build
    from hapexpr.study import Study

    old = tmp_path / "old"
    shutil.copytree(gene_study, old)
    for name in ("genes.tsv", "cis/genes.tsv"):
        table = pd.read_csv(old / name, sep="\t", dtype=str)
        table.drop(columns=[c for c in ("gene_start", "gene_end", "gene_first", "gene_stop") if c in table]).to_csv(
            old / name, sep="\t", index=False
        )
    study = Study.open(old)
    method = build("elastic-net", {"cis_window": WINDOW, "cis_from": "gene"}).bind(study)
    with pytest.raises(StudyError, match="prepare the study again|--cis-from tss"):
        method.features(StudyCohort(study), study.gene_ids[0])
    tss = build("elastic-net", {"cis_window": WINDOW}).bind(study)
    assert tss.features(StudyCohort(study), study.gene_ids[0]).shape[1] > 0


def test_cis_from_is_checked_and_named():
    from hapexpr.errors import InputError
    from hapexpr.methods.elastic_net import ElasticNet, ElasticNetOptions

    with pytest.raises(InputError, match="--cis-from"):
        ElasticNetOptions(cis_from="body")
    for options in (ElasticNetOptions(cis_from="gene"), ElasticNetOptions(cis_window=500_000, cis_from="gene")):
        name = ElasticNet.default_name(options)
        assert ElasticNetOptions(**ElasticNet.options_for_name(name)) == options
    assert ElasticNet.options_for_name("elastic-net-window-gene") is None


def test_gene_spans_from_each_annotation_format(tmp_path):
    """GTF gene lines give their start/end; transcripts only, their union; a BED interval its
    1-based span; a TSS table its gene_start/gene_end columns or else the TSS; a span that does
    not contain the TSS is refused, naming the gene."""
    from hapexpr.errors import InputError
    from hapexpr.io.genes import read_genes

    attrs = 'gene_id "G{0}"; transcript_id "T{1}";'
    (tmp_path / "t.gtf").write_text(
        "\n".join(
            [
                f"c1\tx\ttranscript\t100\t500\t.\t+\t.\t{attrs.format(1, 1)}",
                f"c1\tx\ttranscript\t150\t900\t.\t+\t.\t{attrs.format(1, 2)}",
                f"c1\tx\ttranscript\t2000\t2600\t.\t-\t.\t{attrs.format(2, 3)}",
            ]
        )
        + "\n"
    )
    g = read_genes(tmp_path / "t.gtf").set_index("gene_id")
    assert g.loc["G1", ["tss", "gene_start", "gene_end"]].tolist() == [100, 100, 900]
    assert g.loc["G2", ["tss", "gene_start", "gene_end"]].tolist() == [2600, 2000, 2600]
    (tmp_path / "g.bed").write_text("c1\t99\t900\tG1\t0\t+\nc1\t1999\t2600\tG2\t0\t-\nc1\t49\t50\tG3\t0\t-\n")
    b = read_genes(tmp_path / "g.bed").set_index("gene_id")
    assert b[["tss", "gene_start", "gene_end"]].to_numpy().tolist() == [[100, 100, 900], [2600, 2000, 2600], [50] * 3]
    pd.DataFrame({"gene_id": ["A"], "chrom": ["c1"], "tss": [10], "strand": ["+"]}).to_csv(
        tmp_path / "a.tsv", sep="\t", index=False
    )
    assert read_genes(tmp_path / "a.tsv")[["gene_start", "gene_end"]].to_numpy().tolist() == [[10, 10]]
    pd.DataFrame(
        {"gene_id": ["A"], "chrom": ["c1"], "tss": [10], "strand": ["+"], "gene_start": [20], "gene_end": [30]}
    ).to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="gene A: its span 20-30 does not contain its TSS 10"):
        read_genes(tmp_path / "b.tsv")
