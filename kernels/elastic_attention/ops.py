"""Public Elastic Attention ops: mode-table prefill, the differentiable FA/SA training pair, and per-head decode.

Each op validates its input (ValueError naming the argument and the fix), then runs the Triton kernel on CUDA and
the PyTorch reference elsewhere (``backend="auto"``); ``backend="triton"`` forces the kernels (on CPU through
Triton's interpreter, which needs ``TRITON_INTERPRET=1`` set before triton is imported: the tests' way) and
``"reference"`` the references. The model's ``ElasticAttentionConfig.backend`` means the same.

Sequences come padded, q (B, T, Hq, D) and k, v (B, T, Hkv, D), with optional ``lengths`` (B,) of valid tokens
(right padding, or left padding with ``left_padded=True``), or packed, q (N, Hq, D) and k, v (N, Hkv, D), with
``cu_seqlens`` (S + 1,). Rows outside every sequence come back as zeros.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import torch

from . import modes as M
from ._triton import HAVE_TRITON, triton
from .reference import SINK, WINDOW, full_attention, streaming_attention
from .xattention import block_sparse_attention

TRITON_HEAD_DIMS = (32, 64, 128)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DTYPES = TRITON_DTYPES + (torch.float64,)  # float64: the reference back end only (oracles, gradient checks)


# Warps and pipeline stages of the fixed-tile (block-sparse) prefill launch on CUDA.
BLOCK_SPARSE_CUDA_LAUNCH = {"num_warps": 8, "num_stages": 3}

def _alloc(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """Every kernel output comes from here (uninitialised, like the CUDA caching allocator's blocks; the tests
    poison it with NaN to prove the kernels write every element they own)."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def resolve_backend(backend: str, device: torch.device) -> str:
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


def _check_tensors(q, k, v, packed: bool):
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


def _check_triton(q: torch.Tensor):
    """What the Triton kernels take beyond the public checks: head_dim 32/64/128 and no float64."""
    if q.dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton kernels take float16, bfloat16 or float32; got {q.dtype}. Use "
                         "backend='reference' for float64.")
    d = q.shape[-1]
    if d not in TRITON_HEAD_DIMS:
        raise ValueError(f"head_dim={d} is not supported by the Triton kernels ({TRITON_HEAD_DIMS}); "
                         "use backend='reference'.")


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


def _packed(x):
    return x if x.dim() == 3 else x.reshape(-1, x.shape[2], x.shape[3])


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


def _tiles(device: torch.device, mask_block: Optional[int]):
    """(BLOCK_M, BLOCK_N): 128 x 64 on GPU; small tiles in the interpreter so short tests cross tile edges."""
    bm, bn = (128, 64) if device.type == "cuda" else (32, 16)
    if mask_block is not None:
        bm, bn = min(bm, mask_block), min(bn, mask_block)
        if mask_block % bm or mask_block % bn or bn < 16:
            raise ValueError(f"mask_block={mask_block} must be a multiple of 16 (and of {bm} / {bn} here); "
                             "XAttention uses 64 (paper) or 128 (released evaluation).")
    return bm, bn


def block_mask_tiles(block_mask, mask_block: int, n_m_tiles: int, n_n_tiles: int, bm: int, bn: int):
    """Kernel key-tile lists from a block mask (S, Hq, nqb, nkb): (idx (S, Hq, n_m_tiles, max), cnt (S, Hq, n_m_tiles))
    int32; a key tile is listed, in increasing order, when its mask block is kept and it is not above the diagonal."""
    s, h = block_mask.shape[:2]
    dev = block_mask.device
    qb = (torch.arange(n_m_tiles, device=dev) * bm) // mask_block
    kb = (torch.arange(n_n_tiles, device=dev) * bn) // mask_block
    qb, kb = qb.clamp(max=block_mask.shape[2] - 1), kb.clamp(max=block_mask.shape[3] - 1)
    keep = block_mask.bool()[:, :, qb][:, :, :, kb]
    below = (torch.arange(n_n_tiles, device=dev)[None, :] * bn) <= (torch.arange(n_m_tiles, device=dev)[:, None] * bm + bm - 1)
    keep = keep & below
    cnt = keep.sum(-1, dtype=torch.int32)
    width = max(int(cnt.max()) if cnt.numel() else 0, 1)
    idx = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :width].to(torch.int32)
    return idx.contiguous(), cnt.contiguous()


