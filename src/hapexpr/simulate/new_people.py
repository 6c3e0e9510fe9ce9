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

from hapexpr.simulate import writers
from hapexpr.simulate.variants import Variants, carried

if TYPE_CHECKING:  # cohort.py imports this module
    from hapexpr.simulate.cohort import Cohort

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
    for truth in cohort.truths:
        g = np.asarray(truth.genetic if truth.genetic is not None else np.zeros(len(cohort.samples)))
        change = _genetic_change(truth, g, hap, reverted)
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


def _genetic_change(truth, g: np.ndarray, haplotypes: np.ndarray, reverted: np.ndarray) -> np.ndarray:
    """(people,) change of a gene's genetic value when ``haplotypes`` become ``reverted``, by the
    gene's own :class:`~hapexpr.simulate.phenotypes.GeneticModel`; a model that does not
    reproduce the simulated g is an error, so a change to the architectures cannot silently give
    wrong true changes."""
    if not truth.model.rules:
        if np.any(g):
            raise RuntimeError(f"gene {truth.gene.gene_id}: a genetic value without a model to recompute it")
        return np.zeros_like(g)
    now = truth.model(haplotypes)
    if not np.allclose(now, g, atol=1e-6 * max(1.0, float(np.abs(g).max()))):
        raise RuntimeError(
            f"gene {truth.gene.gene_id}: its GeneticModel does not reproduce the simulated genetic value "
            f"(architecture {truth.architecture})"
        )
    return truth.model(reverted) - now


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
