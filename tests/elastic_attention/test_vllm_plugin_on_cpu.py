"""The vLLM-independent parts of Elastic Attention's vLLM side: which requests of a step are routed, per-step
routing state, engine policy, weight names (``vllm_routing``), architecture selection and a plugin entry point that
is safe without vLLM (``vllm_plugin``; the model classes themselves: test_vllm_models_on_cpu.py)."""

import importlib.metadata

import pytest
import torch

from verl_ext.elastic_attention import vllm_plugin as vp
from verl_ext.elastic_attention import vllm_routing as vr


def test_routed_segments_hand_computed():
    # Step: request 0 decodes (1 new token of 40), request 1 prefills 5 tokens, request 2 prefills 3 tokens.
    assert vr.routed_segments([0, 1, 6, 9], [40, 5, 3]) == [(1, 6), (6, 9)]
    assert vr.routed_segments([0, 1], [1]) == [(0, 1)]  # a one-token prompt is a (trivial) prefill
    # Request 1 continues a prompt: 4 new tokens after 6 earlier ones (a chunk, or a prefix-cache hit).
    with pytest.raises(RuntimeError, match="request 1 of this step continues a prompt \\(4 new tokens after 6"):
        vr.routed_segments([0, 1, 5], [40, 10])
    assert vr.routed_segments([0, 1, 5], [40, 10], policy="first_chunk") == []  # attends densely instead
    with pytest.raises(ValueError, match="one more"):
        vr.routed_segments([0, 1], [40, 10])


def test_step_routing_per_request():
    step = vr.StepRouting([(0, 5), (5, 9)], num_layers=2, num_kv_heads=3)
    step.record(0, torch.tensor([[1, 0, 0], [1, 1, 1]]))
    with pytest.raises(KeyError, match="routing state missing for request 1 at layer 1"):
        step.get(1, 1)
    with pytest.raises(KeyError, match="not routed at every layer"):
        step.msr()
    step.record(1, torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert step.get(0, 0).tolist() == [1, 0, 0]
    assert step.msr().tolist() == pytest.approx([0.5, 0.5])  # 3 of 6 sparse each
    assert step.counts() == (6, 12)
    with pytest.raises(ValueError, match="\\(routed requests, KV heads\\)"):
        step.record(0, torch.tensor([1, 0, 0]))
    with pytest.raises(KeyError, match="request 2 was not routed"):
        step.get(2, 0)


ENGINE = dict(enforce_eager=True, enable_prefix_caching=False, enable_chunked_prefill=False,
              max_num_batched_tokens=2048, max_model_len=32768, speculative=False, pipeline_parallel_size=1,
              decode="dense")


@pytest.mark.parametrize("change,message", [
    ({"enforce_eager": False}, "enforce_eager=True"),
    ({"enable_prefix_caching": True}, "enable_prefix_caching=False"),
    ({"speculative": True}, "speculative decoding"),
    ({"pipeline_parallel_size": 2}, "pipeline_parallel_size=2 must be 1"),
    ({"decode": "sparse_kv"}, "elastic_decode=dense"),
    ({"enable_chunked_prefill": True}, "enable_chunked_prefill=False"),
])
def test_engine_settings_refused(change, message):
    vr.check_engine("disable", **ENGINE)
    with pytest.raises(ValueError, match=message):
        vr.check_engine("disable", **{**ENGINE, **change})


def test_first_chunk_policy_accepts_prefix_caching_and_chunking():
    vr.check_engine("first_chunk", **{**ENGINE, "enable_prefix_caching": True, "enable_chunked_prefill": True})


def test_chunked_prefill_policy():
    vr.check_chunked_prefill("disable", enable_chunked_prefill=False, max_num_batched_tokens=2048, max_model_len=32768)
    vr.check_chunked_prefill("disable", True, 32768, 32768)
    vr.check_chunked_prefill("first_chunk", True, 2048, 32768)
    with pytest.raises(ValueError, match="enable_chunked_prefill=False"):
        vr.check_chunked_prefill("disable", True, 2048, 32768)
    with pytest.raises(ValueError, match="known"):
        vr.check_chunked_prefill("defer", True, 2048, 32768)


def test_weight_names_from_every_source():
    target = "model.layers.3.self_attn.elastic_router.router_mlp.2.weight"
    assert vr.vllm_weight_name("layers.3.router_mlp.2.weight") == target
    assert vr.vllm_weight_name("model.layers.3.self_attn.mask_allocator.cls_router_head_agnostic.2.weight") == target
    assert vr.vllm_weight_name(target) == target
    assert vr.vllm_weight_name("model.layers.3.self_attn.q_proj.weight") == "model.layers.3.self_attn.q_proj.weight"


def test_architectures_and_overrides():
    from transformers import Qwen3Config

    from verl_ext.elastic_attention.config import ElasticAttentionConfig

    overrides = vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), adapter="r.safetensors", window=512)
    # every setting written out (flat keys, the actor's form), so the engine does not depend on our defaults
    assert overrides == {"architectures": ["ElasticQwen3ForCausalLM"], "elastic_attention": True,
                         "elastic_adapter": "r.safetensors",
                         **{f"elastic_{k}": v for k, v in ElasticAttentionConfig(window=512).flat_options().items()}}
    assert overrides["elastic_window"] == 512 and overrides["elastic_pattern"] == "fa-ssa"
    with pytest.raises(ValueError, match="this checkpoint is 'MistralForCausalLM'"):
        vp.elastic_architecture("MistralForCausalLM")
    with pytest.raises(ValueError, match=r"hf_overrides: unknown Elastic Attention option\(s\) \['windw'\]"):
        vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), windw=512)
    approx = vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), chunked_prefill="first_chunk")
    assert approx["elastic_chunked_prefill"] == "first_chunk"
    with pytest.raises(ValueError, match="chunked_prefill='later'"):
        vp.hf_overrides(Qwen3Config(architectures=["Qwen3ForCausalLM"]), chunked_prefill="later")


def test_overrides_are_the_settings_the_model_reads():
    """What hf_overrides writes, settings_from_hf_config (actor and vLLM model alike) reads back."""
    from transformers import Qwen3Config

    from verl_ext.elastic_attention.override_keys import settings_from_hf_config

    config = Qwen3Config(architectures=["Qwen3ForCausalLM"])
    for key, value in vp.hf_overrides(config, adapter="r.safetensors", chunked_prefill="first_chunk", window=512,
                                      sink=8).items():
        setattr(config, key, value)
    settings = settings_from_hf_config(config, source="hf_overrides")
    assert (settings.attention.window, settings.attention.sink, settings.adapter) == (512, 8, "r.safetensors")
    config.elastic_windw = 3
    with pytest.raises(ValueError, match="hf_overrides.elastic_windw: unknown Elastic Attention option"):
        settings_from_hf_config(config, source="hf_overrides")


def test_entry_point_is_declared_and_safe_without_vllm():
    points = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(p.value == "verl_ext.elastic_attention.vllm_plugin:register" for p in points)
    try:
        from vllm import ModelRegistry
    except ImportError:
        vp.register()  # without vLLM: a no-op, no exception
        return

    vp.register()
    assert set(vp.ARCHITECTURES.values()) <= set(ModelRegistry.get_supported_archs())
