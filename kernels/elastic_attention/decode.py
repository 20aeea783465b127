"""Public decode op: one query token per sequence against its KV cache, each head seeing the whole cache or, for
sparse-KV decode (beyond the paper: the paper decodes densely), only the sink and the last ``window`` positions."""

from __future__ import annotations

from typing import Optional

import torch


from ._triton import triton
from .ops import DTYPES, _alloc, _check_triton, _unit_last, dot_flags, resolve_backend
from .reference import SINK, WINDOW

LOG2E = 1.4426950408889634


def _check(q, k_cache, v_cache, cache_lens, sparse_heads):
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(f"q must be (B, Hq, D) and k_cache, v_cache (B, T, Hkv, D); got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}.")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must match.")
    b, hq, d = q.shape
    if k_cache.shape[0] != b or k_cache.shape[3] != d or hq % k_cache.shape[2]:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} must be (B={b}, T, Hkv, D={d}) with Hkv dividing Hq={hq}.")
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.dtype not in DTYPES or x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"{name} is {x.dtype} on {x.device}; q, k_cache and v_cache need one dtype among "
                             "float16/bfloat16/float32 and one device.")
    # Values are checked when the lengths live on the host: reading device values back would stall every decode step.
    bad_values = cache_lens.device.type == "cpu" and (bool((cache_lens < 1).any()) or
                                                       bool((cache_lens > k_cache.shape[1]).any()))
    if cache_lens.shape != (b,) or bad_values:
        raise ValueError(f"cache_lens must be (B,) = ({b},) with values in [1, {k_cache.shape[1]}] (the new token's "
                         f"key is already in the cache); got {cache_lens.tolist()[:8]}.")
    if sparse_heads.shape != (b, hq) or sparse_heads.is_floating_point() or sparse_heads.is_complex():
        raise ValueError(f"sparse_heads must be a bool (or 0/1 integer) tensor (B, Hq) = ({b}, {hq}); got "
                         f"{sparse_heads.dtype} {tuple(sparse_heads.shape)}.")


def _n_splits(max_len: int, programs: int, device) -> int:
    """Enough key splits to fill the GPU (about 4 programs per SM) without splits shorter than 1024 keys."""
    if device.type != "cuda":
        return max(1, min(4, max_len // 64))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(-(-max_len // 1024), -(-4 * sms // programs)))


def elastic_decode(q, k_cache, v_cache, cache_lens, sparse_heads, *, sink: int = SINK, window: int = WINDOW,
                   scale: Optional[float] = None, backend: str = "auto") -> torch.Tensor:
    """(B, Hq, D): attention of each sequence's new token over ``cache_lens`` cached positions; ``sparse_heads``
    (B, Hq) bool marks heads that see only keys j < sink or len - 1 - j < window."""
    _check(q, k_cache, v_cache, cache_lens, sparse_heads)
    if sink < 0 or window < 1:
        raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1.")
    b, hq, d = q.shape
    scale = d**-0.5 if scale is None else scale
    if resolve_backend(backend, q.device) == "reference":
        from .mode_table_reference import decode_reference

        return decode_reference(q, k_cache, v_cache, cache_lens, sparse_heads, sink, window, scale)
    _check_triton(q)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k_cache, v_cache)):
        raise ValueError("elastic_decode's Triton kernel has no backward: run decoding under torch.no_grad() (as "
                         "generation does), or pass backend='reference' to differentiate through one decode step.")
    from .triton_decode import _decode_split

    q, k_cache, v_cache = (_unit_last(x) for x in (q, k_cache, v_cache))

    lens = cache_lens.to(device=q.device, dtype=torch.int32)
    sparse = sparse_heads.to(device=q.device, dtype=torch.int32).contiguous()
    max_len = int(cache_lens.max())
    hk = k_cache.shape[2]
    splits = _n_splits(max_len, b * hk, q.device)
    split_len = -(-max_len // splits)
    launch = cuda_launch(q.dtype, d) if q.device.type == "cuda" else {"BLOCK_N": 16}
    block_n = launch["BLOCK_N"]
    split_len = -(-split_len // block_n) * block_n
    o_part = _alloc((b * hq, splits, d), q, torch.float32)
    lse_part = _alloc((b * hq, splits), q, torch.float32)
    _decode_split[(b * hk, splits)](
        q, k_cache, v_cache, o_part, lse_part, lens, sparse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        hq, hk, hq // hk, splits, split_len, scale * LOG2E, sink, window,
        HEAD_DIM=d, BLOCK_G=max(16, triton.next_power_of_2(hq // hk)), **dot_flags(q), **launch,
    )
    return combine_splits(o_part, lse_part).reshape(b, hq, d).to(q.dtype)


def cuda_launch(dtype: torch.dtype, head_dim: int) -> dict:
    """The decode kernel's tile and launch settings on CUDA. fp32 at head_dim 128 takes two pipeline stages: three
    need 278,528 B of shared memory, over sm_90's 232,448 B per block (``scripts/compile_sm90.py`` checks every
    launch against it)."""
    wide = torch.empty((), dtype=dtype).element_size() * head_dim >= 512
    return {"BLOCK_N": 128, "num_warps": 4, "num_stages": 2 if wide else 3}


def combine_splits(o_part: torch.Tensor, lse_part: torch.Tensor) -> torch.Tensor:
    """Merge partial attentions over disjoint key sets: o_part (P, S, D), lse_part (P, S) (log2 units; -inf for
    an empty split) -> (P, D)."""
    top = lse_part.max(dim=1, keepdim=True).values
    weights = torch.exp2(lse_part - top)  # empty splits weigh 0; every row has a non-empty split
    return (o_part * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
