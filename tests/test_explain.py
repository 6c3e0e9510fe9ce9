"""``hapexpr explain``: per-variant effects; the elastic net's equal its weights (linearity), the
ridge probe's are checked against embeddings of independently rebuilt haplotypes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.errors import InputError
from hapexpr.explain import EFFECT_COLUMNS, explain_gene, explain_path
from hapexpr.final import final_estimator
from hapexpr.study import Study


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"gene_id": str, "variant_id": str})


def test_elastic_net_effects_are_the_weights(en_study, tmp_path):
    study = Study.open(en_study)
    gene_id = max(study.gene_ids, key=lambda g: np.count_nonzero(final_estimator(en_study, "elastic-net", g).coef_))
    table = explain_gene(en_study, "elastic-net", gene_id, out=tmp_path / "e.tsv")
    disk = read(tmp_path / "e.tsv")
    assert list(disk.columns) == [*EFFECT_COLUMNS, "weight"]
    pd.testing.assert_frame_equal(disk, read(explain_path(en_study, "elastic-net", gene_id)))
    assert explain_path(en_study, "elastic-net", gene_id) == en_study / "explain" / "elastic-net" / f"{gene_id}.tsv"
    gene = study.gene(gene_id)
    window = gene.variants[gene.variants["in_window"]]
    assert list(disk["variant_id"]) == list(window["variant_id"]) and disk["in_window"].all()
    est = final_estimator(en_study, "elastic-net", gene_id)
    weight = dict(zip(est.columns_, est.coef_))
    names = [f"{gene.chrom}:{p}:{r}:{a}" for p, r, a in zip(disk["pos"], disk["ref"], disk["alt"])]
    np.testing.assert_allclose(disk["weight"], [weight[n] for n in names])
    assert np.count_nonzero(disk["weight"]) >= 1
    # carriers counted from the genotypes; effect per ALT allele == weight for each (linearity)
    carriers = (gene.genotypes[gene.variants["in_window"].to_numpy()].sum(axis=2) > 0).sum(axis=1)
    np.testing.assert_array_equal(disk["n_carriers"], carriers)
    has = disk["n_carriers"] > 0
    np.testing.assert_allclose(disk.loc[has, "mean_effect"], disk.loc[has, "weight"], rtol=1e-9, atol=1e-12)
    several = disk["n_carriers"] > 1
    np.testing.assert_allclose(disk.loc[several, "sd_effect"], 0.0, atol=1e-9)
    assert len(table) == len(disk)


def test_unknown_gene_and_existing_output_are_refused(en_study, tmp_path):
    with pytest.raises(InputError, match="not in the study"):
        explain_gene(en_study, "elastic-net", "ENSG_NOPE", out=tmp_path / "e.tsv")
    out = tmp_path / "e.tsv"
    out.write_text("keep\n")
    gene_id = Study.open(en_study).gene_ids[0]
    with pytest.raises(InputError, match="already exists"):
        explain_gene(en_study, "elastic-net", gene_id, out=out)
    assert out.read_text() == "keep\n"
    explain_gene(en_study, "elastic-net", gene_id, out=out, overwrite=True)
    assert out.read_text().startswith("gene_id\t")


@pytest.fixture(scope="module")
def seq_study(embedded_tiny_study, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("explain-seq") / "study"
    shutil.copytree(embedded_tiny_study, dst)
    return dst


def test_ridge_probe_effects_match_rebuilt_haplotypes(seq_study, tmp_path):
    from hapexpr.embed import load_embedder
    from hapexpr.haplotypes import build_haplotypes
    from hapexpr.windows import cut_window

    study = Study.open(seq_study)
    gene_id = study.gene_ids[2]
    table = explain_gene(seq_study, "ridge-probe", gene_id, out=tmp_path / "e.tsv")
    disk = read(tmp_path / "e.tsv")
    assert list(disk.columns) == EFFECT_COLUMNS
    pd.testing.assert_frame_equal(disk, read(explain_path(seq_study, "ridge-probe", gene_id)))
    assert len(table) == len(disk) and disk["n_carriers"].gt(0).any()
    # independent oracle: rebuild each carrier haplotype with and without the ALT allele,
    # embed without the cache, and apply the ridge weights to the difference of mean embeddings
    gene = study.gene(gene_id)
    est = final_estimator(seq_study, "ridge-probe", gene_id)
    embedder = load_embedder(seq_study)
    v = gene.variants
    pos, ref, alt = v["pos"].to_numpy(), v["ref"].to_numpy(), v["alt"].to_numpy()
    checked = 0
    for row in disk[disk["n_carriers"] > 0].head(3).itertuples(index=False):
        i = int(np.flatnonzero(v["variant_id"].to_numpy() == row.variant_id)[0])
        effects = []
        for s in range(len(study.sample_ids)):
            per_hap = []
            for h in range(2):
                carried = gene.hap_alleles[gene.hap_index[s, h]]
                if not carried[i]:
                    continue
                without = carried.copy()
                without[i] = False
                haps = build_haplotypes(gene.reference, gene.region_start, pos, ref, alt, np.stack([carried, without]))
                seqs = [cut_window(x.sequence, x.offset_of(gene.tss), gene.strand, gene.window) for x in haps]
                _, mean = embedder.compute(seqs)
                mean = mean.astype(np.float16).astype(np.float64)  # stored precision
                per_hap.append(float((mean[0] - mean[1]) @ est.coef_))
            if per_hap:
                effects.append(np.mean(per_hap))
        assert len(effects) == row.n_carriers
        assert row.mean_effect == pytest.approx(np.mean(effects), rel=1e-4, abs=1e-6)
        checked += 1
    assert checked >= 1
    # the swapped haplotypes went through the study's embedding cache
    assert list((Path(embedder.cache.root) / "extra").glob("*.zarr"))
