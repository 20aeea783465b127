"""Elastic Attention in a Hugging Face Qwen2 / Qwen3 / Llama model, through transformers' attention interface.

``enable_elastic_attention(model, ElasticAttentionConfig(...))`` leaves the stock checkpoint untouched: it adds an
``ElasticRouter`` submodule to every attention layer (``self_attn.elastic_router``), captures the layer's pre-RoPE
keys with a forward hook (after ``k_norm`` on Qwen3, after ``k_proj`` otherwise) and registers the attention
implementation ``elastic`` (its masks are SDPA's). At prefill each layer routes every KV head of every sequence
(deterministic argmax) and runs the per-head mixed attention; decode steps attend densely to the whole cache (the
paper), or, with ``decode="sparse_kv"``, sparse heads see only the sink and the window of the cache (beyond the
paper). The decisions of the last prefill are kept per layer (``elastic_decisions``) with their sparsity metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from verl_ext.elastic_attention.packed import packed_forward, segments_from_position_ids
from verl_ext.elastic_attention.router import ElasticRouter, boundary_pool, route_inference, route_train
from verl_ext.kernels.elastic_attention import modes
from verl_ext.kernels.elastic_attention.decode import elastic_decode
from verl_ext.kernels.elastic_attention.ops import elastic_prefill
from verl_ext.kernels.elastic_attention.pair import elastic_attention_pair
from verl_ext.kernels.elastic_attention.reference import SINK, WINDOW, full_attention, mixed_attention, streaming_attention
from verl_ext.kernels.elastic_attention.xattention import xattention_block_mask

ATTN_NAME = "elastic"
SUPPORTED = ("qwen2", "qwen3", "llama")


@dataclasses.dataclass(frozen=True)
class ElasticAttentionConfig:
    """``force``: None (route), "full" or "sparse" (every head). ``block_size``: None = token-exact streaming.
    ``sparse_mode``: "streaming" (FA-SSA, the paper's main setting) or "xattention" (FA-XA; stride 16, threshold
    0.9, block 64 as in the paper; the released evaluation file uses 0.8 and 128). ``backend``: "auto" (the Triton
    kernels on CUDA, the PyTorch reference on CPU), "triton" (also on CPU under TRITON_INTERPRET=1, for tests) or
    "reference"."""

    sink: int = SINK
    window: int = WINDOW
    block_size: Optional[int] = None
    pool_budget: int = 100
    pool_mode: str = "boundary"
    decode: str = "dense"
    force: Optional[str] = None
    hidden_mult: int = 4
    sparse_mode: str = "streaming"
    xattn_stride: int = 16
    xattn_block: int = 64
    xattn_threshold: float = 0.9
    backend: str = "auto"

    def __post_init__(self):
        if self.backend not in ("auto", "triton", "reference"):
            raise ValueError(f"backend={self.backend!r} must be 'auto', 'triton' or 'reference'.")
        if self.sparse_mode not in ("streaming", "xattention"):
            raise ValueError(f"sparse_mode={self.sparse_mode!r} must be 'streaming' or 'xattention'.")
        if self.decode not in ("dense", "sparse_kv"):
            raise ValueError(f"decode={self.decode!r} must be 'dense' (paper) or 'sparse_kv'.")
        if self.force not in (None, "full", "sparse"):
            raise ValueError(f"force={self.force!r} must be None, 'full' or 'sparse'.")
        from verl_ext.elastic_attention.router import POOL_MODES

        if self.pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode={self.pool_mode!r} must be one of {POOL_MODES}: boundary (paper), "
                             "boundary_concat (released inference code), segment (released training code).")
        if self.sink < 0 or self.window < 1 or self.pool_budget < 1:
            raise ValueError("sink >= 0, window >= 1 and pool_budget >= 1 are required.")


def _layers(model):
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers at model.layers; supported: {SUPPORTED}.")
    return layers


def enable_elastic_attention(model, config: ElasticAttentionConfig = ElasticAttentionConfig()):
    """Add routers and switch ``model`` to the ``elastic`` attention implementation (in place; returns model)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ValueError(f"Elastic Attention supports {SUPPORTED}; this model is {model_type!r}.")
    AttentionInterface.register(ATTN_NAME, elastic_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    for layer in _layers(model):
        attn = layer.self_attn
        if not hasattr(attn, "elastic_router"):
            param = next(attn.parameters())
            attn.elastic_router = ElasticRouter(attn.head_dim, config.hidden_mult).to(param.device)
            source = getattr(attn, "k_norm", None) or attn.k_proj
            source.register_forward_hook(_KeyCapture(attn))
        attn.elastic_config = config
        attn.elastic_decisions = None
    model.config._attn_implementation = ATTN_NAME
    model.elastic_config = config
    return model


class _KeyCapture:
    """Forward hook keeping the keys before RoPE on the attention layer: (B, T, H_kv * D) from k_proj or
    (B, T, H_kv, D) from k_norm. An object rather than a closure, so ``copy.deepcopy`` of the model gives the copy
    a hook that writes to the copied layer, not to the original."""

    def __init__(self, attn):
        self.attn = attn

    def __call__(self, module, inputs, output):
        self.attn._elastic_keys = output.view(*output.shape[:2], -1, self.attn.head_dim)


def _valid_lengths(attention_mask: Optional[torch.Tensor], batch: int, length: int, device) -> torch.Tensor:
    """Tokens per row from the 4D mask's last query row (left padding); all valid when there is no mask."""
    if attention_mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    last = attention_mask[:, 0, -1, :]
    allowed = last if last.dtype == torch.bool else last == 0
    return allowed.sum(dim=-1).long()


def router_logits(attn, lengths: torch.Tensor) -> torch.Tensor:
    """Router logits (B, H_kv, 2) from the captured pre-RoPE keys of the current prefill (left padded)."""
    keys = attn._elastic_keys  # (B, T, H_kv, D)
    config = attn.elastic_config
    t = keys.shape[1]
    # Left padding: move each row's prompt to the front so pooling sees its first and last tokens.
    index = (torch.arange(t, device=keys.device)[None, :] + (t - lengths)[:, None]).clamp(max=t - 1)
    aligned = torch.gather(keys, 1, index[:, :, None, None].expand(-1, -1, *keys.shape[2:]))
    pooled = boundary_pool(aligned, lengths, config.pool_budget, config.pool_mode)
    router = attn.elastic_router
    return router(pooled.to(next(router.parameters()).dtype))


def route_layer(attn, lengths: torch.Tensor) -> torch.Tensor:
    """KV-head decisions (B, H_kv), 1 = full, for the captured keys of the current prefill (left padded)."""
    force = attn.elastic_config.force
    if force is not None:
        keys = attn._elastic_keys  # (B, T, H_kv, D)
        return torch.full((keys.shape[0], keys.shape[2]), int(force == "full"), dtype=torch.long, device=keys.device)
    return route_inference(router_logits(attn, lengths))


def elastic_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: Optional[float] = None, **kwargs):
    """transformers attention function: q (B, Hq, Tq, D), k/v (B, Hkv, Tk, D) after RoPE and the cache update."""
    config: ElasticAttentionConfig = module.elastic_config
    b, hq, tq, d = query.shape
    tk = key.shape[2]
    groups = hq // key.shape[1]
    cu = segments_from_position_ids(kwargs.get("position_ids")) if b == 1 and tq == tk else None
    if cu is not None and (len(cu) > 2 or getattr(module, "elastic_prompt_lengths", None) is not None):
        # A packed row (verl's remove-padding micro-batches, router-training packs): per-sequence routing.
        backend = "triton" if _use_triton(config, query) else "reference"
        return packed_forward(module, query, key, value, cu, scaling, backend), None
    if module.training and getattr(module, "elastic_tau", None) is not None and tq == tk:
        return _training_forward(module, query, key, value, attention_mask, scaling)
    if tq == tk:  # prefill: route, then every head in its own mode
        lengths = _valid_lengths(attention_mask, b, tk, query.device)
        decisions = route_layer(module, lengths)
        module.elastic_decisions = decisions
        full_heads = decisions.repeat_interleave(groups, dim=-1)
        if _use_triton(config, query):
            return _triton_prefill(config, query, key, value, full_heads, lengths, scaling), None
        out = torch.zeros(b, tq, hq, d, dtype=query.dtype, device=query.device)
        for row in range(b):
            n = int(lengths[row])
            out[row, tq - n:] = mixed_attention(
                query[row:row + 1, :, tq - n:].transpose(1, 2), key[row:row + 1, :, tk - n:].transpose(1, 2),
                value[row:row + 1, :, tk - n:].transpose(1, 2), full_heads[row:row + 1], config.sink, config.window,
                config.block_size, scale=scaling, sparse_mode=config.sparse_mode,
                xattn={"stride": config.xattn_stride, "block": config.xattn_block, "threshold": config.xattn_threshold},
            )[0]
        return out, None
    if module.elastic_decisions is None:
        raise RuntimeError("elastic attention: a decode step ran before any prefill of this layer routed its heads; "
                           "run the prompt through the model first (generate() does).")
    if config.decode == "dense":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return _sparse_kv_decode(module, query, key, value, attention_mask, scaling)


