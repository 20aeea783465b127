"""The one builder of Elastic Attention's per-head mode table, used by the HF (padded and packed), verl actor and
vLLM paths alike.

A routing decision per (sequence, query head), ``retrieval`` (S, Hq) (1 = the pattern's retrieval mode, 0 = its
sparse mode), becomes the kernels' mode table (S, Hq) of codes from ``kernels/elastic_attention/modes.py``:

| pattern | retrieval heads | sparse heads |
|---|---|---|
| ``fa-ssa`` | FULL | STREAMING (STREAMING_BLOCKS with ``block_size``) |
| ``fa-xa`` | FULL | BLOCK_SPARSE |
| ``xa-ssa`` | BLOCK_SPARSE | STREAMING (STREAMING_BLOCKS with ``block_size``) |

BLOCK_SPARSE heads read XAttention block masks estimated on each sequence's own tokens (``block_masks``).

``attend`` runs a decided table (inference, the actor's log-probs); ``attend_train`` is the router-training
forward O = z * O_retrieval + (1 - z) * O_sparse with the straight-through z, differentiable in q, k, v and z.
Layouts are the kernels': padded (B, T, H, D) with ``lengths`` (``left_padded``) or packed (N, H, D) with
``cu_seqlens``.
"""

from __future__ import annotations

from typing import Optional

import torch

from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.ops import elastic_attention_pair, elastic_prefill
from verl_ext.kernels.elastic_attention.utils import sequences, token_owner
from verl_ext.kernels.elastic_attention.xattention import xattention_block_mask


def mode_code(config: ElasticAttentionConfig, mode: str) -> int:
    """The kernel code of one of a pattern's modes ("full", "streaming", "xattention")."""
    if mode == "full":
        return M.FULL
    if mode == "streaming":
        return M.STREAMING if config.block_size is None else M.STREAMING_BLOCKS
    if mode == "xattention":
        return M.BLOCK_SPARSE
    raise ValueError(f"attention mode {mode!r} is not one of 'full', 'streaming', 'xattention'.")


def table(config: ElasticAttentionConfig, retrieval: torch.Tensor) -> torch.Tensor:
    """(S, Hq) 0/1 decisions -> (S, Hq) int64 mode codes."""
    return torch.where(retrieval.bool(), mode_code(config, config.retrieval_mode),
                       mode_code(config, config.sparse_mode)).to(torch.int64)


def needs_block_masks(config: ElasticAttentionConfig, retrieval: torch.Tensor) -> bool:
    """Does the table of these decisions hold BLOCK_SPARSE heads."""
    return bool((table(config, retrieval) == M.BLOCK_SPARSE).any())


