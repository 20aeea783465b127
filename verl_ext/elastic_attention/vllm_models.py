"""Elastic variants of vLLM's Qwen2 / Qwen3 / Llama causal LMs (imports vLLM; vLLM loads this module by name
through the registrations of ``vllm_plugin.register``, and this module imports nothing of ``vllm_plugin``).

Each variant is the stock vLLM model plus, in every attention layer, an ``ElasticRouter`` (float32, as trained)
and a wrapper around the layer's paged attention call:

1. The requests whose whole prompt is in this engine step (``vllm_routing.routed_segments``) are gathered into one
   packed row; each is routed on its own pre-RoPE keys (first and last ``pool_budget`` prompt tokens, argmax) and
   attends with every head in its mode through the one routed attention call (``layer.routed_attention``: the
   Triton kernel on CUDA, the PyTorch reference on CPU). Their rows of the output are that.
2. A step made only of routed prompts writes the paged cache and skips vLLM's attention. A step that also decodes
   (or continues a prompt) runs vLLM's attention for all its tokens, so its routed prompts pay one dense pass on
   top of the elastic one: vLLM's attention takes the whole step's metadata at once. Decode tokens keep vLLM's
   output (the paper decodes densely).

Settings come from the HF config keys ``hf_overrides`` sets (``vllm_plugin.hf_overrides``), the same ``elastic_*``
keys the actor reads (``override_keys.settings_from_hf_config``); ``vllm_routing.check_engine`` refuses engine
settings the routing cannot honour.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from verl_ext.seams import check_at_first_use

check_at_first_use("vllm")  # another vLLM than the one the seams were checked against: check them now

from vllm.forward_context import get_forward_context, is_forward_context_available  # noqa: E402
from vllm.model_executor.models.llama import LlamaForCausalLM  # noqa: E402
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM  # noqa: E402
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM  # noqa: E402

from verl_ext.elastic_attention import router_names  # noqa: E402
from verl_ext.elastic_attention.config import ElasticAttentionConfig  # noqa: E402
from verl_ext.elastic_attention.layer import Layout, routed_attention  # noqa: E402
from verl_ext.elastic_attention.override_keys import settings_from_hf_config  # noqa: E402
from verl_ext.elastic_attention.router import ElasticRouter  # noqa: E402
from verl_ext.elastic_attention.state import SUPPORTED, ElasticLayerState  # noqa: E402
from verl_ext.elastic_attention.vllm_routing import (StepRouting, check_engine, routed_segments,  # noqa: E402
                                                     vllm_weight_name)

SOURCE = "hf_overrides"  # where a vLLM user sets the elastic_* keys


class ElasticVllmMixin:
    """Routers and routed prefill on top of a stock vLLM causal LM (``self.model.layers[i].self_attn``)."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        hf_config = vllm_config.model_config.hf_config
        settings = settings_from_hf_config(hf_config, source=SOURCE)
        name = type(self).__name__
        if settings is None:
            raise ValueError(f"{name} was selected but the model config lacks elastic_attention=true; build the "
                             "overrides with verl_ext.elastic_attention.vllm_plugin.hf_overrides.")
        if getattr(hf_config, "model_type", None) not in SUPPORTED:
            raise ValueError(f"{name}: Elastic Attention supports {SUPPORTED}; this checkpoint's model_type is "
                             f"{getattr(hf_config, 'model_type', None)!r}.")
        if getattr(hf_config, "use_sliding_window", False):
            raise ValueError(f"{name}: the checkpoint uses sliding-window attention, which Elastic Attention's "
                             "dense heads would not honour; set use_sliding_window=false or use another model.")
        self.elastic_policy = str(getattr(hf_config, "elastic_chunked_prefill", "disable"))
        scheduler = vllm_config.scheduler_config
        check_engine(self.elastic_policy, enforce_eager=bool(vllm_config.model_config.enforce_eager),
                     enable_prefix_caching=bool(vllm_config.cache_config.enable_prefix_caching),
                     enable_chunked_prefill=bool(scheduler.enable_chunked_prefill),
                     max_num_batched_tokens=scheduler.max_num_batched_tokens,
                     max_model_len=vllm_config.model_config.max_model_len,
                     speculative=vllm_config.speculative_config is not None,
                     pipeline_parallel_size=vllm_config.parallel_config.pipeline_parallel_size,
                     decode=settings.attention.decode)
        self.elastic_config: ElasticAttentionConfig = settings.attention
        self.elastic_adapter: Optional[str] = settings.adapter
        # Where the routers' weights came from: None until an adapter or router tensors are loaded.
        self.elastic_router_source: Optional[str] = None
        self.elastic_last_step: Optional[StepRouting] = None
        # Routed requests and their sparse / all (request, layer, KV head) triples; engine steps made only of
        # routed prompts (vLLM's attention skipped), of routed prompts beside other tokens, and of no routed prompt.
        # Of the first, those where the attention backend let the cache write run alone (attention_skipped_steps).
        self.elastic_totals = {"requests": 0, "sparse_pairs": 0, "pairs": 0, "prefill_only_steps": 0,
                               "mixed_steps": 0, "unrouted_steps": 0, "attention_skipped_steps": 0}
        self._elastic_attns = [layer.self_attn for layer in self.model.layers]
        for index, attn in enumerate(self._elastic_attns):
            _install(self, attn, index)

    def elastic_msr(self) -> float:
        """Omega_MSR over every request routed so far by this worker (its KV heads under tensor parallelism)."""
        totals = self.elastic_totals
        return totals["sparse_pairs"] / totals["pairs"] if totals["pairs"] else float("nan")

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Backbone weights go to vLLM's loader; router tensors (adapter, official-checkpoint or verl weight-sync
        names) load here. The adapter file named by ``elastic_adapter`` is read once, on the first call (verl's
        weight sync may call this many times, with the routers in any bucket)."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()

        def backbone():
            for name, tensor in weights:
                target = vllm_weight_name(name)
                if router_names.is_router(target):
                    if target not in params:
                        raise ValueError(f"router weight {name!r} maps to {target!r}, which this model does not "
                                         "have (adapter made for a model with more layers?).")
                    param = params[target]
                    if tuple(param.shape) != tuple(tensor.shape):
                        raise ValueError(f"router weight {name!r} has shape {tuple(tensor.shape)}, the model's "
                                         f"router expects {tuple(param.shape)} (different head_dim?).")
                    param.data.copy_(tensor.to(param.dtype))
                    loaded.add(target)
                    self.elastic_router_source = "weights"
                else:
                    yield name, tensor

        loaded |= set(super().load_weights(backbone()))
        if self.elastic_adapter and self.elastic_router_source is None:
            from verl_ext.elastic_attention.adapter import load_router_adapter

            load_router_adapter(self, self.elastic_adapter)  # checks the adapter was made for this model
            self.elastic_router_source = "adapter"
        # Every router parameter counts as initialised for vLLM's loader check: a model whose routers never
        # received weights refuses to route (``_routed_prefill``) with a message saying how to give them.
        return loaded | {name for name in params if router_names.is_router(name)}