def _check_modes(modes, n_seqs: int, hq: int, block_mask, mask_block, max_len: int):
    if not isinstance(modes, torch.Tensor) or modes.dtype == torch.bool or modes.is_floating_point() \
            or modes.is_complex():
        got = modes.dtype if isinstance(modes, torch.Tensor) else type(modes).__name__
        raise ValueError(f"modes must be an integer tensor of mode codes {M.NAMES}; got {got}. From a boolean "
                         "full-head mask use torch.where(full, modes.FULL, modes.STREAMING).")
    if modes.shape != (n_seqs, hq):
        raise ValueError(f"modes must be (sequences, query heads) = ({n_seqs}, {hq}); got {tuple(modes.shape)}.")
    known = torch.tensor(sorted(M.NAMES), device=modes.device)
    if not bool(torch.isin(modes, known).all()):
        raise ValueError(f"modes holds codes outside {M.NAMES}.")
    if bool((modes == M.BLOCK_SPARSE).any()):
        if block_mask is None or mask_block is None:
            raise ValueError("modes uses BLOCK_SPARSE: pass block_mask (S, Hq, nqb, nkb) and mask_block.")
        nb = math.ceil(max_len / mask_block)
        if block_mask.dim() != 4 or tuple(block_mask.shape[:2]) != (n_seqs, hq) or min(block_mask.shape[2:]) < nb:
            raise ValueError(f"block_mask must be (S, Hq, >= {nb}, >= {nb}) for mask_block={mask_block}; "
                             f"got {tuple(block_mask.shape)}.")


NEVER_DENSE = 2**30  # a dense_from no sequence reaches


def _check_dense_from(dense_from, modes, lens) -> torch.Tensor:
    """(S,) int32 on the CPU; NEVER_DENSE everywhere when not given."""
    if dense_from is None:
        return torch.full((len(lens),), NEVER_DENSE, dtype=torch.int32)
    dense_from = dense_from.to(torch.int64).cpu()
    if dense_from.shape != lens.shape or bool((dense_from < 0).any()):
        raise ValueError(f"dense_from must be (sequences,) = ({len(lens)},) non-negative positions; got shape "
                         f"{tuple(dense_from.shape)}.")
    reaches = dense_from < lens.to(torch.int64)
    if bool(((modes.cpu() == M.BLOCK_SPARSE).any(dim=1) & reaches).any()):
        raise ValueError("dense_from applies to streaming heads; a sequence with BLOCK_SPARSE heads must have "
                         "dense_from >= its length (compute its dense rows with a separate all-FULL call).")
    return dense_from.clamp(max=NEVER_DENSE).to(torch.int32)


