"""Streaming (sink + local) reference attention vs dense causal SDPA on CPU, every head sparse.

    python benchmarks/elastic_attention_cpu.py [--tokens 16384] [--heads 8] [--kv-heads 2] [--head-dim 64]

Both measured in the same run on the same inputs (float32), sink 128 + window 2048 tokens. The reference's cost
grows as T * (sink + window), dense causal SDPA's as T^2 / 2; the ideal speedup printed beside the measured one is
the ratio of query-key pairs the two compute. Target: >= 4x faster at 16K tokens. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from _timing import median_seconds
from verl_ext.kernels.elastic_attention.cpu import full_attention, streaming_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    q = torch.randn(1, args.tokens, args.heads, args.head_dim)
    k = torch.randn(1, args.tokens, args.kv_heads, args.head_dim)
    v = torch.randn(1, args.tokens, args.kv_heads, args.head_dim)
    sa = median_seconds(lambda: streaming_attention(q, k, v, sink=128, window=2048), args.repeats)
    dense = median_seconds(lambda: full_attention(q, k, v), args.repeats)
    t, span = args.tokens, 128 + 2048
    # Ideal speedup: query-key pairs dense causal attention computes over those streaming attention computes.
    ideal = (t * (t + 1) / 2) / sum(min(i + 1, span) for i in range(t))
    print(f"{args.tokens} tokens, {args.heads} query / {args.kv_heads} KV heads, d={args.head_dim}, "
          f"{torch.get_num_threads()} threads")
    print(f"streaming reference {sa:.3f} s; dense SDPA {dense:.3f} s; speedup {dense / sa:.2f}x (ideal ~{ideal:.1f}x)")
    print(json.dumps({"sa_reference_s": round(sa, 4), "sdpa_dense_s": round(dense, 4), "speedup": round(dense / sa, 2),
                      "ideal_speedup": round(ideal, 2), "tokens": args.tokens, "heads": args.heads,
                      "kv_heads": args.kv_heads, "head_dim": args.head_dim}))


if __name__ == "__main__":
    main()
