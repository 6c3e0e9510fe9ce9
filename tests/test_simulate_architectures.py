"""`hapexpr simulate --architecture`: each genetic architecture's defining property.

Oracles: sha256 of files written by the simulator before architectures existed (additive
default), a motif scorer written here from the documented rule (docs/simulate.md), phased
genotypes read back from the VCF by bcftools, and `hapexpr prepare` for every architecture.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_args

from hapexpr.errors import InputError
from hapexpr.prepare import prepare_study
from hapexpr.simulate import SimulationConfig, architectures, motifs, simulate, simulate_cohort, write_cohort
from hapexpr.simulate.cohort import _h2_targets
from hapexpr.study import Study

TINY = {"individuals": 80, "genes": 4, "window": 4000, "seed": 2}
NEW = ("motif", "motif-grammar", "cis-interaction", "rare", "distal", "mixed")
needs_bcftools = pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")

# sha256 of `simulate_cohort(out, individuals=30, genes=3, window=1000, seed=7)` computed with the
# simulator as it was before --architecture (commit 95115ac; msprime 1.4.4, pysam's htslib).
BEFORE = {
    "covariates.tsv": "9940f5792c0a83f030b26c0bfca8b54fa6f1866c1292dc9cced0832a8fe19697",
    "expression.bed.gz": "47d743d1fd3f1ef312ac1a1960cde1ec4591b4626a6c2b9205e2604a9a76c717",
    "genes.gtf": "af050b6a7f5e9e897c9b52aad0fef1a2265f7a9f1bcbd2a612c30519ee4e391c",
    "genotypes.vcf.gz": "fa60b814eff5f6337e547b49aa20581d14c9d078af3ba7ca7e6ae59b3906f37e",
    "genotypes.vcf.gz.tbi": "5f4f13127a46e5574cf80341f06acb627a9dde6c480e511de02b61aeb3a5a8fe",
    "reference.fa": "1477e1c2ebc0cd5ae71f3cd75913062bb8a7d6af62db204ff429ab0f7c850ba6",
    "reference.fa.fai": "5f54733498f8c4e055f02c53a7708808a239dcff86b2f79bd1c8639cbf004414",
    "samples.tsv": "deab0b8513b708363794684198332dfc2dede6b2b2e638bcf5cff332c3846f2e",
    "truth.tsv": "2c3808aec00beaefb3ae70f340ca81429a262c33697125e51fc578695990d403",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict:
    """architecture -> (directory, in-memory Cohort), built once for this module."""
    built = {}
    for arch in NEW:
        cohort = simulate(SimulationConfig(**TINY, architecture=arch))
        out = tmp_path_factory.mktemp("arch") / arch
        write_cohort(cohort, out)
        built[arch] = (out, cohort)
    return built


@pytest.fixture(scope="module")
def cis(tmp_path_factory) -> tuple[Path, object]:
    """A cis-interaction cohort of realistic size (pairs need >= 5 double heterozygotes in cis and
    in trans, which 80 people rarely give): (directory, Cohort)."""
    cohort = simulate(
        SimulationConfig(individuals=290, genes=8, window=6000, seed=4, h2=0.3, architecture="cis-interaction")
    )
    out = tmp_path_factory.mktemp("cis") / "cohort"
    write_cohort(cohort, out)
    return out, cohort


def _truth_variants(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "truth_variants.tsv", sep="\t", dtype={"gene_id": str})


def test_additive_default_is_byte_identical_to_before(tmp_path):
    out = tmp_path / "c"
    simulate_cohort(out, individuals=30, genes=3, window=1000, seed=7)
    for name, digest in BEFORE.items():
        data = (out / name).read_bytes()
        if name == "truth.tsv":
            # The only change: new last columns, "architecture" and the two measured shares.
            lines = data.decode().splitlines(keepends=True)
            assert all(line.rstrip("\n").rsplit("\t", 3)[1] in ("architecture", "additive") for line in lines)
            data = "".join(line.rstrip("\n").rsplit("\t", 3)[0] + "\n" for line in lines).encode()
        assert _sha(data) == digest, name
    variants = _truth_variants(out)
    truth = pd.read_csv(out / "truth.tsv", sep="\t", keep_default_na=False)
    assert set(variants.role) == {"additive"} and len(variants) == truth.n_causal.sum()


@pytest.mark.parametrize("arch", NEW)
def test_same_seed_same_bytes(arch, cohorts, tmp_path):
    first, _ = cohorts[arch]
    again = tmp_path / "again"
    simulate_cohort(again, **TINY, architecture=arch)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    truth = pd.read_csv(first / "truth.tsv", sep="\t", keep_default_na=False)
    assert (truth.architecture == arch).all()
    other = simulate(SimulationConfig(**{**TINY, "seed": TINY["seed"] + 1}, architecture=arch))
    assert not np.array_equal(other.expression, cohorts[arch][1].expression)


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(InputError, match="architecture"):
        simulate_cohort(tmp_path / "x", individuals=10, genes=1, architecture="epistatic")
    with pytest.raises(InputError, match="distal"):
        simulate_cohort(tmp_path / "z", individuals=10, genes=1, window=2_000_000, architecture="distal")
    with pytest.raises(InputError, match="h2-distribution"):
        simulate_cohort(tmp_path / "y", individuals=10, genes=1, h2_distribution="normal")


# --- cis-interaction -------------------------------------------------------------------------


def test_cis_interaction_phase_swap_changes_the_truth(cis):
    out, cohort = cis
    pairs = [(t, e) for t in cohort.truths for e in t.entries if e.role == "cis-interaction" and e.row < e.partner]
    assert pairs, "no gene got a cis-interaction pair"
    truth, pair = pairs[0]
    # The recorded genetic value is exactly gamma * (haplotypes carrying both ALT alleles).
    g = architectures.cis_pair_values(cohort.variants.haplotypes, truth.entries)
    assert np.allclose(g - g.mean(), truth.genetic, atol=1e-10)
    # Person 0 with both ALT alleles on haplotype 1 (cis), then one moved to haplotype 2 (trans):
    # the same dosages, a different truth.
    hap = cohort.variants.haplotypes.copy()
    a, b = pair.row, pair.partner
    hap[[a, b], 0:2] = [[1, 0], [1, 0]]
    cis = architectures.cis_pair_values(hap, truth.entries)[0]
    hap[[a, b], 0:2] = [[1, 0], [0, 1]]
    trans = architectures.cis_pair_values(hap, truth.entries)[0]
    assert cis - trans == pytest.approx(pair.effect)
    assert abs(pair.effect) > 0
    # The file says the same: both members listed, each naming the other, with gamma.
    table = _truth_variants(out)
    ids = cohort.variants.ids
    row_a = table[(table.variant_id == ids[a]) & (table.partner == ids[b])]
    row_b = table[(table.variant_id == ids[b]) & (table.partner == ids[a])]
    assert len(row_a) == 1 and len(row_b) == 1
    assert float(row_a.effect.iloc[0]) == pytest.approx(pair.effect, rel=1e-5) == float(row_b.effect.iloc[0])


def test_cis_interaction_is_invisible_to_unphased_dosages(cis):
    """Double heterozygotes in cis and in trans exist for every pair, have equal dosages at it,
    and differ in truth by exactly gamma."""
    _, cohort = cis
    hap = cohort.variants.haplotypes
    shown = 0
    for t in cohort.truths:
        for e in t.entries:
            if e.role != "cis-interaction" or e.row > e.partner:
                continue
            h = hap.astype(bool)
            double_het = (h[e.row, 0::2] ^ h[e.row, 1::2]) & (h[e.partner, 0::2] ^ h[e.partner, 1::2])
            both = h[e.row] & h[e.partner]
            in_cis = double_het & (both[0::2] | both[1::2])
            in_trans = double_het & ~in_cis
            assert in_cis.sum() >= architectures.MIN_PHASE_PEOPLE <= in_trans.sum()
            if in_cis.any() and in_trans.any():
                # Remove every other pair's part so the two groups differ by this pair only.
                others = [x for x in t.entries if {x.row, x.partner} != {e.row, e.partner}]
                only = architectures.cis_pair_values(hap, t.entries) - architectures.cis_pair_values(hap, others)
                assert np.allclose(only[in_cis], e.effect) and np.allclose(only[in_trans], 0.0)
                shown += 1
    assert shown >= 1


def _haplotypes(*rows: str) -> np.ndarray:
    """(variants, people * 2) int8 from strings of 0/1, one per variant."""
    return np.array([[int(c) for c in r] for r in rows], dtype=np.int8)


def test_nested_disjoint_rare_and_additive_pairs_are_rejected():
    # Four people, each column pair one person. b's ALT always rides with a's: nested.
    assert architectures.pair_rejection(_haplotypes("11001100", "10001000"), 0, 1) == "nested"
    assert architectures.pair_rejection(_haplotypes("11000000", "00110000"), 0, 1) == "never on one haplotype"
    # Five cis and five trans double heterozygotes among 60 people, everyone else carrying neither
    # ALT allele: phase is all that varies, so the pair is accepted.
    a = "10" * 10  # ten people with a's ALT on haplotype 1
    b = "".join("10" if i < 5 else "01" for i in range(10))  # b's with it (cis) for five, opposite for five
    pad = "00" * 50
    assert architectures.pair_rejection(_haplotypes(a + pad, b + pad), 0, 1) is None
    # Only four people in trans: too few to learn phase from.
    b4 = "".join("10" if i < 6 else "01" for i in range(10))
    assert "double heterozygotes" in architectures.pair_rejection(_haplotypes(a + pad, b4 + pad), 0, 1)
    # The same cis/trans people, but 40 more who carry both ALT alleles on both haplotypes:
    # the homozygotes' value, which dosages explain, swamps the phase-dependent part.
    hom = "11" * 40
    reason = architectures.pair_rejection(_haplotypes(a + hom + "00" * 10, b + hom + "00" * 10), 0, 1)
    assert reason is not None and reason.startswith("effectively additive")


def _vcf_dosages(vcf: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """ALT dosages per variant id, read with cyvcf2 (an oracle independent of the simulator)."""
    from cyvcf2 import VCF

    wanted, out = set(ids), {}
    for record in VCF(str(vcf)):
        if record.ID in wanted:
            gt = np.asarray(record.genotype.array())[:, :2]
            out[record.ID] = gt.sum(axis=1).astype(float)
    return out


@pytest.mark.parametrize("which", ["cis", "additive", "motif", "motif-grammar", "mixed"])
def test_truth_shares_match_an_independent_regression(which, cis, cohorts, tmp_path):
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import PolynomialFeatures

    if which == "cis":
        out = cis[0]
    elif which == "additive":
        out = tmp_path / "additive"
        simulate_cohort(out, individuals=80, genes=4, window=4000, seed=3)
    else:
        out = cohorts[which][0]
    truth = pd.read_csv(out / "truth.tsv", sep="\t", keep_default_na=False, dtype={"gene_id": str})
    genetic = pd.read_csv(out / "truth_genetic.tsv", sep="\t", dtype={"gene_id": str, "sample_id": str})
    samples = pd.read_csv(out / "samples.tsv", sep="\t", dtype=str)["sample_id"].tolist()
    ids = [v for row in truth["causal_variants"] for v in row.split(",") if v]
    dosage = _vcf_dosages(out / "genotypes.vcf.gz", ids)
    checked = 0
    for _, row in truth.iterrows():
        g = genetic[genetic["gene_id"] == row["gene_id"]].set_index("sample_id").loc[samples, "genetic_value"]
        g = g.to_numpy()
        if row["h2"] == 0:
            assert np.all(g == 0) and np.isnan(float(row["additive_share"])) and np.isnan(float(row["phase_share"]))
            continue
        assert g.var() == pytest.approx(row["h2"], rel=1e-5)
        x = np.column_stack([dosage[v] for v in row["causal_variants"].split(",")])
        additive = LinearRegression().fit(x, g).score(x, g)
        quad = PolynomialFeatures(degree=2, include_bias=False).fit_transform(x)
        phase = 1 - LinearRegression().fit(quad, g).score(quad, g)
        assert float(row["additive_share"]) == pytest.approx(additive, abs=1e-4)
        assert float(row["phase_share"]) == pytest.approx(max(phase, 0.0), abs=1e-4)
        checked += 1
    assert checked >= 1
    if which == "additive":
        assert np.allclose(truth.loc[truth.h2 > 0, "additive_share"].astype(float), 1.0, atol=1e-6)
    if which == "cis":
        # Every gene carries a pair whose phase matters: most of its variance is invisible to
        # dosages and their products.
        phase = truth.loc[truth.h2 > 0, "phase_share"].astype(float)
        assert len(phase) >= 2 and phase.mean() >= 0.3 and (phase > 0.2).all()


@pytest.mark.parametrize("which", ["cis", "motif", "motif-grammar", "mixed"])
def test_genetic_model_gives_the_truth_on_any_people(which, cis, cohorts):
    """truth.model (what a writer for people outside the study calls) reproduces the cohort's
    genetic values, and on a subset of people the same values (no re-centring)."""
    cohort = cis[1] if which == "cis" else cohorts[which][1]
    hap = cohort.variants.haplotypes
    some = [3, 0, 7]
    columns = np.column_stack([2 * np.array(some), 2 * np.array(some) + 1]).ravel()
    for t in cohort.truths:
        if t.h2 > 0:
            assert np.allclose(t.model(hap), t.genetic, atol=1e-9)
            assert np.allclose(t.model(hap[:, columns]), t.genetic[some], atol=1e-9)


# --- motif ------------------------------------------------------------------------------------

# The documented rule, written out independently of hapexpr.simulate.motifs.
DOC_MOTIFS = [("TGASTCAB", 1.0), ("RRCCAATSR", 0.6), ("GGGGCGGGGC", 0.8), ("WACAGCTGTW", -0.8)]
DOC_CODES = {
    "A": "A",
    "C": "C",
    "G": "G",
    "T": "T",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
    "N": "ACGT",
}
DOC_P = {1: (0.85, 0.05), 2: (0.45, 0.05), 3: (0.30, 0.10), 4: (0.25, 0.25)}


def _doc_pwm(consensus: str) -> list[dict[str, float]]:
    rows = []
    for letter in consensus:
        bases = DOC_CODES[letter]
        p_in, p_out = DOC_P[len(bases)]
        rows.append({b: (p_in if b in bases else p_out) for b in "ACGT"})
    return rows


def _naive_contribution(seq: str, tss_index: int) -> float:
    total = 0.0
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    for consensus, activity in DOC_MOTIFS:
        pwm = _doc_pwm(consensus)
        length = len(pwm)
        best = sum(math.log2(max(row.values()) / 0.25) for row in pwm)
        for i in range(len(seq) - length + 1):
            word = seq[i : i + length]
            rc = "".join(comp[c] for c in reversed(word))
            weight = math.exp(-abs(i + (length - 1) / 2 - tss_index) / 200)
            for w in (word, rc):
                score = sum(math.log2(pwm[k][w[k]] / 0.25) for k in range(length))
                total += activity * weight / (1 + math.exp(-(score - (best - 3))))
    return total


def _promoter(cohort, gene) -> tuple[str, int, int]:
    radius = min(motifs.RADIUS, cohort.config.window // 2)
    start = max(1, gene.tss - radius)
    end = min(cohort.reference[gene.chrom].size, gene.tss + radius)
    return cohort.reference[gene.chrom][start - 1 : end].tobytes().decode(), start, gene.tss - start


def test_motif_scorer_matches_the_documented_rule_and_breaking_a_site_costs(cohorts):
    _, cohort = cohorts["motif"]
    gene = cohort.layout.genes[1]
    seq, start, tss_index = _promoter(cohort, gene)
    assert motifs.contribution(seq.encode(), tss_index) == pytest.approx(_naive_contribution(seq, tss_index), abs=1e-9)
    sites = cohort.planted[gene.index]
    assert sites, "nothing planted"
    activity = dict((m.name, m.activity) for m in motifs.MOTIF_SET)
    broken_any = 0
    for site in sites:
        motif = next(m for m in motifs.MOTIF_SET if m.name == site.motif)
        k = int(motif.strong_positions[0])
        offset = site.start - start + (k if site.strand == "+" else motif.length - 1 - k)
        planted_base = seq[offset]
        assert site.end - site.start + 1 == motif.length
        for new in "ACGT".replace(planted_base, ""):
            broken = seq[:offset] + new + seq[offset + 1 :]
            expected = _naive_contribution(broken, tss_index) - _naive_contribution(seq, tss_index)
            got = motifs.contribution(broken.encode(), tss_index) - motifs.contribution(seq.encode(), tss_index)
            assert got == pytest.approx(expected, abs=1e-9)
            # A strong-position mismatch moves the site from ~0.95 bound to ~0.25 at most.
            weight = math.exp(-abs((site.start + site.end) / 2 - gene.tss) / 200)
            if seq[site.start - start : site.end - start + 1] in (
                motif.best.decode(),
                motifs._revcomp(motif.best).decode(),
            ):
                assert np.sign(got) == -np.sign(activity[site.motif])
                assert abs(got) > 0.5 * abs(activity[site.motif]) * weight
                broken_any += 1
    assert broken_any > 0


def test_motif_genetic_value_follows_from_each_haplotype_sequence(cohorts):
    """truth.genetic = beta * (c(h1) + c(h2)) + const, with c computed here from the bases alone."""
    out, cohort = cohorts["motif"]
    table = _truth_variants(out)
    checked = 0
    for t in cohort.truths:
        if t.h2 == 0:
            continue
        gene = t.gene
        seq, start, tss_index = _promoter(cohort, gene)
        v = cohort.variants
        rows = np.flatnonzero((np.asarray(v.chrom) == gene.chrom) & (v.pos >= start) & (v.pos < start + len(seq)))
        snv = np.array([len(v.ref[r]) == 1 and len(v.alt[r]) == 1 for r in rows], dtype=bool)
        hap = v.haplotypes[rows]
        # People whose two promoter haplotypes carry SNVs only (so the TSS offset is unchanged).
        simple = ~(hap[~snv].astype(bool).any(axis=0)) if (~snv).any() else np.ones(hap.shape[1], bool)
        people = np.flatnonzero(simple[0::2] & simple[1::2])
        cache: dict[bytes, float] = {}

        def c_of(column: int) -> float:
            key = hap[:, column].tobytes()
            if key not in cache:
                s = list(seq)
                for r, carried in zip(rows.tolist(), hap[:, column].tolist()):
                    if carried and len(v.ref[r]) == 1 and len(v.alt[r]) == 1:
                        s[v.pos[r] - start] = v.alt[r]
                cache[key] = _naive_contribution("".join(s), tss_index)
            return cache[key]

        x = np.array([c_of(2 * j) + c_of(2 * j + 1) for j in people])
        if x.std() < 1e-6:
            continue
        design = np.column_stack([np.ones(x.size), x])
        coef, *_ = np.linalg.lstsq(design, t.genetic[people], rcond=None)
        assert np.abs(design @ coef - t.genetic[people]).max() < 1e-6 * max(1.0, np.abs(t.genetic).max())
        beta = coef[1]
        # Each listed SNV's effect = beta * (c(reference + this ALT) - c(reference)).
        ref_c = _naive_contribution(seq, tss_index)
        for _, row in table[
            (table.gene_id == gene.gene_id) & (table.role == "motif") & (table.type == "snv")
        ].iterrows():
            _, pos, ref, alt = row.variant_id.rsplit("_", 3)
            s = list(seq)
            s[int(pos) - start] = alt
            assert row.effect == pytest.approx(
                beta * (_naive_contribution("".join(s), tss_index) - ref_c), rel=1e-4, abs=1e-6
            )
        checked += 1
    assert checked >= 1


def _naive_grammar(seq: str, tss_index: int) -> float:
    """docs/simulate.md's motif-grammar rule, written out: AP1-like and CAAT-like sites count only
    as pairs with centres <= 40 bp apart, weighted by the AP1-like site's distance to the TSS."""
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}

    def occupancy(consensus: str) -> list[tuple[float, float]]:
        pwm = _doc_pwm(consensus)
        length = len(pwm)
        best = sum(math.log2(max(row.values()) / 0.25) for row in pwm)
        out = []
        for i in range(len(seq) - length + 1):
            word = seq[i : i + length]
            o = 0.0
            for w in (word, "".join(comp[c] for c in reversed(word))):
                score = sum(math.log2(pwm[k][w[k]] / 0.25) for k in range(length))
                o += 1 / (1 + math.exp(-(score - (best - 3))))
            out.append((i + (length - 1) / 2, o))
        return out

    a, b = occupancy("TGASTCAB"), occupancy("RRCCAATSR")
    p = 0.0
    for ca, oa in a:
        near = sum(ob for cb, ob in b if abs(ca - cb) <= 40)
        p += oa * math.exp(-abs(ca - tss_index) / 200) * near
    return p


