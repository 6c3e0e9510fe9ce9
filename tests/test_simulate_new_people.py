"""`hapexpr simulate --new-people N`: people outside the study from the same population.

Oracles: bcftools (samples, contigs, REF against the FASTA, records), and for the additive
architecture the true change rebuilt by hand from truth_variants.tsv effects and the new VCF.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapexpr.simulate import simulate_cohort
from hapexpr.simulate.new_people import GENETIC_COLUMNS

needs_bcftools = pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
ARGS = {"individuals": 40, "genes": 4, "window": 3000, "seed": 5}


def _bcftools(*args: str) -> str:
    return subprocess.run(["bcftools", *args], check=True, capture_output=True, text=True).stdout


def _records(vcf: Path) -> pd.DataFrame:
    rows = [line.split("\t") for line in _bcftools("query", "-f", "%ID\t%AC\t[%GT\t]\n", str(vcf)).splitlines()]
    df = pd.DataFrame({"id": [r[0] for r in rows], "ac": [int(r[1]) for r in rows]})
    df["dosage"] = [np.array([sum(int(a) for a in gt.split("|")) for gt in r[2:-1]]) for r in rows]
    return df.set_index("id")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for arch in ("additive", "motif", "rare"):
        out[arch] = tmp_path_factory.mktemp("newpeople") / arch
        # rare: more genes, so that some rare causal allele is carried only by a new person
        genes = 10 if arch == "rare" else ARGS["genes"]
        simulate_cohort(out[arch], **{**ARGS, "genes": genes}, architecture=arch, new_people=12)
    return out


@needs_bcftools
@pytest.mark.parametrize("arch", ["additive", "motif", "rare"])
def test_new_people_are_outside_the_study_on_the_same_reference(cohorts, arch):
    d = cohorts[arch]
    study = _bcftools("query", "-l", str(d / "genotypes.vcf.gz")).split()
    new = _bcftools("query", "-l", str(d / "new_people.vcf.gz")).split()
    assert len(study) == 40 and len(new) == 12 and not set(study) & set(new)
    expression = pd.read_csv(d / "expression.bed.gz", sep="\t")
    assert list(expression.columns[4:]) == study
    assert (d / "new_people.vcf.gz.tbi").exists()

    def contigs(vcf):
        return [x for x in _bcftools("view", "-h", str(vcf)).splitlines() if x.startswith("##contig")]

    assert contigs(d / "new_people.vcf.gz") == contigs(d / "genotypes.vcf.gz")
    # REF matches the study's reference (bcftools norm fails on a mismatch with --check-ref e)
    _bcftools(
        "norm", "--check-ref", "e", "-f", str(d / "reference.fa"), "-o", "/dev/null", str(d / "new_people.vcf.gz")
    )
    s, n = _records(d / "genotypes.vcf.gz"), _records(d / "new_people.vcf.gz")
    # each VCF lists only what its people carry; new people share common variants and carry their own
    assert (s["ac"] > 0).all() and (n["ac"] > 0).all()
    assert n.index.isin(s.index).sum() > 0.5 * len(n)
    assert (~n.index.isin(s.index)).sum() > 0


@needs_bcftools
@pytest.mark.parametrize("arch", ["additive", "rare"])
def test_true_change_of_unseen_alleles_is_minus_their_effects(cohorts, arch):
    d = cohorts[arch]
    genetic = pd.read_csv(d / "new_people_genetic.tsv", sep="\t")
    assert tuple(genetic.columns) == GENETIC_COLUMNS
    people = _bcftools("query", "-l", str(d / "new_people.vcf.gz")).split()
    genes = pd.read_csv(d / "truth.tsv", sep="\t")["gene_id"].tolist()
    assert len(genetic) == len(genes) * len(people)
    s, n = _records(d / "genotypes.vcf.gz"), _records(d / "new_people.vcf.gz")
    unseen = n[~n.index.isin(s.index)]
    effects = pd.read_csv(d / "truth_variants.tsv", sep="\t")
    nonzero = 0
    for gene in genes:
        expected = np.zeros(len(people))
        for _, e in effects[effects["gene_id"] == gene].iterrows():
            if e["variant_id"] in unseen.index:  # reverting an unseen ALT allele removes its effect
                expected -= e["effect"] * unseen.loc[e["variant_id"], "dosage"]
        got = genetic[genetic["gene_id"] == gene].set_index("sample_id").loc[people]
        change = (got["genetic_value_reverted"] - got["genetic_value"]).to_numpy()
        np.testing.assert_allclose(change, expected, rtol=1e-5, atol=1e-5)  # effects written to 6 digits
        nonzero += int(np.count_nonzero(expected))
    if arch == "rare":  # causal alleles below 1%: some are carried only by new people
        assert nonzero > 0


@needs_bcftools
def test_motif_unseen_alleles_change_the_genetic_value_only_of_their_carriers(cohorts):
    d = cohorts["motif"]
    genetic = pd.read_csv(d / "new_people_genetic.tsv", sep="\t")
    s, n = _records(d / "genotypes.vcf.gz"), _records(d / "new_people.vcf.gz")
    unseen = n[~n.index.isin(s.index)]
    carriers = np.stack(unseen["dosage"].to_list()).sum(axis=0) > 0 if len(unseen) else np.zeros(12, bool)
    people = _bcftools("query", "-l", str(d / "new_people.vcf.gz")).split()
    changed = np.zeros(len(people), bool)
    for _, got in genetic.groupby("gene_id"):
        got = got.set_index("sample_id").loc[people]
        changed |= ~np.isclose(got["genetic_value_reverted"], got["genetic_value"], atol=1e-9)
    assert not (changed & ~carriers).any()


def test_without_new_people_nothing_new_is_written(tmp_path):
    simulate_cohort(tmp_path / "c", individuals=10, genes=1, window=1000, seed=1)
    assert not (tmp_path / "c" / "new_people.vcf.gz").exists()
