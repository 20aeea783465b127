"""Router training on a frozen tiny model: gradients reach every router, the Lagrangian ascends, Omega moves."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl_ext.elastic_attention.hf import ElasticAttentionConfig, enable_elastic_attention
from verl_ext.elastic_attention.router_objective import SparsityLagrangian, freeze_backbone, training_omega
from verl_ext.elastic_attention.state import set_router_temperature
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("qwen3_train"), TinyModelSpec(arch="qwen3", layers=2, heads=4, kv_heads=2))


def _model(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return enable_elastic_attention(model, ElasticAttentionConfig(sink=2, window=6, pool_budget=4))


def test_lagrangian_hand_computed():
    lag = SparsityLagrangian([1.0, 0.7])
    with torch.no_grad():
        lag.lambda1.copy_(torch.tensor([2.0, 1.0]))
        lag.lambda2.copy_(torch.tensor([0.5, 3.0]))
    penalty, _ = lag(torch.tensor([0.5, 0.9]), torch.tensor([0, 1]))
    assert penalty.item() == pytest.approx(((2 * 0.5 + 0.5 * 0.25) + (1 * 0.2 + 3 * 0.04)) / 2)
    signed, _ = SparsityLagrangian([1.0], signed=True)(torch.tensor([0.5]), torch.tensor([0]))
    assert signed.item() == 0.0  # lambdas start at 0
    with pytest.raises(ValueError, match="task ids"):
        lag(torch.tensor([0.5]), torch.tensor([2]))


def test_training_moves_routers_and_lambdas_not_the_backbone(model_dir):
    torch.manual_seed(0)
    model = _model(model_dir)
    model.train()
    set_router_temperature(model, 1.0)
    objective = SparsityLagrangian([1.0])
    # The optimiser the router engine builds: descent on the routers, ascent on the multipliers.
    opt = torch.optim.AdamW([{"params": freeze_backbone(model), "lr": 5e-2},
                             {"params": list(objective.parameters()), "lr": 5e-1, "maximize": True}])
    backbone = {n: p.detach().clone() for n, p in model.named_parameters() if ".elastic_router." not in n}
    routers = {n: p.detach().clone() for n, p in model.named_parameters() if ".elastic_router." in n}
    ids = torch.randint(5, 300, (4, 20))
    omegas = []
    for step in range(12):
        out = model(input_ids=ids, labels=ids)
        omega = training_omega(model)
        penalty, _ = objective(omega, torch.zeros(4, dtype=torch.long))
        loss = out.loss + penalty
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        if step == 0:  # every layer's router gets a gradient, from the LM loss through the mixed attention
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
                       if ".elastic_router." in n and n.endswith("router_mlp.4.weight"))
        opt.step()
        omegas.append(float(omega.detach().mean()))
    assert all(torch.equal(p, backbone[n]) for n, p in model.named_parameters() if n in backbone)
    assert any(not torch.equal(p, routers[n]) for n, p in model.named_parameters() if n in routers)
    assert objective.lambda1.item() > 0  # ascended while Omega was below its target
    assert max(omegas[-4:]) > omegas[0]  # routing moved toward the sparsity target
