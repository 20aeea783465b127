"""Gradients through the elastic model on every path a trainer takes, on both back ends.

- Policy update through an elastic actor (packed rows, prompt lengths known, dense response rows; routers frozen):
  the backbone's gradients on the Triton back end (the interpreter here) equal the reference back end's, and the
  reference back end's equal float64 central differences.
- Routed prefill with gradients on (padded, left-padded batch): the same two checks.
- Router training (padded and packed training forwards): the router and backbone gradients of the Triton back end
  equal the reference back end's on sequences longer than the window, where the reference merges partial results.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl_ext.elastic_attention.hf import ElasticAttentionConfig, enable_elastic_attention
from verl_ext.elastic_attention.state import set_prompt_lengths, set_router_temperature
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # head_dim 32 (the smallest the kernels take), two layers, GQA 2.
    return build_tiny_model(tmp_path_factory.mktemp("grad_qwen3"), TinyModelSpec(arch="qwen3", hidden=128, heads=4,
                                                                                 kv_heads=2))


def _model(model_dir, dtype=torch.float32, **config):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    torch.manual_seed(0)  # the same routers on every side
    model = enable_elastic_attention(model, ElasticAttentionConfig(sink=3, window=9, pool_budget=4, **config))
    for layer in model.model.layers:  # routers with an opinion, so both modes occur
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    return model.to(dtype)


def _packed_batch():
    g = torch.Generator().manual_seed(1)
    lens = (40, 31)
    ids = torch.randint(5, 300, (1, sum(lens)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    return ids, pos, torch.tensor([25, 18])  # prompt lengths: the rest are responses


def _padded_batch():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 300, (2, 37), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :12] = 0  # left padding
    return ids, mask


def _assert_grads_close(got: dict, want: dict):
    """float32 against float32 through different kernels: close relative to each gradient's own scale."""
    for name, g in want.items():
        if g is None:
            assert got[name] is None, name
            continue
        scale = float(g.abs().max()) + 1e-12
        torch.testing.assert_close(got[name], g, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")


def _backbone_grads(model, **batch):
    for name, p in model.named_parameters():
        p.requires_grad_("elastic_router" not in name)
    logits = model(**batch).logits
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3)).to(logits.dtype)
    loss = (logits * w).sum()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return dict(zip(names, grads))


def _actor_forward(model, ids, pos, prompts):
    set_prompt_lengths(model, prompts)
    return dict(input_ids=ids, position_ids=pos)


@pytest.mark.parametrize("path", ["actor_packed", "prefill_padded"])
def test_triton_backend_gradients_equal_the_reference(model_dir, path, pattern):
    grads = {}
    for backend in ("reference", "triton"):
        model = _model(model_dir, backend=backend, **pattern).eval()
        if path == "actor_packed":
            batch = _actor_forward(model, *_packed_batch())
        else:
            ids, mask = _padded_batch()
            batch = dict(input_ids=ids, attention_mask=mask)
        grads[backend] = _backbone_grads(model, **batch)
    attn = [n for n in grads["triton"] if "q_proj" in n or "k_proj" in n]
    assert all(grads["triton"][n].abs().sum() > 0 for n in attn)  # the attention path carries gradient
    _assert_grads_close(grads["triton"], grads["reference"])


@pytest.fixture
def float64_norms(monkeypatch):
    """transformers' RMSNorm computes in float32 whatever the input dtype, which would put float32 rounding into a
    float64 finite difference; for the check it stays in the input's dtype (the same formula)."""
    import transformers.models.qwen3.modeling_qwen3 as qwen3

    def forward(self, hidden):
        return self.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(qwen3.Qwen3RMSNorm, "forward", forward)


@pytest.mark.parametrize("path", ["actor_packed", "prefill_padded"])
@pytest.mark.parametrize("force", [None, "sparse"])
def test_reference_backend_gradients_equal_finite_differences(model_dir, path, force, pattern, float64_norms):
    """Directional derivatives of the logits along random input directions: central differences in float64
    against the analytic vector-Jacobian product."""
    model = _model(model_dir, dtype=torch.float64, backend="reference", force=force, **pattern).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if path == "actor_packed":
        ids, pos, prompts = _packed_batch()
        extra = _actor_forward(model, ids, pos, prompts)
        del extra["input_ids"]
    else:
        ids, mask = _padded_batch()
        extra = dict(attention_mask=mask)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()

    def logits(e):
        return model(inputs_embeds=e, **extra).logits

    out = logits(embeds)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        u = torch.randn(embeds.shape, generator=g, dtype=torch.float64)
        w = torch.randn(out.shape, generator=g, dtype=torch.float64)
        (analytic,) = torch.autograd.grad(out, embeds, w, retain_graph=True)
        with torch.no_grad():
            numeric = (logits(embeds + 1e-6 * u) - logits(embeds - 1e-6 * u)) / 2e-6
        torch.testing.assert_close((analytic * u).sum(), (numeric * w).sum(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("packed", [False, True])
def test_router_training_gradients_equal_across_backends(model_dir, packed, pattern):
    grads = {}
    for backend in ("reference", "triton"):
        model = _model(model_dir, backend=backend, **pattern).train()
        set_router_temperature(model, 1.0, noise=False)  # deterministic decisions, the same on both sides
        if packed:
            ids, pos, _ = _packed_batch()
            set_prompt_lengths(model, None)
            batch = dict(input_ids=ids, position_ids=pos)
        else:
            ids = _padded_batch()[0]
            batch = dict(input_ids=ids)
        names = [n for n, _ in model.named_parameters()]
        logits = model(**batch).logits
        w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
        grads[backend] = dict(zip(names, torch.autograd.grad((logits * w).sum(), list(model.parameters()),
                                                             allow_unused=True)))
    routers = [n for n in names if "elastic_router" in n]
    assert any(grads["triton"][n] is not None and grads["triton"][n].abs().sum() > 0 for n in routers)
    _assert_grads_close(grads["triton"], grads["reference"])
