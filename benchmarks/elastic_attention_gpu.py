"""Elastic Attention Triton kernels on a GPU against PyTorch SDPA (flash, dense causal) and FlexAttention with the
equivalent per-head block mask, measured in the same run.

Prefill: 32 query / 8 KV heads, head_dim 128, bf16, one sequence of 8K-128K tokens; a fraction MSR of the query heads
runs streaming attention (sink 128 + window 2048, token-exact), the rest dense; all in one launch. Printed per
(length, MSR): time, TFLOP/s of the attention actually computed (4 * D * visible pairs), the speedup over SDPA dense
and over FlexAttention, and the ideal speedup (dense pairs / visible pairs). Training pair: forward + backward of
the FA/SA pair (z = 0.5 everywhere) against SDPA's dense forward + backward. Decode: one token against a 128K cache.
The last line is one JSON object holding every figure.

    python benchmarks/elastic_attention_gpu.py [--lengths 8192 32768 131072] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch
import torch.nn.functional as F

from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.ops import elastic_attention_pair, elastic_decode, elastic_prefill


def cuda_time(fn, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` CUDA-event timed calls, after one warm-up (compiles, autotunes)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def visible_pairs(t: int, sink: int, window: int, sparse: bool) -> int:
    """Causal (query, key) pairs a head computes: all of them, or the streaming ones (j < sink or i - j < window)."""
    n = torch.arange(1, t + 1, dtype=torch.int64)  # keys up to and including the query
    if not sparse:
        return int(n.sum())
    return int((torch.minimum(n, torch.tensor(window)) + (n - window).clamp(min=0).clamp(max=sink)).sum())


def sdpa_flash(qh, kh, vh):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)


def make_flex(full_heads: torch.Tensor, t: int, sink: int, window: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        streaming = (kv_idx < sink) | (q_idx - kv_idx < window)
        return (q_idx >= kv_idx) & (full_heads[h] | streaming)

    warnings.filterwarnings("ignore", message="_compile flag")  # still the way to build 128K masks on torch 2.11
    block_mask = create_block_mask(mask_mod, 1, full_heads.numel(), t, t, device="cuda", _compile=True)
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask, enable_gqa=True)


def save(args, figures):
    """Write the figures so far (a run cut short still leaves every finished row)."""
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(figures) + "\n")


def prefill_rows(args, figures):
    hq, hk, d, sink, window = args.q_heads, args.kv_heads, args.dim, args.sink, args.window
    for t in args.lengths:
        reps = 10 if t <= 32768 else 3
        gen = torch.Generator(device="cuda").manual_seed(t)
        q = torch.randn(1, t, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, t, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, t, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        qh, kh, vh = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        kx, vx = kh.repeat_interleave(hq // hk, 1), vh.repeat_interleave(hq // hk, 1)
        dense_pairs = visible_pairs(t, sink, window, False)
        sparse_pairs = visible_pairs(t, sink, window, True)
        sdpa_s = cuda_time(lambda: sdpa_flash(qh, kx, vx), reps)
        sdpa_tflops = 4 * d * dense_pairs * hq / sdpa_s / 1e12
        print(f"T={t:>6}  SDPA flash dense: {sdpa_s * 1e3:8.2f} ms  {sdpa_tflops:6.1f} TFLOP/s", flush=True)
        figures[f"sdpa_dense_s@{t}"] = sdpa_s
        figures[f"sdpa_dense_tflops@{t}"] = sdpa_tflops
        for msr in args.msr:
            n_sparse = round(msr * hq)
            table = torch.full((1, hq), M.FULL, dtype=torch.int32, device="cuda")
            table[0, :n_sparse] = M.STREAMING
            ours_s = cuda_time(lambda: elastic_prefill(q, k, v, table, sink=sink, window=window), reps)
            if msr == args.msr[0] and n_sparse == 0:
                ref = sdpa_flash(qh, kx, vx).transpose(1, 2)
                figures[f"max_abs_diff_vs_sdpa@{t}"] = float((elastic_prefill(q, k, v, table) - ref).abs().max())
            pairs = n_sparse * sparse_pairs + (hq - n_sparse) * dense_pairs
            row = {"msr": n_sparse / hq, "ours_s": ours_s, "ours_tflops": 4 * d * pairs / ours_s / 1e12,
                   "ideal_speedup": dense_pairs * hq / pairs, "speedup_vs_sdpa": sdpa_s / ours_s}
            if not args.no_flex:
                try:
                    flex = make_flex(table[0] == M.FULL, t, sink, window)
                    flex_s = cuda_time(lambda: flex(qh, kh, vh), reps)
                    row.update(flex_s=flex_s, speedup_vs_flex=flex_s / ours_s)
                except Exception as err:  # reported, not hidden: the row says why FlexAttention has no figure
                    row["flex_error"] = f"{type(err).__name__}: {err}"[:300]
            figures[f"prefill@{t}@msr{msr}"] = row
            flex_part = (f"flex {row['flex_s'] * 1e3:8.2f} ms ({row['speedup_vs_flex']:.2f}x)" if "flex_s" in row
                         else row.get("flex_error", "flex skipped"))
            print(f"T={t:>6}  MSR {row['msr']:.3f}: ours {ours_s * 1e3:8.2f} ms {row['ours_tflops']:6.1f} TFLOP/s  "
                  f"vs SDPA {row['speedup_vs_sdpa']:.2f}x (ideal {row['ideal_speedup']:.2f}x)  {flex_part}", flush=True)
            save(args, figures)


def pair_rows(args, figures):
    hq, hk, d = args.q_heads, args.kv_heads, args.dim
    for t in args.pair_lengths:
        gen = torch.Generator(device="cuda").manual_seed(t + 1)
        q, k, v = (torch.randn(1, t, h, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
                   for h in (hq, hk, hk))
        z = torch.full((1, hq), 0.5, device="cuda", requires_grad=True)
        grad = torch.randn(1, t, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)

        def pair_step():
            out = elastic_attention_pair(q, k, v, z, sink=args.sink, window=args.window)
            torch.autograd.grad(out, (q, k, v, z), grad)

        qh = q.detach().transpose(1, 2).contiguous().requires_grad_()
        kx = k.detach().transpose(1, 2).repeat_interleave(hq // hk, 1).contiguous().requires_grad_()
        vx = v.detach().transpose(1, 2).repeat_interleave(hq // hk, 1).contiguous().requires_grad_()
        gh = grad.transpose(1, 2).contiguous()

        def dense_step():
            torch.autograd.grad(sdpa_flash(qh, kx, vx), (qh, kx, vx), gh)

        reps = 10 if t <= 16384 else 3
        dense_s, pair_s = cuda_time(dense_step, reps), cuda_time(pair_step, reps)
        with torch.no_grad():
            dense_fwd_s = cuda_time(lambda: sdpa_flash(qh, kx, vx), reps)
            pair_fwd_s = cuda_time(lambda: elastic_attention_pair(q, k, v, z, sink=args.sink, window=args.window), reps)
        figures[f"pair@{t}"] = {"pair_fwd_bwd_s": pair_s, "sdpa_dense_fwd_bwd_s": dense_s, "ratio": pair_s / dense_s,
                                "pair_fwd_s": pair_fwd_s, "sdpa_dense_fwd_s": dense_fwd_s}
        print(f"T={t:>6}  training pair fwd+bwd {pair_s * 1e3:8.2f} ms vs SDPA dense fwd+bwd {dense_s * 1e3:8.2f} ms "
              f"= {pair_s / dense_s:.2f}x (forward alone {pair_fwd_s * 1e3:.2f} vs {dense_fwd_s * 1e3:.2f} ms)",
              flush=True)
        save(args, figures)


def decode_rows(args, figures):
    hq, hk, d, t = args.q_heads, args.kv_heads, args.dim, args.decode_length
    gen = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(1, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    kc, vc = (torch.randn(1, t, hk, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    lens = torch.tensor([t], device="cuda")
    kx, vx = kc.transpose(1, 2).repeat_interleave(hq // hk, 1), vc.transpose(1, 2).repeat_interleave(hq // hk, 1)
    kh, vh = kc.transpose(1, 2).contiguous(), vc.transpose(1, 2).contiguous()
    expanded_s = cuda_time(lambda: F.scaled_dot_product_attention(q[:, :, None], kx, vx), 20)
    sdpa_s = cuda_time(lambda: F.scaled_dot_product_attention(q[:, :, None], kh, vh, enable_gqa=True), 20)
    figures[f"decode_sdpa_s@{t}"] = sdpa_s
    figures[f"decode_sdpa_expanded_kv_s@{t}"] = expanded_s
    print(f"decode T={t}: SDPA (enable_gqa) {sdpa_s * 1e6:7.1f} us, SDPA on KV expanded to {hq} heads "
          f"{expanded_s * 1e6:7.1f} us", flush=True)
    for msr in (0.0, 0.7):
        sparse = torch.zeros(1, hq, dtype=torch.bool, device="cuda")
        sparse[0, :round(msr * hq)] = True
        s = cuda_time(lambda: elastic_decode(q, kc, vc, lens, sparse, sink=args.sink, window=args.window), 20)
        figures[f"decode@{t}@msr{msr}"] = {"ours_s": s, "speedup_vs_sdpa": sdpa_s / s}
        print(f"decode T={t}: MSR {msr}: ours {s * 1e6:7.1f} us vs SDPA dense {sdpa_s * 1e6:7.1f} us "
              f"({sdpa_s / s:.2f}x)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--msr", type=float, nargs="+", default=[0.0, 0.5, 0.7, 1.0])
    parser.add_argument("--pair-lengths", type=int, nargs="*", default=[8192, 32768])
    parser.add_argument("--decode-length", type=int, default=131072)
    parser.add_argument("--q-heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sink", type=int, default=128)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compilation takes a while)")
    parser.add_argument("--out", help="also write the JSON figures here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device; the CPU figures are in benchmarks/elastic_attention_cpu.py")
    figures = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "config": {k: v for k, v in vars(args).items() if k != "out"}}
    import triton

    figures["triton"] = triton.__version__
    prefill_rows(args, figures)
    pair_rows(args, figures)
    decode_rows(args, figures)
    save(args, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