def test_motif_grammar_follows_the_documented_rule_and_is_not_additive(cohorts):
    from hapexpr.simulate import grammar

    _, cohort = cohorts["motif-grammar"]
    gene = cohort.layout.genes[0]
    seq, _, tss_index = _promoter(cohort, gene)
    assert grammar.pair_activity(seq.encode(), tss_index) == pytest.approx(_naive_grammar(seq, tss_index), abs=1e-9)
    # One AP1-like / CAAT-like pair 20 bp apart at the TSS of a neutral background.
    rng = np.random.default_rng(0)
    background = "".join(rng.choice(list("ACGT"), size=400))
    ap1, caat = "TGACTCAC", "AACCAATCA"

    def build(first: str, second: str, gap: int = 20) -> str:
        middle = 200
        s = background[:middle] + first + background[middle + len(first) :]
        at = middle + gap
        return s[:at] + second + s[at + len(second) :]

    both = _naive_grammar(build(ap1, caat), 200)
    no_a = _naive_grammar(build("A" * 8, caat), 200)
    no_b = _naive_grammar(build(ap1, "G" * 9), 200)
    neither = _naive_grammar(build("A" * 8, "G" * 9), 200)
    far = _naive_grammar(build(ap1, caat, gap=120), 200)
    # One partner alone, or the two too far apart, leave only the background's faint sites.
    assert both > 1.0 and max(no_a, no_b, neither, far) < 0.1 * both
    # Epistasis on one haplotype: losing both partners costs about what losing either one costs,
    # far less than the sum an additive rule would give.
    assert (both - neither) < 0.6 * ((both - no_a) + (both - no_b))
    planted = {p.motif for sites in cohort.planted.values() for p in sites}
    assert planted == set(grammar.PARTNERS)
    # The person-level response: half-saturated at one reference promoter, flat near two.
    assert grammar.saturate(np.array([1.0]), 1.0)[0] == pytest.approx(0.5)
    dose = grammar.saturate(np.array([2.0, 1.5, 1.0]), 1.0)  # two intact copies, one pair lost on one, one copy
    assert dose[0] - dose[1] < dose[1] - dose[2]


