"""Elastic Attention in a Hugging Face Qwen2 / Qwen3 / Llama model, through transformers' attention interface.

``enable_elastic_attention(model, ElasticAttentionConfig(...))`` leaves the stock checkpoint untouched: it adds an
``ElasticRouter`` submodule to every attention layer (``self_attn.elastic_router``) and its per-layer state
(``self_attn.elastic``, ``state.ElasticLayerState``), captures the layer's pre-RoPE keys with a forward hook (after
``k_norm`` on Qwen3, after ``k_proj`` otherwise), finds the packed sequences of each forward once from its
``position_ids`` (a pre-hook on the decoder) and registers the attention implementation ``elastic`` (its masks are
SDPA's). At prefill each layer hands its batch to the one routed attention call (``layer.routed_attention``) as a
layout: a padded, left-padded batch, or one packed row of several sequences (verl's remove-padding micro-batches,
router-training packs; position ids restarting at 0, or prompt lengths set), each sequence routed on its own prompt.
Decode steps attend densely to the whole cache (the paper), or, with ``decode="sparse_kv"``, each head by its mode's
decode rule (``modes.DECODE_RULES``: streaming heads see only the sink and the window of the cache; beyond the
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
from verl_ext.elastic_attention.layer import Layout, routed_attention
from verl_ext.elastic_attention.router import ElasticRouter, expand_to_query_heads
from verl_ext.elastic_attention.state import SUPPORTED, ElasticLayerState, decoder_layers
from verl_ext.elastic_attention.state import elastic_decisions  # noqa: F401  (public: with enable_elastic_attention)
from verl_ext.kernels.elastic_attention import modes as M
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


def _valid_lengths(attention_mask: Optional[torch.Tensor], batch: int, length: int, device) -> torch.Tensor:
    """Tokens per row from the 4D mask's last query row (left padding); all valid when there is no mask."""
    if attention_mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    last = attention_mask[:, 0, -1, :]
    allowed = last if last.dtype == torch.bool else last == 0
    return allowed.sum(dim=-1).long()


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
            layout = Layout(cu_seqlens=cu, prompt_lengths=state.prompt_lengths)
            q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (T, H, D)
            return routed_attention(module, q, k, v, layout, scaling)[None], None
        lengths = _valid_lengths(attention_mask, b, tk, query.device)
        if module.training and state.training:
            # Router training: both modes for every head, mixed per (sequence, head) by the straight-through
            # decision, so the loss reaches every router, including through later layers' attention.
            if attention_mask is not None and not bool(lengths.eq(tq).all()):
                raise ValueError("router training expects unpadded sequences (pack or bucket by length).")
            layout = Layout()
        else:
            layout = Layout(lengths=lengths, left_padded=True)
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # (B, T, H, D)
        return routed_attention(module, q, k, v, layout, scaling), None
    if state.decisions is None:
        raise RuntimeError("elastic attention: a decode step ran before any prefill of this layer routed its heads; "
                           "run the prompt through the model first (generate() does).")
    if state.config.decode == "dense":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return _sparse_kv_decode(module, query, key, value, attention_mask, scaling)


def _sparse_kv_decode(module, query, key, value, attention_mask, scaling):
    """Decode where each head sees what its mode's decode rule keeps of the cache (``Mode.decode``: the streaming
    modes' ``sink_window`` keeps the first ``sink`` and the last ``window`` positions; ``dense`` keeps all)."""
    state = module.elastic
    config = state.config
    b, hq, tq, d = query.shape
    tk = key.shape[2]
    groups = hq // key.shape[1]
    lengths = _valid_lengths(attention_mask, b, tk, query.device)
    codes = mode_table.table(config, expand_to_query_heads(state.decisions, groups))  # (B, Hq)
    used = M.check_codes(codes)
    windowed = M.lookup(codes, lambda mode: mode.decode == "sink_window", torch.bool).to(query.device)
    if resolve_backend(config.backend, query.device) == "triton" and tq == 1 and bool((lengths == tk).all()) \
            and all(mode.decode in ("dense", "sink_window") for mode in used):
        # The kernel implements the sink_window rule and reads each row's cache from position 0, so it serves
        # unpadded batches; padded ones take the reference below.
        out = elastic_decode(query[:, :, 0], key.transpose(1, 2), value.transpose(1, 2), lengths, windowed,
                             sink=config.sink, window=config.window, scale=scaling, backend="triton")
        return out[:, None], None
    k, v = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = torch.matmul(query.float(), k.float().transpose(-1, -2)) * (scaling if scaling is not None else d**-0.5)
    if attention_mask is not None:
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        scores = scores.masked_fill(~allowed[:, :, :, -tk:], float("-inf"))
    pos = torch.arange(tk, device=query.device)[None, :] - (tk - lengths)[:, None]  # position within each row
    query_pos = (tk - tq + torch.arange(tq, device=query.device))[None, :] - (tk - lengths)[:, None]  # (B, Tq)
    settings = M.Settings(sink=config.sink, window=config.window)
    for mode in used:
        if mode.decode == "dense":
            continue
        keep = M.DECODE_RULES[mode.decode](pos[:, None, :], query_pos[:, :, None] + 1, settings)  # (B, Tq, Tk)
        heads = (codes == mode.code).to(query.device)  # (B, Hq)
        scores = scores.masked_fill(heads[:, :, None, None] & ~keep[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(query.dtype)
    return out.transpose(1, 2), None
