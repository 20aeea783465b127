"""Packed rows (several sequences in one row, position ids restarting at 0, as verl's remove-padding path feeds the
model) route and attend per sequence: equal to running each sequence alone, in inference and in router training."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl_ext.elastic_attention.hf import (ElasticAttentionConfig, elastic_decisions, enable_elastic_attention,
                                           segments_from_position_ids)
from verl_ext.elastic_attention.router_objective import training_omega
from verl_ext.elastic_attention.state import set_prompt_lengths, set_router_temperature
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("packed"), TinyModelSpec(arch="qwen3", hidden=128, heads=4,
                                                                             kv_heads=2))


def _model(model_dir, **config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = enable_elastic_attention(model, ElasticAttentionConfig(sink=2, window=6, pool_budget=4, **config))
    for layer in model.model.layers:
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    return model


def _sequences():
    g = torch.Generator().manual_seed(4)
    return [torch.randint(5, 300, (n,), generator=g) for n in (23, 37, 11)]


def _packed(seqs):
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    return ids, pos


def test_segments_from_position_ids():
    assert segments_from_position_ids(torch.tensor([[0, 1, 2, 0, 1, 0]])).tolist() == [0, 3, 5, 6]
    assert segments_from_position_ids(torch.tensor([[5, 6]])) is None  # a decode step, not a packed row
    assert segments_from_position_ids(None) is None


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_packed_inference_equals_each_sequence_alone(model_dir, backend, pattern):
    model = _model(model_dir, backend=backend, **pattern).eval()
    seqs = _sequences()
    ids, pos = _packed(seqs)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos).logits[0]
        decisions = elastic_decisions(model)
        assert decisions.shape == (3, len(model.model.layers), 2)
        start = 0
        for s, seq in enumerate(seqs):
            alone = model(input_ids=seq[None]).logits[0]
            torch.testing.assert_close(packed[start:start + len(seq)], alone, rtol=1e-4, atol=1e-4)
            assert torch.equal(elastic_decisions(model)[0], decisions[s])
            start += len(seq)


def test_prompt_lengths_restrict_pooling(model_dir):
    """A sequence packed with a 9-token prompt routes as its first 9 tokens alone do."""
    model = _model(model_dir).eval()
    seqs = _sequences()
    ids, pos = _packed(seqs)
    with torch.no_grad():
        set_prompt_lengths(model, torch.tensor([5, 9, 11]))
        model(input_ids=ids, position_ids=pos)
        routed = elastic_decisions(model)[1]
        set_prompt_lengths(model, None)
        model(input_ids=seqs[1][None, :9])
        assert torch.equal(routed, elastic_decisions(model)[0])
        model(input_ids=seqs[1][None])  # the whole sequence routes differently: the prompt length was honoured
        assert not torch.equal(routed, elastic_decisions(model)[0])
        set_prompt_lengths(model, torch.tensor([5, 9]))
        with pytest.raises(ValueError, match="one per sequence"):
            model(input_ids=ids, position_ids=pos)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_packed_training_forward_reaches_every_router(model_dir, backend, pattern):
    model = _model(model_dir, backend=backend, **pattern).train()
    for name, p in model.named_parameters():
        p.requires_grad_(".elastic_router." in name)
    set_router_temperature(model, 1.0)
    ids, pos = _packed(_sequences())
    out = model(input_ids=ids, position_ids=pos, labels=ids)
    omega = training_omega(model)
    assert omega.shape == (3,)
    (out.loss + omega.sum()).backward()
    for layer in model.model.layers:
        grads = [p.grad for p in layer.self_attn.elastic_router.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
