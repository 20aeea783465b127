"""vLLM side of Elastic Attention: the parts that do not need vLLM (routing state, configuration, weight names,
chunked-prefill policy) and the ``vllm.general_plugins`` entry point, which registers nothing when vLLM is absent.

Status: vLLM cannot be installed on the machines this project is built and tested on, so no elastic model class
for vLLM ships yet; ``register`` says so in vLLM's log instead of registering an untested model. What is here is
what such a model needs and is tested on CPU:

- ``RoutingState``: per-request decisions, made once at prefill per layer and KV head, read by every later step of
  the request, released when it finishes; a read without a prefill is an error naming the request and layer.
- ``check_chunked_prefill``: the router needs the last prompt tokens' keys at every layer before any chunk's
  attention at that layer, so chunked prefill cannot reproduce the decision. Policy ``disable`` (default) requires
  the whole prompt in one step; ``first_chunk`` routes from the first chunk only (an approximation, not the paper).
- ``vllm_weight_name``: adapter, official-checkpoint and verl weight-sync names of the routers -> the module names
  of an elastic vLLM model; backbone names pass through.
- ``elastic_architecture`` / ``hf_overrides``: the architecture name an elastic variant registers under, and the
  ``hf_overrides`` that select it, for ``actor_rollout_ref.rollout.engine_kwargs.vllm``.
"""

from __future__ import annotations

import logging
import re
from typing import Optional

import torch

ARCHITECTURES = {"Qwen2ForCausalLM": "ElasticQwen2ForCausalLM", "Qwen3ForCausalLM": "ElasticQwen3ForCausalLM",
                 "LlamaForCausalLM": "ElasticLlamaForCausalLM"}
CHUNKED_PREFILL_POLICIES = ("disable", "first_chunk")
logger = logging.getLogger(__name__)


class RoutingState:
    """Routing decisions per request: (layers, KV heads) 0/1, 1 = full attention."""

    def __init__(self, num_layers: int, num_kv_heads: int):
        self.num_layers, self.num_kv_heads = num_layers, num_kv_heads
        self._decisions: dict[str, torch.Tensor] = {}
        self._routed: dict[str, set[int]] = {}

    def record(self, request_id: str, layer: int, decisions: torch.Tensor) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} outside [0, {self.num_layers}).")
        if tuple(decisions.shape) != (self.num_kv_heads,):
            raise ValueError(f"request {request_id!r} layer {layer}: decisions must be ({self.num_kv_heads},), one "
                             f"per KV head; got {tuple(decisions.shape)}.")
        table = self._decisions.setdefault(request_id, torch.full((self.num_layers, self.num_kv_heads), -1,
                                                                 dtype=torch.int8))
        table[layer] = decisions.to(torch.int8).cpu()
        self._routed.setdefault(request_id, set()).add(layer)

    def get(self, request_id: str, layer: int) -> torch.Tensor:
        if layer not in self._routed.get(request_id, ()):
            raise KeyError(f"routing state missing for request {request_id!r} at layer {layer}: its prefill did not "
                           "run routed (a preempted or chunked request must be re-prefilled, see "
                           "check_chunked_prefill).")
        return self._decisions[request_id][layer]

    def msr(self, request_id: str) -> float:
        """Omega_MSR of a fully routed request: share of (layer, KV head) pairs in sparse mode."""
        if len(self._routed.get(request_id, ())) != self.num_layers:
            raise KeyError(f"request {request_id!r} is not routed at every layer yet.")
        return float((self._decisions[request_id] == 0).float().mean())

    def finish(self, request_id: str) -> None:
        self._decisions.pop(request_id, None)
        self._routed.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._decisions)


def check_chunked_prefill(policy: str, enable_chunked_prefill: bool, max_num_batched_tokens: Optional[int],
                          max_model_len: int) -> None:
    """Refuse a scheduler configuration that would split routed prompts under the ``disable`` policy."""
    if policy not in CHUNKED_PREFILL_POLICIES:
        raise ValueError(f"chunked-prefill policy {policy!r}; known: {CHUNKED_PREFILL_POLICIES}.")
    if policy == "first_chunk" or not enable_chunked_prefill:
        return
    if max_num_batched_tokens is None or max_num_batched_tokens < max_model_len:
        raise ValueError(
            f"Elastic Attention routes on the whole prompt, but chunked prefill may split prompts (max_num_batched_"
            f"tokens={max_num_batched_tokens} < max_model_len={max_model_len}). Set enable_chunked_prefill=False, "
            "or max_num_batched_tokens >= max_model_len, or accept the first_chunk approximation.")


_ADAPTER = re.compile(r"^layers\.(\d+)\.((?:task_mlp|router_mlp)\..+)$")
_OFFICIAL = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.mask_allocator\.(cls_feat_extractor|cls_router_head_agnostic)\.(.+)$")
_RENAME = {"cls_feat_extractor": "task_mlp", "cls_router_head_agnostic": "router_mlp"}


def vllm_weight_name(name: str) -> str:
    """Router weight names of every source -> ``model.layers.<i>.self_attn.elastic_router.<...>``."""
    if m := _ADAPTER.match(name):
        return f"model.layers.{m.group(1)}.self_attn.elastic_router.{m.group(2)}"
    if m := _OFFICIAL.match(name):
        return f"model.layers.{m.group(1)}.self_attn.elastic_router.{_RENAME[m.group(2)]}.{m.group(3)}"
    return name  # verl's weight sync already uses the module names; backbone names are vLLM's own


def elastic_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Elastic Attention has vLLM variants of {sorted(ARCHITECTURES)}; this checkpoint is "
                         f"{architecture!r}.")
    return ARCHITECTURES[architecture]


def hf_overrides(hf_config, adapter: Optional[str] = None, **attention) -> dict:
    """vLLM ``hf_overrides`` selecting the elastic variant of ``hf_config``'s architecture, carrying the settings in
    the same flat ``elastic_*`` keys the actor reads (``verl_actor.py``)."""
    from verl_ext.elastic_attention.hf import ElasticAttentionConfig

    ElasticAttentionConfig(**attention)  # validate the fields now, not inside the engine
    archs = list(getattr(hf_config, "architectures", None) or [])
    if len(archs) != 1:
        raise ValueError(f"expected one architecture in the model config, found {archs}.")
    overrides = {"architectures": [elastic_architecture(archs[0])], "elastic_attention": True,
                 **{f"elastic_{k}": v for k, v in attention.items()}}
    if adapter:
        overrides["elastic_adapter"] = str(adapter)
    return overrides


def register() -> None:
    """``vllm.general_plugins`` entry point: a no-op without vLLM; with it, reports that no elastic model class is
    registered yet (the pieces above are what one needs)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        logger.debug("verl_ext Elastic Attention vLLM plugin: vLLM is not installed; nothing to register.")
        return
    logger.warning("verl_ext Elastic Attention: no elastic vLLM model class ships yet (unverified without a GPU "
                   "vLLM build); use the hf rollout for elastic generation.")
