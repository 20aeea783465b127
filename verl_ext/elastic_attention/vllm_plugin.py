"""vLLM side of Elastic Attention: the parts that do not need vLLM (per-step routing plan and state, engine
policy, weight names, architecture selection) and the ``vllm.general_plugins`` entry point.

With vLLM installed, ``register`` adds ``ElasticQwen2ForCausalLM``, ``ElasticQwen3ForCausalLM`` and
``ElasticLlamaForCausalLM`` to vLLM's model registry (lazily: ``vllm_models.py`` imports vLLM only when vLLM loads
the class); without it, it does nothing. The model classes use what is here:

- ``routed_segments``: which requests of an engine step prefill their whole prompt in that step (they are routed)
  and which continue a prompt begun earlier (chunked prefill, a prefix-cache hit: refused under ``disable``).
- ``StepRouting``: the decisions of one step per routed request and layer; reading a layer the request was not
  routed at is an error naming the request and layer.
- ``check_engine``: the engine settings routed prefill needs (eager mode, no prefix caching, no speculative
  decoding, no pipeline parallelism, dense decode, and the chunked-prefill policy of ``check_chunked_prefill``).
- ``vllm_weight_name``: adapter, official-checkpoint and verl weight-sync names of the routers -> the module names
  of an elastic vLLM model; backbone names pass through.
- ``elastic_architecture`` / ``hf_overrides``: the architecture name an elastic variant registers under, and the
  ``hf_overrides`` that select it, for ``actor_rollout_ref.rollout.engine_kwargs.vllm``.
- ``check_rollout_matches_actor``: the elastic trainer modes' refusal of a vLLM rollout routed unlike the actor.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import torch

from verl_ext.elastic_attention import router_names
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.metrics import msr

ARCHITECTURES = {"Qwen2ForCausalLM": "ElasticQwen2ForCausalLM", "Qwen3ForCausalLM": "ElasticQwen3ForCausalLM",
                 "LlamaForCausalLM": "ElasticLlamaForCausalLM"}
CHUNKED_PREFILL_POLICIES = ("disable", "first_chunk")
logger = logging.getLogger(__name__)


def routed_segments(query_start_loc: Sequence[int], seq_lens: Sequence[int], policy: str = "disable"
                    ) -> list[tuple[int, int]]:
    """Token ranges [start, end) of one engine step's flat batch that are routed: requests with no earlier tokens
    (query length == sequence length), i.e. their whole prompt is in this step.

    query_start_loc (R + 1,) and seq_lens (R,) are vLLM's per-request attention metadata. One new token after
    earlier ones is a decode step: vLLM attends densely (the paper's decode). More than one new token after earlier
    ones continues a prompt (chunked prefill, a prefix-cache hit): the router never saw the whole prompt, so
    ``disable`` refuses it and ``first_chunk`` lets it attend densely.
    """
    if len(query_start_loc) != len(seq_lens) + 1:
        raise ValueError(f"query_start_loc has {len(query_start_loc)} entries for {len(seq_lens)} requests; "
                         "expected one more.")
    routed = []
    for r, seq_len in enumerate(seq_lens):
        start, end = int(query_start_loc[r]), int(query_start_loc[r + 1])
        if end - start == seq_len:
            routed.append((start, end))
        elif end - start > 1 and policy == "disable":
            raise RuntimeError(
                f"elastic attention: request {r} of this step continues a prompt ({end - start} new tokens after "
                f"{seq_len - (end - start)} earlier ones), so its router cannot see the whole prompt. Disable "
                "prefix caching and chunked prefill for elastic models (check_engine), or set "
                "elastic_chunked_prefill=first_chunk to accept dense attention for continued prompts.")
    return routed


class StepRouting:
    """Decisions of one engine step: for each routed request (in batch order) and layer, (KV heads,) 0/1 with
    1 = full attention."""

    def __init__(self, segments: Sequence[tuple[int, int]], num_layers: int, num_kv_heads: int):
        self.segments = list(segments)
        self.num_layers, self.num_kv_heads = num_layers, num_kv_heads
        self._decisions = torch.full((len(self.segments), num_layers, num_kv_heads), -1, dtype=torch.int8)

    def record(self, layer: int, decisions: torch.Tensor) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} outside [0, {self.num_layers}).")
        expected = (len(self.segments), self.num_kv_heads)
        if tuple(decisions.shape) != expected:
            raise ValueError(f"layer {layer}: decisions must be {expected} (routed requests, KV heads); got "
                             f"{tuple(decisions.shape)}.")
        self._decisions[:, layer] = decisions.to(torch.int8).cpu()

    def get(self, request: int, layer: int) -> torch.Tensor:
        if not 0 <= request < len(self.segments):
            raise KeyError(f"request {request} was not routed in this step ({len(self.segments)} were).")
        row = self._decisions[request, layer]
        if bool((row < 0).any()):
            raise KeyError(f"routing state missing for request {request} at layer {layer}: that layer has not "
                           "routed this step yet.")
        return row

    def msr(self) -> torch.Tensor:
        """(routed requests,) Omega_MSR of each: share of its (layer, KV head) pairs in sparse mode."""
        if bool((self._decisions < 0).any()):
            raise KeyError("this step is not routed at every layer yet.")
        return msr(self._decisions)

    def counts(self) -> tuple[int, int]:
        """(sparse, all) (request, layer, KV head) triples of a fully routed step."""
        self.msr()  # raises when a layer is missing
        return int((self._decisions == 0).sum()), self._decisions.numel()

    def __len__(self) -> int:
        return len(self.segments)


def check_engine(policy: str, *, enforce_eager: bool, enable_prefix_caching: bool, enable_chunked_prefill: bool,
                 max_num_batched_tokens: Optional[int], max_model_len: int, speculative: bool,
                 pipeline_parallel_size: int, decode: str) -> None:
    """Refuse engine settings under which an elastic model would not compute what the paper does."""
    if not enforce_eager:
        raise ValueError("elastic vLLM models route per request with data-dependent control flow, which torch.compile "
                         "and CUDA graphs cannot capture; set enforce_eager=True "
                         "(actor_rollout_ref.rollout.enforce_eager=True).")
    if enable_prefix_caching and policy == "disable":
        raise ValueError("elastic vLLM models need enable_prefix_caching=False: a cached prefix holds keys and values "
                         "computed under another prompt's routing (actor_rollout_ref.rollout.enable_prefix_caching="
                         "False), or set elastic_chunked_prefill=first_chunk to accept dense continuations.")
    if speculative:
        raise ValueError("elastic vLLM models do not support speculative decoding (its verification steps look "
                         "like continued prompts); remove speculative_config.")
    if pipeline_parallel_size != 1:
        raise ValueError(f"elastic vLLM models support tensor parallelism only; pipeline_parallel_size="
                         f"{pipeline_parallel_size} must be 1.")
    if decode != "dense":
        raise ValueError(f"elastic_decode={decode!r}: vLLM decodes with its own paged attention, which is the "
                         "paper's dense decode; use elastic_decode=dense (sparse_kv decode runs with rollout.name=hf).")
    check_chunked_prefill(policy, enable_chunked_prefill, max_num_batched_tokens, max_model_len)


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


def vllm_weight_name(name: str) -> str:
    """Router weight names of every source -> ``model.layers.<i>.self_attn.elastic_router.<...>``; any other name
    (vLLM's own backbone names) unchanged."""
    parsed = router_names.parse(name)
    return name if parsed is None else router_names.module_name(*parsed)


def elastic_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Elastic Attention has vLLM variants of {sorted(ARCHITECTURES)}; this checkpoint is "
                         f"{architecture!r}.")
    return ARCHITECTURES[architecture]


def hf_overrides(hf_config, adapter: Optional[str] = None, chunked_prefill: str = "disable", **attention) -> dict:
    """vLLM ``hf_overrides`` selecting the elastic variant of ``hf_config``'s architecture, carrying the settings in
    the same flat ``elastic_*`` keys the actor reads (``verl_actor.py``)."""
    config = ElasticAttentionConfig.from_options(attention, "hf_overrides")  # validate now, not inside the engine
    if chunked_prefill not in CHUNKED_PREFILL_POLICIES:
        raise ValueError(f"chunked_prefill={chunked_prefill!r}; known: {CHUNKED_PREFILL_POLICIES}.")
    archs = list(getattr(hf_config, "architectures", None) or [])
    if len(archs) != 1:
        raise ValueError(f"expected one architecture in the model config, found {archs}.")
    overrides = {"architectures": [elastic_architecture(archs[0])], "elastic_attention": True,
                 **{f"elastic_{k}": v for k, v in config.flat_options().items()}}
    if chunked_prefill != "disable":
        overrides["elastic_chunked_prefill"] = chunked_prefill
    if adapter:
        overrides["elastic_adapter"] = str(adapter)
    return overrides


def check_rollout_matches_actor(config) -> None:
    """With ``rollout.name=vllm``, the elastic settings vLLM receives (``rollout.engine_kwargs.vllm.hf_overrides``)
    must be the actor's (``model.override_config``): the actor recomputes the rollout's log-probs, and a rollout
    routed differently (or not at all) would make every update off-policy without a sign. ``config`` is the
    trainer's ``actor_rollout_ref``-holding config (OmegaConf or dicts)."""
    from types import SimpleNamespace

    from verl_ext.elastic_attention.verl_actor import settings_from_hf_config

    arr = config["actor_rollout_ref"]
    if arr["rollout"]["name"] != "vllm":
        return
    actor = settings_from_hf_config(SimpleNamespace(**dict(arr["model"].get("override_config") or {})))
    vllm_kwargs = (arr["rollout"].get("engine_kwargs") or {}).get("vllm") or {}
    overrides = dict(vllm_kwargs.get("hf_overrides") or {})
    where = "actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides"
    rollout = settings_from_hf_config(SimpleNamespace(**overrides), source=where)
    if actor is None and rollout is None:
        return
    if actor is None or rollout is None:
        on, off = ("the actor", "the vLLM rollout") if rollout is None else ("the vLLM rollout", "the actor")
        raise ValueError(f"elastic attention is on for {on} but off for {off}; set elastic_attention (and the "
                         f"architecture) in {where} as recipes/elastic_attention/config/grpo_elastic_vllm.yaml does, "
                         "or turn it off in actor_rollout_ref.model.override_config.")
    differ = {f"elastic_{f.name}": (getattr(actor.attention, f.name), getattr(rollout.attention, f.name))
              for f in dataclasses.fields(actor.attention)
              # the backend only picks which implementation computes the same attention
              if getattr(actor.attention, f.name) != getattr(rollout.attention, f.name) and f.name != "backend"}
    if actor.adapter != rollout.adapter:
        differ["elastic_adapter"] = (actor.adapter, rollout.adapter)
    if differ:
        raise ValueError("the vLLM rollout's elastic settings differ from the actor's, so the actor would not "
                         "recompute the rollout's log-probs: " + ", ".join(
                             f"{k} actor={a!r} rollout={r!r}" for k, (a, r) in differ.items()) +
                         f". Set the same values in {where} (or interpolate them from override_config).")


def register() -> None:
    """``vllm.general_plugins`` entry point: registers the elastic architectures with vLLM's model registry (by
    name, so nothing vLLM-specific is imported until vLLM builds one); a no-op without vLLM."""
    try:
        from vllm import ModelRegistry
    except ImportError:
        logger.debug("verl_ext Elastic Attention vLLM plugin: vLLM is not installed; nothing to register.")
        return
    for elastic in ARCHITECTURES.values():
        if elastic not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(elastic, f"verl_ext.elastic_attention.vllm_models:{elastic}")
