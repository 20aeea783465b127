"""What every Elastic Attention back end shares: the optional triton import, defaults and dtype rules, the back end
choice, input checks, the packed-sequence layout, and the one allocator of kernel outputs.

Layouts: padded q (B, T, Hq, D) and k, v (B, T, Hkv, D) with Hq a multiple of Hkv (GQA), or packed (N, H, D) with
sequences given by ``starts`` / ``lens`` (S,) (``sequences``).
"""

from __future__ import annotations

import os

import torch

try:  # triton comes with torch's CUDA builds and is not a dependency; the ``triton_*.py`` modules import it directly
    import triton
except ImportError:  # torch's CPU builds do not bring it: the ops run the CPU back end
    triton = None

HAVE_TRITON = triton is not None

SINK, WINDOW = 128, 2048  # the streaming defaults of every op
TRITON_HEAD_DIMS = (32, 64, 128)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DTYPES = TRITON_DTYPES + (torch.float64,)  # float64: the CPU back end only (oracles, gradient checks)
NEVER_DENSE = 2**30  # a dense_from no sequence reaches


def _alloc(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """Every kernel output comes from here (uninitialised, like the CUDA caching allocator's blocks). The kernels
    call it as ``utils._alloc`` so the tests' NaN-poisoned stand-in reaches all of them: an element a kernel forgets
    to write fails the comparison."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def resolve_backend(backend: str, device: torch.device) -> str:
    """"triton" or "reference" (the CPU back end) for a requested back end on ``device``."""
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"backend={backend!r} must be 'auto', 'triton' or 'reference'.")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "auto":  # the kernels where they compile; the interpreter only when asked for (tests)
        return "triton" if HAVE_TRITON and device.type == "cuda" else "reference"
    if backend == "triton" and not HAVE_TRITON:
        raise ValueError("backend='triton' needs triton, which is not installed (torch's CUDA builds bring it); "
                         "use backend='reference' (or 'auto').")
    if backend == "triton" and device.type == "cpu" and not interpret:
        raise ValueError("backend='triton' on CPU needs TRITON_INTERPRET=1 set before triton is imported; "
                         "use backend='reference' (or 'auto') for the PyTorch reference.")
    return backend


def check_tensors(q, k, v, packed: bool) -> None:
    """The public ops' q, k, v: layout, dtype, device, GQA."""
    dims = 3 if packed else 4
    layout = "(N, H, D) with cu_seqlens" if packed else "(B, T, H, D)"
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != dims:
            raise ValueError(f"{name} must be {layout}; got shape {tuple(x.shape)}.")
        if x.dtype not in DTYPES:
            raise ValueError(f"{name} has dtype {x.dtype}; supported: float16, bfloat16, float32 (and float64 with "
                             "backend='reference').")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"{name} is {x.dtype} on {x.device} but q is {q.dtype} on {q.device}; use one of each.")
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape.")
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on tokens and head_dim.")
    if q.shape[-2] % k.shape[-2]:
        raise ValueError(f"q's heads ({q.shape[-2]}) must be a multiple of k's heads ({k.shape[-2]}) (GQA).")


def check_triton(q: torch.Tensor) -> None:
    """What the Triton kernels take beyond the public checks: head_dim 32/64/128 and no float64."""
    if q.dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton kernels take float16, bfloat16 or float32; got {q.dtype}. Use "
                         "backend='reference' for float64.")
    d = q.shape[-1]
    if d not in TRITON_HEAD_DIMS:
        raise ValueError(f"head_dim={d} is not supported by the Triton kernels ({TRITON_HEAD_DIMS}); "
                         "use backend='reference'.")


def check_bthd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Padded (B, T, H, D) inputs of the CPU attention functions; returns the GQA group size Hq / Hkv."""
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"q (B,T,Hq,D) and k, v (B,T,Hkv,D) expected; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}.")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch, length or head_dim.")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of KV heads ({k.shape[2]}).")
    return q.shape[2] // k.shape[2]


def expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, T, Hkv, D) -> (B, T, Hkv * groups, D): each KV head repeated for its query heads."""
    return x.repeat_interleave(groups, dim=2) if groups > 1 else x


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least float32 (bf16/fp16 inputs), float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def sequences(q, cu_seqlens=None, lengths=None, left_padded: bool = False):
    """(starts, lens) int32 (S,) of every sequence in the packed view, validated."""
    if q.dim() == 3:
        if cu_seqlens is None:
            raise ValueError("packed (N, H, D) inputs need cu_seqlens (S + 1,); pass (B, T, H, D) for padded ones.")
        if lengths is not None:
            raise ValueError("pass either cu_seqlens (packed) or lengths (padded), not both.")
        cu = cu_seqlens.to(torch.int64).cpu()
        if cu.dim() != 1 or cu.numel() < 2 or int(cu[0]) != 0 or bool((cu[1:] < cu[:-1]).any()) \
                or int(cu[-1]) > q.shape[0]:
            raise ValueError(f"cu_seqlens must start at 0, never decrease and end at most at N={q.shape[0]}; "
                             f"got {cu.tolist()[:8]}...")
        starts, lens = cu[:-1], cu[1:] - cu[:-1]
    else:
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens is for packed (N, H, D) inputs; padded (B, T, H, D) ones take lengths.")
        b, t = q.shape[:2]
        lens = torch.full((b,), t, dtype=torch.int64) if lengths is None else lengths.to(torch.int64).cpu()
        if lens.shape != (b,) or bool((lens < 0).any()) or bool((lens > t).any()):
            raise ValueError(f"lengths must be (B,) = ({b},) with values in [0, {t}]; got {lens.tolist()[:8]}.")
        starts = torch.arange(b, dtype=torch.int64) * t + ((t - lens) if left_padded else 0)
    return starts.to(torch.int32), lens.to(torch.int32)


def packed(x: torch.Tensor) -> torch.Tensor:
    """The packed (N, H, D) view of a padded (B, T, H, D) tensor (packed ones pass through)."""
    return x if x.dim() == 3 else x.reshape(-1, x.shape[2], x.shape[3])


def unit_last(x: torch.Tensor) -> torch.Tensor:
    """The kernels read each (token, head) row of D elements contiguously; any other last-dimension stride
    (a transposed or sliced view) is copied once here rather than read wrong."""
    return x if x.stride(-1) == 1 else x.contiguous()


def token_owner(starts, lens, n: int, device) -> torch.Tensor:
    """(N,) int64: the sequence each packed row belongs to, -1 for rows outside every sequence (padding)."""
    owner = torch.full((n,), -1, dtype=torch.int64)
    for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
        owner[a:a + t] = s
    return owner.to(device)


def fill_outside(x: torch.Tensor, owner: torch.Tensor, value: float = 0.0, dim: int = 0) -> None:
    """Set the rows (along ``dim``) that belong to no sequence; the kernels never write them."""
    outside = owner < 0
    if bool(outside.any()):
        x.index_fill_(dim, outside.nonzero().flatten(), value)
