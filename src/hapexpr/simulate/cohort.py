"""``simulate_cohort``: a synthetic cohort in the standard files a real study starts from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError
from hapexpr.simulate import architectures, motifs, writers
from hapexpr.simulate import new_people as new_people_module
from hapexpr.simulate.layout import Gene, Layout, layout_genes, place_blocks, random_reference
from hapexpr.simulate.phenotypes import GeneTruth, dosages, expression_from_genetic, genotype_pcs, simulate_expression
from hapexpr.simulate.shares import variance_shares
from hapexpr.simulate.variants import Variants, assign_alleles, carried, coalescent_haplotypes, concat, demography

POPULATIONS = ("AFR", "EUR", "EAS")


@dataclass(frozen=True)
class SimulationConfig:
    """Every knob of the simulation; the CLI exposes the first six."""

    individuals: int = 290
    genes: int = 20
    window: int = 6000
    h2: float | None = None
    seed: int = 0
    margin: int = 1000  # variation simulated this far beyond each side of the window (bp)
    indel_fraction: float = 0.10
    max_indel: int = 20
    n_pcs: int = 5
    null_fraction: float = 0.2  # share of genes with h2 = 0 when h2 is None
    h2_low: float = 0.1
    h2_high: float = 0.6
    population_shares: tuple[float, float, float] = (0.3, 0.5, 0.2)  # AFR, EUR, EAS
    covariate_sd: float = 0.3
    # Genome-wide loci for the ancestry PCs (like a genotyping array); not written to the VCF.
    background_loci: int = 40
    background_length: int = 50_000
    architecture: str = "additive"  # one of architectures.ARCHITECTURES
    h2_distribution: str = "uniform"  # or "realistic": 0 w.p. 0.2, else Beta(2, 12)
    realistic_null_fraction: float = 0.2
    realistic_beta: tuple[float, float] = (2.0, 12.0)
    # distal / mixed: genes 50-150 kb apart and DISTAL_BLOCKS sparse blocks per gene out to 1 Mb.
    distal_gap: tuple[int, int] = (50_000, 150_001)
    distal_blocks: int = 4
    distal_block_length: int = 2_000
    distal_min: int = 10_000
    distal_max: int = 1_000_000


@dataclass(frozen=True)
class Cohort:
    """The simulated cohort in memory. ``expression`` is (genes, samples); ``pcs`` (pcs, samples)."""

    config: SimulationConfig
    layout: Layout
    reference: dict[str, np.ndarray]
    samples: list[str]
    populations: list[str]
    sex: np.ndarray
    pcs: np.ndarray
    variants: Variants
    expression: np.ndarray
    truths: list[GeneTruth]
    planted: dict[int, list[motifs.PlantedMotif]] | None = None  # gene index -> planted motif sites
    variant_gene: np.ndarray | None = None  # (variants,) index of the gene whose region holds each variant
    variant_distal: np.ndarray | None = None  # (variants,) True for variants of a distal block


def _population_counts(n: int, shares: tuple[float, ...]) -> list[int]:
    """Split n individuals by ``shares`` (largest remainders), every deme getting at least one if n allows."""
    raw = np.asarray(shares) * n / sum(shares)
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(len(counts)):
        if counts[i] == 0 and counts.max() > 1:
            counts[counts.argmax()] -= 1
            counts[i] += 1
    return counts.tolist()


def _validate(config: SimulationConfig) -> None:
    problems = []
    if config.individuals < 4:
        problems.append(f"--individuals must be at least 4 (got {config.individuals})")
    if config.genes < 1:
        problems.append(f"--genes must be at least 1 (got {config.genes})")
    if config.window < 100:
        problems.append(f"--window must be at least 100 bp (got {config.window})")
    if config.h2 is not None and not 0.0 <= config.h2 <= 1.0:
        problems.append(f"--h2 must lie between 0 and 1 (got {config.h2})")
    if config.architecture not in architectures.ARCHITECTURES:
        problems.append(
            f"--architecture must be one of {', '.join(architectures.ARCHITECTURES)} (got {config.architecture!r})"
        )
    reach = config.window // 2 + config.margin + config.distal_block_length
    if architectures.uses_distal(config.architecture) and reach >= config.distal_max - config.distal_block_length:
        problems.append(f"--window {config.window} leaves no room for distal variants within {config.distal_max:,} bp")
    if config.h2_distribution not in ("uniform", "realistic"):
        problems.append(f"--h2-distribution must be uniform or realistic (got {config.h2_distribution!r})")
    if problems:
        raise InputError("; ".join(problems), hint="fix the option and run the command again")


def simulate(config: SimulationConfig) -> Cohort:
    """Run the whole simulation in memory (deterministic in ``config.seed``)."""
    _validate(config)
    # The first six streams are those of the original (additive) simulator, in the same order, so
    # the default architecture gives the same bytes; the others serve only the new architectures.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)]
    layout_rng, reference_rng, coalescent_rng, allele_rng, pheno_rng, background_rng = streams[:6]
    motif_rng, distal_rng, architecture_rng = streams[6:]
    arch = config.architecture

    gap = config.distal_gap if architectures.uses_distal(arch) else (2_000, 10_001)
    layout = layout_genes(n_genes=config.genes, window=config.window, margin=config.margin, rng=layout_rng, gap=gap)
    reference = {name: random_reference(length, rng=reference_rng) for name, length in layout.contigs.items()}

    counts = _population_counts(config.individuals, config.population_shares)
    sample_sets = {p: c for p, c in zip(POPULATIONS, counts) if c > 0}
    msprime_pops = [p for p, c in sample_sets.items() for _ in range(c)]
    # Shuffle people so that file order says nothing about ancestry (as in real cohorts).
    order = pheno_rng.permutation(config.individuals)
    columns = np.column_stack([2 * order, 2 * order + 1]).ravel()
    populations = [msprime_pops[i] for i in order.tolist()]
    width = max(4, len(str(config.individuals)))
    samples = [f"S{j + 1:0{width}d}" for j in range(config.individuals)]

    model = demography()
    seeds = coalescent_rng.integers(1, 2**31 - 1, size=config.genes)
    parts: list[tuple[int, Variants, bool]] = []  # (gene index, records, from a distal block)
    planted: dict[int, list[motifs.PlantedMotif]] = {}
    for gene, seed in zip(layout.genes, seeds.tolist()):
        offsets, haplotypes = coalescent_haplotypes(
            length=gene.region_end - gene.region_start + 1, samples=sample_sets, model=model, seed=seed
        )
        if architectures.uses_motifs(arch):
            freq = haplotypes.mean(axis=1)
            planted[gene.index] = architectures.planter(arch)(
                reference=reference[gene.chrom],
                tss=gene.tss,
                radius=min(motifs.RADIUS, config.window // 2),
                site_positions=offsets + gene.region_start,
                site_maf=np.minimum(freq, 1 - freq),
                rng=motif_rng,
            )
        parts.append(
            (
                gene.index,
                assign_alleles(
                    gene=gene,
                    offsets=offsets,
                    haplotypes=haplotypes[:, columns],
                    reference=reference[gene.chrom],
                    rng=allele_rng,
                    indel_fraction=config.indel_fraction,
                    max_indel=config.max_indel,
                ),
                False,
            )
        )
    if architectures.uses_distal(arch):
        parts += _distal_parts(config, layout, reference, sample_sets, columns, model, distal_rng)
    contig_order = {name: k for k, name in enumerate(layout.contigs)}
    parts.sort(key=lambda p: (contig_order[p[1].chrom[0]], int(p[1].pos[0])) if len(p[1]) else (-1, 0))
    variants = concat([p[1] for p in parts], 2 * config.individuals)
    variant_gene = np.concatenate([np.full(len(p[1]), p[0]) for p in parts]) if parts else np.zeros(0, int)
    variant_distal = np.concatenate([np.full(len(p[1]), p[2]) for p in parts]) if parts else np.zeros(0, bool)

    dosage = dosages(variants.haplotypes)
    sex = pheno_rng.integers(0, 2, size=config.individuals)
    pcs = _ancestry_pcs(config, sample_sets, columns, model, background_rng)
    covariates = np.vstack([sex[None, :].astype(float), pcs])
    h2_targets = _h2_targets(config, pheno_rng)
    expression = np.zeros((config.genes, config.individuals))
    truths: list[GeneTruth] = []
    for i, gene in enumerate(layout.genes):
        window_rows = np.flatnonzero((variant_gene == i) & ~variant_distal)
        if arch == "additive":
            expression[i], truth = simulate_expression(
                gene=gene,
                variants=variants,
                rows=window_rows,
                dosage=dosage,
                covariates=covariates,
                h2_target=float(h2_targets[i]),
                window=config.window,
                covariate_sd=config.covariate_sd,
                rng=pheno_rng,
            )
        else:
            found = (
                architectures.components(
                    architecture=arch,
                    gene=gene,
                    variants=variants,
                    window_rows=window_rows,
                    distal_rows=np.flatnonzero((variant_gene == i) & variant_distal),
                    reference=reference[gene.chrom],
                    window=config.window,
                    rng=architecture_rng,
                )
                if h2_targets[i] > 0
                else []
            )
            g, entries, model = architectures.genetic_value(found, float(h2_targets[i]), mixed=arch == "mixed")
            expression[i], truth = expression_from_genetic(
                gene=gene,
                g=g if g.size else np.zeros(config.individuals),
                entries=entries,
                architecture=arch,
                covariates=covariates,
                covariate_sd=config.covariate_sd,
                rng=pheno_rng,
                model=model,
            )
        additive, phase = variance_shares(truth.genetic, dosage[list(truth.causal)])
        truths.append(replace(truth, additive_share=additive, phase_share=phase))
    return Cohort(
        config=config,
        layout=layout,
        reference=reference,
        samples=samples,
        populations=populations,
        sex=sex,
        pcs=pcs,
        variants=variants,
        expression=expression,
        truths=truths,
        planted=planted,
        variant_gene=variant_gene,
        variant_distal=variant_distal,
    )


def _distal_parts(
    config: SimulationConfig,
    layout: Layout,
    reference: dict[str, np.ndarray],
    sample_sets: dict[str, int],
    columns: np.ndarray,
    model,
    rng: np.random.Generator,
) -> list[tuple[int, Variants, bool]]:
    """Variation in a few short blocks per gene, 10 kb - 1 Mb from its TSS (each block unlinked).

    Simulating +-1 Mb densely would give ~7,000 variants per Mb per gene; sparse blocks keep the
    VCF small while putting candidate distal causal variants far outside the sequence window.
    """
    taken = [(g.chrom, g.region_start, g.region_end) for g in layout.genes]
    half = config.distal_block_length // 2
    low = max(config.distal_min, config.window // 2 + config.margin + half)
    parts = []
    for gene in layout.genes:
        blocks = place_blocks(
            layout=layout,
            gene=gene,
            n_blocks=config.distal_blocks,
            length=config.distal_block_length,
            min_distance=low,
            max_distance=config.distal_max - half - 1,
            taken=taken,
            rng=rng,
        )
        for start, end in blocks:
            seed = int(rng.integers(1, 2**31 - 1))
            offsets, haplotypes = coalescent_haplotypes(
                length=end - start + 1, samples=sample_sets, model=model, seed=seed
            )
            block = replace(gene, region_start=start, region_end=end)
            parts.append(
                (
                    gene.index,
                    assign_alleles(
                        gene=block,
                        offsets=offsets,
                        haplotypes=haplotypes[:, columns],
                        reference=reference[gene.chrom],
                        rng=rng,
                        indel_fraction=config.indel_fraction,
                        max_indel=config.max_indel,
                    ),
                    True,
                )
            )
    return parts


def _ancestry_pcs(
    config: SimulationConfig, sample_sets: dict[str, int], columns: np.ndarray, model, rng: np.random.Generator
) -> np.ndarray:
    """(pcs, samples) genotype PCs from independent genome-wide loci under the same demography.

    PCs from the gene windows alone would track local haplotypes and absorb the cis signal; real
    pipelines compute them from genome-wide (LD-pruned) variants, which these loci stand in for.
    """
    seeds = rng.integers(1, 2**31 - 1, size=config.background_loci)
    parts = [
        coalescent_haplotypes(length=config.background_length, samples=sample_sets, model=model, seed=s)[1][:, columns]
        for s in seeds.tolist()
    ]
    return genotype_pcs(dosages(np.concatenate(parts)), n_pcs=config.n_pcs)


def _h2_targets(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-gene target h2: the given value; else 0 for ~null_fraction of genes and U(low, high) otherwise;
    or, with ``h2_distribution="realistic"``, 0 for ~20% of genes and Beta(2, 12) otherwise."""
    if config.h2 is not None:
        return np.full(config.genes, float(config.h2))
    if config.h2_distribution == "realistic":
        a, b = config.realistic_beta
        values = rng.beta(a, b, size=config.genes)
        values[rng.random(config.genes) < config.realistic_null_fraction] = 0.0
        return values
    values = rng.uniform(config.h2_low, config.h2_high, size=config.genes)
    values[rng.random(config.genes) < config.null_fraction] = 0.0
    return values


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a directory", path=out, hint="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            "the output directory is not empty",
            path=out,
            hint="choose a new or empty directory, or pass --overwrite to replace the cohort in it",
        )


