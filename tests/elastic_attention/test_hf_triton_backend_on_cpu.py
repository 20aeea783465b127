"""The model's ``backend="triton"`` path (the kernels through the interpreter on CPU) against its reference path:
routed prefill over a left-padded batch for every pattern, sparse-KV decode, and the training forward's gradients."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl_ext.elastic_attention.hf import ElasticAttentionConfig, elastic_decisions, enable_elastic_attention
from verl_ext.elastic_attention.router_objective import freeze_backbone
from verl_ext.elastic_attention.state import set_router_temperature
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # head_dim 32: the smallest the kernels take.
    return build_tiny_model(tmp_path_factory.mktemp("qwen3_d32"), TinyModelSpec(arch="qwen3", hidden=128, heads=4,
                                                                                 kv_heads=2))


def _model(model_dir, **config):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)  # the same router weights for both back ends
    model = enable_elastic_attention(model, ElasticAttentionConfig(sink=3, window=9, **config))
    for layer in model.model.layers:  # a router with an opinion, so both modes occur
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    return model.eval()


def _batch(lengths=(41, 26)):
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, -n:] = torch.randint(5, 300, (n,), generator=g)
        mask[row, -n:] = 1
    return ids, mask


@pytest.mark.parametrize("block_size", [None, 4])
def test_routed_prefill_matches_the_reference_backend(model_dir, pattern, block_size):
    ids, mask = _batch()
    extra = {**pattern, "block_size": block_size}
    ref_model = _model(model_dir, backend="reference", **extra)
    tri_model = _model(model_dir, backend="triton", **extra)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).logits
        tri = tri_model(input_ids=ids, attention_mask=mask).logits
    decisions = elastic_decisions(tri_model)
    assert torch.equal(decisions, elastic_decisions(ref_model))
    assert 0 < decisions.float().mean() < 1  # both modes in play
    valid = mask.bool()
    torch.testing.assert_close(tri[valid], ref[valid], rtol=1e-4, atol=1e-4)


def test_sparse_kv_decode_matches_the_reference_backend(model_dir):
    ids = _batch(lengths=(30, 30))[0]
    outs = []
    for backend in ("reference", "triton"):
        model = _model(model_dir, backend=backend, decode="sparse_kv")
        with torch.no_grad():
            outs.append(model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True))
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for a, b in zip(outs[0].logits, outs[1].logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_training_forward_gradients_match_the_reference_backend(model_dir, pattern):
    ids = _batch(lengths=(40, 40))[0]
    grads = []
    for backend in ("reference", "triton"):
        model = _model(model_dir, backend=backend, **pattern).train()
        freeze_backbone(model)
        set_router_temperature(model, 1.0)
        torch.manual_seed(3)  # the same Gumbel noise on both sides
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append([p.grad.clone() for n, p in model.named_parameters() if "elastic_router" in n])
    assert any(g.abs().sum() > 0 for g in grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
