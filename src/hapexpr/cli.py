"""The ``hapexpr`` command line: thin wrappers that parse options and call the stages.

Heavy libraries (torch, transformers, ray, msprime) are imported inside the commands that need
them, so ``hapexpr --help`` answers at once. Every :class:`HapexprError` becomes one paragraph on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hapexpr import __version__
from hapexpr.errors import HapexprError

app = typer.Typer(
    name="hapexpr",
    help="Predict each person's gene expression from their own DNA with genomic foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _friendly(func):
    """Turn the project's errors (and a Ctrl-C) into a one-paragraph message and exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HapexprError as exc:
            from rich.console import Console

            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"hapexpr {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]


@app.command()
@_friendly
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the cohort into.")],
    individuals: Annotated[int, typer.Option(min=4, help="Number of people.")] = 290,
    genes: Annotated[int, typer.Option(min=1, help="Number of genes.")] = 20,
    window: Annotated[int, typer.Option(min=100, help="Window around each TSS that carries the simulated variation (bp).")] = 6000,
    h2: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Heritability of every gene; default varies across genes (some 0).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Simulate a realistic cohort (msprime) in standard files."""
    from hapexpr.simulate import simulate_cohort

    simulate_cohort(out, individuals=individuals, genes=genes, window=window, h2=h2, seed=seed, overwrite=overwrite)


@app.command()
@_friendly
def haplotypes(
    vcf: Annotated[Path, typer.Option("--vcf", help="Phased, bgzipped and indexed VCF/BCF.")],
    fasta: Annotated[Path, typer.Option("--fasta", help="Reference FASTA.")],
    region: Annotated[str, typer.Option("--region", help="CHR:START-END, 1-based inclusive.")],
    samples: Annotated[Optional[str], typer.Option("--samples", help="Comma-separated sample ids (default all).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="FASTA to write (default stdout).")] = None,
    allow_unphased: Annotated[bool, typer.Option("--allow-unphased", help="Use unphased genotypes in the order written.")] = False,
) -> None:
    """Both haplotypes of each sample over a region, as `bcftools consensus -H 1pIu/2pIu`."""
    from hapexpr.haplotypes import haplotypes_fasta

    haplotypes_fasta(
        vcf, fasta, region,
        samples=None if samples is None else [s for s in samples.split(",") if s],
        out=out, allow_unphased=allow_unphased,
    )


@app.command()
@_friendly
def prepare(
    vcf: Annotated[Path, typer.Option("--vcf", help="Phased, bgzipped and indexed VCF/BCF.")],
    expression: Annotated[Path, typer.Option("--expression", help="tensorQTL or QTLtools BED(.gz), GTEx GCT, or TSV/parquet genes x samples.")],
    out: Annotated[Path, typer.Option("--out", help="Study directory to write.")],
    fasta: Annotated[Optional[Path], typer.Option("--fasta", help="Reference FASTA (indexed if not); without it, a genotype-only study.")] = None,
    genes: Annotated[Optional[Path], typer.Option("--genes", help="GENCODE GTF/GFF3, or BED/TSV of TSSs (optional for a QTLtools BED).")] = None,
    covariates: Annotated[Optional[Path], typer.Option("--covariates", help="Covariates x samples, tab or whitespace separated.")] = None,
    normalise: Annotated[str, typer.Option("--normalise", help="none, log2 or inverse-normal (fitted inside the training folds).")] = "none",
    window: Annotated[int, typer.Option(min=12, max=196_608, help="Window around each TSS (bp).")] = 6000,
    cis_window: Annotated[int, typer.Option("--cis-window", min=0, help="Store dosages of variants within +-BP of each TSS (elastic net).")] = 1_000_000,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds over individuals.")] = 5,
    folds_by: Annotated[Optional[tuple[str, Path]], typer.Option("--folds-by", help="COLUMN FILE: one fold per value of COLUMN in a sample table (first column: sample id).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    residualised: Annotated[bool, typer.Option("--residualised", help="Expression is already residualised; ignore covariates.")] = False,
    allow_unphased: Annotated[bool, typer.Option("--allow-unphased", help="Accept unphased genotypes (see docs).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Read the user's files once and write a study directory."""
    from hapexpr.prepare import prepare_study

    prepare_study(
        vcf=vcf, fasta=fasta, genes=genes, expression=expression, covariates=covariates, out=out,
        window=window, folds=folds, seed=seed, residualised=residualised,
        allow_unphased=allow_unphased, normalise=normalise, cis_window=cis_window, folds_by=folds_by,
        overwrite=overwrite,
    )