def elastic_prefill(q, k, v, modes, *, cu_seqlens=None, lengths=None, left_padded: bool = False, sink: int = SINK,
                    window: int = WINDOW, round_block: int = 128, block_mask=None, mask_block: Optional[int] = None,
                    dense_from=None, scale: Optional[float] = None, return_lse: bool = False, backend: str = "auto"):
    """Causal prefill with every (sequence, query head) in its own mode, ``modes`` (S, Hq) int (``modes.py``).

    ``dense_from`` (S,) int: from that position of each sequence on (its response, after a prompt of that length),
    streaming heads attend densely, as the paper decodes; None: nowhere.
    Returns O shaped like q (and the log-sum-exp (Hq, N) float32, natural log, with ``return_lse``).
    """
    _check_tensors(q, k, v, packed=q.dim() == 3)
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    hq, d = q.shape[-2], q.shape[-1]
    if sink < 0 or window < 1 or round_block < 1:
        raise ValueError(f"sink={sink} >= 0, window={window} >= 1 and round_block={round_block} >= 1 are required.")
    _check_modes(modes, len(starts), hq, block_mask, mask_block, int(lens.max()) if len(lens) else 0)
    dense_from = _check_dense_from(dense_from, modes, lens)
    scale = d**-0.5 if scale is None else scale
    qp, kp, vp = _packed(q), _packed(k), _packed(v)
    if resolve_backend(backend, q.device) == "reference":
        from .mode_table_reference import prefill_reference

        if return_lse:
            out, lse = prefill_reference(qp, kp, vp, modes.cpu(), starts, lens, sink, window, round_block,
                                         block_mask, mask_block, scale, dense_from)
            return out.reshape(q.shape), lse
        return _reference_prefill(qp, kp, vp, modes.cpu(), starts, lens, sink, window, round_block, block_mask,
                                  mask_block, scale, dense_from).reshape(q.shape)
    _check_triton(q)
    qp, kp, vp = (_unit_last(x) for x in (qp, kp, vp))
    args = (modes, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block, scale)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        from .prefill_grad import TritonPrefill

        out, lse = TritonPrefill.apply(qp, kp, vp, *args)
    else:
        out, lse = _triton_prefill(qp, kp, vp, *args)
    return (out.reshape(q.shape), lse) if return_lse else out.reshape(q.shape)


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """The kernels read each (token, head) row of D elements contiguously; any other last-dimension stride
    (a transposed or sliced view) is copied once here rather than read wrong."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _triton_prefill(qp, kp, vp, modes, starts, lens, dense_from, block_mask, mask_block, sink, window, round_block,
                    scale):
    """The kernel launch of ``elastic_prefill`` on packed (N, H, D) views: (out (N, Hq, D), lse (Hq, N))."""
    hq, d = qp.shape[1], qp.shape[2]
    dev = qp.device
    max_len = int(lens.max()) if len(lens) else 0
    if max_len == 0:
        return torch.zeros_like(qp), torch.full((hq, qp.shape[0]), float("-inf"), device=dev)
    has_list = bool((modes == M.BLOCK_SPARSE).any())
    out = _alloc(qp.shape, qp)
    lse = _alloc((hq, qp.shape[0]), qp, torch.float32)
    args = [qp, kp, vp, out, lse, starts.to(dev), lens.to(dev), modes.to(device=dev, dtype=torch.int32).contiguous(),
            dense_from.to(dev)]
    strides = (qp.stride(0), qp.stride(1), kp.stride(0), kp.stride(1), vp.stride(0), vp.stride(1), out.stride(0),
               out.stride(1), lse.stride(0))
    scalars = (scale * 1.4426950408889634, sink, window, round_block)
    if has_list or dev.type != "cuda":
        # Fixed tiles: the block-sparse tile lists are built for them (and the interpreter needs no tuning).
        bm, bn = _tiles(dev, mask_block if has_list else None)
        n_m_tiles, n_n_tiles = max(math.ceil(max_len / bm), 1), max(math.ceil(max_len / bn), 1)
        if has_list:
            tile_idx, tile_cnt = block_mask_tiles(block_mask.to(dev), mask_block, n_m_tiles, n_n_tiles, bm, bn)
        else:
            tile_idx = tile_cnt = torch.zeros(1, dtype=torch.int32, device=dev)
        _prefill_kernel("fixed")[(n_m_tiles, len(starts) * hq)](
            *args, tile_idx, tile_cnt, *strides, hq, hq // kp.shape[1], max_len, tile_idx.shape[-1],
            triton.next_power_of_2(max_len), *scalars,
            HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, **dot_flags(qp),
            **(BLOCK_SPARSE_CUDA_LAUNCH if dev.type == "cuda" else {}),
        )
    else:
        dummy = torch.zeros(1, dtype=torch.int32, device=dev)
        grid = lambda meta: (triton.cdiv(max_len, meta["BLOCK_M"]), len(starts) * hq)  # noqa: E731
        _prefill_kernel("tuned")[grid](*args, dummy, dummy, *strides, hq, hq // kp.shape[1], max_len, 1,
                                       triton.next_power_of_2(max_len), *scalars, HEAD_DIM=d, **dot_flags(qp))
    owner = token_owner(starts, lens, qp.shape[0], dev)
    fill_outside(out, owner)
    fill_outside(lse, owner, float("-inf"), dim=1)
    return out, lse


def dot_flags(q: torch.Tensor) -> dict:
    """The kernels' tile-product flags: exact fp32 products for fp32 inputs; fp32 products for bf16 in the
    interpreter, whose bf16 tl.dot is wrong (triton 3.7.1)."""
    return {"IEEE": q.dtype == torch.float32, "UPCAST": q.device.type != "cuda" and q.dtype == torch.bfloat16}


_TUNED = {}
PREFILL_CONFIGS = ((128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3))


def tuned(name: str, kernel, configs, key):
    """``kernel`` autotuned on CUDA over ``configs`` (built once per name); the plain kernel elsewhere."""
    if name not in _TUNED:
        _TUNED[name] = triton.autotune(configs, key=key)(kernel)
    return _TUNED[name]


def _prefill_kernel(kind: str):
    """The prefill kernel: "fixed" (tiles given by the caller), or "tuned" (CUDA, no tile lists): autotuned over
    tile shape, warps and pipeline stages once per head_dim, precision and power-of-two length bucket."""
    from .triton_prefill import _prefill_fwd

    if kind == "fixed":
        return _prefill_fwd
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
               for bm, bn, w, s in PREFILL_CONFIGS]
    return tuned("prefill", _prefill_fwd, configs, ["HEAD_DIM", "IEEE", "len_bucket"])


def _reference_prefill(q, k, v, modes, starts, lens, sink, window, round_block, block_mask, mask_block, scale,
                       dense_from):
    """The CPU back end: per sequence, the heads of each mode together through ``reference.py``'s fast paths; rows
    from ``dense_from`` on of non-FULL heads from a full pass over those heads."""
    groups = q.shape[1] // k.shape[1]
    out = torch.zeros_like(q)
    for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
        if t == 0:
            continue
        qs, ks, vs = q[a:a + t][None], k[a:a + t].repeat_interleave(groups, 1)[None], v[a:a + t].repeat_interleave(groups, 1)[None]
        for mode in M.MODES:
            heads = (modes[s] == mode).nonzero().flatten()
            if heads.numel() == 0:
                continue
            args = (qs[:, :, heads], ks[:, :, heads], vs[:, :, heads])
            if mode == M.FULL:
                o = full_attention(*args, scale=scale)
            elif mode == M.STREAMING:
                o = streaming_attention(*args, sink, window, None, scale=scale)
            elif mode == M.STREAMING_BLOCKS:
                o = streaming_attention(*args, sink, window, round_block, scale=scale)
            else:
                o = block_sparse_attention(*args, block_mask[s:s + 1, heads.to(block_mask.device)].cpu(), mask_block,
                                           scale=scale)
            if mode != M.FULL and int(dense_from[s]) < t:
                p = int(dense_from[s])  # out of place: o may be an autograd Function's saved output
                o = torch.cat([o[:, :p], full_attention(*args, scale=scale)[:, p:]], dim=1)
            out[a:a + t, heads.to(q.device)] = o[0]
    return out