def block_masks(config: ElasticAttentionConfig, q: torch.Tensor, k: torch.Tensor, *, cu_seqlens=None, lengths=None,
                left_padded: bool = False) -> Optional[torch.Tensor]:
    """(S, Hq, nb, nb) bool XAttention block masks, each sequence estimated on its own tokens (nb from the longest;
    blocks past a sequence's end kept, they hold no keys); None when the pattern has no XAttention mode."""
    if not config.uses_xattention:
        return None
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    qp, kp = q.reshape(-1, *q.shape[-2:]), k.reshape(-1, *k.shape[-2:])
    x = config.xattention
    nb = max(-(-int(lens.max()) // x.block), 1) if len(lens) else 1
    out = torch.ones(len(starts), q.shape[-2], nb, nb, dtype=torch.bool, device=q.device)
    with torch.no_grad():  # a discrete selection: no gradient flows through which blocks are kept
        for s, (a, t) in enumerate(zip(starts.tolist(), lens.tolist())):
            if t:
                est = xattention_block_mask(qp[a:a + t][None], kp[a:a + t][None], x.stride, x.block, x.threshold)
                out[s, :, :est.shape[2], :est.shape[3]] = est[0]
    return out


def _kernel_settings(config: ElasticAttentionConfig, block_mask, backend: Optional[str]) -> dict:
    return dict(sink=config.sink, window=config.window, round_block=config.block_size or 128, block_mask=block_mask,
                mask_block=config.xattention.block if block_mask is not None else None,
                backend=backend or config.backend)


def dense_decode_codes(config: ElasticAttentionConfig) -> frozenset:
    """The mode codes whose heads attend densely past the prompt (the rows a decode step would compute).

    XAttention is a prefill method: its heads decode densely under either ``decode`` setting. Streaming heads
    decode densely with ``decode="dense"`` (the paper) and keep their sink and window with ``"sparse_kv"``."""
    codes = {M.BLOCK_SPARSE}
    if config.decode == "dense":
        codes |= {M.STREAMING, M.STREAMING_BLOCKS}
    return frozenset(codes)


def attend(config: ElasticAttentionConfig, q, k, v, retrieval: torch.Tensor, *, cu_seqlens=None, lengths=None,
           left_padded: bool = False, dense_from: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           backend: Optional[str] = None, block_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every (sequence, query head) in its decided mode; O shaped like q.

    ``dense_from`` (S,): from that position of each sequence on (its response), the heads whose mode decodes
    densely (``dense_decode_codes``) attend to every earlier key, as the decode steps that produced those tokens
    did. Streaming heads do that inside the kernel pass; BLOCK_SPARSE rows come from a second, all-FULL pass.
    ``block_mask``: precomputed ``block_masks`` (else estimated here).
    """
    layout = dict(cu_seqlens=cu_seqlens, lengths=lengths, left_padded=left_padded)
    codes = table(config, retrieval)
    block_sparse = bool((codes == M.BLOCK_SPARSE).any())
    if block_mask is None and block_sparse:
        block_mask = block_masks(config, q, k, **layout)
    settings = _kernel_settings(config, block_mask, backend)
    dense_codes = dense_decode_codes(config)
    streaming_dense = dense_from is not None and M.STREAMING in dense_codes and not block_sparse
    out = elastic_prefill(q, k, v, codes, dense_from=dense_from if streaming_dense else None, scale=scale, **layout,
                          **settings)
    if dense_from is None or streaming_dense:
        return out
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    n = q.reshape(-1, *q.shape[-2:]).shape[0]
    owner = token_owner(starts, lens, n, "cpu")
    inside = owner >= 0
    position = torch.arange(n) - starts.to(torch.int64)[owner.clamp(min=0)]
    rows = inside & (position >= dense_from.to(torch.int64).cpu()[owner.clamp(min=0)])  # (N,)
    dense_head = torch.zeros_like(codes, dtype=torch.bool)
    for code in dense_codes:
        dense_head |= codes == code
    pick = rows[:, None] & dense_head.cpu()[owner.clamp(min=0)]  # (N, Hq)
    if not bool(pick.any()):
        return out
    dense = elastic_prefill(q, k, v, torch.full_like(codes, M.FULL), scale=scale, backend=settings["backend"],
                            **layout)
    return torch.where(pick.reshape(*q.shape[:-1], 1).to(q.device), dense, out)


def attend_train(config: ElasticAttentionConfig, q, k, v, z: torch.Tensor, *, cu_seqlens=None, lengths=None,
                 left_padded: bool = False, scale: Optional[float] = None,
                 backend: Optional[str] = None) -> torch.Tensor:
    """Router training: O = z * O_retrieval + (1 - z) * O_sparse per (sequence, query head), z (S, Hq) float with
    the straight-through gradient. FA-SSA runs the fused pair op (both branches from one pass); the other patterns
    run the mode-table prefill once per mode (both differentiable) and mix."""
    layout = dict(cu_seqlens=cu_seqlens, lengths=lengths, left_padded=left_padded)
    if config.pattern == "fa-ssa":
        return elastic_attention_pair(q, k, v, z, sink=config.sink, window=config.window,
                                      round_block=config.block_size, scale=scale,
                                      backend=backend or config.backend, **layout)
    block_mask = block_masks(config, q, k, **layout)
    every = torch.ones(z.shape, dtype=torch.bool, device=z.device)
    o_retrieval = attend(config, q, k, v, every, scale=scale, backend=backend, block_mask=block_mask, **layout)
    o_sparse = attend(config, q, k, v, ~every, scale=scale, backend=backend, block_mask=block_mask, **layout)
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    owner = token_owner(starts, lens, q.reshape(-1, *q.shape[-2:]).shape[0], z.device)
    mix = torch.where((owner >= 0)[:, None], z[owner.clamp(min=0)], torch.zeros((), dtype=z.dtype, device=z.device))
    mix = mix.reshape(*q.shape[:-1], 1).float()
    return (o_sparse.float() + mix * (o_retrieval.float() - o_sparse.float())).to(q.dtype)
