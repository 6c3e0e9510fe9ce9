"""The ``hapexpr`` command line: thin wrappers that parse options and call the stages.

Heavy libraries (torch, transformers, ray, msprime) are imported inside the commands that need
them, so ``hapexpr --help`` answers at once. Every :class:`HapexprError` becomes one paragraph on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from hapexpr import __version__
from hapexpr.demo import DEMO_GENES, DEMO_PEOPLE, run_demo
from hapexpr.embed import run_embed
from hapexpr.errors import HapexprError
from hapexpr.evaluate import evaluate_study, print_summary
from hapexpr.explain import explain_gene
from hapexpr.export import export_predictdb as export
from hapexpr.final import fit_final
from hapexpr.fit import run_fit
from hapexpr.fit_records import fitted_method_name, reference_fit
from hapexpr.haplotypes import haplotypes_fasta
from hapexpr.method_options import MethodCommand, add_option_parameters, method_option_rows, options_for
from hapexpr.methods import get as get_method
from hapexpr.methods import methods, provider
from hapexpr.pipeline import load_config, run_pipeline
from hapexpr.predict import predict_new
from hapexpr.prepare import prepare_study
from hapexpr.progress import console
from hapexpr.registry import PluginWarning
from hapexpr.report import write_report
from hapexpr.simulate import simulate_cohort
from hapexpr.study import Study

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
    window: Annotated[
        int, typer.Option(min=100, help="Window around each TSS that carries the simulated variation (bp).")
    ] = 6000,
    h2: Annotated[
        Optional[float],
        typer.Option(min=0.0, max=1.0, help="Heritability of every gene; default varies across genes (some 0)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    architecture: Annotated[
        str,
        typer.Option(
            help="Genetic architecture: additive, motif, motif-grammar, cis-interaction, rare, distal or mixed "
            "(docs/simulate.md)."
        ),
    ] = "additive",
    h2_distribution: Annotated[
        str,
        typer.Option(
            "--h2-distribution",
            help="Per-gene h2 when --h2 is not given: uniform (0.1-0.6, 20% null) or realistic (median ~0.1).",
        ),
    ] = "uniform",
    new_people: Annotated[
        int,
        typer.Option(
            "--new-people",
            min=0,
            help="Also write N people outside the study from the same population: new_people.vcf.gz and "
            "their true genetic values (docs/simulate.md).",
        ),
    ] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Simulate a realistic cohort (msprime) in standard files."""
    simulate_cohort(
        out,
        individuals=individuals,
        genes=genes,
        window=window,
        h2=h2,
        seed=seed,
        architecture=architecture,
        h2_distribution=h2_distribution,
        new_people=new_people,
        overwrite=overwrite,
    )


