"""Per-layer Elastic Attention state: one object on each attention layer (``attn.elastic``) instead of loose
attributes, and the functions every caller uses to reach the layers and set what a forward needs.

The router itself is a submodule (``attn.elastic_router``: its parameters must be in the model's state dict under
that name); everything else a layer keeps between the key capture, the router and the attention call is here.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from verl_ext.elastic_attention.config import ElasticAttentionConfig

SUPPORTED = ("qwen2", "qwen3", "llama")


@dataclasses.dataclass
class ElasticLayerState:
    """What one attention layer holds across a forward.

    ``keys``: pre-RoPE keys of the current forward, (B, T, H_kv, D), or (N, H_kv, D) packed (vLLM's routed rows);
    what ``layer.routed_attention`` routes on. ``decisions``: the last routing, (S, H_kv)
    (1 = retrieval / full). ``soft_decisions``: the straight-through decisions of a training forward (with gradient).
    ``tau``: Gumbel temperature; set, the layer runs the training forward. ``noise``: Gumbel noise in training.
    ``generator``: where the Gumbel noise is drawn from (one generator shared by every layer of a model, so a seed
    fixes a run's noise whatever else draws random numbers in the process), or None: torch's global generator.
    ``prompt_lengths``: (S,) prompt length of each packed sequence (the rest is response). ``segments``: cu_seqlens
    of the current forward's packed row (set once per forward for every layer), or None. ``block_mask``: the
    XAttention block masks (S, Hq, nb, nb) of the last inference forward, when it had block-sparse heads.
    ``static``: (H_kv,) fixed decisions that replace routing for every input (a static head mask, the baseline of
    DuoAttention / PruLong; ``set_static_heads``), or None.
    """

    config: ElasticAttentionConfig
    keys: Optional[torch.Tensor] = None
    decisions: Optional[torch.Tensor] = None
    soft_decisions: Optional[torch.Tensor] = None
    tau: Optional[float] = None
    noise: bool = True
    generator: Optional[torch.Generator] = None
    prompt_lengths: Optional[torch.Tensor] = None
    segments: Optional[torch.Tensor] = None
    block_mask: Optional[torch.Tensor] = None
    static: Optional[torch.Tensor] = None

    @property
    def training(self) -> bool:
        return self.tau is not None

    def fixed_decisions(self, n_seqs: int, n_kv: int, device) -> Optional[torch.Tensor]:
        """(n_seqs, n_kv) decisions that do not depend on the input (``config.force`` or a static head mask), or
        None when the routers decide."""
        if self.config.force is not None:
            return torch.full((n_seqs, n_kv), int(self.config.force == "full"), dtype=torch.long, device=device)
        if self.static is not None:
            return self.static.to(device=device, dtype=torch.long)[None].expand(n_seqs, n_kv).clone()
        return None


def decoder_layers(model):
    """The decoder layers of a Qwen2 / Qwen3 / Llama model (``model.model.layers``)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers at model.layers; supported: {SUPPORTED}.")
    return layers


def elastic_layers(model) -> list:
    """The attention modules that carry Elastic Attention (``attn.elastic`` and ``attn.elastic_router``)."""
    layers = [layer.self_attn for layer in decoder_layers(model)]
    missing = [i for i, attn in enumerate(layers) if not isinstance(getattr(attn, "elastic", None), ElasticLayerState)]
    if missing:
        raise ValueError(f"layers {missing} have no Elastic Attention; call enable_elastic_attention first.")
    return layers


def set_noise_generator(model, generator: Optional[torch.Generator]) -> None:
    """Draw every layer's Gumbel noise from ``generator`` (on the model's device), or None: the global one."""
    for attn in elastic_layers(model):
        attn.elastic.generator = generator


def set_router_temperature(model, tau: Optional[float], noise: Optional[bool] = None) -> None:
    """Gumbel temperature for training forwards (None: deterministic routing, the inference path); ``noise``
    False makes the training forward's decision the argmax of inference."""
    for attn in elastic_layers(model):
        attn.elastic.tau = tau
        if noise is not None:
            attn.elastic.noise = noise


def set_static_heads(model, mask: Optional[torch.Tensor]) -> None:
    """Fix every layer's decisions to ``mask`` (L, H_kv) (1 = retrieval / full) for every input, or route again
    (None): the static head mask a method without per-input routing would use."""
    layers = elastic_layers(model)
    kv_heads = int(model.config.num_key_value_heads)
    if mask is not None and tuple(mask.shape) != (len(layers), kv_heads):
        raise ValueError(f"static head mask must be (layers, kv heads) = ({len(layers)}, {kv_heads}); got "
                         f"{tuple(mask.shape)}.")
    for i, attn in enumerate(layers):
        attn.elastic.static = None if mask is None else mask[i].detach().to(torch.long).cpu()


def set_prompt_lengths(model, prompt_lengths: Optional[torch.Tensor]) -> None:
    """Prompt length of every sequence of the next packed forward (S,), or None to route on whole sequences."""
    for attn in elastic_layers(model):
        attn.elastic.prompt_lengths = prompt_lengths


def elastic_decisions(model) -> torch.Tensor:
    """(S, L, H_kv) decisions of the last forward, 1 = retrieval (full) mode."""
    decisions = [attn.elastic.decisions for attn in elastic_layers(model)]
    if any(d is None for d in decisions):
        raise RuntimeError("no forward has run with elastic attention yet.")
    return torch.stack(decisions, dim=1)