def test_motifs_are_planted_on_segregating_sites(cohorts):
    out, cohort = cohorts["motif"]
    planted = pd.read_csv(out / "truth_motifs.tsv", sep="\t")
    assert planted.on_variant.sum() >= cohort.config.genes  # at least one hit site per gene on average
    v = cohort.variants
    for _, site in planted[planted.on_variant == 1].iterrows():
        inside = (np.asarray(v.chrom) == site.chrom) & (v.pos >= site.start - 1) & (v.pos <= site.end)
        assert inside.any(), f"planted site {site.motif} at {site.start} has no variant"
    assert (_truth_variants(out).role == "motif").sum() >= cohort.config.genes


# --- rare, distal, mixed ----------------------------------------------------------------------


def _vcf_alt_freq(vcf: Path) -> dict[str, float]:
    text = subprocess.run(
        ["bcftools", "query", "-f", "%ID[\t%GT]\n", str(vcf)], check=True, capture_output=True, text=True
    ).stdout
    freq = {}
    for line in text.splitlines():
        vid, *gts = line.split("\t")
        alleles = [int(a) for gt in gts for a in gt.split("|")]
        freq[vid] = sum(alleles) / len(alleles)
    return freq


@needs_bcftools
def test_rare_causal_alleles_are_below_one_percent(cohorts):
    out, _ = cohorts["rare"]
    table = _truth_variants(out)
    assert len(table) >= 2 and set(table.role) == {"rare"}
    freq = _vcf_alt_freq(out / "genotypes.vcf.gz")
    for vid in table.variant_id:
        assert 0 < freq[vid] < 0.01, vid
    truth = pd.read_csv(out / "truth.tsv", sep="\t", keep_default_na=False)
    # Large per-allele effects: the whole genetic variance sits on a handful of carriers.
    assert table.effect.abs().max() > 1.0 and (truth.h2 > 0).sum() >= 2


