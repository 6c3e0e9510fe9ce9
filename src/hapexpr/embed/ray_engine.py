"""``hapexpr embed --engine ray``: the same embedding, spread over a Ray cluster with Ray Data.

Pipeline: one item per gene to embed -> ``flat_map`` reads the gene from the study and emits the
sequences not yet stored -> ``map_batches`` with a model-holding actor class (one actor per GPU,
or per CPU worker without GPUs; each rebuilds the model and checks its weights hash) -> the
driver receives rows in order and commits each gene's group to the same store as the local
engine, atomically, as soon as the gene is whole. Workers read the study by path, so on a
multi-node cluster the study (and a ``--model PATH`` checkpoint) must be on a shared filesystem.

Ray is an optional extra (``pip install hapexpr[distributed]``), imported only here.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hapexpr.context_store import ContextStore, ContextStudy
from hapexpr.embed.plan import assemble
from hapexpr.embed.registry import build_embedder
from hapexpr.errors import InputError
from hapexpr.study import Study


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(
            "--engine ray needs Ray, which is not installed",
            hint="pip install 'hapexpr[distributed]' (or 'ray[data]'), or use --engine local",
        ) from None
    return ray


def _gene_rows(item: dict, *, study_path: str, context: int = 0) -> list[dict]:
    """Ray flat_map: the sequences of one gene that the plan says to compute (``context`` > 0:
    the gene's context haplotypes cut to that width, as Enformer embeds them, not its window)."""
    study = Study.open(study_path)
    gene = (
        ContextStudy(study, ContextStore.open(study), context).gene(str(item["gene_id"]))
        if context
        else study.gene(str(item["gene_id"]))
    )
    seqs = gene.sequences
    return [{"gene_id": str(item["gene_id"]), "row": int(r), "sequence": bytes(seqs[int(r)])} for r in item["rows"]]


class EmbedActor:
    """Ray Data actor: holds one model and embeds batches of rows."""

    def __init__(
        self,
        *,
        source: dict,
        layer: int,
        bins: int,
        window: int,
        device: str,
        batch_size: int,
        weights_sha256: str,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.embedder = build_embedder(
            source, layer=layer, bins=bins, window=window, device=device, batch_size=batch_size
        )
        if self.embedder.weights_sha256 != weights_sha256:
            raise RuntimeError(
                f"a Ray worker loaded different weights for {source['model_spec']} than the driver; "
                "the checkpoint must be the same file on every node"
            )

    def __call__(self, batch: dict) -> dict:
        seqs = [bytes(s) for s in batch["sequence"]]
        b, m = self.embedder.compute(seqs)
        return {"gene_id": batch["gene_id"], "row": batch["row"], "bins": b, "mean": m}


def embed_with_ray(study, plan, cache, embedder, *, source: dict, ray_address: str | None, progress) -> int:
    """Embed ``plan`` on Ray and commit every gene into ``cache``; returns the rows computed."""
    ray = _import_ray()

    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        return _run(ray, study, plan, cache, embedder, source=source, progress=progress)
    finally:
        if started:
            ray.shutdown()


def _actors(ray, device: str) -> tuple[int, dict]:
    """Number of model actors and the resources each asks for."""
    resources = ray.cluster_resources()
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise InputError(
                "--device cuda with --engine ray, but the Ray cluster has no GPUs",
                hint="use --device cpu, or join a cluster with GPUs via --ray-address",
            )
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    cpus = int(resources.get("CPU", 1))
    # Leave one CPU for the tasks that read genes from the study.
    return max(1, cpus - 1), {"num_cpus": 1}


def _run(ray, study, plan, cache, embedder, *, source, progress) -> int:
    ctx = ray.data.DataContext.get_current()
    # Rows must come back gene by gene so each gene is committed (and freed) as soon as it is whole.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    todo = [{"gene_id": gp.gene_id, "rows": list(gp.compute)} for gp in plan.genes if gp.compute]
    pending = deque(plan.genes)
    received: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    counts: dict[str, int] = {}
    computed = 0

    def commit_ready() -> None:
        while pending and counts.get(pending[0].gene_id, 0) == len(pending[0].compute):
            gp = pending.popleft()
            parts = received.pop(gp.gene_id, [])
            b = np.zeros((len(gp.compute), embedder.bins, embedder.dim), dtype=np.float32)
            m = np.zeros((len(gp.compute), embedder.dim), dtype=np.float32)
            where = {r: i for i, r in enumerate(gp.compute)}
            for rows, pb, pm in parts:
                idx = [where[int(r)] for r in rows]
                b[idx], m[idx] = pb, pm
            full_b, full_m = assemble(cache, gp, b, m, bins=embedder.bins, dim=embedder.dim)
            cache.write_gene(gp.gene_id, gp.hashes, full_b, full_m)

    commit_ready()
    if todo:
        n_actors, res = _actors(ray, embedder.device)
        ds = ray.data.from_items(todo).flat_map(
            _gene_rows,
            fn_kwargs={
                "study_path": str(study.path.resolve()),
                "context": study.window if getattr(study, "is_context", False) else 0,
            },
        )
        ds = ds.map_batches(
            EmbedActor,
            batch_size=embedder.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            fn_constructor_kwargs={
                "source": source,
                "layer": embedder.layer,
                "bins": embedder.bins,
                "window": embedder.window,
                "device": embedder.device,
                "batch_size": embedder.batch_size,
                "weights_sha256": embedder.weights_sha256,
                "threads": int(res.get("num_cpus", 1)),
            },
            **res,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            genes = np.asarray(batch["gene_id"]).astype(str)
            for gene_id in dict.fromkeys(genes):
                sel = genes == gene_id
                received.setdefault(gene_id, []).append(
                    (np.asarray(batch["row"])[sel], np.asarray(batch["bins"])[sel], np.asarray(batch["mean"])[sel])
                )
                counts[gene_id] = counts.get(gene_id, 0) + int(sel.sum())
            computed += len(genes)
            progress.advance(len(genes))
            commit_ready()
    if pending:
        raise RuntimeError(f"Ray returned incomplete results for gene {pending[0].gene_id}")
    return computed