def write_cohort(cohort: Cohort, out: Path) -> None:
    """Write every file of the cohort into ``out``; ``truth.tsv`` is written last."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = cohort.config
    genes: list[Gene] = list(cohort.layout.genes)
    writers.write_reference(out / "reference.fa", cohort.reference)
    writers.write_text(out / "genes.gtf", writers.gtf_lines(genes, seed=cfg.seed))
    writers.write_bgzf(
        out / "genotypes.vcf.gz",
        # only records a study person carries (all of them, unless the cohort was split from new people)
        writers.vcf_lines(
            carried(cohort.variants), samples=cohort.samples, contigs=cohort.layout.contigs, seed=cfg.seed
        ),
        tbi_preset="vcf",
    )
    writers.write_bgzf(out / "expression.bed.gz", writers.expression_lines(genes, cohort.expression, cohort.samples))
    writers.write_text(out / "covariates.tsv", writers.covariate_lines(cohort.sex, cohort.pcs, cohort.samples))
    writers.write_text(out / "samples.tsv", writers.sample_lines(cohort.samples, cohort.populations, cohort.sex))
    covariate_names = ["sex", *(f"PC{k}" for k in range(1, cohort.pcs.shape[0] + 1))]
    writers.write_text(out / "truth_variants.tsv", writers.truth_variant_lines(cohort.truths, cohort.variants))
    writers.write_text(out / "truth_genetic.tsv", writers.truth_genetic_lines(cohort.truths, cohort.samples))
    if cohort.planted:
        writers.write_text(out / "truth_motifs.tsv", writers.truth_motif_lines(genes, cohort.planted))
    writers.write_text(out / "truth.tsv", writers.truth_lines(cohort.truths, cohort.variants, covariate_names))


def simulate_cohort(
    out: Path,
    *,
    individuals: int = 290,
    genes: int = 20,
    window: int = 6000,
    h2: float | None = None,
    seed: int = 0,
    architecture: str = "additive",
    h2_distribution: str = "uniform",
    new_people: int = 0,
    overwrite: bool = False,
) -> None:
    """Simulate a cohort (msprime genotypes, GTF, expression, covariates, truth) into directory ``out``.

    Files: reference.fa(.fai), genotypes.vcf.gz(.tbi), genes.gtf, expression.bed.gz,
    covariates.tsv, samples.tsv, truth.tsv, truth_variants.tsv and, for the motif architectures,
    truth_motifs.tsv (see docs/simulate.md). Same arguments, same bytes.
    ``new_people`` > 0: ``individuals + new_people`` people are simulated together and the last
    ``new_people`` are written apart, as people outside the study (new_people.vcf.gz,
    new_people_genetic.tsv; :mod:`hapexpr.simulate.new_people`).
    Raises InputError if ``out`` is a non-empty directory and ``overwrite`` is False.
    """
    out = Path(out)
    _check_out(out, overwrite)
    if new_people < 0 or (new_people and individuals < 4):
        raise InputError(
            f"--new-people must be >= 0 and the study at least 4 people (got {new_people}, {individuals})",
            hint="fix the option and run again",
        )
    config = SimulationConfig(
        individuals=individuals + new_people,
        genes=genes,
        window=window,
        h2=h2,
        seed=seed,
        architecture=architecture,
        h2_distribution=h2_distribution,
    )
    cohort = simulate(config)
    if not new_people:
        write_cohort(cohort, out)
        return
    study, new = new_people_module.split_new_people(cohort, new_people)
    new_people_module.write_new_people(new, study, out)
    write_cohort(study, out)  # truth.tsv, written last, marks the directory complete
