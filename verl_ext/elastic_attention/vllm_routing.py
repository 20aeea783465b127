"""What the elastic vLLM models (``vllm_models.py``) need that does not need vLLM: which requests of an engine step
are routed, the step's decisions per request and layer, the engine settings routed prefill needs, and the routers'
weight names. Tested without vLLM (``tests/elastic_attention/test_vllm_plugin_on_cpu.py``).

- ``routed_segments``: which requests of an engine step prefill their whole prompt in that step (they are routed)
  and which continue a prompt begun earlier (chunked prefill, a prefix-cache hit: refused under ``disable``).
- ``StepRouting``: the decisions of one step per routed request and layer; reading a layer the request was not
  routed at is an error naming the request and layer.
- ``check_engine``: the engine settings routed prefill needs (eager mode, no prefix caching, no speculative
  decoding, no pipeline parallelism, dense decode, and the chunked-prefill policy of ``check_chunked_prefill``).
- ``vllm_weight_name``: adapter, official-checkpoint and verl weight-sync names of the routers -> the module names
  of an elastic vLLM model; backbone names pass through.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from verl_ext.elastic_attention import router_names
from verl_ext.elastic_attention.metrics import msr

CHUNKED_PREFILL_POLICIES = ("disable", "first_chunk")


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