def _training_forward(module, query, key, value, attention_mask, scaling):
    """Router training: both branches for every head, mixed per (sequence, head) by the straight-through decision
    z (1 = full), so the loss reaches every router, including through later layers' attention."""
    config = module.elastic_config
    b, hq, tq, d = query.shape
    if attention_mask is not None and not bool(_valid_lengths(attention_mask, b, tq, query.device).eq(tq).all()):
        raise ValueError("router training expects unpadded sequences (pack or bucket by length).")
    lengths = torch.full((b,), tq, dtype=torch.long, device=query.device)
    z = route_train(router_logits(module, lengths), module.elastic_tau, noise=getattr(module, "elastic_noise", True))
    module.elastic_soft_decisions = z
    module.elastic_decisions = (z.detach() > 0.5).long()
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    if _use_triton(config, query):  # both branches from one pass, router gradient from the fused backward
        out = elastic_attention_pair(q, k, v, z.repeat_interleave(hq // key.shape[1], dim=-1), sink=config.sink,
                                     window=config.window, round_block=config.block_size, scale=scaling)
        return out, None
    full = full_attention(q, k, v, scale=scaling)
    sparse = streaming_attention(q, k, v, config.sink, config.window, config.block_size, scale=scaling)
    mix = z.repeat_interleave(hq // key.shape[1], dim=-1).to(full.dtype)[:, None, :, None]  # (B, 1, Hq, 1)
    return mix * full + (1 - mix) * sparse, None


def _use_triton(config: ElasticAttentionConfig, query: torch.Tensor) -> bool:
    if config.backend == "auto":
        return query.is_cuda
    return config.backend == "triton"


def _triton_prefill(config, query, key, value, full_heads, lengths, scaling):
    """Every (row, query head) in its mode in one kernel launch over the left-padded batch; (B, Tq, Hq, D)."""
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    b, t = q.shape[:2]
    block_mask = None
    if config.sparse_mode == "xattention":
        sparse_code = modes.BLOCK_SPARSE
        nb = -(-t // config.xattn_block)
        block_mask = torch.ones(b, q.shape[2], nb, nb, dtype=torch.bool, device=q.device)
        for row in range(b):  # estimated on each row's own tokens, as the reference does
            n = int(lengths[row])
            est = xattention_block_mask(q[row:row + 1, t - n:], k[row:row + 1, t - n:], config.xattn_stride,
                                        config.xattn_block, config.xattn_threshold)
            block_mask[row, :, :est.shape[2], :est.shape[3]] = est[0]
    else:
        sparse_code = modes.STREAMING if config.block_size is None else modes.STREAMING_BLOCKS
    table = torch.where(full_heads.bool(), modes.FULL, sparse_code)
    return elastic_prefill(q, k, v, table, lengths=lengths, left_padded=True, sink=config.sink, window=config.window,
                           round_block=config.block_size or 128, block_mask=block_mask,
                           mask_block=config.xattn_block if block_mask is not None else None, scale=scaling,
                           backend="triton")


def _sparse_kv_decode(module, query, key, value, attention_mask, scaling):
    """Decode where sparse heads see only the first ``sink`` and the last ``window`` cached positions."""
    config = module.elastic_config
    b, hq, tq, d = query.shape
    tk = key.shape[2]
    groups = hq // key.shape[1]
    lengths = _valid_lengths(attention_mask, b, tk, query.device)
    if _use_triton(config, query) and tq == 1 and bool((lengths == tk).all()):
        # The kernel reads each row's cache from position 0, so it serves unpadded batches; padded ones take the
        # reference below.
        sparse = (module.elastic_decisions.repeat_interleave(groups, -1) == 0)
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
    sparse_heads = (module.elastic_decisions.repeat_interleave(groups, -1) == 0)[:, :, None, None]
    scores = scores.masked_fill(sparse_heads & ~in_sparse[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(query.dtype)
    return out.transpose(1, 2), None


def elastic_decisions(model) -> torch.Tensor:
    """(B, L, H_kv) decisions of the last prefill, 1 = full attention."""
    decisions = [layer.self_attn.elastic_decisions for layer in _layers(model)]
    if any(d is None for d in decisions):
        raise RuntimeError("no prefill has run with elastic attention yet.")
    return torch.stack(decisions, dim=1)