@app.command()
@_friendly
def haplotypes(
    vcf: Annotated[Path, typer.Option("--vcf", help="Phased, bgzipped and indexed VCF/BCF.")],
    fasta: Annotated[Path, typer.Option("--fasta", help="Reference FASTA.")],
    region: Annotated[str, typer.Option("--region", help="CHR:START-END, 1-based inclusive.")],
    samples: Annotated[
        Optional[str], typer.Option("--samples", help="Comma-separated sample ids (default all).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="FASTA to write (default stdout).")] = None,
    allow_unphased: Annotated[
        bool, typer.Option("--allow-unphased", help="Use unphased genotypes in the order written.")
    ] = False,
) -> None:
    """Both haplotypes of each sample over a region, as `bcftools consensus -H 1pIu/2pIu`."""
    haplotypes_fasta(
        vcf,
        fasta,
        region,
        samples=None if samples is None else [s for s in samples.split(",") if s],
        out=out,
        allow_unphased=allow_unphased,
    )


@app.command()
@_friendly
def prepare(
    vcf: Annotated[Path, typer.Option("--vcf", help="Phased, bgzipped and indexed VCF/BCF.")],
    expression: Annotated[
        Path,
        typer.Option("--expression", help="tensorQTL or QTLtools BED(.gz), GTEx GCT, or TSV/parquet genes x samples."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Study directory to write.")],
    fasta: Annotated[
        Optional[Path],
        typer.Option("--fasta", help="Reference FASTA (indexed if not); without it, a genotype-only study."),
    ] = None,
    genes: Annotated[
        Optional[Path],
        typer.Option("--genes", help="GENCODE GTF/GFF3, or BED/TSV of TSSs (optional for a QTLtools BED)."),
    ] = None,
    covariates: Annotated[
        Optional[Path], typer.Option("--covariates", help="Covariates x samples, tab or whitespace separated.")
    ] = None,
    normalise: Annotated[
        str, typer.Option("--normalise", help="none, log2 or inverse-normal (fitted inside the training folds).")
    ] = "none",
    window: Annotated[int, typer.Option(min=12, max=196_608, help="Window around each TSS (bp).")] = 6000,
    cis_window: Annotated[
        int,
        typer.Option("--cis-window", min=0, help="Store dosages of variants within +-BP of each TSS (elastic net)."),
    ] = 1_000_000,
    context: Annotated[
        Optional[int],
        typer.Option(
            "--context",
            min=0,
            help="Width (bp) of each person's haplotypes around each TSS that Enformer reads, built when "
            "Enformer first needs it (default 196608, its whole input, with --fasta; 0: none, Enformer reads "
            "the window N-padded).",
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds over individuals.")] = 5,
    folds_by: Annotated[
        Optional[tuple[str, Path]],
        typer.Option(
            "--folds-by", help="COLUMN FILE: one fold per value of COLUMN in a sample table (first column: sample id)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    residualised: Annotated[
        bool, typer.Option("--residualised", help="Expression is already residualised; ignore covariates.")
    ] = False,
    allow_unphased: Annotated[
        bool, typer.Option("--allow-unphased", help="Accept unphased genotypes (see docs).")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Read the user's files once and write a study directory."""
    prepare_study(
        vcf=vcf,
        fasta=fasta,
        genes=genes,
        expression=expression,
        covariates=covariates,
        out=out,
        window=window,
        folds=folds,
        seed=seed,
        residualised=residualised,
        allow_unphased=allow_unphased,
        normalise=normalise,
        cis_window=cis_window,
        folds_by=folds_by,
        context=context,
        overwrite=overwrite,
    )


@app.command()
@_friendly
def embed(
    study: Annotated[Path, typer.Argument(help="Study directory written by `hapexpr prepare`.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="'tiny' (random NT-architecture model, offline demo), a local checkpoint directory (NT v1/v2 or another Hugging Face DNA model with its tokenizer), kmer[:K] (k-mer frequencies, no weights), or enformer[:PATH] (Enformer's tracks at the TSS bins).",
        ),
    ] = "tiny",
    layer: Annotated[
        Optional[int],
        typer.Option(
            "--layer", help="Hidden-state layer: 0 = token embeddings, default the last; -1 counts from the end."
        ),
    ] = None,
    bins: Annotated[int, typer.Option("--bins", min=1, help="TSS-centred bins to pool each window into.")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")] = 8,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (bf16 autocast on CUDA).")] = "cpu",
    engine: Annotated[
        str, typer.Option("--engine", help="local, or ray (Ray Data; pip install hapexpr[distributed]).")
    ] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Join this Ray cluster (default: start a local one).")
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow a checkpoint's own Python code (NT v2).")
    ] = False,
    cache: Annotated[
        Optional[Path],
        typer.Option(
            "--cache",
            help="A folder of embedding stores shared across studies and cohorts: sequences already embedded there are reused.",
        ),
    ] = None,
    seq_len: Annotated[
        Optional[int], typer.Option("--seq-len", help="enformer: input length (default 196,608 for real weights).")
    ] = None,
) -> None:
    """Embed each distinct haplotype window once into STUDY/embeddings/<fingerprint>/."""
    run_embed(
        study,
        model=model,
        layer=layer,
        bins=bins,
        batch_size=batch_size,
        device=device,
        engine=engine,
        ray_address=ray_address,
        trust_remote_code=trust_remote_code,
        cache=cache,
        seq_len=seq_len,
    )


def _fit(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="A registered method (`hapexpr methods` lists them).")],
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name",
            help="Name of this fit in predictions.tsv (default: the method's name for these options, e.g. elastic-net-window).",
        ),
    ] = None,
    final: Annotated[
        bool, typer.Option("--final", help="Also fit on all individuals for `predict`/`explain` (same as `fit-final`).")
    ] = False,
    engine: Annotated[
        str, typer.Option("--engine", help="local, or ray (genes as Ray tasks; pip install 'hapexpr[distributed]').")
    ] = "local",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="local engine: genes fitted in parallel processes.")] = 1,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="ray engine: join this cluster (default: start a local one).")
    ] = None,
    overwrite: Overwrite = False,
    **options,
) -> None:
    """Train a method under the study's cross-validation; out-of-fold predictions go to predictions.tsv.

    Each method's options are flags; `hapexpr fit --method X --help` (or `hapexpr methods X`) lists X's."""
    rows = run_fit(
        study,
        method,
        options=options_for(method, options),
        name=name,
        overwrite=overwrite,
        engine=engine,
        jobs=jobs,
        ray_address=ray_address,
    )
    if final and len(rows):
        fit_final(
            study, str(rows["method"].iloc[0]), overwrite=overwrite, engine=engine, jobs=jobs, ray_address=ray_address
        )


