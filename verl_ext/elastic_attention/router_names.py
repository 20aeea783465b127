"""Router parameter names in every layout they appear in, read and written in one place (a leaf module).

- the model's own parameters: ``...layers.<i>.self_attn.elastic_router.<local>`` (HF and vLLM models, verl's
  weight sync, FSDP-gathered state dicts);
- this project's adapter file: ``layers.<i>.<local>``;
- the official checkpoints: ``[model.]layers.<i>.self_attn.mask_allocator.{cls_feat_extractor,
  cls_router_head_agnostic}.<k>.<weight|bias>`` (our ``task_mlp`` / ``router_mlp``).

``<local>`` is a name inside ``ElasticRouter``: ``task_mlp.<k>.weight``, ``router_mlp.<k>.bias``, ...
"""

from __future__ import annotations

import re
from typing import Optional

ROUTER_KEY = ".elastic_router."  # in the name of every router parameter of a model, and of nothing else

_MODULE = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.elastic_router\.(.+)$")
_ADAPTER = re.compile(r"^layers\.(\d+)\.((?:task_mlp|router_mlp)\.\d+\.(?:weight|bias))$")
_OFFICIAL = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.mask_allocator\."
                       r"(cls_feat_extractor|cls_router_head_agnostic)\.(\d+\.(?:weight|bias))$")
_RENAME = {"cls_feat_extractor": "task_mlp", "cls_router_head_agnostic": "router_mlp"}


def is_router(name: str) -> bool:
    """Is ``name`` a router parameter of a model (weight sync and freezing skip / select these)."""
    return ROUTER_KEY in name


def parse(name: str) -> Optional[tuple[int, str]]:
    """(layer, local name) of a router tensor in any of the three layouts; None for any other name."""
    if m := _MODULE.search(name):
        return int(m.group(1)), m.group(2)
    if m := _ADAPTER.match(name):
        return int(m.group(1)), m.group(2)
    if m := _OFFICIAL.match(name):
        return int(m.group(1)), f"{_RENAME[m.group(2)]}.{m.group(3)}"
    return None


def adapter_name(layer: int, local: str) -> str:
    return f"layers.{layer}.{local}"


def module_name(layer: int, local: str) -> str:
    """The parameter name in a causal LM whose decoder is ``model.layers`` (HF and vLLM alike)."""
    return f"model.layers.{layer}.self_attn.elastic_router.{local}"
