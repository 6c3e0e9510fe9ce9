"""``hapexpr embed``: embed every distinct haplotype window of a study once, resumably.

Plan first (hash every gene's distinct sequences, see what the store already holds), print the
dedup line, then embed gene by gene and commit each gene's group atomically, so at most one
gene's embeddings are in memory and a killed run loses at most the gene it was working on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapexpr.errors import InputError

ENGINES = ("local", "ray")
# Test-only: seconds to sleep after each batch, so a kill can land mid-run deterministically.
_DELAY_ENV = "_HAPEXPR_EMBED_BATCH_DELAY"


@dataclass
class GenePlan:
    """What one gene needs: ``compute`` rows (indices into gene.sequences) not yet embedded."""

    gene_id: str
    hashes: np.ndarray  # (unique, 32) uint8
    compute: list[int] = field(default_factory=list)


@dataclass
class Plan:
    genes: list[GenePlan]  # genes whose group must be (re)written, in study order
    needed: int  # haplotype sequences the cohort has: genes x samples x 2
    unique: int  # distinct sequences over the study
    cached: int  # distinct sequences already in the store
    to_compute: int  # distinct sequences to embed now
    n_genes: int

    @property
    def dedup(self) -> float:
        return self.needed / max(self.unique, 1)


def make_plan(study, cache) -> Plan:
    """Hash every gene's distinct sequences and decide what to compute.

    A sequence shared by several genes is computed for the first gene only; later genes copy
    it from that gene's group.
    """
    needed = 0
    seen: set[bytes] = set()
    cached: set[bytes] = set()
    scheduled: set[bytes] = set()
    genes: list[GenePlan] = []
    from hapexpr.embed.store import hashes_of

    for gene_id in study.gene_ids:
        gene = study.gene(gene_id)
        needed += int(np.asarray(gene.hap_index).size)
        hashes = hashes_of(gene.sequences)
        digests = [bytes(h) for h in hashes]
        for d in digests:
            if d not in seen:
                seen.add(d)
                if d in cache.index:
                    cached.add(d)
        if cache.gene_complete(gene_id, hashes):
            continue
        plan = GenePlan(gene_id=gene_id, hashes=hashes)
        for row, d in enumerate(digests):
            if d not in cache.index and d not in scheduled:
                scheduled.add(d)
                plan.compute.append(row)
        genes.append(plan)
    return Plan(
        genes=genes, needed=needed, unique=len(seen), cached=len(cached),
        to_compute=len(scheduled), n_genes=len(study.gene_ids),
    )


def assemble(cache, plan: GenePlan, rows_bins: np.ndarray, rows_mean: np.ndarray, *, bins: int, dim: int):
    """Full (unique, bins, dim) / (unique, dim) arrays of a gene from freshly computed rows
    (``plan.compute`` order) and rows already in the store."""
    n = len(plan.hashes)
    out_bins = np.zeros((n, bins, dim), dtype=np.float32)
    out_mean = np.zeros((n, dim), dtype=np.float32)
    fresh = set(plan.compute)
    if plan.compute:
        out_bins[plan.compute] = rows_bins
        out_mean[plan.compute] = rows_mean
    rest = [r for r in range(n) if r not in fresh]
    if rest:
        b, m = cache.index.fetch([bytes(plan.hashes[r]) for r in rest], bins=bins, dim=dim)
        out_bins[rest], out_mean[rest] = b, m
    return out_bins, out_mean


class Progress:
    """A rich progress bar over haplotypes with rate and ETA (silent when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self._bar = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from hapexpr.progress import console

            self._bar = RichProgress(
                TextColumn("embedding"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("embed", total=self.total, rate="")
            self._t0 = time.perf_counter()
            self._done = 0
        return self

    def advance(self, k: int) -> None:
        if self._bar is not None:
            self._done += k
            rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
            self._bar.update(self._task, advance=k, rate=f"{rate:,.1f} haplotypes/s")
        delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
        if delay:
            time.sleep(delay)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _say(text: str, enabled: bool) -> None:
    if enabled:
        from hapexpr.progress import console

        console.print(text, markup=False, soft_wrap=True)


def run_embed(
    study_path: str | Path,
    *,
    model: str = "tiny",
    layer: int | None = None,
    bins: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
    engine: str = "local",
    ray_address: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict:
    """Embed every distinct haplotype window of a study into ``STUDY/embeddings/<fingerprint>/``.

    Returns a summary: ``needed`` (genes x samples x 2 sequences), ``unique`` (distinct over the
    study), ``cached`` (already stored before this run), ``computed`` (embedded now),
    ``seconds``, ``fingerprint``, ``genes_written``.
    """
    from hapexpr.embed.engine import build_embedder, model_source
    from hapexpr.embed.store import EmbeddingCache, clean_stale, store_root, write_info
    from hapexpr.io.atomic import study_lock
    from hapexpr.study import Study

    t0 = time.perf_counter()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", hint="use --engine local or --engine ray")
    study = Study.open(study_path)
    if model != "tiny" and not Path(model).expanduser().is_dir():
        raise InputError(
            f"--model {model} is neither 'tiny' nor a checkpoint directory",
            path=model,
            hint="save a checkpoint locally first (see docs/embeddings.md); nothing is downloaded",
        )
    source = model_source(model, trust_remote_code=trust_remote_code)
    embedder = build_embedder(
        source, layer=layer, bins=bins, window=study.window, device=device, batch_size=batch_size,
    )
    info = embedder.info()
    root = store_root(study.path, info["fingerprint"])
    with study_lock(study.path, "embed"):
        root.mkdir(parents=True, exist_ok=True)
        clean_stale(root)
        write_info(root, info)
        cache = EmbeddingCache(root)
        plan = make_plan(study, cache)
        _say(
            f"{plan.n_genes} genes: {plan.needed:,} haplotype sequences needed, {plan.unique:,} "
            f"unique (dedup x{plan.dedup:.1f}), {plan.cached:,} already cached, "
            f"{plan.to_compute:,} to embed with {info['model']} "
            f"(layer {info['layer']}, {info['bins']} bins; store {info['fingerprint']})",
            progress,
        )
        with Progress(plan.to_compute, enabled=progress) as bar:
            if engine == "ray":
                from hapexpr.embed.ray_engine import embed_with_ray

                computed = embed_with_ray(
                    study, plan, cache, embedder, source=source, ray_address=ray_address,
                    progress=bar,
                )
            else:
                computed = _embed_local(study, plan, cache, embedder, progress=bar)
        seconds = time.perf_counter() - t0
        summary = {
            "needed": plan.needed,
            "unique": plan.unique,
            "cached": plan.cached,
            "computed": computed,
            "genes_written": len(plan.genes),
            "seconds": round(seconds, 3),
            "fingerprint": info["fingerprint"],
            "engine": engine,
        }
        write_info(root, info, last_run=summary)
    _say(
        f"unique {plan.unique:,}, cached {plan.cached:,}, computed {computed:,} "
        f"in {seconds:.1f} s -> {root}",
        progress,
    )
    return summary


def _embed_local(study, plan: Plan, cache, embedder, *, progress: Progress) -> int:
    computed = 0
    for gp in plan.genes:
        gene = study.gene(gp.gene_id)
        seqs = gene.sequences
        b, m = embedder.compute(
            [seqs[r] for r in gp.compute], tss_offset=gene.tss_offset, on_batch=progress.advance
        )
        computed += len(gp.compute)
        full_b, full_m = assemble(cache, gp, b, m, bins=embedder.bins, dim=embedder.dim)
        cache.write_gene(gp.gene_id, gp.hashes, full_b, full_m)
        del gene, seqs, b, m, full_b, full_m
    return computed