@app.command()
@_friendly
def embed(
    study: Annotated[Path, typer.Argument(help="Study directory written by `hapexpr prepare`.")],
    model: Annotated[str, typer.Option("--model", help="'tiny' (random NT-architecture model, offline demo) or a local checkpoint directory.")] = "tiny",
    layer: Annotated[Optional[int], typer.Option("--layer", help="Hidden-state layer: 0 = token embeddings, default the last; -1 counts from the end.")] = None,
    bins: Annotated[int, typer.Option("--bins", min=1, help="TSS-centred bins to pool each window into.")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")] = 8,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (bf16 autocast on CUDA).")] = "cpu",
    engine: Annotated[str, typer.Option("--engine", help="local, or ray (Ray Data; pip install hapexpr[distributed]).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Join this Ray cluster (default: start a local one).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow a checkpoint's own Python code (NT v2).")] = False,
) -> None:
    """Embed each distinct haplotype window once into STUDY/embeddings/<fingerprint>/."""
    from hapexpr.embed import run_embed

    run_embed(
        study, model=model, layer=layer, bins=bins, batch_size=batch_size, device=device,
        engine=engine, ray_address=ray_address, trust_remote_code=trust_remote_code,
    )


@app.command()
@_friendly
def fit(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="elastic-net, nt-transformer, ridge-probe, enformer or stack.")],
    seed: Annotated[int, typer.Option(help="Seed of every model fit (folds come from the study).")] = 0,
    fingerprint: Annotated[Optional[str], typer.Option(help="Which embeddings to use when the study holds several.")] = None,
    cis_window: Annotated[Optional[int], typer.Option("--cis-window", min=0, help="elastic-net: variants within +-BP of the TSS, read from the study's VCF (default: the study window).")] = None,
    maf: Annotated[float, typer.Option(min=0.0, max=0.5, help="elastic-net: minor allele frequency filter.")] = 0.01,
    multi_gene: Annotated[bool, typer.Option("--multi-gene", help="nt-transformer: one model shared across genes.")] = False,
    holdout_genes: Annotated[float, typer.Option("--holdout-genes", min=0.0, max=0.99, help="nt-transformer --multi-gene: fraction of genes never trained on.")] = 0.0,
    pairwise_weight: Annotated[Optional[float], typer.Option("--pairwise-weight", min=0.0, help="nt-transformer: weight of the pairwise-difference loss (default in docs/nt-transformer.md).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", min=1, help="nt-transformer: epoch cap (early stopping usually ends sooner).")] = None,
    model: Annotated[str, typer.Option("--model", help="enformer: `tiny` or a local checkpoint directory.")] = "tiny",
    track: Annotated[int, typer.Option(help="enformer: output track scored zero-shot (5110 = CAGE GM12878).")] = 5110,
    head: Annotated[str, typer.Option(help="enformer: zero-shot or ridge.")] = "zero-shot",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="enformer: input length (default 196,608 for real weights).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="enformer: sequences per forward pass.")] = 2,
    device: Annotated[str, typer.Option(help="enformer: cpu, cuda or auto.")] = "cpu",
    base: Annotated[Optional[str], typer.Option(help="stack: comma-separated base methods (default: all already fit).")] = None,
    final: Annotated[bool, typer.Option("--final", help="Also fit on all individuals for `predict`/`explain` (same as `fit-final`).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a method under the study's cross-validation; out-of-fold predictions go to predictions.tsv."""
    from hapexpr.fit import FitOptions, run_fit

    opts = FitOptions(
        seed=seed, fingerprint=fingerprint, cis_window=cis_window, maf=maf, multi_gene=multi_gene,
        holdout_genes=holdout_genes, pairwise_weight=pairwise_weight, max_epochs=max_epochs, model=model,
        track=track, head=head, seq_len=seq_len, batch_size=batch_size, device=device,
        base=None if base is None else tuple(b for b in base.split(",") if b),
    )
    run_fit(study, method, options=opts, overwrite=overwrite)
    if final:
        from hapexpr.final import fit_final

        fit_final(study, method, options=opts, overwrite=overwrite)


@app.command()
@_friendly
def evaluate(study: Annotated[Path, typer.Argument(help="Study directory.")]) -> None:
    """Per-gene correlations across held-out individuals -> STUDY/metrics.tsv, and a summary."""
    from hapexpr.evaluate import evaluate_study, print_summary

    _, summary, comparisons = evaluate_study(study)
    print_summary(summary, comparisons)


@app.command("run")
@_friendly
def run_config(config: Annotated[Path, typer.Argument(help="YAML config (see examples/config.yaml).")]) -> None:
    """Every stage from one config file; stages already complete are skipped."""
    from hapexpr.pipeline import load_config, run_pipeline

    run_pipeline(load_config(config))


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo cohort, study and report.")] = Path("demo"),
    individuals: Annotated[int, typer.Option(min=20, help="People to simulate.")] = 290,
    genes: Annotated[int, typer.Option(min=2, help="Genes to simulate.")] = 20,
) -> None:
    """Simulate a cohort and run every stage on it with tiny models, on the CPU, in minutes."""
    from hapexpr.demo import run_demo

    run_demo(out, individuals=individuals, genes=genes)


@app.command()
@_friendly
def report(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    overwrite: Overwrite = False,
) -> None:
    """One self-contained HTML page of the study's results -> STUDY/report/index.html."""
    from hapexpr.report import write_report

    print(write_report(study, overwrite=overwrite))


@app.command("export-predictdb")
@_friendly
def export_predictdb(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    out: Annotated[Path, typer.Option("--out", help="SQLite database to write (PredictDB schema).")],
    cis_window: Annotated[Optional[int], typer.Option("--cis-window", min=0, help="Variants within +-BP of the TSS, read from the study's VCF (default: the study window).")] = None,
    vcf: Annotated[Optional[Path], typer.Option("--vcf", help="The VCF for --cis-window when it has moved since prepare.")] = None,
    maf: Annotated[float, typer.Option(min=0.0, max=0.5, help="Keep variants with minor allele frequency above this.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of the inner CV folds (as `hapexpr fit --seed`).")] = 0,
    all_genes: Annotated[bool, typer.Option("--all-genes", help="Write every gene with a model, not only PredictDB's significant ones (mean r > 0.1, p < 0.05).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Elastic-net weights fit on all individuals, as a PredictDB database for S-PrediXcan."""
    from hapexpr.export import export_predictdb as export

    summary = export(study, out, overwrite=overwrite, cis_window=cis_window, vcf=vcf, maf=maf, seed=seed, all_genes=all_genes)
    print(f"{out}: {summary['genes_written']} of {summary['genes']} genes "
          f"({summary['genes_with_model']} with a model), {summary['weights_written']} weights")


@app.command("fit-final")
@_friendly
def fit_final_command(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="elastic-net, ridge-probe, nt-transformer, enformer or enformer-ridge.")],
    seed: Annotated[Optional[int], typer.Option(help="Seed of the fit (default: as `hapexpr fit` used, else 0).")] = None,
    fingerprint: Annotated[Optional[str], typer.Option(help="Which embeddings to use when the study holds several.")] = None,
    cis_window: Annotated[Optional[int], typer.Option("--cis-window", min=0, help="elastic-net: variants within +-BP of the TSS.")] = None,
    maf: Annotated[Optional[float], typer.Option(min=0.0, max=0.5, help="elastic-net: minor allele frequency filter.")] = None,
    pairwise_weight: Annotated[Optional[float], typer.Option("--pairwise-weight", min=0.0, help="nt-transformer: pairwise loss weight.")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", min=1, help="nt-transformer: epoch cap.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="enformer: `tiny` or a local checkpoint directory.")] = None,
    track: Annotated[Optional[int], typer.Option(help="enformer: output track scored zero-shot.")] = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="enformer: input length.")] = None,
    device: Annotated[Optional[str], typer.Option(help="enformer: cpu, cuda or auto.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a final fit made with other options.")] = False,
) -> None:
    """Fit a method on ALL study individuals per gene (for predict/explain) -> STUDY/models/<method>/final/.

    Options left out are those `hapexpr fit` used for the method, else the defaults."""
    from hapexpr.final import fit_final, options_with

    opts = options_with(study, method, seed=seed, fingerprint=fingerprint, cis_window=cis_window, maf=maf,
                        pairwise_weight=pairwise_weight, max_epochs=max_epochs, model=model, track=track,
                        seq_len=seq_len, device=device)
    fit_final(study, method, options=opts, overwrite=overwrite)


