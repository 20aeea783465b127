"""Router weights as a separate safetensors adapter; also reads the official checkpoints' router key layout.

Layout written here: ``layers.<i>.task_mlp.<k>.{weight,bias}`` and ``layers.<i>.router_mlp.<k>.{weight,bias}``,
with metadata naming the model type, layer count, KV heads and head_dim, so loading into a different model fails
with the mismatch instead of silently misrouting. The official (full-model) checkpoints store the same weights as
``model.layers.<i>.self_attn.mask_allocator.cls_feat_extractor.<k>.*`` and ``...cls_router_head_agnostic.<k>.*``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from verl_ext.elastic_attention import router_names
from verl_ext.elastic_attention.state import elastic_layers


def _describe(model) -> dict[str, str]:
    attns = elastic_layers(model)
    return {"model_type": str(model.config.model_type), "num_layers": str(len(attns)),
            "num_key_value_heads": str(model.config.num_key_value_heads), "head_dim": str(attns[0].head_dim)}


def save_router_adapter(model, path: str | Path, router_params: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the routers of ``model``; ``router_params`` (full tensors keyed by the model's parameter names, as a
    sharded trainer gathers them) replaces reading them from the model."""
    tensors = {}
    if router_params is not None:
        for name, tensor in router_params.items():
            if router_names.is_router(name) and (parsed := router_names.parse(name)):
                tensors[router_names.adapter_name(*parsed)] = tensor.detach().cpu().contiguous()
    else:
        for i, attn in enumerate(elastic_layers(model)):
            for name, tensor in attn.elastic_router.state_dict().items():
                tensors[router_names.adapter_name(i, name)] = tensor.detach().cpu().contiguous()
    if not tensors:
        raise ValueError("no router tensors to save.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=_describe(model))
    return path


def load_router_adapter(model, path: str | Path) -> None:
    """Load router weights (this project's layout, or the official checkpoint keys) into an elastic model."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    expected = _describe(model)
    mismatched = {k: (metadata[k], v) for k, v in expected.items() if k in metadata and metadata[k] != v}
    if mismatched:
        raise ValueError(f"router adapter {path} was made for another model: " +
                         ", ".join(f"{k} adapter={a} model={b}" for k, (a, b) in mismatched.items()))
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path)).items():
        parsed = router_names.parse(key)
        if parsed is None:
            continue  # a full official checkpoint also holds the frozen backbone
        per_layer.setdefault(parsed[0], {})[parsed[1]] = tensor
    attns = elastic_layers(model)
    if sorted(per_layer) != list(range(len(attns))):
        raise ValueError(f"router adapter {path} has routers for layers {sorted(per_layer)[:5]}..., the model has "
                         f"{len(attns)} layers.")
    for i, attn in enumerate(attns):
        router = attn.elastic_router
        state = per_layer[i]
        for name, param in router.state_dict().items():
            if name not in state:
                raise ValueError(f"router adapter {path}: layer {i} lacks {name}.")
            if tuple(state[name].shape) != tuple(param.shape):
                raise ValueError(f"router adapter {path}: layer {i} {name} has shape {tuple(state[name].shape)}, the "
                                 f"model's router expects {tuple(param.shape)} (different head_dim?).")
        router.load_state_dict(state)


def fixed_routing_adapter(model_dir: str | Path, path: str | Path, sparse_layers: set[int]) -> tuple[Path, float]:
    """An adapter for the checkpoint in ``model_dir`` whose routers send every KV head of the layers in
    ``sparse_layers`` to sparse attention and every other head to full attention, whatever the input (the routers'
    last layer: zero weights, bias logits (sparse, full) = (+10, -10) or (-10, +10)): routing known in advance, for
    checking that two engines route alike. Returns (the adapter file, the Omega_MSR it gives every input)."""
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.hf import enable_elastic_attention

    model = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(model_dir))
    layers = model.model.layers
    with torch.no_grad():
        for i, layer in enumerate(layers):
            head = layer.self_attn.elastic_router.router_mlp[-1]
            head.weight.zero_()
            head.bias.copy_(torch.tensor([10.0, -10.0] if i in sparse_layers else [-10.0, 10.0]))
    return save_router_adapter(model, path), len(sparse_layers) / len(layers)