@app.command()
@_friendly
def evaluate(study: Annotated[Path, typer.Argument(help="Study directory.")]) -> None:
    """Per-gene correlations across held-out individuals -> STUDY/metrics.tsv, and a summary."""
    _, summary, comparisons = evaluate_study(study)
    print_summary(summary, comparisons, reference=reference_fit(Study.open(study), summary["method"]))


@app.command("run")
@_friendly
def run_config(config: Annotated[Path, typer.Argument(help="YAML config (see examples/config.yaml).")]) -> None:
    """Every stage from one config file; stages already complete are skipped."""
    run_pipeline(load_config(config))


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo cohort, study and report.")] = Path("demo"),
    individuals: Annotated[int, typer.Option(min=20, help="People to simulate.")] = DEMO_PEOPLE,
    genes: Annotated[int, typer.Option(min=2, help="Genes to simulate.")] = DEMO_GENES,
) -> None:
    """Simulate a cohort and run every stage on it with tiny models, on the CPU, in minutes."""
    run_demo(out, individuals=individuals, genes=genes)


@app.command()
@_friendly
def report(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    overwrite: Overwrite = False,
) -> None:
    """One self-contained HTML page of the study's results -> STUDY/report/index.html."""
    print(write_report(study, overwrite=overwrite))


@app.command("export-predictdb")
@_friendly
def export_predictdb(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    out: Annotated[Path, typer.Option("--out", help="SQLite database to write (PredictDB schema).")],
    method: Annotated[
        str,
        typer.Option("--method", help="The dosage fit to export, by name (its options as `hapexpr fit` used them)."),
    ] = "elastic-net",
    cis_window: Annotated[
        Optional[int],
        typer.Option("--cis-window", help="Override: variants within +-BP of the TSS (0: the study window)."),
    ] = None,
    maf: Annotated[
        Optional[float],
        typer.Option(min=0.0, max=0.5, help="Override: keep variants with minor allele frequency above this."),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Override: seed of the inner CV folds (as `hapexpr fit --seed`).")
    ] = None,
    all_genes: Annotated[
        bool,
        typer.Option(
            "--all-genes",
            help="Write every gene with a model, not only PredictDB's significant ones (mean r > 0.1, p < 0.05).",
        ),
    ] = False,
    drop_ambiguous: Annotated[
        Optional[bool],
        typer.Option(
            "--drop-ambiguous/--keep-ambiguous",
            help="Leave out strand-ambiguous SNPs (A/T, C/G) before fitting, as PredictDB does (default: as the fit did).",
        ),
    ] = None,
    rsid_map: Annotated[
        Optional[Path],
        typer.Option("--rsid-map", help="TSV of chrom pos ref alt rsid: write rsIDs where the VCF has other ids."),
    ] = None,
    covariance: Annotated[
        Optional[Path],
        typer.Option(
            "--covariance",
            help="SNP covariance file for S-PrediXcan (GENE RSID1 RSID2 VALUE, gzipped) "
            "[default: OUT's name with .covariances.txt.gz]",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="local, or ray: where fits the study does not hold yet run.")
    ] = "local",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="local engine: genes fitted in parallel processes.")] = 1,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="ray engine: join this cluster.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Elastic-net weights fit on all individuals, as a PredictDB database and SNP covariance file for S-PrediXcan.

    The study's own `fit` and `fit-final` of the method are read when they were made with the
    same options; what is missing is fitted here (not written into the study)."""
    given = {
        k: v
        for k, v in {"cis_window": cis_window, "maf": maf, "seed": seed, "drop_ambiguous": drop_ambiguous}.items()
        if v is not None
    }
    summary = export(
        study,
        out,
        overwrite=overwrite,
        method=method,
        options=given,
        all_genes=all_genes,
        rsid_map=rsid_map,
        covariance=covariance,
        engine=engine,
        jobs=jobs,
        ray_address=ray_address,
    )
    if summary["reused"]:
        console.print(f"read the study's {' and '.join(summary['reused'])} of {method} (same options)")
    print(
        f"{out}: {summary['genes_written']} of {summary['genes']} genes "
        f"({summary['genes_with_model']} with a model), {summary['weights_written']} weights"
    )
    print(f"{summary['covariance']}: SNP covariances of the models ({summary['covariances_written']} rows)")
    if summary["not_rsid"]:
        console.print(
            f"[yellow]{summary['not_rsid']} of {summary['weights_written']} weights have ids that are not "
            "rsIDs (e.g. chrom_pos): S-PrediXcan matches GWAS SNPs by rsid, so pass --rsid-map FILE "
            "(chrom pos ref alt rsid)[/]"
        )
    if summary["ambiguous_kept"]:
        console.print(
            f"[yellow]{summary['ambiguous_kept']} weights are strand-ambiguous SNPs (A/T, C/G), kept "
            "because the fit kept them; PredictDB drops them (--drop-ambiguous)[/]"
        )


def _fit_final(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="A fit of the study by its name (e.g. elastic-net, enformer-ridge), or a method to fit with its defaults.",
        ),
    ],
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name",
            help="Store this final fit under NAME (a variant with no cross-validated fit, e.g. "
            "--method ridge-probe --fingerprint kmer:4 --name ridge-probe-kmer); default the fit's own name.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a final fit made with other options.")
    ] = False,
    engine: Annotated[str, typer.Option("--engine", help="local, or ray (genes as Ray tasks).")] = "local",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="local engine: genes fitted in parallel processes.")] = 1,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="ray engine: join this cluster.")] = None,
    **options,
) -> None:
    """Fit a method on ALL study individuals per gene (for predict/explain) -> STUDY/models/<name>/final/.

    Options left out are those `hapexpr fit` used for that fit, else the method's defaults."""
    base = fitted_method_name(Study.open(study), method)
    fit_final(
        study,
        method,
        options=options_for(base, options),
        fit_name=name,
        overwrite=overwrite,
        engine=engine,
        jobs=jobs,
        ray_address=ray_address,
    )


