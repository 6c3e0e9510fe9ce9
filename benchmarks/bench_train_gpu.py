"""Per-gene nt-transformer training, one gene at a time vs ``--gene-batch G`` genes at a time.

Issue 14: each gene's model is tiny (tens of thousands of parameters, ~290 people), so one model
never fills a GPU; ``hapexpr fit STUDY --method nt-transformer --gene-batch G --device cuda``
trains G genes' models as one batched network (:mod:`hapexpr.estimators.nt_batched`). Measured
in the same run, on the same synthetic genes (a planted haplotype signal in random
(samples, 2, bins, dim) embeddings; speed does not depend on the values):

- ``one-at-a-time``: the baseline. On CPU, :meth:`NTTransformerModel.fit` per gene (what
  ``hapexpr fit`` does by default); on CUDA, the batched trainer with one gene per call (the
  default path has no GPU mode), timed on ``--baseline-genes`` genes;
- ``batched``: :func:`fit_genes_batched` on ``--gene-batch`` genes per call, fp32, and on CUDA
  also bf16 autocast (``--precision bf16``).

Agreement: the max |difference| of standardised predictions on held-out people between each
batched run and the CPU default path (on the first ``--reference-genes`` genes), checked
against the tolerances of docs/nt-transformer.md (CPU fp32 1e-3 for 60-epoch trainings, 1e-4
measured for short ones; CUDA fp32 1e-2 and bf16 5e-2, both still to be confirmed on a GPU); the script exits 1 when one is exceeded.

    python benchmarks/bench_train_gpu.py --device cuda     # GPU, realistic sizes, a few minutes
    python benchmarks/bench_train_gpu.py --smoke           # CPU, tiny sizes: checks the script runs

Prints genes/s per line and ``RATIO train_gpu batched/one_at_a_time = ...x genes/s``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

TOLERANCE = {("cpu", "fp32"): 1e-3, ("cuda", "fp32"): 1e-2, ("cuda", "bf16"): 5e-2}


def synthetic_genes(n_genes: int, n: int, bins: int, dim: int, seed: int = 0):
    """Per gene: X (n, 2, bins, dim) float32 and y (n,), 15 distinct haplotypes, h2 0.5."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_genes):
        haps = rng.normal(size=(15, bins, dim)).astype(np.float32)
        idx = rng.integers(0, 15, size=(n, 2))
        X = haps[idx]
        signal = X[:, :, bins // 2, 0].sum(axis=1) + np.tanh(X[:, :, 0, 1]).sum(axis=1)
        y = np.sqrt(0.5) * (signal - signal.mean()) / signal.std() + np.sqrt(0.5) * rng.normal(size=n)
        out.append((X, y))
    return out


def main() -> int:
    import torch

    from hapexpr.estimators.nt_batched import fit_genes_batched
    from hapexpr.estimators.nt_training import TrainConfig
    from hapexpr.estimators.nt_transformer import NTTransformerModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--genes", type=int, default=128, help="genes trained by the batched runs")
    ap.add_argument("--gene-batch", type=int, default=128)
    ap.add_argument("--baseline-genes", type=int, default=8, help="genes timed one at a time")
    ap.add_argument("--reference-genes", type=int, default=4, help="genes fit by the CPU default path")
    ap.add_argument("--samples", type=int, default=290)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--dim", type=int, default=1280, help="embedding dim (NT-500M: 1280)")
    ap.add_argument("--max-epochs", type=int, default=60)
    args = ap.parse_args()
    if args.smoke:
        args.device = args.device or "cpu"
        args.genes, args.gene_batch, args.baseline_genes, args.reference_genes = 8, 4, 4, 4
        args.samples, args.bins, args.dim, args.max_epochs = 100, 8, 16, 12
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    torch.set_num_threads(1)  # the training functions use one thread on CPU; so does the baseline
    name = torch.cuda.get_device_name(device) if kind == "cuda" else "cpu"
    n_train = round(0.8 * args.samples)  # one outer fold of 5
    print(
        f"# device {name}, torch {torch.__version__}; {args.genes} genes x {n_train} training people "
        f"(+{args.samples - n_train} held out), {args.bins} bins x {args.dim} dims, d_model 32, "
        f"max {args.max_epochs} epochs, 4 inner folds + refit; gene batch {args.gene_batch}",
        flush=True,
    )
    data = synthetic_genes(args.genes, args.samples, args.bins, args.dim)
    tc = replace(TrainConfig(), max_epochs=args.max_epochs)

    def estimators(k: int):
        return [NTTransformerModel(train_config=tc, seed=7) for _ in range(k)]

    def sync():
        if kind == "cuda":
            torch.cuda.synchronize()

    def batched(genes, g: int, precision: str, dev: str):
        """Fitted estimators of ``genes`` (indices), ``g`` at a time; and the seconds taken."""
        sync()
        t0 = time.perf_counter()
        fitted = []
        for s in range(0, len(genes), g):
            chunk = genes[s : s + g]
            fitted += fit_genes_batched(
                estimators(len(chunk)),
                [data[i][0][:n_train] for i in chunk],
                [data[i][1][:n_train] for i in chunk],
                device=dev,
                precision=precision,
            )
        sync()
        return fitted, time.perf_counter() - t0

    def z(est, i):
        return (est.predict(data[i][0][n_train:]) - est.y_mean_) / est.y_scale_

    if kind == "cuda":  # warm-up: CUDA context, kernels, allocator
        batched([0], 1, "fp32", device)
    ref = list(range(min(args.reference_genes, args.genes)))
    t0 = time.perf_counter()
    reference = [
        NTTransformerModel(train_config=tc, seed=7).fit(data[i][0][:n_train], data[i][1][:n_train]) for i in ref
    ]
    t_ref = time.perf_counter() - t0
    base_genes = list(range(min(args.baseline_genes, args.genes)))
    if kind == "cpu":
        base_label, base_rate = "one-at-a-time NTTransformerModel.fit (cpu)", len(ref) / t_ref
        print(f"{base_label:48s}: {len(ref):4d} genes {t_ref:8.2f} s  {base_rate:8.3f} genes/s")
    else:
        _, t_base = batched(base_genes, 1, "fp32", device)
        base_label, base_rate = f"one-at-a-time (gene batch 1, {device}, fp32)", len(base_genes) / t_base
        print(
            f"{'CPU default path (reference)':48s}: {len(ref):4d} genes {t_ref:8.2f} s  {len(ref) / t_ref:8.3f} genes/s"
        )
        print(f"{base_label:48s}: {len(base_genes):4d} genes {t_base:8.2f} s  {base_rate:8.3f} genes/s")
    failed = False
    ratios = {}
    all_genes = list(range(args.genes))
    for precision in ("fp32", "bf16") if kind == "cuda" else ("fp32",):
        fitted, t = batched(all_genes, args.gene_batch, precision, device)
        rate = args.genes / t
        ratios[precision] = rate / base_rate
        diff = max(float(np.abs(z(fitted[i], i) - z(reference[i], i)).max()) for i in ref)
        same = sum(fitted[i].history_.get("chosen_epochs") == reference[i].history_.get("chosen_epochs") for i in ref)
        tol = TOLERANCE[(kind, precision)]
        label = f"batched G={args.gene_batch} ({device}, {precision})"
        print(f"{label:48s}: {args.genes:4d} genes {t:8.2f} s  {rate:8.3f} genes/s")
        print(
            f"agreement {precision}: max |batched - CPU default path| standardised prediction = {diff:.2e} "
            f"(tolerance {tol:g}); chosen epochs equal in {same}/{len(ref)} genes"
        )
        failed |= diff > tol
    for precision, ratio in ratios.items():
        print(f"RATIO train_gpu batched/one_at_a_time = {ratio:.2f}x genes/s ({precision}; baseline: {base_label})")
    if failed:
        print("FAIL: batched predictions differ from the one-at-a-time path beyond the tolerance")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
