"""``simulate --new-people N``: people outside the study, drawn from the same population.

The study and the new people come from ONE simulation of ``individuals + N`` people (one msprime
genealogy per region, one genetic architecture, one set of causal variants), so they share the
common variants and each group carries its own rare and private ones. The first ``individuals``
people in file order are the study (their files are the usual cohort), the last N the new people:
their VCF, and their true genetic value per gene with and without the alleles no study person
carries, so a benchmark knows the true effect of those unseen alleles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hapexpr.simulate import architectures, motifs, writers
from hapexpr.simulate.variants import Variants, carried

if TYPE_CHECKING:  # cohort.py imports this module
    from hapexpr.simulate.cohort import Cohort

LINEAR_ROLES = ("additive", "rare", "distal")
"""Roles whose share of g is the sum of per-ALT-allele effects (truth_variants.tsv ``effect``)."""

GENETIC_FILE = "new_people_genetic.tsv"
GENETIC_COLUMNS = ("gene_id", "sample_id", "genetic_value", "genetic_value_reverted")


@dataclass(frozen=True)
class NewPeople:
    """The people outside the study. ``variants`` holds every record of the cohort (the study's
    row order) with only the new people's (variants, people * 2) haplotypes; ``genetic`` and
    ``genetic_reverted`` are (genes, people): the true genetic value g (expression units, on the
    scale of the study's g) and g with every ALT allele no study person carries set to REF."""

    samples: list[str]
    variants: Variants
    genetic: np.ndarray
    genetic_reverted: np.ndarray


def split_new_people(cohort: Cohort, n_new: int) -> tuple[Cohort, NewPeople]:
    """(the study: the first ``individuals - n_new`` people of a cohort simulated with
    ``individuals`` people, the rest as :class:`NewPeople`). truth.tsv figures (h2) stay those
    of the whole simulated population; the study keeps every variant row (its VCF lists only
    those a study person carries)."""
    n = len(cohort.samples) - n_new
    if n_new < 1 or n < 4:
        raise ValueError(f"need 1 <= new people and at least 4 study people, got {n_new} of {len(cohort.samples)}")
    hap = cohort.variants.haplotypes
    study_vars = replace(cohort.variants, haplotypes=hap[:, : 2 * n])
    new_vars = replace(cohort.variants, haplotypes=hap[:, 2 * n :])
    unseen = ~study_vars.haplotypes.any(axis=1)  # ALT alleles no study person carries
    reverted = hap.copy()
    reverted[unseen] = 0
    genetic, genetic_reverted = [], []
    for i, truth in enumerate(cohort.truths):
        g = np.asarray(truth.genetic if truth.genetic is not None else np.zeros(len(cohort.samples)))
        change = _genetic_change(cohort, i, g, reverted)
        genetic.append(g[n:])
        genetic_reverted.append(g[n:] + change[n:])
    study = replace(
        cohort,
        config=replace(cohort.config, individuals=n),
        samples=cohort.samples[:n],
        populations=cohort.populations[:n],
        sex=cohort.sex[:n],
        pcs=cohort.pcs[:, :n],
        variants=study_vars,
        expression=cohort.expression[:, :n],
        truths=[replace(t, genetic=None if t.genetic is None else t.genetic[:n]) for t in cohort.truths],
    )
    new = NewPeople(cohort.samples[n:], new_vars, np.array(genetic), np.array(genetic_reverted))
    return study, new


def _genetic_change(cohort: Cohort, gene_index: int, g: np.ndarray, reverted: np.ndarray) -> np.ndarray:
    """(people,) change of gene ``gene_index``'s genetic value when the haplotypes become ``reverted``.

    g is rebuilt from the truth entries (linear roles and cis pairs exactly, in expression units)
    plus k x the motif score of docs/simulate.md (k, the motif component's scale, is the least-
    squares factor of what is left); a rebuild that does not reproduce g is an error, so a change
    to the architectures cannot silently give wrong true changes.
    """
    truth = cohort.truths[gene_index]
    if not truth.entries and not np.any(g):
        return np.zeros_like(g)
    now = _explained(cohort, gene_index, cohort.variants.haplotypes)
    after = _explained(cohort, gene_index, reverted)
    linear_now = now["linear"] - now["linear"].mean()
    k = 0.0
    if "motif" in now:
        score = now["motif"] - now["motif"].mean()
        k = float(score @ (g - linear_now) / (score @ score)) if score @ score > 0 else 0.0
        linear_now = linear_now + k * score
    if not np.allclose(linear_now, g, atol=1e-6 * max(1.0, float(np.abs(g).max()))):
        raise RuntimeError(
            f"gene {truth.gene.gene_id}: the genetic value cannot be rebuilt from its truth entries "
            f"(architecture {truth.architecture}); --new-people needs hapexpr.simulate.new_people updated"
        )
    change = after["linear"] - now["linear"]
    if "motif" in now:
        change = change + k * (after["motif"] - now["motif"])
    return change


def _explained(cohort: Cohort, gene_index: int, haplotypes: np.ndarray) -> dict[str, np.ndarray]:
    """(people,) uncentred parts of a gene's g from (variants, people * 2) haplotypes: ``linear``
    (linear roles and cis pairs, expression units) and, when the gene has a motif rule,
    ``motif`` (the unscaled motif score of both haplotypes)."""
    truth = cohort.truths[gene_index]
    dosage = (haplotypes[:, 0::2] + haplotypes[:, 1::2]).astype(np.float64)
    linear = np.zeros(dosage.shape[1])
    for e in truth.entries:
        if e.role in LINEAR_ROLES:
            linear += e.effect * dosage[e.row]
    linear += architectures.cis_pair_values(haplotypes, truth.entries)
    out = {"linear": linear}
    if truth.architecture in ("motif", "mixed") and cohort.variant_gene is not None:
        gene = truth.gene
        rows = np.flatnonzero((cohort.variant_gene == gene_index) & ~cohort.variant_distal)
        rows = rows[np.abs(cohort.variants.pos[rows] - gene.tss) <= cohort.config.window // 2]
        c, _, _ = architectures.haplotype_contributions(
            gene=gene,
            variants=replace(cohort.variants, haplotypes=haplotypes),
            rows=rows,
            reference=cohort.reference[gene.chrom],
            radius=min(motifs.RADIUS, cohort.config.window // 2),
        )
        out["motif"] = c[0::2] + c[1::2]
    return out


def write_new_people(new: NewPeople, study: Cohort, out: Path) -> None:
    """``new_people.vcf.gz`` (+ .tbi; records a new person carries, same contigs and REF as the
    study) and ``new_people_genetic.tsv`` (docs/simulate.md)."""
    out.mkdir(parents=True, exist_ok=True)
    writers.write_bgzf(
        out / "new_people.vcf.gz",
        writers.vcf_lines(
            carried(new.variants), samples=new.samples, contigs=study.layout.contigs, seed=study.config.seed
        ),
        tbi_preset="vcf",
    )
    lines = ["\t".join(GENETIC_COLUMNS) + "\n"]
    for gene, g, g_rev in zip(study.layout.genes, new.genetic, new.genetic_reverted):
        lines += [f"{gene.gene_id}\t{s}\t{a:.8g}\t{b:.8g}\n" for s, a, b in zip(new.samples, g, g_rev)]
    writers.write_text(out / GENETIC_FILE, lines)
