"""Elastic Attention in a Hugging Face Qwen2 / Qwen3 / Llama model, through transformers' attention interface.

``enable_elastic_attention(model, ElasticAttentionConfig(...))`` leaves the stock checkpoint untouched: it adds an
``ElasticRouter`` submodule to every attention layer (``self_attn.elastic_router``) and its per-layer state
(``self_attn.elastic``, ``state.ElasticLayerState``), captures the layer's pre-RoPE keys with a forward hook (after
``k_norm`` on Qwen3, after ``k_proj`` otherwise), finds the packed sequences of each forward once from its
``position_ids`` (a pre-hook on the decoder) and registers the attention implementation ``elastic`` (its masks are
SDPA's). At prefill each layer routes every KV head of every sequence (deterministic argmax) and runs each head in
its mode through the one mode-table builder (``mode_table``); decode steps attend densely to the whole cache (the
paper), or, with ``decode="sparse_kv"``, streaming heads see only the sink and the window of the cache (beyond the
paper). The decisions of the last prefill are kept per layer (``state.elastic_decisions``).
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from verl_ext.elastic_attention import mode_table
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.packed import packed_forward, segments_from_position_ids
from verl_ext.elastic_attention.router import (ElasticRouter, boundary_pool, expand_to_query_heads, route_inference,
                                               route_train)
from verl_ext.elastic_attention.state import SUPPORTED, ElasticLayerState, decoder_layers
from verl_ext.elastic_attention.state import elastic_decisions  # noqa: F401  (public: with enable_elastic_attention)
from verl_ext.kernels.elastic_attention.ops import elastic_decode
from verl_ext.kernels.elastic_attention.utils import resolve_backend

ATTN_NAME = "elastic"


def enable_elastic_attention(model, config: ElasticAttentionConfig = ElasticAttentionConfig()):
    """Add routers and switch ``model`` to the ``elastic`` attention implementation (in place; returns model).
    Calling it again changes the settings and keeps the routers."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ValueError(f"Elastic Attention supports {SUPPORTED}; this model is {model_type!r}.")
    AttentionInterface.register(ATTN_NAME, elastic_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    attns = [layer.self_attn for layer in decoder_layers(model)]
    for attn in attns:
        if not hasattr(attn, "elastic_router"):
            param = next(attn.parameters())
            attn.elastic_router = ElasticRouter(attn.head_dim, config.hidden_mult).to(param.device)
            source = getattr(attn, "k_norm", None) or attn.k_proj
            source.register_forward_hook(_KeyCapture(attn))
        previous = getattr(attn, "elastic", None)
        attn.elastic = ElasticLayerState(config, tau=getattr(previous, "tau", None),
                                         noise=getattr(previous, "noise", True))
    inner = getattr(model, "model", model)
    if not getattr(inner, "_elastic_segments_hook", False):
        inner.register_forward_pre_hook(_SegmentsOfForward(attns), with_kwargs=True)
        inner._elastic_segments_hook = True
    model.config._attn_implementation = ATTN_NAME
    return model


class _KeyCapture:
    """Forward hook keeping the keys before RoPE in the layer's state: (B, T, H_kv * D) from k_proj or
    (B, T, H_kv, D) from k_norm. An object rather than a closure, so ``copy.deepcopy`` of the model gives the copy
    a hook that writes to the copied layer, not to the original."""

    def __init__(self, attn):
        self.attn = attn

    def __call__(self, module, inputs, output):
        self.attn.elastic.keys = output.view(*output.shape[:2], -1, self.attn.head_dim)


class _SegmentsOfForward:
    """Decoder pre-hook: the packed sequences of this forward (cu_seqlens from ``position_ids``, read back once per
    forward rather than once per layer) into every layer's state."""

    def __init__(self, attns):
        self.attns = attns

    def __call__(self, module, args, kwargs):
        segments = segments_from_position_ids(kwargs.get("position_ids"))
        for attn in self.attns:
            attn.elastic.segments = segments


def _valid_lengths(attention_mask: Optional[torch.Tensor], batch: int, length: int, device) -> torch.Tensor:
    """Tokens per row from the 4D mask's last query row (left padding); all valid when there is no mask."""
    if attention_mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    last = attention_mask[:, 0, -1, :]
    allowed = last if last.dtype == torch.bool else last == 0
    return allowed.sum(dim=-1).long()


def router_logits(attn, lengths: torch.Tensor) -> torch.Tensor:
    """Router logits (B, H_kv, 2) from the captured pre-RoPE keys of the current prefill (left padded)."""
    keys = attn.elastic.keys  # (B, T, H_kv, D)
    config = attn.elastic.config
    t = keys.shape[1]
    # Left padding: move each row's prompt to the front so pooling sees its first and last tokens.
    index = (torch.arange(t, device=keys.device)[None, :] + (t - lengths)[:, None]).clamp(max=t - 1)
    aligned = torch.gather(keys, 1, index[:, :, None, None].expand(-1, -1, *keys.shape[2:]))
    pooled = boundary_pool(aligned, lengths, config.pool_budget, config.pool_mode)
    router = attn.elastic_router
    return router(pooled.to(next(router.parameters()).dtype))


def route_layer(attn, lengths: torch.Tensor) -> torch.Tensor:
    """KV-head decisions (B, H_kv), 1 = retrieval mode, for the captured keys of the current prefill."""
    keys = attn.elastic.keys  # (B, T, H_kv, D)
    fixed = attn.elastic.fixed_decisions(keys.shape[0], keys.shape[2], keys.device)
    if fixed is not None:
        return fixed
    return route_inference(router_logits(attn, lengths))


def _packed_segments(state: ElasticLayerState, batch: int, length: int) -> Optional[torch.Tensor]:
    """cu_seqlens when this forward is one packed row; a single row with prompt lengths set counts as one."""
    if batch != 1:
        return None
    cu = state.segments
    if cu is not None and int(cu[-1]) == length:
        return cu
    if state.prompt_lengths is not None:
        return torch.tensor([0, length], dtype=torch.int64)
    return None


def elastic_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: Optional[float] = None, **kwargs):
    """transformers attention function: q (B, Hq, Tq, D), k/v (B, Hkv, Tk, D) after RoPE and the cache update."""
    state: ElasticLayerState = module.elastic
    b, hq, tq, d = query.shape
    tk = key.shape[2]
    if tq == tk:
        cu = _packed_segments(state, b, tq)
        if cu is not None and (len(cu) > 2 or state.prompt_lengths is not None):
            # A packed row (verl's remove-padding micro-batches, router-training packs): per-sequence routing.
            return packed_forward(module, query, key, value, cu, scaling), None
        if module.training and state.training:
            return _training_forward(module, query, key, value, attention_mask, scaling)
        lengths = _valid_lengths(attention_mask, b, tk, query.device)
        state.decisions = route_layer(module, lengths)
        retrieval = expand_to_query_heads(state.decisions, hq // key.shape[1])
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        layout = dict(lengths=lengths, left_padded=True)
        state.block_mask = (mode_table.block_masks(state.config, q, k, **layout)
                            if mode_table.needs_block_masks(state.config, retrieval) else None)
        out = mode_table.attend(state.config, q, k, v, retrieval, scale=scaling, block_mask=state.block_mask, **layout)
        return out, None
    if state.decisions is None:
        raise RuntimeError("elastic attention: a decode step ran before any prefill of this layer routed its heads; "
                           "run the prompt through the model first (generate() does).")
    if state.config.decode == "dense":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return _sparse_kv_decode(module, query, key, value, attention_mask, scaling)


def _training_forward(module, query, key, value, attention_mask, scaling):
    """Router training: both modes for every head, mixed per (sequence, head) by the straight-through decision
    z (1 = retrieval), so the loss reaches every router, including through later layers' attention."""
    state = module.elastic
    b, hq, tq, d = query.shape
    if attention_mask is not None and not bool(_valid_lengths(attention_mask, b, tq, query.device).eq(tq).all()):
        raise ValueError("router training expects unpadded sequences (pack or bucket by length).")
    lengths = torch.full((b,), tq, dtype=torch.long, device=query.device)
    z = route_train(router_logits(module, lengths), state.tau, noise=state.noise)
    state.soft_decisions = z
    state.decisions = (z.detach() > 0.5).long()
    out = mode_table.attend_train(state.config, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                  expand_to_query_heads(z, hq // key.shape[1]), scale=scaling)
    return out, None


def _sparse_kv_decode(module, query, key, value, attention_mask, scaling):
    """Decode where streaming (sparse) heads see only the first ``sink`` and the last ``window`` cached positions."""
    state = module.elastic
    config = state.config
    b, hq, tq, d = query.shape
    tk = key.shape[2]
    groups = hq // key.shape[1]
    lengths = _valid_lengths(attention_mask, b, tk, query.device)
    sparse = expand_to_query_heads(state.decisions, groups) == 0
    if resolve_backend(config.backend, query.device) == "triton" and tq == 1 and bool((lengths == tk).all()):
        # The kernel reads each row's cache from position 0, so it serves unpadded batches; padded ones take the
        # reference below.
        out = elastic_decode(query[:, :, 0], key.transpose(1, 2), value.transpose(1, 2), lengths, sparse,
                             sink=config.sink, window=config.window, scale=scaling, backend="triton")
        return out[:, None], None
    k, v = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = torch.matmul(query.float(), k.float().transpose(-1, -2)) * (scaling if scaling is not None else d**-0.5)
    if attention_mask is not None:
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        scores = scores.masked_fill(~allowed[:, :, :, -tk:], float("-inf"))
    pos = torch.arange(tk, device=query.device)[None, :] - (tk - lengths)[:, None]  # position within each row
    query_pos = (tk - tq + torch.arange(tq, device=query.device))[None, :] - (tk - lengths)[:, None]  # (B, Tq)
    in_sparse = (pos[:, None, :] < config.sink) | (query_pos[:, :, None] - pos[:, None, :] < config.window)
    scores = scores.masked_fill(sparse[:, :, None, None] & ~in_sparse[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(query.dtype)
    return out.transpose(1, 2), None