def _install(model: ElasticVllmMixin, attn, index: int) -> None:
    """Add the router, the pre-RoPE key capture and the routed-prefill wrapper to one vLLM attention layer."""
    config = model.elastic_config
    device = next(attn.parameters()).device
    attn.elastic_router = ElasticRouter(attn.head_dim, config.hidden_mult).to(device=device, dtype=torch.float32)
    attn.elastic = ElasticLayerState(config)  # no prompt lengths: vLLM's routed rows hold prompts only
    # The keys before RoPE, (T, H_kv, D): after k_norm on Qwen3, the key block of the fused projection otherwise.
    # Copied, because vLLM's rotary embedding then rotates that same storage in place.
    from_norm = hasattr(attn, "k_norm")

    def capture(module, inputs, output):
        keys = output[0] if isinstance(output, tuple) else output
        if not from_norm:
            keys = keys[..., attn.q_size:attn.q_size + attn.kv_size]
        attn._elastic_step_keys = keys.reshape(-1, attn.num_kv_heads, attn.head_dim).clone()

    (attn.k_norm if from_norm else attn.qkv_proj).register_forward_hook(capture)
    paged = attn.attn
    dense_forward = paged.forward
    write_cache = _cache_writer(paged)

    def forward(query, key, value, *args, **kwargs):
        cached = _step(model, attn, query.device)
        if cached is not None and cached[3] and write_cache is not None and not args and not kwargs:
            # Every token of the step belongs to a routed prompt: write the cache, skip vLLM's dense attention.
            write_cache(key.view(-1, attn.num_kv_heads, attn.head_dim),
                        value.view(-1, attn.num_kv_heads, attn.head_dim), paged.layer_name)
            out = query.new_zeros(query.shape[0], attn.num_heads * attn.head_dim)
            model.elastic_totals["attention_skipped_steps"] += int(index == 0)
        else:
            out = dense_forward(query, key, value, *args, **kwargs)
        return _routed_prefill(model, attn, index, out, query, key, value)

    paged.forward = forward  # instance attribute: nn.Module.__call__ dispatches to it


