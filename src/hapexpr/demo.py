"""``hapexpr demo``: simulate the default cohort and run every stage on it, on the CPU.

Everything uses tiny, randomly initialised models (the Nucleotide Transformer architecture with
the real 6-mer tokenizer, and Enformer on the study window instead of 196,608 bp), so the numbers
show the pipeline working, not what real weights achieve.
"""

from __future__ import annotations

import time
from pathlib import Path

from hapexpr.errors import StudyError
from hapexpr.pipeline import EmbedConfig, FitConfig, PrepareConfig, RunConfig, run_pipeline
from hapexpr.progress import console
from hapexpr.simulate import simulate_cohort

# The demo's cohort is smaller than `hapexpr simulate`'s default (290 x 20) so that every stage
# and method runs in under 5 minutes on 2 idle cores (benchmarks/RESULTS.md, "The demo").
DEMO_PEOPLE, DEMO_GENES = 200, 10
DEMO_MINUTES = "about 3"

DEMO_FITS = (
    FitConfig("elastic-net"),
    FitConfig("elastic-net", {"cis_window": 0}),
    FitConfig("ridge-probe"),
    # One 20% early-stopping split instead of the default inner 4-fold choice of the number of
    # epochs: ~4x less training for the demo only (the option shows in the report's fit table).
    FitConfig("nt-transformer", {"epoch_selection": "split"}),
    FitConfig("enformer"),
    FitConfig("enformer", {"head": "ridge"}),
    FitConfig("stack", {"base": ["elastic-net", "ridge-probe", "enformer"]}),
)


def run_demo(out: Path, *, individuals: int = DEMO_PEOPLE, genes: int = DEMO_GENES, seed: int = 0) -> RunConfig:
    """Simulate into OUT/cohort, write OUT/config.yaml, and run it (study in OUT/study)."""
    out = Path(out)
    # The config written below must work from any directory: absolute paths throughout.
    cohort = out.resolve() / "cohort"
    start = time.time()
    console.rule("hapexpr demo")
    console.print(
        "[bold yellow]Tiny, randomly initialised models throughout[/] (Nucleotide Transformer architecture "
        "with the real 6-mer tokenizer; a tiny Enformer on about 6 kb around each TSS, not 196,608 bp). "
        "The numbers show the pipeline working, not what real weights achieve."
    )
    if (individuals, genes) == (DEMO_PEOPLE, DEMO_GENES):
        console.print(
            f"{individuals} people x {genes} genes, 7 fits of 5 methods: expect {DEMO_MINUTES} minutes on 2 idle "
            "cores (measured; benchmarks/RESULTS.md). Each stage below says its step and the time so far."
        )
    if (cohort / "genotypes.vcf.gz").exists():
        console.print(f"[simulate] {cohort} exists; reusing it")
    else:
        if out.exists() and any(out.iterdir()) and not (out / "config.yaml").exists():
            raise StudyError(
                "the demo directory exists and is not a previous demo", path=out, hint="choose another --out"
            )
        console.print(f"[simulate] {individuals} people x {genes} genes -> {cohort}")
        simulate_cohort(cohort, individuals=individuals, genes=genes, seed=seed)
    config = RunConfig(
        study=str((out / "study").resolve()),
        prepare=PrepareConfig(
            vcf=str(cohort / "genotypes.vcf.gz"),
            fasta=str(cohort / "reference.fa"),
            genes=str(cohort / "genes.gtf"),
            expression=str(cohort / "expression.bed.gz"),
            covariates=str(cohort / "covariates.tsv"),
            window=6000,
            folds=5,
            seed=seed,
        ),
        embed=EmbedConfig(model="tiny"),
        fit=DEMO_FITS,
    )
    (out / "config.yaml").write_text(config.to_yaml())
    run_pipeline(config, say=lambda m: console.print(m, markup=False))
    console.print(f"demo finished in {time.time() - start:.0f} s; rerun it with `hapexpr run {out / 'config.yaml'}`")
    console.print(f"report: {Path(config.study) / 'report' / 'index.html'}")
    return config
