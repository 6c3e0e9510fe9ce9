"""``hapexpr embed``: embed every distinct haplotype window of a study once, resumably.

Plan first (hash every gene's distinct sequences, see what the store already holds), print the
dedup line, then embed gene by gene and commit each gene's group atomically, so at most one
gene's embeddings are in memory and a killed run loses at most the gene it was working on.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hapexpr.embed.plan import Plan, assemble, make_plan
from hapexpr.embed.ray_engine import embed_with_ray
from hapexpr.embed.registry import build_embedder, resolve
from hapexpr.embed.store import (
    EmbeddingCache,
    clean_stale,
    data_location,
    layer_note,
    store_root,
    study_key,
    write_info,
)
from hapexpr.errors import InputError
from hapexpr.io.atomic import study_lock
from hapexpr.preflight import torch_device, writable_folder
from hapexpr.progress import console
from hapexpr.study import Study

ENGINES = ("local", "ray")
# Test-only: seconds to sleep after each batch, so a kill can land mid-run deterministically.
_DELAY_ENV = "_HAPEXPR_EMBED_BATCH_DELAY"


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
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

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
    cache: str | Path | None = None,
    seq_len: int | None = None,
    progress: bool = True,
) -> dict:
    """Embed every distinct haplotype window of a study into ``STUDY/embeddings/<fingerprint>/``.

    Returns a summary: ``needed`` (genes x samples x 2 sequences), ``unique`` (distinct over the
    study), ``cached`` (already stored before this run), ``computed`` (embedded now),
    ``seconds``, ``fingerprint``, ``genes_written``. ``cache``: a folder holding stores shared
    across studies and cohorts (``DIR/<fingerprint>/``): sequences any study embedded there are
    reused, and this study's embeddings are added to it.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", hint="use --engine local or --engine ray")
    study = Study.open(study_path)
    study.require_sequence("embed")
    torch_device(device)  # before a model is loaded
    if cache is not None:
        writable_folder(cache, what="the --cache folder")
    source = resolve(model).source_for(model, trust_remote_code=trust_remote_code, seq_len=seq_len)
    embedder = build_embedder(
        source,
        layer=layer,
        bins=bins,
        window=study.window,
        device=device,
        batch_size=batch_size,
    )
    with study_lock(study.path, "embed"):
        return embed_study(study, embedder, engine=engine, ray_address=ray_address, cache=cache, progress=progress)


def embed_study(
    study: Study,
    embedder,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """:func:`run_embed` with an embedder already built, for a caller that holds the study lock
    (e.g. a method that fills its own store before fitting). Returns the same summary."""
    t0 = time.perf_counter()
    study = embedder.use_study(study)  # e.g. Enformer's context haplotypes instead of the window
    if getattr(study, "is_context", False):
        study.store.build(progress=progress)  # built on first use, under the caller's lock
    source = embedder.source
    info = embedder.info()
    link = store_root(study.path, info["fingerprint"])
    before = json.loads((link / "info.json").read_text()) if (link / "info.json").exists() else {}
    if cache is None and before.get("store_root"):  # the store already lives in a shared cache
        info = {**info, "store_root": before["store_root"], "study_key": before["study_key"]}
    elif cache is not None:
        shared = Path(cache).expanduser().resolve() / info["fingerprint"]
        info = {**info, "store_root": str(shared), "study_key": study_key(study.path)}
    root, genes_dir = data_location(link, info)
    genes_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(genes_dir)
    if root != link:
        write_info(root, {k: v for k, v in info.items() if k not in ("store_root", "study_key")})
    write_info(link, info)
    store = EmbeddingCache(root, genes_dir, dtype=embedder.store_dtype)
    plan = make_plan(study, store)
    _say(
        f"{plan.n_genes} genes: {plan.needed:,} haplotype sequences needed, {plan.unique:,} "
        f"unique (dedup x{plan.dedup:.1f}), {plan.cached:,} already cached, "
        f"{plan.to_compute:,} to embed with {info['model']} "
        f"({embedder.bins} bins{layer_note(info)}; store {info['fingerprint']})",
        progress,
    )
    with Progress(plan.to_compute, enabled=progress) as bar:
        if engine == "ray":
            computed = embed_with_ray(
                study, plan, store, embedder, source=source, ray_address=ray_address, progress=bar
            )
        else:
            computed = _embed_local(study, plan, store, embedder, progress=bar)
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
    write_info(link, info, last_run=summary)
    _say(
        f"unique {plan.unique:,}, cached {plan.cached:,}, computed {computed:,} in {seconds:.1f} s -> {root}",
        progress,
    )
    return summary


def _embed_local(study, plan: Plan, cache, embedder, *, progress: Progress) -> int:
    computed = 0
    for gp in plan.genes:
        gene = study.gene(gp.gene_id)
        seqs = gene.sequences
        b, m = embedder.compute([seqs[r] for r in gp.compute], tss_offset=gene.tss_offset, on_batch=progress.advance)
        computed += len(gp.compute)
        full_b, full_m = assemble(cache, gp, b, m, bins=embedder.bins, dim=embedder.dim)
        cache.write_gene(gp.gene_id, gp.hashes, full_b, full_m)
        del gene, seqs, b, m, full_b, full_m
    return computed
