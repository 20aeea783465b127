"""The one builder of Elastic Attention's per-head mode table, used by the HF (padded and packed), verl actor and
vLLM paths alike (through ``layer.routed_attention``).

A routing decision per (sequence, query head), ``retrieval`` (S, Hq) (1 = the pattern's retrieval mode, 0 = its
sparse mode), becomes the kernels' mode table (S, Hq) of codes from ``kernels/elastic_attention/modes.py``: the codes
of ``config.kernel_modes``, (retrieval, sparse):

| pattern | retrieval heads | sparse heads |
|---|---|---|
| ``fa-ssa`` | ``full`` | ``streaming`` (``streaming_blocks`` with ``block_size``) |
| ``fa-xa`` | ``full`` | ``block_sparse`` |
| ``xa-ssa`` | ``block_sparse`` | ``streaming`` (``streaming_blocks`` with ``block_size``) |

Nothing here compares against a particular mode: heads whose mode ``needs_block_mask`` read XAttention block masks
estimated on each sequence's own tokens (``block_masks``); the heads that attend densely past the prompt are those
whose mode is not ``dense`` and decodes densely (``dense_decode_codes``).

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


def table(config: ElasticAttentionConfig, retrieval: torch.Tensor) -> torch.Tensor:
    """(S, Hq) 0/1 decisions -> (S, Hq) int64 mode codes."""
    on, off = config.kernel_modes
    return torch.where(retrieval.bool(), on.code, off.code).to(torch.int64)


def _reads_block_mask(codes: torch.Tensor) -> bool:
    return bool(M.lookup(codes, lambda mode: mode.needs_block_mask, torch.bool).any())


def needs_block_masks(config: ElasticAttentionConfig, retrieval: torch.Tensor) -> bool:
    """Does the table of these decisions hold heads whose mode reads a block mask."""
    return _reads_block_mask(table(config, retrieval))


def block_masks(config: ElasticAttentionConfig, q: torch.Tensor, k: torch.Tensor, *, cu_seqlens=None, lengths=None,
                left_padded: bool = False) -> Optional[torch.Tensor]:
    """(S, Hq, nb, nb) bool XAttention block masks, each sequence estimated on its own tokens (nb from the longest;
    blocks past a sequence's end kept, they hold no keys); None when no mode of the pair reads a block mask."""
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
    """The codes of the registered modes whose heads attend densely past the prompt (the rows a decode step would
    compute), though not dense in the prompt.

    With ``decode="dense"`` (the paper) every such mode; with ``"sparse_kv"`` those whose decode rule is dense (a
    prefill method such as XAttention's block selection), while the others (streaming: ``sink_window``) keep their
    rule."""
    return frozenset(m.code for m in M.known() if not m.dense and (config.decode == "dense" or m.decode == "dense"))


def pair_decodes_densely(config: ElasticAttentionConfig) -> bool:
    """Does a mode of the config's pair attend densely past the prompt (``dense_decode_codes``)."""
    return any(mode.code in dense_decode_codes(config) for mode in config.kernel_modes)


def attend(config: ElasticAttentionConfig, q, k, v, retrieval: torch.Tensor, *, cu_seqlens=None, lengths=None,
           left_padded: bool = False, dense_from: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           backend: Optional[str] = None, block_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every (sequence, query head) in its decided mode; O shaped like q.

    ``dense_from`` (S,): from that position of each sequence on (its response), the heads whose mode decodes
    densely (``dense_decode_codes``) attend to every earlier key, as the decode steps that produced those tokens
    did. When every head of the table is dense or turns dense (and none reads a block mask: the kernel lists only
    its kept tiles) that happens inside the kernel pass; otherwise the dense rows come from a second, all-full pass.
    ``block_mask``: precomputed ``block_masks`` (else estimated here).
    """
    layout = dict(cu_seqlens=cu_seqlens, lengths=lengths, left_padded=left_padded)
    codes = table(config, retrieval)
    if block_mask is None and _reads_block_mask(codes):
        block_mask = block_masks(config, q, k, **layout)
    settings = _kernel_settings(config, block_mask, backend)
    dense_codes = dense_decode_codes(config)
    in_pass = dense_from is not None and all(mode.dense or (mode.code in dense_codes and not mode.needs_block_mask)
                                             for mode in M.check_codes(codes))
    out = elastic_prefill(q, k, v, codes, dense_from=dense_from if in_pass else None, scale=scale, **layout,
                          **settings)
    if dense_from is None or in_pass:
        return out
    starts, lens = sequences(q, cu_seqlens, lengths, left_padded)
    n = q.reshape(-1, *q.shape[-2:]).shape[0]
    owner = token_owner(starts, lens, n, "cpu")
    inside = owner >= 0
    position = torch.arange(n) - starts.to(torch.int64)[owner.clamp(min=0)]
    rows = inside & (position >= dense_from.to(torch.int64).cpu()[owner.clamp(min=0)])  # (N,)
    dense_head = M.lookup(codes, lambda mode: mode.code in dense_codes, torch.bool)  # (S, Hq)
    pick = rows[:, None] & dense_head[owner.clamp(min=0)]  # (N, Hq)
    if not bool(pick.any()):
        return out
    dense = elastic_prefill(q, k, v, torch.full_like(codes, M.get("full").code), scale=scale,
                            backend=settings["backend"], **layout)
    return torch.where(pick.reshape(*q.shape[:-1], 1).to(q.device), dense, out)


def attend_train(config: ElasticAttentionConfig, q, k, v, z: torch.Tensor, *, cu_seqlens=None, lengths=None,
                 left_padded: bool = False, scale: Optional[float] = None,
                 backend: Optional[str] = None) -> torch.Tensor:
    """Router training: O = z * O_retrieval + (1 - z) * O_sparse per (sequence, query head), z (S, Hq) float with
    the straight-through gradient. Full + streaming (FA-SSA) runs the fused pair op (both branches from one pass);
    any other pair runs the mode-table prefill once per mode (both differentiable) and mixes."""
    layout = dict(cu_seqlens=cu_seqlens, lengths=lengths, left_padded=left_padded)
    if config.kernel_modes == (M.get("full"), M.streaming(config.block_size)):  # the pair op's two branches
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
