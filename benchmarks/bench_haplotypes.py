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

With ``--gvl-python PATH`` (an interpreter of a separate venv holding PyPI ``genvarloader``; it is
not installed in the main environment because it would downgrade polars and pyarrow), GenVarLoader
also goes from VCF to haplotype arrays on copies of the same VCF and FASTA and a BED of the same
regions: ``gvl.write`` (VCF -> dataset), ``gvl.Dataset.open(..., reference=...)``
``.with_len("ragged").with_seqs("haplotypes")``, then ``ds[region]`` for every region (all samples
x 2). Write, open and read are timed separately; the ratio compared is write+open+read (VCF to
arrays, like hapexpr's) over hapexpr's time, and read alone is printed too. Every one of the
genes x samples x 2 sequences is checked: its blake2b-128 digest and length must equal hapexpr's
(ragged output is the full haplotype, so no padding/truncation convention applies here).

    /tmp/gvl-venv/bin/pip install genvarloader   # once, in its own venv
    python benchmarks/bench_haplotypes.py --gvl-python /tmp/gvl-venv/bin/python

Targets (full mode): hapexpr at least 20x faster than the bcftools loop, and (with --gvl-python)
no slower than GenVarLoader's write+open+read, at every window size.
"""

from __future__ import annotations

import argparse
import json
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


def hapexpr_haplotypes(
    cohort: Path, regions, *, keep_genes: int, keep_samples: int, digests: bool = False
) -> tuple[float, list, list[str], int, dict | None]:
    """Build every (sample, haplotype) sequence of every region with hapexpr.

    Returns seconds, for the first ``keep_genes`` regions the (keep_samples, 2) nested list of
    sequences the bcftools loop is checked against (only those are kept: at 196 kb the whole
    cohort would be ~12 GB), the sample ids, the number of distinct haplotypes built, and with
    ``digests`` a dict of (genes, samples, 2) arrays for the GenVarLoader check: ``digest``
    (16-byte blake2b of every sequence, as (genes, samples, 2, 16) uint8), ``length``, ``indel``
    (a length-changing ALT was applied) and ``skipped`` (a carried ALT was skipped by bcftools' overlap
    rule). The hashing is timed apart and left out of the seconds returned.
    """
    import hashlib

    import numpy as np

    from hapexpr.haplotypes import build_haplotypes, unique_haplotypes
    from hapexpr.io.fasta import Reference
    from hapexpr.io.vcf import VcfReader

    t0 = time.perf_counter()
    t_check = 0.0
    reference = Reference(cohort / "reference.fa")
    reader = VcfReader(cohort / "genotypes.vcf.gz")
    out, n_unique, check = [], 0, None
    for g, (chrom, start, end) in enumerate(regions):
        variants = reader.fetch(chrom, start, end, reference=reference)
        sequence = reference.fetch(chrom, start, end)
        alleles, index = unique_haplotypes(variants.genotypes)
        haps = build_haplotypes(sequence, start, variants.pos, variants.ref, variants.alt, alleles)
        built = [h.sequence for h in haps]
        n_unique += len(built)
        per_person = [[built[i] for i in pair] for pair in index.tolist()]  # every (sample, haplotype)
        if len(out) < keep_genes:
            out.append(per_person[:keep_samples])
        if digests:  # not part of hapexpr's work: timed apart and subtracted
            t1 = time.perf_counter()
            if check is None:
                shape = (len(regions), len(per_person), 2)
                check = dict(
                    digest=np.zeros((*shape, 16), np.uint8),
                    length=np.zeros(shape, np.int64),
                    indel=np.zeros(shape, bool),
                    skipped=np.zeros(shape, bool),
                )
            is_indel = np.array([len(r) != len(a) for r, a in zip(variants.ref, variants.alt)], dtype=bool)
            dig = np.frombuffer(b"".join(hashlib.blake2b(b, digest_size=16).digest() for b in built), np.uint8).reshape(
                len(built), 16
            )
            check["digest"][g] = dig[index]
            check["length"][g] = np.array([len(b) for b in built])[index]
            check["indel"][g] = np.array([bool((h.applied & is_indel).any()) for h in haps])[index]
            check["skipped"][g] = np.array([bool((a & ~h.applied).any()) for a, h in zip(alleles, haps)])[index]
            t_check += time.perf_counter() - t1
        del built, per_person, haps
    seconds = time.perf_counter() - t0 - t_check
    return seconds, out, list(reader.samples), n_unique, check


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
                    check=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                seq = _fasta_body(done.stdout)
                t_consensus += time.perf_counter() - t0
                calls += 1
                if seq != expected[g][s][h - 1]:
                    mismatches += 1
                    first_bad = first_bad or f"{chrom}:{start}-{end} {sample}_{h}"
    return dict(
        t_faidx=t_faidx,
        t_consensus=t_consensus,
        windows=len(regions),
        calls=calls,
        mismatches=mismatches,
        first_bad=first_bad,
    )


# Run by --gvl-python in GenVarLoader's own interpreter (a separate venv: genvarloader pins
# polars 1.x / pyarrow 24, which would downgrade this environment's). argv: workdir (holds
# genotypes.vcf.gz(+tbi), reference.fa(+fai), regions.bed), a file of hapexpr's sample ids one a
# line (GenVarLoader orders samples lexicographically; results are put back in hapexpr's order).
# Writes result.npz (digest (genes, samples, 2, 16) uint8 blake2b-128, length (genes, samples, 2))
# and timing.json. Only gvl calls are timed; hashing is not.
GVL_SCRIPT = r"""
import hashlib, json, sys, time
from importlib.metadata import version
from pathlib import Path

t_import = time.perf_counter()
import genvarloader as gvl
import numpy as np
t_import = time.perf_counter() - t_import

work = Path(sys.argv[1])
samples = Path(sys.argv[2]).read_text().split()
c0 = time.process_time()
t0 = time.perf_counter()
gvl.write(path=work / "ds.gvl", bed=work / "regions.bed", variants=work / "genotypes.vcf.gz", overwrite=True)
t_write = time.perf_counter() - t0

t0 = time.perf_counter()
ds = gvl.Dataset.open(work / "ds.gvl", reference=work / "reference.fa").with_len("ragged").with_seqs("haplotypes")
t_open = time.perf_counter() - t0
n_regions = ds.shape[0]
pos = {s: i for i, s in enumerate(ds.samples)}
order = np.array([pos[s] for s in samples])
digest = np.zeros((n_regions, len(samples), 2, 16), np.uint8)
length = np.zeros((n_regions, len(samples), 2), np.int64)
t_read = t_hash = 0.0
for r in range(n_regions):
    t0 = time.perf_counter()
    haps = ds[r]  # Ragged (samples, 2, ~length) S1: every sample's two haplotypes of region r
    data = haps.data
    t_read += time.perf_counter() - t0
    c1 = time.process_time()
    raw = data.view(np.uint8).tobytes()
    lens = np.asarray(haps.lengths).reshape(-1, 2)
    flat = np.concatenate([[0], np.cumsum(lens.ravel())])
    assert flat[-1] == len(raw), "haplotype bytes are not contiguous in sample, haplotype order"
    for i, k in enumerate(order):
        for h in range(2):
            j = 2 * k + h
            seq = raw[flat[j]:flat[j + 1]]
            length[r, i, h] = lens[k, h]
            digest[r, i, h] = np.frombuffer(hashlib.blake2b(seq, digest_size=16).digest(), np.uint8)
    t_hash += time.process_time() - c1
np.savez(work / "result.npz", digest=digest, length=length)
(work / "timing.json").write_text(json.dumps(dict(
    write=t_write, open=t_open, read=t_read, imp=t_import,
    cpu=time.process_time() - c0 - t_hash, version=version("genvarloader"), threads=__import__("os").cpu_count())))
"""


def genvarloader_haplotypes(gvl_python: Path, cohort: Path, regions, samples: list[str], tmp: Path) -> dict:
    """Run GVL_SCRIPT in ``gvl_python`` on copies of the cohort's VCF and FASTA and a BED of ``regions``.

    The inputs are copied so GenVarLoader builds its side files (the VCF's .gvi index at write,
    the FASTA's .gvlfa cache at open) inside the timed run and the cohort stays untouched.
    Returns timing.json's dict plus ``digest`` and ``length`` from result.npz.
    """
    import numpy as np

    for name in ("genotypes.vcf.gz", "genotypes.vcf.gz.tbi", "reference.fa", "reference.fa.fai"):
        shutil.copyfile(cohort / name, tmp / name)
    with open(tmp / "regions.bed", "w") as fh:  # BED: 0-based start, end exclusive; no strand (no RC)
        for g, (chrom, start, end) in enumerate(regions):
            fh.write(f"{chrom}\t{start - 1}\t{end}\tg{g}\n")
    (tmp / "samples.txt").write_text("\n".join(samples) + "\n")
    (tmp / "gvl_run.py").write_text(GVL_SCRIPT)
    with open(tmp / "gvl.log", "w") as log:
        done = subprocess.run(
            [str(gvl_python), str(tmp / "gvl_run.py"), str(tmp), str(tmp / "samples.txt")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = (tmp / "gvl.log").read_text()[-3000:]
        raise RuntimeError(f"GenVarLoader script exited {done.returncode}:\n{tail}")
    res = json.loads((tmp / "timing.json").read_text())
    with np.load(tmp / "result.npz") as z:
        res["digest"], res["length"] = z["digest"], z["length"]
    return res


def compare_genvarloader(
    args, window: int, cohort: Path, regions, samples, t_ours: float, check: dict, root: Path
) -> tuple[bool, float]:
    """GenVarLoader vs hapexpr on every (gene, sample, haplotype); prints timings, agreement, ratio."""
    import numpy as np

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        gvl = genvarloader_haplotypes(args.gvl_python, cohort, regions, samples, Path(tmp))
    t_total = gvl["write"] + gvl["open"] + gvl["read"]
    n_seq = check["length"].size
    print(
        f"GenVarLoader {gvl['version']} (own venv, up to {gvl['threads']} threads): write {gvl['write']:.2f} s "
        f"(VCF -> dataset), open {gvl['open']:.2f} s, read {gvl['read']:.2f} s (all {n_seq:,} haplotypes, "
        f"ragged); together {t_total:.2f} s, {gvl['cpu']:.2f} s CPU in its process (import {gvl['imp']:.1f} s not counted)",
        flush=True,
    )
    same = (gvl["digest"] == check["digest"]).all(axis=-1) & (gvl["length"] == check["length"])
    indel, skipped = check["indel"], check["skipped"]
    plain = ~indel & ~skipped
    print(
        f"agreement with hapexpr (blake2b-128 of every sequence + length): {int(same.sum()):,} of {n_seq:,} identical; "
        f"no indel applied and no ALT skipped: {int(same[plain].sum()):,} of {int(plain.sum()):,}; "
        f"with an indel applied: {int(same[indel].sum()):,} of {int(indel.sum()):,}; "
        f"with an overlapping ALT skipped (bcftools rule): {int(same[skipped].sum()):,} of {int(skipped.sum()):,}"
    )
    ok = bool(same[plain].all())
    if not same.all():
        bad = np.argwhere(~same)
        g, s, h = bad[0]
        chrom, start, end = regions[g]
        print(
            f"{'FAIL' if not ok else 'differ'}: {len(bad):,} sequences differ; first {chrom}:{start}-{end} "
            f"{samples[s]} hap {h + 1}: hapexpr {check['length'][g, s, h]:,} bp, GenVarLoader "
            f"{gvl['length'][g, s, h]:,} bp (indel applied {bool(indel[g, s, h])}, ALT skipped {bool(skipped[g, s, h])})"
        )
    else:
        print(f"identical: all {n_seq:,} GenVarLoader sequences equal hapexpr's (blake2b-128 and length)")
    ratio, ratio_read = t_total / t_ours, gvl["read"] / t_ours
    print(
        f"RATIO window={window} genvarloader/hapexpr = {ratio:.2f}x (write+open+read {t_total:.2f} s "
        f"vs hapexpr {t_ours:.2f} s); read only: {ratio_read:.2f}x",
        flush=True,
    )
    return ok, ratio


def run_window(args, root: Path, window: int) -> tuple[bool, float]:
    t0 = time.perf_counter()
    cohort = simulate_inputs(root, individuals=args.individuals, genes=args.genes, window=window, seed=args.seed)
    t_sim = time.perf_counter() - t0
    regions = gene_regions(cohort, window)
    n_bp = sum(e - s + 1 for _, s, e in regions)
    print(
        f"\n## window {window:,} bp: {args.individuals} people x {len(regions)} genes, regions of "
        f"{n_bp / len(regions):,.0f} bp on average (window + prepare's indel margin); "
        f"cohort {cohort} ({t_sim:.1f} s to simulate or reuse)",
        flush=True,
    )

    nb_genes = len(regions) if args.bcftools_genes is None else min(args.bcftools_genes, len(regions))
    nb_samples = args.individuals if args.bcftools_samples is None else min(args.bcftools_samples, args.individuals)
    t_ours, seqs, samples, n_unique, check = hapexpr_haplotypes(
        cohort, regions, keep_genes=nb_genes, keep_samples=nb_samples, digests=args.gvl_python is not None
    )
    n_seq = len(regions) * len(samples) * 2
    print(
        f"hapexpr: {n_seq:,} sequences ({n_unique:,} distinct built) in {t_ours:.2f} s "
        f"= {n_seq / t_ours:,.0f} haplotypes/s",
        flush=True,
    )

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        res = bcftools_loop(cohort, regions[:nb_genes], samples[:nb_samples], seqs, Path(tmp))
    t_measured = res["t_faidx"] + res["t_consensus"]
    per_window = res["t_faidx"] / res["windows"]
    per_call = res["t_consensus"] / res["calls"]
    t_full = len(regions) * per_window + n_seq * per_call
    extrapolated = res["calls"] < n_seq
    print(
        f"bcftools loop: {res['calls']:,} consensus calls on {res['windows']} windows x {nb_samples} samples x 2 "
        f"in {t_measured:.1f} s ({per_call * 1e3:.1f} ms per call, {per_window * 1e3:.1f} ms per faidx)",
        flush=True,
    )
    if res["mismatches"]:
        print(
            f"FAIL: {res['mismatches']} of {res['calls']} bcftools sequences differ from hapexpr's "
            f"(first: {res['first_bad']})"
        )
        return False, 0.0
    print(f"identical: all {res['calls']:,} bcftools sequences equal hapexpr's, byte for byte")
    how = (
        f"EXTRAPOLATED to {n_seq:,} calls from the measured {res['calls']:,} "
        f"({len(regions)} x {per_window * 1e3:.1f} ms faidx + {n_seq:,} x {per_call * 1e3:.1f} ms consensus)"
        if extrapolated
        else "measured on the whole cohort"
    )
    if extrapolated:
        print(f"bcftools loop, whole cohort: {t_full:.1f} s {how}")
    ratio = t_full / t_ours
    print(
        f"RATIO window={window} bcftools_loop/hapexpr = {ratio:.1f}x "
        f"(hapexpr {t_ours:.2f} s, bcftools {t_full:.1f} s, {how.split(' (')[0]})",
        flush=True,
    )
    if args.gvl_python is not None:
        gvl_ok, gvl_ratio = compare_genvarloader(args, window, cohort, regions, samples, t_ours, check, root)
        args.gvl_ratios[window] = gvl_ratio
        if not gvl_ok:
            return False, ratio
    return True, ratio


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds), no speed target")
    ap.add_argument("--individuals", type=int, default=290)
    ap.add_argument("--genes", type=int, default=100)
    ap.add_argument("--windows", default="6000,196608", help="window sizes in bp, comma-separated")
    ap.add_argument(
        "--bcftools-genes",
        type=int,
        default=None,
        help="run the bcftools loop on the first N genes only and extrapolate (default: all)",
    )
    ap.add_argument(
        "--bcftools-samples",
        type=int,
        default=None,
        help="run the bcftools loop on the first N samples only and extrapolate (default: all)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the simulated cohorts here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--gvl-python",
        type=Path,
        default=None,
        help="also run GenVarLoader with this interpreter (a venv with genvarloader installed)",
    )
    args = ap.parse_args(argv)
    args.gvl_ratios = {}
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
            if agreed and not args.smoke and window in args.gvl_ratios and args.gvl_ratios[window] < 1.0:
                print(
                    f"FAIL: GenVarLoader faster than hapexpr at window {window} "
                    f"(ratio {args.gvl_ratios[window]:.2f} < 1)"
                )
                ok = False
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
