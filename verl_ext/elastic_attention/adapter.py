"""Router weights as a separate safetensors adapter; also reads the official checkpoints' router key layout.

Layout written here: ``layers.<i>.task_mlp.<k>.{weight,bias}`` and ``layers.<i>.router_mlp.<k>.{weight,bias}``,
with metadata naming the model type, layer count, KV heads and head_dim, so loading into a different model fails
with the mismatch instead of silently misrouting. The official (full-model) checkpoints store the same weights as
``model.layers.<i>.self_attn.mask_allocator.cls_feat_extractor.<k>.*`` and ``...cls_router_head_agnostic.<k>.*``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from verl_ext.elastic_attention.hf import _layers

_OFFICIAL = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.mask_allocator\.(cls_feat_extractor|cls_router_head_agnostic)\.(\d+)\.(weight|bias)$")
_OURS = re.compile(r"^layers\.(\d+)\.(task_mlp|router_mlp)\.(\d+)\.(weight|bias)$")
_RENAME = {"cls_feat_extractor": "task_mlp", "cls_router_head_agnostic": "router_mlp"}


def _describe(model) -> dict[str, str]:
    attn = _layers(model)[0].self_attn
    return {"model_type": str(model.config.model_type), "num_layers": str(len(_layers(model))),
            "num_key_value_heads": str(model.config.num_key_value_heads), "head_dim": str(attn.head_dim)}


_PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.elastic_router\.(.+)$")


def save_router_adapter(model, path: str | Path, router_params: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the routers of ``model``; ``router_params`` (full tensors keyed by the model's parameter names, as a
    sharded trainer gathers them) replaces reading them from the model."""
    tensors = {}
    if router_params is not None:
        for name, tensor in router_params.items():
            if m := _PARAM.search(name):
                tensors[f"layers.{m.group(1)}.{m.group(2)}"] = tensor.detach().cpu().contiguous()
    else:
        for i, layer in enumerate(_layers(model)):
            router = getattr(layer.self_attn, "elastic_router", None)
            if router is None:
                raise ValueError("the model has no elastic routers; call enable_elastic_attention first.")
            for name, tensor in router.state_dict().items():
                tensors[f"layers.{i}.{name}"] = tensor.detach().cpu().contiguous()
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
        if m := _OURS.match(key):
            layer, module, idx, kind = m.groups()
        elif m := _OFFICIAL.match(key):
            layer, module, idx, kind = m.groups()
            module = _RENAME[module]
        else:
            continue  # a full official checkpoint also holds the frozen backbone
        per_layer.setdefault(int(layer), {})[f"{module}.{idx}.{kind}"] = tensor
    layers = _layers(model)
    if sorted(per_layer) != list(range(len(layers))):
        raise ValueError(f"router adapter {path} has routers for layers {sorted(per_layer)[:5]}..., the model has "
                         f"{len(layers)} layers.")
    for i, layer in enumerate(layers):
        router = getattr(layer.self_attn, "elastic_router", None)
        if router is None:
            raise ValueError("the model has no elastic routers; call enable_elastic_attention first.")
        state = per_layer[i]
        for name, param in router.state_dict().items():
            if name not in state:
                raise ValueError(f"router adapter {path}: layer {i} lacks {name}.")
            if tuple(state[name].shape) != tuple(param.shape):
                raise ValueError(f"router adapter {path}: layer {i} {name} has shape {tuple(state[name].shape)}, the "
                                 f"model's router expects {tuple(param.shape)} (different head_dim?).")
        router.load_state_dict(state)