@needs_bcftools
def test_distal_causal_variants_lie_outside_the_window_within_1mb(cohorts):
    out, cohort = cohorts["distal"]
    table = _truth_variants(out)
    assert len(table) >= 2 and set(table.role) == {"distal"}
    freq = _vcf_alt_freq(out / "genotypes.vcf.gz")
    assert set(table.variant_id) <= set(freq)
    half = cohort.config.window // 2
    assert (table.tss_distance.abs() > half + cohort.config.margin).all()
    assert (table.tss_distance.abs() <= 1_000_000).all()
    positions = table.variant_id.str.rsplit("_", n=3).str[1].astype(int)
    tss = table.gene_id.map({g.gene_id: g.tss for g in cohort.layout.genes})
    assert ((positions - tss) == table.tss_distance).all()
    # Variation reaches far: some variant lies > 20 kb from every TSS.
    pos = cohort.variants.pos
    far = np.min(np.abs(pos[:, None] - np.array([g.tss for g in cohort.layout.genes])[None, :]), axis=1)
    assert far.max() > 20_000


@needs_bcftools
@pytest.mark.parametrize("arch", ["mixed", "motif", "distal"])
def test_reference_and_vcf_stay_consistent(arch, cohorts):
    """Planted motifs and distal blocks keep REF = reference, indels left-aligned, records sorted."""
    out, _ = cohorts[arch]
    vcf = out / "genotypes.vcf.gz"
    norm = subprocess.run(
        ["bcftools", "norm", "--check-ref", "e", "-f", str(out / "reference.fa"), "-Ou", "-o", "/dev/null", str(vcf)],
        capture_output=True,
        text=True,
    )
    assert norm.returncode == 0, norm.stderr
    total, split, realigned, skipped = map(int, re.search(r"(\d+)/(\d+)/(\d+)/(\d+)", norm.stderr).groups())
    assert total > 20 and (split, realigned, skipped) == (0, 0, 0)
    text = subprocess.run(
        ["bcftools", "query", "-f", "%CHROM\t%POS\n", str(vcf)], check=True, capture_output=True, text=True
    ).stdout
    df = pd.DataFrame([line.split("\t") for line in text.splitlines()], columns=["chrom", "pos"]).astype({"pos": int})
    for _, sub in df.groupby("chrom"):
        assert (np.diff(sub["pos"].to_numpy()) > 0).all()