@app.command()
@_friendly
def predict(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="A fit of the study by its name (e.g. elastic-net, ridge-probe, enformer-ridge, nt-transformer-multi).",
        ),
    ],
    vcf: Annotated[
        Path, typer.Option("--vcf", help="Bgzipped, indexed VCF of the new people (phased for sequence methods).")
    ],
    out: Annotated[Path, typer.Option("--out", help="TSV to write: method gene_id sample_id predicted ...")],
    genes: Annotated[
        Path | None,
        typer.Option(
            "--genes",
            help="Annotation (GTF/GFF3, BED or TSV of TSSs) of genes outside the study to predict too "
            "(a multi-gene fit only; needs --fasta).",
        ),
    ] = None,
    fasta: Annotated[
        Path | None, typer.Option("--fasta", help="Reference FASTA covering the --genes genes' windows.")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Predict every gene's expression for the people of a new VCF (fits on all individuals first if needed)."""
    predict_new(study, method, vcf=vcf, out=out, genes=genes, fasta=fasta, overwrite=overwrite)


@app.command()
@_friendly
def explain(
    study: Annotated[Path, typer.Argument(help="Study directory.")],
    method: Annotated[str, typer.Option("--method", help="A per-gene fit of the study by its name.")],
    gene: Annotated[str, typer.Option("--gene", help="Gene id, as in STUDY/genes.tsv.")],
    out: Annotated[
        Path, typer.Option("--out", help="TSV of per-variant effects to write (also copied to STUDY/explain/).")
    ],
    overwrite: Overwrite = False,
) -> None:
    """Effect of each variant in a gene's window on the prediction (ALT swapped to REF, re-embedded)."""
    explain_gene(study, method, gene, out=out, overwrite=overwrite)


@app.command("methods")
@_friendly
def list_methods(
    name: Annotated[
        Optional[str], typer.Argument(help="A method: list its options with their defaults and help.")
    ] = None,
) -> None:
    """The registered methods, what each needs and its options (`hapexpr methods METHOD` for one in full)."""
    import dataclasses

    if name is not None:
        cls, where = get_method(name), provider(name)
        print(f"{cls.name}: {cls.summary}\n  needs: {', '.join(cls.needs) or 'nothing'}")
        print(f"  provided by: {where.get('distribution') or where.get('module')} {where.get('version', '')}".rstrip())
        print("  options:")
        for flag, kind, default, help_text in method_option_rows(name):
            print(f"    {flag} {kind.upper()}  [default: {default}]\n        {help_text}")
        return
    for cls in methods():
        flags = " ".join("--" + f.name.replace("_", "-") for f in dataclasses.fields(cls.Options))
        print(f"{cls.name}: {cls.summary}\n  needs: {', '.join(cls.needs) or 'nothing'}\n  options: {flags}")


def _plugin_warnings_as_lines() -> None:
    """A skipped plugin is one line on stderr (`warning: ...`), not a Python warning with its
    source location; other warnings are shown as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _register_method_commands() -> None:
    """fit and fit-final take one flag per option of any registered method (built from the
    registry, so a method registered before the app is built brings its own flags); with
    `--method X --help` they list X's options alone."""
    app.command("fit", cls=MethodCommand)(_friendly(add_option_parameters(_fit)))
    app.command("fit-final", cls=MethodCommand)(_friendly(add_option_parameters(_fit_final)))


_plugin_warnings_as_lines()
_register_method_commands()

PIPELINE_ORDER = (
    "simulate haplotypes prepare embed fit fit-final evaluate report predict explain export-predictdb methods run demo"
).split()


def _in_pipeline_order() -> None:
    """``hapexpr --help`` lists the commands in the order a study goes through them."""

    def name(info) -> str:
        return info.name or info.callback.__name__.replace("_", "-")

    rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
    app.registered_commands.sort(key=lambda info: rank.get(name(info), len(rank)))


_in_pipeline_order()


def command():
    """The click command of the app, with on/off flags shown without typer's ``<bool>`` type
    (a flag takes no value, and ``--version <bool>`` read as if it needed one)."""

    def flags_without_type(cmd) -> None:
        for param in cmd.params:
            if getattr(param, "is_flag", False):  # typer's own click classes: test the attribute
                param.metavar = ""
        for sub in getattr(cmd, "commands", {}).values():
            flags_without_type(sub)

    cmd = typer.main.get_command(app)
    flags_without_type(cmd)
    return cmd


def main() -> None:
    command()()


if __name__ == "__main__":
    main()
