"""What ``hapexpr embed`` has to do: every gene's distinct sequences hashed against the store.

A sequence shared by several genes (or already stored, by this study or another sharing the
cache) is computed once; :func:`assemble` fills a gene's group from fresh rows and stored ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hapexpr.embed.store import hashes_of


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
        genes=genes,
        needed=needed,
        unique=len(seen),
        cached=len(cached),
        to_compute=len(scheduled),
        n_genes=len(study.gene_ids),
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
