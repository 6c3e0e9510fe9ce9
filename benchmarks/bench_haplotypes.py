"""Benchmark: hapexpr's personal haplotypes vs a ``bcftools consensus`` loop, same windows.

Inputs: ``hapexpr simulate`` cohorts (msprime, phased VCF with SNPs and indels). For every gene
the region ``prepare`` builds haplotypes over (the window around the TSS plus its indel margin,
``hapexpr.windows.region_bounds``, clipped to the contig) is built for every sample and both
haplotypes, two ways:

- hapexpr: one VCF region read (cyvcf2), ``unique_haplotypes`` then ``build_haplotypes`` on the
  distinct haplotypes, then every (sample, haplotype) sequence handed out -- what ``prepare``
  does per gene (timed from opening the VCF and FASTA to the last sequence);
- the peers' loop: ``samtools faidx REF REGION`` once per window, then
  ``bcftools consensus -H 1pIu|2pIu -s SAMPLE -f region.fa VCF`` once per sample and haplotype
  (timed around the subprocesses and the reading of their FASTA output only).

Every sequence the loop produced is asserted byte-identical to hapexpr's. The bcftools loop costs
~15-40 ms per call, so a full run (290 people x 100 genes = 58,000 calls per window size) would
take tens of minutes; ``--bcftools-genes`` / ``--bcftools-samples`` run it on a subset and the
full-cohort time is EXTRAPOLATED from the measured mean cost per window (faidx) and per call
(consensus), which the output says explicitly.

    python benchmarks/bench_haplotypes.py --smoke     # seconds; the test suite runs this
    python benchmarks/bench_haplotypes.py             # 290 people x 100 genes, 6 kb and 196,608 bp

Target (full mode): hapexpr at least 20x faster than the bcftools loop at every window size.
GenVarLoader is not run: see benchmarks/RESULTS.md for why it is not installed here.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 20.0


def simulate_inputs(root: Path, *, individuals: int, genes: int, window: int, seed: int) -> Path:
    """A cohort from ``hapexpr simulate`` (reused when ``root`` already holds a complete one)."""
    from hapexpr.simulate import simulate_cohort

    out = root / f"cohort_n{individuals}_g{genes}_w{window}_s{seed}"
    if not (out / "truth.tsv").exists():  # truth.tsv is written last
        simulate_cohort(out, individuals=individuals, genes=genes, window=window, seed=seed, overwrite=True)
    return out


def gene_regions(cohort: Path, window: int) -> list[tuple[str, int, int]]:
    """(genes,) 1-based inclusive (chrom, start, end) regions ``prepare`` builds haplotypes over."""
    from hapexpr.io.genes import read_genes
    from hapexpr.windows import region_bounds

    contigs = {}
    for line in (cohort / "reference.fa.fai").read_text().splitlines():
        name, length = line.split("\t")[:2]
        contigs[name] = int(length)
    regions = []
    for g in read_genes(cohort / "genes.gtf").itertuples(index=False):
        lo, hi = region_bounds(int(g.tss), window)
        regions.append((g.chrom, max(lo, 1), min(hi, contigs[g.chrom])))
    return regions


def hapexpr_haplotypes(cohort: Path, regions, *, keep_genes: int, keep_samples: int) -> tuple[float, list, list[str], int]:
    """Build every (sample, haplotype) sequence of every region with hapexpr.

    Returns seconds, for the first ``keep_genes`` regions the (keep_samples, 2) nested list of
    sequences the bcftools loop is checked against (only those are kept: at 196 kb the whole
    cohort would be ~12 GB), the sample ids, and the number of distinct haplotypes built.
    """
    from hapexpr.haplotypes import build_haplotypes, unique_haplotypes
    from hapexpr.io.fasta import Reference
    from hapexpr.io.vcf import VcfReader

    t0 = time.perf_counter()
    reference = Reference(cohort / "reference.fa")
    reader = VcfReader(cohort / "genotypes.vcf.gz")
    out, n_unique = [], 0
    for chrom, start, end in regions:
        variants = reader.fetch(chrom, start, end, reference=reference)
        sequence = reference.fetch(chrom, start, end)
        alleles, index = unique_haplotypes(variants.genotypes)
        built = [h.sequence for h in build_haplotypes(sequence, start, variants.pos, variants.ref, variants.alt, alleles)]
        n_unique += len(built)
        per_person = [[built[i] for i in pair] for pair in index.tolist()]  # every (sample, haplotype)
        if len(out) < keep_genes:
            out.append(per_person[:keep_samples])
        del built, per_person
    seconds = time.perf_counter() - t0
    return seconds, out, list(reader.samples), n_unique


def _fasta_body(text: bytes) -> bytes:
    lines = text.split(b"\n")
    if not lines or not lines[0].startswith(b">"):
        raise RuntimeError(f"bcftools wrote no FASTA record: {text[:200]!r}")
    return b"".join(lines[1:])


def bcftools_loop(cohort: Path, regions, samples: list[str], expected, tmp: Path) -> dict:
    """The peers' loop over ``regions`` x ``samples`` x 2, checked against ``expected``.

    Returns the seconds spent in faidx and in consensus calls, call counts and mismatches.
    """
    vcf, fasta = cohort / "genotypes.vcf.gz", cohort / "reference.fa"
    region_fa = tmp / "region.fa"
    t_faidx = t_consensus = 0.0
    calls = mismatches = 0
    first_bad = None
    for g, (chrom, start, end) in enumerate(regions):
        t0 = time.perf_counter()
        subprocess.run(["samtools", "faidx", str(fasta), f"{chrom}:{start}-{end}", "-o", str(region_fa)], check=True)
        t_faidx += time.perf_counter() - t0
        for s, sample in enumerate(samples):
            for h in (1, 2):
                t0 = time.perf_counter()
                done = subprocess.run(
                    ["bcftools", "consensus", "-H", f"{h}pIu", "-s", sample, "-f", str(region_fa), str(vcf)],
                    check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )
                seq = _fasta_body(done.stdout)
                t_consensus += time.perf_counter() - t0
                calls += 1
                if seq != expected[g][s][h - 1]:
                    mismatches += 1
                    first_bad = first_bad or f"{chrom}:{start}-{end} {sample}_{h}"
    return dict(t_faidx=t_faidx, t_consensus=t_consensus, windows=len(regions), calls=calls,
                mismatches=mismatches, first_bad=first_bad)


def run_window(args, root: Path, window: int) -> tuple[bool, float]:
    t0 = time.perf_counter()
    cohort = simulate_inputs(root, individuals=args.individuals, genes=args.genes, window=window, seed=args.seed)
    t_sim = time.perf_counter() - t0
    regions = gene_regions(cohort, window)
    n_bp = sum(e - s + 1 for _, s, e in regions)
    print(f"\n## window {window:,} bp: {args.individuals} people x {len(regions)} genes, regions of "
          f"{n_bp / len(regions):,.0f} bp on average (window + prepare's indel margin); "
          f"cohort {cohort} ({t_sim:.1f} s to simulate or reuse)", flush=True)

    nb_genes = len(regions) if args.bcftools_genes is None else min(args.bcftools_genes, len(regions))
    nb_samples = args.individuals if args.bcftools_samples is None else min(args.bcftools_samples, args.individuals)
    t_ours, seqs, samples, n_unique = hapexpr_haplotypes(cohort, regions, keep_genes=nb_genes, keep_samples=nb_samples)
    n_seq = len(regions) * len(samples) * 2
    print(f"hapexpr: {n_seq:,} sequences ({n_unique:,} distinct built) in {t_ours:.2f} s "
          f"= {n_seq / t_ours:,.0f} haplotypes/s", flush=True)

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        res = bcftools_loop(cohort, regions[:nb_genes], samples[:nb_samples], seqs, Path(tmp))
    t_measured = res["t_faidx"] + res["t_consensus"]
    per_window = res["t_faidx"] / res["windows"]
    per_call = res["t_consensus"] / res["calls"]
    t_full = len(regions) * per_window + n_seq * per_call
    extrapolated = res["calls"] < n_seq
    print(f"bcftools loop: {res['calls']:,} consensus calls on {res['windows']} windows x {nb_samples} samples x 2 "
          f"in {t_measured:.1f} s ({per_call * 1e3:.1f} ms per call, {per_window * 1e3:.1f} ms per faidx)", flush=True)
    if res["mismatches"]:
        print(f"FAIL: {res['mismatches']} of {res['calls']} bcftools sequences differ from hapexpr's "
              f"(first: {res['first_bad']})")
        return False, 0.0
    print(f"identical: all {res['calls']:,} bcftools sequences equal hapexpr's, byte for byte")
    how = (f"EXTRAPOLATED to {n_seq:,} calls from the measured {res['calls']:,} "
           f"({len(regions)} x {per_window * 1e3:.1f} ms faidx + {n_seq:,} x {per_call * 1e3:.1f} ms consensus)"
           if extrapolated else "measured on the whole cohort")
    if extrapolated:
        print(f"bcftools loop, whole cohort: {t_full:.1f} s {how}")
    ratio = t_full / t_ours
    print(f"RATIO window={window} bcftools_loop/hapexpr = {ratio:.1f}x "
          f"(hapexpr {t_ours:.2f} s, bcftools {t_full:.1f} s, {how.split(' (')[0]})", flush=True)
    return True, ratio


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds), no speed target")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--genes", type=int, default=100)
    ap.add_argument("--windows", default="6000,196608", help="window sizes in bp, comma-separated")
    ap.add_argument("--bcftools-genes", type=int, default=None,
                    help="run the bcftools loop on the first N genes only and extrapolate (default: all)")
    ap.add_argument("--bcftools-samples", type=int, default=None,
                    help="run the bcftools loop on the first N samples only and extrapolate (default: all)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the simulated cohorts here")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.smoke:
        args.individuals, args.genes, args.windows = 8, 2, "2000"
    for tool in ("bcftools", "samtools"):
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} is not on PATH")
            return 1
    version = subprocess.run(["bcftools", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"# {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}, {version}")
    print(f"# command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    ok, ratios = True, {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.workdir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        for window in (int(w) for w in args.windows.split(",")):
            agreed, ratio = run_window(args, root, window)
            ok &= agreed
            ratios[window] = ratio
            if agreed and not args.smoke and ratio < TARGET:
                print(f"FAIL: speed ratio {ratio:.1f} < {TARGET:.0f} at window {window}")
                ok = False
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
