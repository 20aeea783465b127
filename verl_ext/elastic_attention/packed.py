"""Elastic Attention over packed rows: several sequences concatenated in one row, as verl's remove-padding path
(and router-training packs) feed the model, q (1, Hq, T, D) with ``position_ids`` restarting at 0 per sequence.

Each sequence is routed on its own prompt (boundary pooling over its first and last ``pool_budget`` prompt tokens;
the prompt lengths come from ``state.set_prompt_lengths``, or the whole sequence when unset) and attends causally
inside itself, every head in its mode, through the one mode-table builder (``mode_table``) with ``cu_seqlens``.
With the paper's dense decode and known prompt lengths (the actor recomputing rollout log-probs), the response
rows of every non-full head attend densely, as at generation time. The router-training forward mixes the two
modes per (sequence, head) with the straight-through decision, as for padded batches.
"""

from __future__ import annotations

from typing import Optional

import torch

from verl_ext.elastic_attention import mode_table
from verl_ext.elastic_attention.router import boundary_pool, expand_to_query_heads, route_inference, route_train
from verl_ext.elastic_attention.state import ElasticLayerState


def segments_from_position_ids(position_ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """cu_seqlens (S + 1,) int64 of a packed row from its position ids (1, T) or (T,); None if not given or
    if the positions do not restart at 0 (a plain single sequence starting elsewhere, e.g. a decode step)."""
    if position_ids is None:
        return None
    pos = position_ids.reshape(-1) if position_ids.dim() <= 2 and position_ids.shape[0] == 1 else None
    if pos is None or pos.numel() == 0 or int(pos[0]) != 0:
        return None
    starts = (pos == 0).nonzero().flatten().cpu()
    return torch.cat([starts, torch.tensor([pos.numel()])]).to(torch.int64)


def _prompt_lengths(state: ElasticLayerState, cu: torch.Tensor) -> torch.Tensor:
    seq_lens = cu[1:] - cu[:-1]
    if state.prompt_lengths is None:
        return seq_lens
    given = state.prompt_lengths.to(torch.int64).cpu()
    if given.shape != seq_lens.shape:
        raise ValueError(f"elastic prompt lengths hold {given.numel()} values for a packed row of {seq_lens.numel()} "
                         "sequences; set one per sequence (set_prompt_lengths) or None.")
    return torch.minimum(given.clamp(min=1), seq_lens)


def packed_router_logits(module, cu: torch.Tensor) -> torch.Tensor:
    """(S, H_kv, 2) router logits, each sequence pooled over its own prompt."""
    state = module.elastic
    keys = state.keys[0]  # (T, H_kv, D), pre-RoPE
    prompt = _prompt_lengths(state, cu)
    width = int(prompt.max())
    pooled_in = keys.new_zeros(len(prompt), width, *keys.shape[1:])
    for s, (a, p) in enumerate(zip(cu[:-1].tolist(), prompt.tolist())):
        pooled_in[s, :p] = keys[a:a + p]
    pooled = boundary_pool(pooled_in, prompt.to(keys.device), state.config.pool_budget, state.config.pool_mode)
    router = module.elastic_router
    return router(pooled.to(next(router.parameters()).dtype))


def _decisions(module, cu, training: bool):
    state = module.elastic
    n_seqs, n_kv = len(cu) - 1, state.keys.shape[2]
    fixed = None if training else state.fixed_decisions(n_seqs, n_kv, state.keys.device)
    if fixed is not None:
        return fixed
    logits = packed_router_logits(module, cu)
    if not training:
        return route_inference(logits)
    return route_train(logits, state.tau, noise=state.noise)


def packed_forward(module, query, key, value, cu: torch.Tensor, scaling) -> torch.Tensor:
    """q (1, Hq, T, D), k/v (1, Hkv, T, D) of a packed row -> (1, T, Hq, D)."""
    state: ElasticLayerState = module.elastic
    groups = query.shape[1] // key.shape[1]
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # (T, H, D)
    training = module.training and state.training
    z = _decisions(module, cu, training)  # (S, H_kv): float with STE gradient when training, else 0/1
    if training:
        state.soft_decisions = z
        state.decisions = (z.detach() > 0.5).long()
        return mode_table.attend_train(state.config, q, k, v, expand_to_query_heads(z, groups), cu_seqlens=cu,
                                       scale=scaling)[None]
    state.decisions = z
    retrieval = expand_to_query_heads(z, groups)
    state.block_mask = (mode_table.block_masks(state.config, q, k, cu_seqlens=cu)
                        if mode_table.needs_block_masks(state.config, retrieval) else None)
    return mode_table.attend(state.config, q, k, v, retrieval, cu_seqlens=cu, dense_from=_dense_decode_from(state, cu),
                             scale=scaling, block_mask=state.block_mask)[None]


def _dense_decode_from(state: ElasticLayerState, cu: torch.Tensor) -> Optional[torch.Tensor]:
    """(S,) the prompt length of each sequence, from which the heads that decode densely
    (``mode_table.dense_decode_codes``) attend densely, when the prompt lengths are known; None otherwise (or when
    no sequence has a response, or no mode decodes densely)."""
    if state.prompt_lengths is None or not (state.config.decode == "dense" or state.config.uses_xattention):
        return None
    prompt = _prompt_lengths(state, cu)
    return prompt if bool((prompt < cu[1:] - cu[:-1]).any()) else None
