"""The public Elastic Attention ops: mode-table prefill, the differentiable FA/SA training pair, per-head decode.

Each op validates its input (ValueError naming the argument and the fix), resolves the back end and dispatches; the
back ends (``cpu.py``, ``triton_*.py``) and the oracles (``naive.py``) take the same packed arguments and do not
validate again. ``backend="auto"`` runs the Triton kernels on CUDA and the CPU back end elsewhere;
``backend="triton"`` forces the kernels (on CPU through Triton's interpreter, which needs ``TRITON_INTERPRET=1``
set before triton is imported: the tests' way) and ``"reference"`` the CPU back end. The model's
``ElasticAttentionConfig.backend`` means the same.

Sequences come padded, q (B, T, Hq, D) and k, v (B, T, Hkv, D), with optional ``lengths`` (B,) of valid tokens
(right padding, or left padding with ``left_padded=True``), or packed, q (N, Hq, D) and k, v (N, Hkv, D), with
``cu_seqlens`` (S + 1,). Rows outside every sequence come back as zeros.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import cpu, naive, utils
from . import modes as M
from .utils import SINK, WINDOW


def _check_modes(modes, n_seqs: int, hq: int, block_mask, mask_block, max_len: int) -> None:
    if not isinstance(modes, torch.Tensor) or modes.dtype == torch.bool or modes.is_floating_point() \
            or modes.is_complex():
        got = modes.dtype if isinstance(modes, torch.Tensor) else type(modes).__name__
        raise ValueError(f"modes must be an integer tensor of mode codes ({M.known_text()}); got {got}. From a "
                         "boolean full-head mask use torch.where(full, modes.FULL, modes.STREAMING).")
    if modes.shape != (n_seqs, hq):
        raise ValueError(f"modes must be (sequences, query heads) = ({n_seqs}, {hq}); got {tuple(modes.shape)}.")
    try:
        used = M.check_codes(modes)
    except M.UnknownModeError as e:
        raise ValueError(f"modes holds codes outside the registry: {e}") from None
    for mode in used:
        if mode.needs_block_mask and (block_mask is None or mask_block is None):
            raise ValueError(f"modes uses {mode.name}: pass block_mask (S, Hq, nqb, nkb) and mask_block.")
    if any(mode.needs_block_mask for mode in used):
        nb = math.ceil(max_len / mask_block)
        if block_mask.dim() != 4 or tuple(block_mask.shape[:2]) != (n_seqs, hq) or min(block_mask.shape[2:]) < nb:
            raise ValueError(f"block_mask must be (S, Hq, >= {nb}, >= {nb}) for mask_block={mask_block}; "
                             f"got {tuple(block_mask.shape)}.")


def _check_dense_from(dense_from, modes, lens) -> torch.Tensor:
    """(S,) int32 on the CPU; NEVER_DENSE everywhere when not given."""
    if dense_from is None:
        return torch.full((len(lens),), utils.NEVER_DENSE, dtype=torch.int32)
    dense_from = dense_from.to(torch.int64).cpu()
    if dense_from.shape != lens.shape or bool((dense_from < 0).any()):
        raise ValueError(f"dense_from must be (sequences,) = ({len(lens)},) non-negative positions; got shape "
                         f"{tuple(dense_from.shape)}.")
    reaches = dense_from < lens.to(torch.int64)
    # The kernel lists a block-mask head's kept tiles only, so its rows cannot turn dense from a position on.
    listed = M.lookup(modes, lambda mode: mode.needs_block_mask, torch.bool)
    if bool((listed.any(dim=1) & reaches).any()):
        raise ValueError("dense_from applies to streaming heads; a sequence with block-mask (block_sparse) heads must "
                         "have dense_from >= its length (compute its dense rows with a separate all-FULL call).")
    return dense_from.clamp(max=utils.NEVER_DENSE).to(torch.int32)


def elastic_prefill(q, k, v, modes, *, cu_seqlens=None, lengths=None, left_padded: bool = False, sink: int = SINK,
                    window: int = WINDOW, round_block: int = 128, block_mask=None, mask_block: Optional[int] = None,
                    dense_from=None, scale: Optional[float] = None, return_lse: bool = False, backend: str = "auto"):
    """Causal prefill with every (sequence, query head) in its own mode, ``modes`` (S, Hq) int codes of the
    registry (``modes.py``; an unregistered code is refused on every back end).

    ``block_mask`` (S, Hq, nqb, nkb) bool at ``mask_block`` tokens per block, for modes that read one.
    ``dense_from`` (S,) int: from that position of each sequence on (its response, after a prompt of that length),
    heads attend densely, as the paper decodes; None: nowhere.
    Returns O shaped like q (and the log-sum-exp (Hq, N) float32, natural log, with ``return_lse``).
    """
    utils.check_tensors(q, k, v, packed=q.dim() == 3)
    starts, lens = utils.sequences(q, cu_seqlens, lengths, left_padded)
    hq, d = q.shape[-2], q.shape[-1]
    if sink < 0 or window < 1 or round_block < 1:
        raise ValueError(f"sink={sink} >= 0, window={window} >= 1 and round_block={round_block} >= 1 are required.")
    _check_modes(modes, len(starts), hq, block_mask, mask_block, int(lens.max()) if len(lens) else 0)
    dense_from = _check_dense_from(dense_from, modes, lens)
    scale = d**-0.5 if scale is None else scale
    qp, kp, vp = utils.packed(q), utils.packed(k), utils.packed(v)
    settings = (sink, window, round_block, block_mask, mask_block, scale, dense_from)
    if utils.resolve_backend(backend, q.device) == "reference":
        if return_lse:  # the fast CPU paths merge by log-sum-exp but do not differentiate through it: the oracle does
            out, lse = naive.prefill_reference(qp, kp, vp, modes.cpu(), starts, lens, *settings)
            return out.reshape(q.shape), lse
        return cpu.prefill(qp, kp, vp, modes.cpu(), starts, lens, *settings).reshape(q.shape)
    utils.check_triton(q)
    from . import triton_prefill  # imports triton: only on this path

    out, lse = triton_prefill.prefill(*(utils.unit_last(x) for x in (qp, kp, vp)), modes, starts, lens, *settings)
    return (out.reshape(q.shape), lse) if return_lse else out.reshape(q.shape)


def elastic_attention_pair(q, k, v, z, *, cu_seqlens=None, lengths=None, left_padded: bool = False, sink: int = SINK,
                           window: int = WINDOW, round_block: Optional[int] = None, scale: Optional[float] = None,
                           backend: str = "auto") -> torch.Tensor:
    """Differentiable O = z * O_FA + (1 - z) * O_SA with z (S, Hq) per (sequence, query head) (1 = full): what
    router training runs in every layer. z is the straight-through routing decision (hard in the forward, soft
    gradient), so the backward returns dq, dk, dv and dz = <dO, O_FA - O_SA> summed over the sequence's tokens. The
    Triton path computes both branches from one pass over Q/K tiles.

    SA is token-exact streaming (sink + window), or block-rounded with ``round_block``. Layout as ``elastic_prefill``.
    """
    utils.check_tensors(q, k, v, packed=q.dim() == 3)
    starts, lens = utils.sequences(q, cu_seqlens, lengths, left_padded)
    hq, d = q.shape[-2], q.shape[-1]
    if z.shape != (len(starts), hq) or not z.is_floating_point():
        raise ValueError(f"z must be floating point (sequences, query heads) = ({len(starts)}, {hq}); "
                         f"got {z.dtype} {tuple(z.shape)}.")
    if sink < 0 or window < 1 or (round_block is not None and round_block < 1):
        raise ValueError(f"sink={sink} >= 0, window={window} >= 1 and round_block={round_block} >= 1 are required.")
    scale = d**-0.5 if scale is None else scale
    qp, kp, vp = utils.packed(q), utils.packed(k), utils.packed(v)
    if utils.resolve_backend(backend, q.device) == "reference":
        return cpu.pair(qp, kp, vp, z, starts, lens, sink, window, round_block, scale).reshape(q.shape)
    utils.check_triton(q)
    if int(lens.max()) == 0:
        return torch.zeros_like(q) + 0 * z.sum()
    from . import triton_pair  # imports triton: only on this path

    return triton_pair.pair(qp.contiguous(), kp.contiguous(), vp.contiguous(), z, starts, lens, sink, window,
                            round_block, scale).reshape(q.shape)


def _check_decode(q, k_cache, v_cache, cache_lens, sparse_heads) -> None:
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(f"q must be (B, Hq, D) and k_cache, v_cache (B, T, Hkv, D); got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}.")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must match.")
    b, hq, d = q.shape
    if k_cache.shape[0] != b or k_cache.shape[3] != d or hq % k_cache.shape[2]:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} must be (B={b}, T, Hkv, D={d}) with Hkv dividing Hq={hq}.")
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.dtype not in utils.DTYPES or x.dtype != q.dtype or x.device != q.device:
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


def elastic_decode(q, k_cache, v_cache, cache_lens, sparse_heads, *, sink: int = SINK, window: int = WINDOW,
                   scale: Optional[float] = None, backend: str = "auto") -> torch.Tensor:
    """(B, Hq, D): attention of each sequence's new token over ``cache_lens`` cached positions (the new token's key
    included, at len - 1). Each head sees the whole cache or, for sparse-KV decode (beyond the paper: the paper
    decodes densely), ``sparse_heads`` (B, Hq) bool marks heads that see only keys j < sink or len - 1 - j < window
    (the ``sink_window`` decode rule of the streaming modes). The CPU back end is the oracle itself (one token:
    O(T) per head already); the Triton kernel has no backward."""
    _check_decode(q, k_cache, v_cache, cache_lens, sparse_heads)
    if sink < 0 or window < 1:
        raise ValueError(f"sink={sink} must be >= 0 and window={window} >= 1.")
    scale = q.shape[-1]**-0.5 if scale is None else scale
    if utils.resolve_backend(backend, q.device) == "reference":
        return naive.decode_reference(q, k_cache, v_cache, cache_lens, sparse_heads, sink, window, scale)
    utils.check_triton(q)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k_cache, v_cache)):
        raise ValueError("elastic_decode's Triton kernel has no backward: run decoding under torch.no_grad() (as "
                         "generation does), or pass backend='reference' to differentiate through one decode step.")
    from . import triton_decode  # imports triton: only on this path

    return triton_decode.decode(*(utils.unit_last(x) for x in (q, k_cache, v_cache)), cache_lens, sparse_heads,
                                sink, window, scale)
