"""Multi-gene nt-transformer training on a GPU (``--device cuda [--precision bf16]``) vs the CPU.

Issue 19: the shared model trains on every (gene, person) row of a fold, streamed a mini-batch
at a time (:mod:`hapexpr.estimators.nt_multigene`). This times one outer fold of
:func:`train_multi_gene` on synthetic genes (a planted rule shared by all genes in random
distinct-haplotype embeddings: speed does not depend on the values) on the CPU (fp32, the
reference) and on ``--device`` in fp32 and, on CUDA, bf16 autocast, with the inputs streamed
from a scratch file as ``hapexpr fit`` does.

Agreement: GPU training is not bit-for-bit the CPU's (cuBLAS, atomics), and over hundreds of
mini-batches small differences grow, so the check is the Pearson r between each run's
held-out-people predictions and the CPU's, over trained and held-out genes; below
``MIN_AGREEMENT`` the script exits 1 (a sanity bound, to be confirmed on a GPU).

    python benchmarks/bench_train_multigene_gpu.py --device cuda   # GPU: 300 genes x 290 people
    python benchmarks/bench_train_multigene_gpu.py --smoke         # CPU, tiny: checks the script runs

Prints rows/s per run and ``RATIO train_multigene_gpu device/cpu = ...x rows/s``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

MIN_AGREEMENT = 0.9


def synthetic_inputs(inputs, n_genes: int, n: int, bins: int, dim: int, seed: int = 0) -> dict:
    """Adds ``n_genes`` genes (20 distinct haplotypes each) to ``inputs``; returns gene -> y."""
    rng = np.random.default_rng(seed)
    y = {}
    for g in range(n_genes):
        haps = rng.normal(size=(20, bins, dim)).astype(np.float32)
        idx = rng.integers(0, 20, size=(n, 2))
        signal = (haps[idx][:, :, bins // 2, 0] + np.tanh(haps[idx][:, :, 0, 1])).sum(axis=1)
        y[f"G{g}"] = np.sqrt(0.5) * (signal - signal.mean()) / signal.std() + np.sqrt(0.5) * rng.normal(size=n)
        inputs.add(f"G{g}", haps, idx)
    return y


def main() -> int:
    import torch

    from hapexpr.estimators.nt_multigene import FileInputs, choose_holdout_genes, predict_people, train_multi_gene
    from hapexpr.estimators.nt_training import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--samples", type=int, default=290)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--dim", type=int, default=256, help="embedding dim (kmer:4: 256; NT-500M: 1280)")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    if args.smoke:
        args.device = args.device or "cpu"
        args.genes, args.samples, args.bins, args.dim, args.max_epochs = 6, 60, 8, 16, 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    name = torch.cuda.get_device_name(device) if kind == "cuda" else "cpu"
    torch.set_num_threads(1)
    n_train = round(0.8 * args.samples)
    train = np.arange(args.samples) < n_train
    tc = TrainConfig(max_epochs=args.max_epochs, batch_size=args.batch_size, epoch_selection="split")
    print(
        f"# device {name}, torch {torch.__version__}; {args.genes} genes x {n_train} training people "
        f"(+{args.samples - n_train} held out), {args.bins} bins x {args.dim} dims, d_model 32, "
        f"{args.max_epochs} epochs (split), batch {args.batch_size}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp, FileInputs(Path(tmp) / "inputs") as inputs:
        y = synthetic_inputs(inputs, args.genes, args.samples, args.bins, args.dim)
        heldout = choose_holdout_genes(inputs.genes, 0.1, seed=0)
        rows = len(set(inputs.genes) - set(heldout)) * n_train * args.max_epochs

        def run(dev: str, precision: str) -> tuple[dict, float]:
            if kind == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fit = train_multi_gene(
                inputs, y, train, holdout_genes=heldout, config=tc, seed=0, device=dev, precision=precision
            )
            if kind == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            return predict_people(fit, inputs, np.flatnonzero(~train)), seconds

        reference, t_cpu = run("cpu", "fp32")
        print(f"{'cpu fp32 (reference)':28s}: {t_cpu:8.2f} s  {rows / t_cpu:10.0f} rows/s", flush=True)
        failed, ratios = False, {}
        for precision in ("fp32", "bf16") if kind == "cuda" else ():
            pred, t = run(device, precision)
            ratios[precision] = t_cpu / t
            a = np.concatenate([pred[g] for g in inputs.genes])
            b = np.concatenate([reference[g] for g in inputs.genes])
            r = float(np.corrcoef(a, b)[0, 1])
            print(f"{f'{device} {precision}':28s}: {t:8.2f} s  {rows / t:10.0f} rows/s; r with cpu = {r:.4f}")
            failed |= not r >= MIN_AGREEMENT
    if kind == "cpu":
        print("RATIO train_multigene_gpu device/cpu = 1.00x rows/s (no GPU: cpu only)")
    for precision, ratio in ratios.items():
        print(f"RATIO train_multigene_gpu device/cpu = {ratio:.2f}x rows/s ({precision})")
    if failed:
        print(f"FAIL: GPU predictions correlate with the CPU's below {MIN_AGREEMENT}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
