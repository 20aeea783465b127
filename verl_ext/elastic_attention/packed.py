"""Elastic Attention over packed rows: several sequences concatenated in one row, as verl's remove-padding path
(and router-training packs) feed the model, q (1, Hq, T, D) with ``position_ids`` restarting at 0 per sequence.

Each sequence is routed on its own prompt (boundary pooling over its first and last ``pool_budget`` prompt tokens;
the prompt lengths come from ``set_prompt_lengths``, or the whole sequence when unset) and attends causally inside
itself, every head in its mode, through the mode-table ops with ``cu_seqlens``. With the paper's dense decode and
known prompt lengths (the actor recomputing rollout log-probs), the response rows of streaming heads attend densely
within the same kernel pass (``dense_from``); block-sparse heads take a second, dense pass for those rows. The
router training forward mixes the FA and SA branches per (sequence, head) with the straight-through decision, as
for padded batches.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from verl_ext.elastic_attention.router import boundary_pool, route_inference, route_train
from verl_ext.kernels.elastic_attention import modes
from verl_ext.kernels.elastic_attention.ops import elastic_prefill
from verl_ext.kernels.elastic_attention.pair import elastic_attention_pair
from verl_ext.kernels.elastic_attention.xattention import xattention_block_mask


_SEGMENTS_CACHE: list = [None, None, None]  # (weakref to position_ids, its version, cu_seqlens)


def segments_from_position_ids(position_ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """cu_seqlens (S + 1,) int64 of a packed row from its position ids (1, T) or (T,); None if not given or
    if the positions do not restart at 0 (a plain single sequence starting elsewhere, e.g. a decode step).

    Every layer of a forward asks about the same position-ids tensor; the answer (which reads device values back)
    is kept for that tensor object until it is modified or freed.
    """
    if position_ids is None:
        return None
    # Inference-mode tensors keep no version counter, so an in-place change could not be seen: no caching for them.
    cacheable = not position_ids.is_inference()
    ref, version, cached = _SEGMENTS_CACHE
    if cacheable and ref is not None and ref() is position_ids and version == position_ids._version:
        return cached
    pos = position_ids.reshape(-1) if position_ids.dim() <= 2 and position_ids.shape[0] == 1 else None
    if pos is None or pos.numel() == 0 or int(pos[0]) != 0:
        cu = None
    else:
        starts = (pos == 0).nonzero().flatten().cpu()
        cu = torch.cat([starts, torch.tensor([pos.numel()])]).to(torch.int64)
    if cacheable:
        _SEGMENTS_CACHE[:] = [weakref.ref(position_ids), position_ids._version, cu]
    return cu


def set_prompt_lengths(model, prompt_lengths: Optional[torch.Tensor]) -> None:
    """Prompt length of every sequence of the next packed forward (S,), or None to pool over whole sequences."""
    from verl_ext.elastic_attention.hf import _layers

    for layer in _layers(model):
        layer.self_attn.elastic_prompt_lengths = prompt_lengths


def _prompt_lengths(module, cu: torch.Tensor) -> torch.Tensor:
    seq_lens = cu[1:] - cu[:-1]
    given = getattr(module, "elastic_prompt_lengths", None)
    if given is None:
        return seq_lens
    given = given.to(torch.int64).cpu()
    if given.shape != seq_lens.shape:
        raise ValueError(f"elastic prompt lengths hold {given.numel()} values for a packed row of {seq_lens.numel()} "
                         "sequences; set one per sequence (set_prompt_lengths) or None.")
    return torch.minimum(given.clamp(min=1), seq_lens)


def packed_router_logits(module, cu: torch.Tensor) -> torch.Tensor:
    """(S, H_kv, 2) router logits, each sequence pooled over its own prompt."""
    keys = module._elastic_keys[0]  # (T, H_kv, D), pre-RoPE
    config = module.elastic_config
    prompt = _prompt_lengths(module, cu)
    width = int(prompt.max())
    pooled_in = keys.new_zeros(len(prompt), width, *keys.shape[1:])
    for s, (a, p) in enumerate(zip(cu[:-1].tolist(), prompt.tolist())):
        pooled_in[s, :p] = keys[a:a + p]
    pooled = boundary_pool(pooled_in, prompt.to(keys.device), config.pool_budget, config.pool_mode)
    router = module.elastic_router
    return router(pooled.to(next(router.parameters()).dtype))


def _decisions(module, cu, training: bool):
    force = module.elastic_config.force
    n_seqs, n_kv = len(cu) - 1, module._elastic_keys.shape[2]
    if force is not None and not training:
        return torch.full((n_seqs, n_kv), int(force == "full"), dtype=torch.long, device=module._elastic_keys.device)
    logits = packed_router_logits(module, cu)
    if not training:
        return route_inference(logits)
    return route_train(logits, module.elastic_tau, noise=getattr(module, "elastic_noise", True))


def packed_forward(module, query, key, value, cu: torch.Tensor, scaling, backend: str):
    """q (1, Hq, T, D), k/v (1, Hkv, T, D) of a packed row -> (1, T, Hq, D)."""
    config = module.elastic_config
    hq, hk = query.shape[1], key.shape[1]
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # (T, H, D)
    cu_dev = cu.to(query.device)
    training = module.training and getattr(module, "elastic_tau", None) is not None
    z = _decisions(module, cu, training)  # (S, H_kv): float with STE gradient when training, else 0/1
    if training:
        module.elastic_soft_decisions = z
        module.elastic_decisions = (z.detach() > 0.5).long()
        out = elastic_attention_pair(q, k, v, z.repeat_interleave(hq // hk, dim=-1), cu_seqlens=cu_dev,
                                     sink=config.sink, window=config.window, round_block=config.block_size,
                                     scale=scaling, backend=backend)
        return out[None]
    module.elastic_decisions = z
    full = z.repeat_interleave(hq // hk, dim=-1).bool()
    block_mask = None
    if config.sparse_mode == "xattention":
        sparse_code = modes.BLOCK_SPARSE
        longest = int((cu[1:] - cu[:-1]).max())
        nb = -(-longest // config.xattn_block)
        block_mask = torch.ones(len(cu) - 1, hq, nb, nb, dtype=torch.bool, device=q.device)
        for s, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            est = xattention_block_mask(q[a:e][None], k[a:e][None], config.xattn_stride, config.xattn_block,
                                        config.xattn_threshold)
            block_mask[s, :, :est.shape[2], :est.shape[3]] = est[0]
    else:
        sparse_code = modes.STREAMING if config.block_size is None else modes.STREAMING_BLOCKS
    table = torch.where(full, modes.FULL, sparse_code)
    # The paper decodes densely: past each prompt, sparse heads attend to everything, as at generation time.
    dense_from = _dense_decode_from(module, cu)
    kwargs = dict(cu_seqlens=cu_dev, sink=config.sink, window=config.window, round_block=config.block_size or 128,
                  block_mask=block_mask, mask_block=config.xattn_block if block_mask is not None else None,
                  scale=scaling, backend=backend)
    if block_mask is None:  # streaming heads: the response rows go dense within the same pass
        return elastic_prefill(q, k, v, table, dense_from=dense_from, **kwargs)[None]
    out = elastic_prefill(q, k, v, table, **kwargs)
    if dense_from is not None:  # block-sparse heads: a separate dense pass for the response rows
        dense = elastic_prefill(q, k, v, torch.full_like(table, modes.FULL), cu_seqlens=cu_dev, scale=scaling,
                                backend=backend)
        owner = torch.repeat_interleave(torch.arange(len(cu) - 1), cu[1:] - cu[:-1])
        rows = (torch.arange(int(cu[-1])) - cu[:-1][owner] >= dense_from[owner])[:, None] & ~full.cpu()[owner]
        out = torch.where(rows[:, :, None].to(out.device), dense, out)
    return out[None]


def _dense_decode_from(module, cu: torch.Tensor) -> Optional[torch.Tensor]:
    """(S,) the prompt length of each sequence, from which sparse heads decode densely (``decode="dense"``) when
    the prompt lengths are known; None otherwise (or when no sequence has a response)."""
    given = getattr(module, "elastic_prompt_lengths", None)
    if module.elastic_config.decode != "dense" or given is None:
        return None
    prompt = _prompt_lengths(module, cu)
    return prompt if bool((prompt < cu[1:] - cu[:-1]).any()) else None
