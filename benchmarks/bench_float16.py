"""How much does float16 storage of pooled embeddings lose, next to what one SNP changes?

Builds the NT-500M architecture (``nt_v1_config()`` at full size: hidden 1280, 24 layers,
20 heads) with random weights on CPU, keeps the first ``--layer`` layers (the hidden state the
store would hold for ``embed --layer L``), embeds a few random windows and, for each, the same
window with one SNP, through the real embedding path (:class:`hapexpr.embed.engine.Embedder`:
tokenizer, batching, TSS-centred bin pooling). For every bin it prints, relative to that bin's
vector norm:

- float16 rounding: |fp16(v) - v| / |v| (also bfloat16, and float16 after a per-vector scale),
- the SNP: |v_alt - v_ref| / |v_ref|, in the SNP's own bin and in the other bins.

Run (a few minutes on 2 CPU cores):

    PYTHONPATH=src python benchmarks/bench_float16.py --layer 12 --windows 1000,3000,6000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=12, help="hidden-state layer (of 24) to pool")
    ap.add_argument("--windows", default="1000,3000,6000", help="window lengths (bp), comma-separated")
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--snps", type=int, default=2, help="SNPs (one at a time) per window")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="seconds: the tiny model's sizes, one 600 bp window")
    args = ap.parse_args()
    if args.smoke:
        args.layer, args.windows, args.snps = 1, "600", 1

    import torch
    from transformers import EsmModel

    from hapexpr.embed import pooling
    from hapexpr.embed.checkpoints import TINY_SIZES, LoadedModel, nt_v1_config
    from hapexpr.embed.engine import Embedder
    from hapexpr.embed.tokenizer import NTTokenizer

    torch.manual_seed(args.seed)
    config = nt_v1_config(**(TINY_SIZES if args.smoke else {}))
    t0 = time.time()
    model = EsmModel(config, add_pooling_layer=False).eval()
    n_layers = int(config.num_hidden_layers)
    # keep only the layers below the one we read: the rest cannot change its hidden state
    model.encoder.layer = model.encoder.layer[: args.layer]
    loaded = LoadedModel(
        encoder=model,
        tokenizer=NTTokenizer(),
        name="nt-500m-architecture-random",
        tiny=False,
        n_layers=n_layers,
        max_tokens=1000,
        dim=int(config.hidden_size),
    )
    print(
        f"{'tiny sizes of the ' if args.smoke else ''}NT-500M architecture (hidden {config.hidden_size}, {n_layers} layers, "
        f"{config.num_attention_heads} heads), random init, layer {args.layer} of {n_layers}; "
        f"built in {time.time() - t0:.0f} s"
    )
    rng = np.random.default_rng(args.seed)
    rows = []
    for window in [int(w) for w in args.windows.split(",")]:
        emb = Embedder(loaded, layer=args.layer, bins=args.bins, window=window)
        ref = rng.choice(list(b"ACGT"), size=window).astype(np.uint8)
        seqs, snp_bins = [ref.tobytes()], []
        edges = np.asarray(pooling.bin_edges(emb.tss_offset, emb.span, args.bins))
        for _ in range(args.snps):
            pos = int(rng.integers(window // 2 - emb.span // 3, window // 2 + emb.span // 3))
            alt = ref.copy()
            alt[pos] = [b for b in b"ACGT" if b != ref[pos]][int(rng.integers(3))]
            seqs.append(alt.tobytes())
            snp_bins.append(int(np.clip(np.searchsorted(edges, pos, side="right") - 1, 0, args.bins - 1)))
        t0 = time.time()
        binned, _ = emb.compute(seqs, batch_size=len(seqs))  # (1 + snps, bins, dim) float32
        seconds = time.time() - t0
        v = binned.astype(np.float64)
        norm = np.linalg.norm(v, axis=-1)  # (seqs, bins)
        fp16 = np.linalg.norm(v.astype(np.float16).astype(np.float64) - v, axis=-1) / norm
        bf16 = np.linalg.norm(torch.from_numpy(binned).bfloat16().double().numpy() - v, axis=-1) / norm
        scale = np.abs(v).max(axis=-1, keepdims=True)
        scaled16 = np.linalg.norm((v / scale).astype(np.float16).astype(np.float64) * scale - v, axis=-1) / norm
        for i, b in enumerate(snp_bins, start=1):
            change = np.linalg.norm(v[i] - v[0], axis=-1) / norm[0]  # (bins,)
            other = np.delete(np.arange(args.bins), b)
            rows.append(
                (
                    window,
                    b,
                    change[b],
                    float(np.median(change[other])),
                    float(change[other].min()),
                    fp16[0, b],
                    float(fp16[0].mean()),
                )
            )
        print(
            f"window {window} bp ({len(seqs)} sequences, {seconds:.0f} s): |v| per bin median "
            f"{np.median(norm):.3g}, max |v_i| {np.abs(v).max():.3g}; rounding relative to |v|, mean over "
            f"bins: float16 {fp16.mean():.2e} (max {fp16.max():.2e}), bfloat16 {bf16.mean():.2e}, "
            f"float16 with per-vector scale {scaled16.mean():.2e}"
        )
    print("\nper SNP: relative change |v_alt - v_ref| / |v_ref| against float16 rounding |fp16(v) - v| / |v|")
    print(
        f"{'window':>6} {'snp bin':>7} {'own bin':>9} {'other bins (median)':>20} {'other bins (min)':>17} "
        f"{'fp16 own bin':>12} {'fp16 mean':>10} {'own/fp16':>9} {'median other/fp16':>18}"
    )
    for w, b, own, med, mn, r_own, r_mean in rows:
        print(
            f"{w:>6} {b:>7} {own:>9.2e} {med:>20.2e} {mn:>17.2e} {r_own:>12.2e} {r_mean:>10.2e} "
            f"{own / r_own:>9.1f} {med / r_mean:>18.2f}"
        )
    own = np.array([r[2] for r in rows]) / np.array([r[5] for r in rows])
    other = np.array([r[3] for r in rows]) / np.array([r[6] for r in rows])
    print(
        f"\nmean over SNPs: SNP change / float16 rounding = {own.mean():.1f} in the SNP's bin, "
        f"{other.mean():.2f} in the other bins (median bin)"
    )
    print(f"RATIO snp_change_over_float16_rounding {own.mean():.1f}")


if __name__ == "__main__":
    main()
