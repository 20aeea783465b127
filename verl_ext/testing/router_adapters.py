"""Router adapters with fixed decisions, for tests that need to know where every KV head attends."""

from __future__ import annotations

from pathlib import Path


def layer_routing_adapter(model_dir: str | Path, path: str | Path, sparse_layers: set[int]) -> tuple[Path, float]:
    """An Elastic Attention router adapter for the checkpoint in ``model_dir`` that sends every KV head of the
    layers in ``sparse_layers`` to sparse attention and every other head to full attention, whatever the input
    (the routers' last layer: zero weights, bias logits (sparse, full) = (+10, -10) or (-10, +10)).
    Returns (the adapter file, the Omega_MSR it gives every input)."""
    import torch
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.adapter import save_router_adapter
    from verl_ext.elastic_attention.hf import enable_elastic_attention

    model = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(model_dir))
    layers = model.model.layers
    with torch.no_grad():
        for i, layer in enumerate(layers):
            head = layer.self_attn.elastic_router.router_mlp[-1]
            head.weight.zero_()
            head.bias.copy_(torch.tensor([10.0, -10.0] if i in sparse_layers else [-10.0, 10.0]))
    return save_router_adapter(model, path), len(sparse_layers) / len(layers)
