"""The actor recomputes the rollout's log-probs: the hf rollout generates with routed prefill (batched, left-padded)
and the actor's forward over packed prompt+response rows routes each sequence on its prompt alone; both decode
modes agree (dense decode: the paper; sparse_kv), and the actor switch comes from the HF config alone."""

import types

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from verl_ext.elastic_attention.hf import elastic_decisions
from verl_ext.elastic_attention.override_keys import settings_from_hf_config
from verl_ext.elastic_attention.verl_actor import before_forward, prepare_module, prompt_lengths
from verl_ext.rollout.hf_engine import HFGenerationEngine
from verl_ext.rollout.sampling import SamplingParams


XATTENTION = {"elastic_xattention_block": 16, "elastic_xattention_stride": 4, "elastic_xattention_threshold": 0.5}


def _elastic_model(model_dir, decode, extra=None):
    config = AutoConfig.from_pretrained(model_dir)
    for key, value in {"elastic_attention": True, "elastic_sink": 2, "elastic_window": 6, "elastic_pool_budget": 4,
                       "elastic_decode": decode, **(extra or {})}.items():
        setattr(config, key, value)  # what verl's override_config does
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32)
    torch.manual_seed(0)
    prepare_module(model)
    for layer in model.model.layers:  # routers with an opinion, so both modes occur
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    return model.eval()


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.tensor(r) for r in rows], layout=torch.jagged)


# Modes: the paper's patterns, or "triton" for FA-SSA through the Triton kernels (the interpreter here), whose actor
# recompute turns the response rows of sparse heads dense inside the one prefill pass (dense_from).
MODES = {"fa-ssa": None, "fa-xa": {"elastic_pattern": "fa-xa", **XATTENTION},
         "xa-ssa": {"elastic_pattern": "xa-ssa", **XATTENTION}, "triton": {"elastic_backend": "triton"}}


@pytest.mark.parametrize("decode,mode", [("dense", "fa-ssa"), ("sparse_kv", "fa-ssa"), ("dense", "fa-xa"),
                                         ("dense", "xa-ssa"), ("sparse_kv", "xa-ssa"), ("dense", "triton")])
def test_actor_log_probs_equal_rollout_log_probs(tiny_model_dir, tmp_path, decode, mode):
    if mode == "triton":  # the kernels take head_dim 32, 64 or 128
        from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

        tiny_model_dir = build_tiny_model(tmp_path / "model", TinyModelSpec(hidden=128, heads=4, kv_heads=2))
    model = _elastic_model(tiny_model_dir, decode, MODES[mode])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["Compute 12 - 7, then add 100 to the result please, and then subtract 3.", "Compute 3 + 4."]
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                           tokenize=False), add_special_tokens=False)["input_ids"] for t in texts]
    engine = HFGenerationEngine(model, tok, [tok.eos_token_id], tok.pad_token_id, seed=0)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, logprobs=True, ignore_eos=True)
    outs = [o[0] for o in engine.generate(prompts, [params, params])]
    rollout_decisions = elastic_decisions(model)
    assert 0 < rollout_decisions.float().mean() < 1

    # The actor's view (verl's remove-padding path): one packed row, position ids restarting per sequence.
    seqs = [p + o.token_ids for p, o in zip(prompts, outs)]
    batch = {"input_ids": _nested(seqs), "response_mask": _nested([[1] * len(o.token_ids) for o in outs])}
    assert prompt_lengths(batch).tolist() == [len(p) for p in prompts]
    before_forward(model, batch)
    ids = torch.tensor([sum(seqs, [])])
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos).logits[0].float()
    assert torch.equal(elastic_decisions(model), rollout_decisions)  # the same routing, from the prompts alone
    start = 0
    for prompt, out, seq in zip(prompts, outs, seqs):
        rows = logits[start + len(prompt) - 1: start + len(seq) - 1]
        actor = torch.log_softmax(rows, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(actor, torch.tensor(out.log_probs), rtol=0, atol=1e-4)
        start += len(seq)


def test_switch_and_bad_settings(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert settings_from_hf_config(config) is None
    config.elastic_attention = True
    config.elastic_windw = 8
    with pytest.raises(ValueError, match="override_config.elastic_windw: unknown Elastic Attention option"):
        settings_from_hf_config(config)
    del config.elastic_windw
    config.elastic_trainable = True
    with pytest.raises(ValueError, match="elastic_decode=sparse_kv"):
        settings_from_hf_config(config)
    config.elastic_decode = "sparse_kv"
    config.elastic_adapter = "/nonexistent/routers.safetensors"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, config=config)
    with pytest.raises(FileNotFoundError, match="routers.safetensors"):
        prepare_module(model)
    with pytest.raises(ValueError, match="response_mask"):
        prompt_lengths(types.MappingProxyType({"input_ids": _nested([[1, 2, 3]])}))


def test_legacy_override_keys_are_mapped_with_a_deprecation(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    for key, value in {"elastic_attention": True, "elastic_sparse_mode": "xattention", "elastic_xattn_block": 32,
                       "elastic_xattn_threshold": 0.7}.items():
        setattr(config, key, value)
    with pytest.warns(DeprecationWarning, match="sparse_mode"):
        settings = settings_from_hf_config(config)
    assert settings.attention.pattern == "fa-xa"
    assert (settings.attention.xattention.block, settings.attention.xattention.threshold) == (32, 0.7)
    config.elastic_sparse_mode = "moba"
    with pytest.raises(ValueError, match="moba"):
        settings_from_hf_config(config)