@app.command()
@_friendly
def predict(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="elastic-net, ridge-probe, nt-transformer, enformer or enformer-ridge.")],
    vcf: Annotated[Path, typer.Option("--vcf", help="Bgzipped, indexed VCF of the new people (phased for sequence methods).")],
    out: Annotated[Path, typer.Option("--out", help="TSV to write: method gene_id sample_id predicted ...")],
    overwrite: Overwrite = False,
) -> None:
    """Predict every gene's expression for the people of a new VCF (fits on all individuals first if needed)."""
    from hapexpr.predict import predict_new

    predict_new(study, method, vcf=vcf, out=out, overwrite=overwrite)


@app.command()
@_friendly
def explain(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="elastic-net, ridge-probe, nt-transformer, enformer or enformer-ridge.")],
    gene: Annotated[str, typer.Option("--gene", help="Gene id, as in STUDY/genes.tsv.")],
    out: Annotated[Path, typer.Option("--out", help="TSV of per-variant effects to write (also copied to STUDY/explain/).")],
    overwrite: Overwrite = False,
) -> None:
    """Effect of each variant in a gene's window on the prediction (ALT swapped to REF, re-embedded)."""
    from hapexpr.explain import explain_gene

    explain_gene(study, method, gene, out=out, overwrite=overwrite)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
