"""Embedding throughput of a full-size Nucleotide Transformer (NT-500M v1 architecture) on a GPU.

Issue 6, item 2 (GPU part): tokens/s and model FLOPs utilisation (MFU) of a randomly
initialised model of the ``nucleotide-transformer-500m-1000g`` architecture (24 layers, hidden
1,280, 20 heads) on 1,000-token inputs (5,994 bp windows), in bf16. Two lines are measured in
the same run:

- ``hapexpr``: ``Embedder.compute``, the code path ``hapexpr embed`` uses (fp32 weights, bf16
  autocast for the transformer, float32 pooling into 32 TSS bins + mean, results copied back);
- ``bare``: the same model's forward pass alone with bf16 weights on pre-tokenized inputs, the
  baseline the pipeline is compared with.

MFU = achieved model FLOP/s / the card's dense bf16 peak. Model FLOPs per token of an encoder
forward pass: 2 x (non-embedding parameters) + 4 x layers x tokens x hidden (the two attention
matrix products). Random weights are fine: speed does not depend on their values.

    python benchmarks/bench_embed_gpu.py                 # on a CUDA machine, ~2-4 minutes
    python benchmarks/bench_embed_gpu.py --smoke         # CPU, tiny sizes: checks the script runs

Prints one ``RATIO`` line and, on a GPU, ``MFU`` lines; target (full mode): MFU >= 40% of the
dense bf16 peak.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# Dense bf16 peak (FLOP/s) by device name; SXM figures from NVIDIA's datasheets.
PEAKS = {
    "H200": 989.4e12,
    "H100 SXM": 989.4e12,
    "H100 80GB HBM3": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100 NVL": 835.0e12,
    "A100": 312.0e12,
}
TARGET_MFU = 0.40
WINDOW = 5994  # 999 6-mers + <cls> = 1,000 tokens


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, value in PEAKS.items():
        if key in name:
            return value
    return None


def flops_per_token(config, tokens: int) -> float:
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * inter  # QKV + output projections, the two MLP matrices
    return 2.0 * layers * per_layer + 4.0 * layers * tokens * h


def main() -> int:
    import torch

    from hapexpr.embed.checkpoints import TINY_SIZES, _describe, nt_v1_config
    from hapexpr.embed.engine import Embedder
    from hapexpr.embed.tokenizer import NTTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, a few sequences")
    ap.add_argument("--sequences", type=int, default=512, help="windows embedded per timed run")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (best is reported)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak if the card is not known")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    sizes = TINY_SIZES if args.smoke else {}
    n_seq = 8 if args.smoke else args.sequences
    batch = 4 if args.smoke else args.batch_size
    repeats = 1 if args.smoke else args.repeats
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"# device {name}, torch {torch.__version__}, model NT-500M v1 architecture{' (tiny sizes)' if sizes else ''}, "
        f"random weights, {n_seq} windows of {WINDOW} bp, batch {batch}",
        flush=True,
    )

    from transformers import EsmForMaskedLM

    config = nt_v1_config(**sizes)
    torch.manual_seed(0)
    model = EsmForMaskedLM(config).eval()
    n_params = sum(p.numel() for p in model.esm.encoder.parameters())
    loaded = _describe(model, NTTokenizer(), name="nt-500m-random", tiny=bool(sizes))
    embedder = Embedder(loaded, bins=32, window=WINDOW, device=device, batch_size=batch)
    rng = np.random.default_rng(0)
    seqs = [bytes(rng.choice(list(b"ACGT"), size=WINDOW)) for _ in range(n_seq)]
    tokens = n_seq * 1000

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        fn()  # warm-up: kernels, allocator, autotuning
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best

    t_hapexpr = timed(lambda: embedder.compute(seqs, tss_offset=WINDOW // 2))

    ids = torch.tensor(np.stack([embedder._prepare(s, WINDOW // 2)[0] for s in seqs]), device=device)
    bare = model.esm.to(device)
    if device == "cuda":
        bare = bare.to(torch.bfloat16)

    def forward():
        with torch.inference_mode():
            for b in range(0, n_seq, batch):
                bare(input_ids=ids[b : b + batch]).last_hidden_state

    t_bare = timed(forward)

    # Agreement: hapexpr's mean row equals the plain average of the bare model's hidden states
    # over the sequence tokens (<cls> excluded), for the first batch.
    _, mean = embedder.compute(seqs[:batch], tss_offset=WINDOW // 2)
    with torch.inference_mode():
        hidden = bare(input_ids=ids[:batch]).last_hidden_state.float()[:, 1:].mean(dim=1).cpu().numpy()
    err = float(np.max(np.abs(mean - hidden)) / max(np.max(np.abs(hidden)), 1e-12))
    tol = 5e-2 if device == "cuda" else 1e-4  # bf16 weights vs bf16 autocast on fp32 weights
    print(f"agreement: max relative |hapexpr mean - bare mean| = {err:.2e} (tolerance {tol:g})")
    if err > tol:
        print("FAIL: the pipeline's embeddings differ from the bare forward pass")
        return 1
    fpt = flops_per_token(config, 1000)
    print(
        f"hapexpr Embedder.compute: {t_hapexpr:8.3f} s  {tokens / t_hapexpr:12,.0f} tokens/s  "
        f"{n_seq / t_hapexpr:8.1f} windows/s"
    )
    print(
        f"bare bf16 forward       : {t_bare:8.3f} s  {tokens / t_bare:12,.0f} tokens/s  {n_seq / t_bare:8.1f} windows/s"
    )
    print(f"# encoder parameters {n_params / 1e6:.1f} M; model FLOPs per token {fpt / 1e9:.2f} GFLOP")
    print(
        f"RATIO embed_gpu bare/hapexpr = {t_hapexpr / t_bare:.2f}x time "
        f"(pipeline overhead {100 * (t_hapexpr / t_bare - 1):.1f}%)"
    )
    peak = peak_flops(name, args.peak_tflops)
    if device == "cuda" and peak:
        for label, t in (("hapexpr", t_hapexpr), ("bare", t_bare)):
            achieved = tokens * fpt / t
            print(
                f"MFU {label}: {achieved / 1e12:.1f} TFLOP/s = {100 * achieved / peak:.1f}% of {peak / 1e12:.0f} "
                f"TFLOP/s dense bf16 ({name})"
            )
        if tokens * fpt / t_hapexpr / peak < TARGET_MFU:
            print(f"FAIL: hapexpr MFU below {TARGET_MFU:.0%}")
            return 1
    elif device == "cuda":
        print(f"# unknown card {name!r}: pass --peak-tflops for MFU")
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