def _cache_writer(paged):
    """vLLM's paged-cache write on its own, where the attention backend keeps it apart from the attention call (and
    the layer owns its cache); None otherwise, and every step then runs vLLM's attention."""
    try:
        from vllm.model_executor.layers.attention.attention import unified_kv_cache_update
    except ImportError:
        return None
    backend = getattr(paged, "attn_backend", None)
    if backend is None or getattr(backend, "forward_includes_kv_cache_update", True):
        return None
    if getattr(paged, "kv_sharing_target_layer_name", None) is not None or getattr(paged, "query_quant", None) \
            is not None:
        return None
    return unified_kv_cache_update


def _step(model: ElasticVllmMixin, attn, device) -> Optional[tuple[StepRouting, torch.Tensor, torch.Tensor, bool]]:
    """This engine step's routed requests, their token rows in the flat batch, their cu_seqlens and whether they
    are all of the step's tokens, computed once per step (kept on vLLM's per-step forward context); None in
    profiling and dummy runs."""
    if not is_forward_context_available():
        return None
    context = get_forward_context()
    metadata = context.attn_metadata
    if isinstance(metadata, list):
        raise RuntimeError("elastic vLLM models do not support micro-batched (dual-batch overlap) steps.")
    metadata = (metadata or {}).get(attn.attn.layer_name)
    if metadata is None:  # profiling and dummy runs
        return None
    cached = getattr(context, "_elastic_step", None)
    if cached is None:
        segments = routed_segments(metadata.query_start_loc.tolist(), metadata.seq_lens.tolist(), model.elastic_policy)
        step = StepRouting(segments, len(model._elastic_attns), attn.num_kv_heads)
        lengths = torch.tensor([end - start for start, end in segments], dtype=torch.int64)
        cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        rows = torch.cat([torch.arange(start, end) for start, end in segments]) if segments else lengths
        prefill_only = bool(segments) and int(cu[-1]) == int(metadata.num_actual_tokens)
        cached = context._elastic_step = (step, rows.to(device), cu, prefill_only)
        kind = "prefill_only_steps" if prefill_only else "mixed_steps" if segments else "unrouted_steps"
        model.elastic_totals[kind] += 1
    return cached


def _routed_prefill(model: ElasticVllmMixin, attn, index: int, out: torch.Tensor, query, key, value) -> torch.Tensor:
    """Replace the dense output rows of this step's routed prompts with per-head mixed attention."""
    cached = _step(model, attn, query.device)
    if cached is None or not len(cached[0]):
        return out
    step, rows, cu, _ = cached
    if model.elastic_router_source is None and model.elastic_config.force is None:
        raise RuntimeError(f"{type(model).__name__}: the routers never received weights; set elastic_adapter in "
                           "hf_overrides, load a checkpoint that contains them, or sync them from the actor.")
    hq, hk, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    attn.elastic.keys = attn._elastic_step_keys[rows]  # (T_routed, H_kv, D): what routed_attention routes on
    q, k, v = query[rows].view(-1, hq, d), key[rows].view(-1, hk, d), value[rows].view(-1, hk, d)
    mixed = routed_attention(attn, q, k, v, Layout(cu_seqlens=cu), attn.scaling)  # (T_routed, Hq, D)
    out.view(out.shape[0], -1)[rows] = mixed.reshape(len(rows), hq * d).to(out.dtype)
    step.record(index, attn.elastic.decisions)
    if index == len(model._elastic_attns) - 1:
        model.elastic_last_step = step
        totals = model.elastic_totals
        totals["requests"] += len(step)
        sparse, pairs = step.counts()
        totals["sparse_pairs"] += sparse
        totals["pairs"] += pairs
    return out


def routing_report(model) -> dict:
    """This worker's routing so far, for ``LLM.apply_model(routing_report)``: ``elastic_totals``, Omega_MSR, each
    request's Omega_MSR in the last step that routed any, and where the routers' weights came from."""
    step = model.elastic_last_step
    return {**model.elastic_totals, "msr": model.elastic_msr(), "router_source": model.elastic_router_source,
            "last_step_msr": step.msr().tolist() if step is not None else []}


class ElasticQwen2ForCausalLM(ElasticVllmMixin, Qwen2ForCausalLM):
    pass


class ElasticQwen3ForCausalLM(ElasticVllmMixin, Qwen3ForCausalLM):
    pass


class ElasticLlamaForCausalLM(ElasticVllmMixin, LlamaForCausalLM):
    pass