def test_mixed_blends_the_roles_and_h2_is_exact(cohorts):
    out, cohort = cohorts["mixed"]
    roles = set(_truth_variants(out).role)
    assert {"additive", "motif", "distal"} <= roles
    for t in cohort.truths:
        if t.h2 > 0:
            assert t.genetic.var() == pytest.approx(t.h2, rel=1e-9)


def test_realistic_h2_distribution_median_about_0_1():
    config = SimulationConfig(genes=4000, h2_distribution="realistic")
    h2 = _h2_targets(config, np.random.default_rng(0))
    assert 0.08 < np.median(h2) < 0.12
    assert 0.15 < np.mean(h2 == 0) < 0.25
    assert h2.max() < 0.8 and np.mean(h2 > 0.3) < 0.1
    uniform = _h2_targets(SimulationConfig(genes=4000), np.random.default_rng(0))
    assert uniform[uniform > 0].min() >= 0.1 and np.median(uniform) > 0.2


def test_realistic_h2_reaches_the_truth_file(tmp_path):
    out = tmp_path / "c"
    simulate_cohort(out, individuals=30, genes=3, window=1000, seed=7, h2_distribution="realistic")
    old = pd.read_csv(Path(out / "truth.tsv"), sep="\t", keep_default_na=False)
    config = SimulationConfig(individuals=30, genes=3, window=1000, seed=7, h2_distribution="realistic")
    assert np.allclose(old.h2, [t.h2 for t in simulate(config).truths], atol=1e-6)


@pytest.mark.parametrize("arch", NEW)
def test_prepare_accepts_every_architecture(arch, cohorts, tmp_path):
    out, cohort = cohorts[arch]
    study = tmp_path / "study"
    prepare_study(**prepare_args(out, study))
    genes = Study.open(study).genes
    assert sorted(genes.gene_id) == sorted(g.gene_id for g in cohort.layout.genes)


def test_cli_architecture(tmp_path):
    from typer.testing import CliRunner

    from hapexpr.cli import app

    out = tmp_path / "cli"
    args = [
        "simulate",
        "--out",
        str(out),
        "--individuals",
        "30",
        "--genes",
        "2",
        "--window",
        "1000",
        "--architecture",
        "cis-interaction",
        "--h2-distribution",
        "realistic",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    truth = pd.read_csv(out / "truth.tsv", sep="\t", keep_default_na=False)
    assert (truth.architecture == "cis-interaction").all()
    bad = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "bad"), "--architecture", "nope"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "architecture" in bad.output
