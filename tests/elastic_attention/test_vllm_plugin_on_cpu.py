"""The vLLM-independent parts of the Elastic Attention vLLM plugin: routing state, chunked-prefill policy, weight
names, architecture selection, and a plugin entry point that is safe without vLLM."""

import importlib.metadata

import pytest
import torch

from verl_ext.elastic_attention import vllm_plugin as vp


def test_routing_state_per_request():
    state = vp.RoutingState(num_layers=2, num_kv_heads=3)
    state.record("a", 0, torch.tensor([1, 0, 0]))
    with pytest.raises(KeyError, match="routing state missing for request 'a' at layer 1"):
        state.get("a", 1)
    with pytest.raises(KeyError, match="not routed at every layer"):
        state.msr("a")
    state.record("a", 1, torch.tensor([1, 1, 0]))
    state.record("b", 0, torch.tensor([1, 1, 1]))
    assert state.get("a", 0).tolist() == [1, 0, 0] and state.msr("a") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one per KV head"):
        state.record("a", 0, torch.tensor([1, 0]))
    state.finish("a")
    assert len(state) == 1
    with pytest.raises(KeyError, match="request 'a'"):
        state.get("a", 0)


def test_chunked_prefill_policy():
    vp.check_chunked_prefill("disable", enable_chunked_prefill=False, max_num_batched_tokens=2048, max_model_len=32768)
    vp.check_chunked_prefill("disable", True, 32768, 32768)
    vp.check_chunked_prefill("first_chunk", True, 2048, 32768)
    with pytest.raises(ValueError, match="enable_chunked_prefill=False"):
        vp.check_chunked_prefill("disable", True, 2048, 32768)
    with pytest.raises(ValueError, match="known"):
        vp.check_chunked_prefill("defer", True, 2048, 32768)


def test_weight_names_from_every_source():
    target = "model.layers.3.self_attn.elastic_router.router_mlp.2.weight"
    assert vp.vllm_weight_name("layers.3.router_mlp.2.weight") == target
    assert vp.vllm_weight_name("model.layers.3.self_attn.mask_allocator.cls_router_head_agnostic.2.weight") == target
    assert vp.vllm_weight_name(target) == target
    assert vp.vllm_weight_name("model.layers.3.self_attn.q_proj.weight") == "model.layers.3.self_attn.q_proj.weight"


def test_architectures_and_overrides():
    from transformers import Qwen3Config

    overrides = vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), adapter="r.safetensors", window=512)
    assert overrides == {"architectures": ["ElasticQwen3ForCausalLM"], "elastic_attention": True,
                         "elastic_window": 512, "elastic_adapter": "r.safetensors"}
    with pytest.raises(ValueError, match="this checkpoint is 'MistralForCausalLM'"):
        vp.elastic_architecture("MistralForCausalLM")
    with pytest.raises(TypeError):
        vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), windw=512)


def test_entry_point_is_declared_and_safe_without_vllm():
    points = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(p.value == "verl_ext.elastic_attention.vllm_plugin:register" for p in points)
    vp.register()  # vLLM is not installed here: a no-op, no exception
