import math

import pytest
import torch

from verl_ext.elastic_attention.metrics import msr
from verl_ext.elastic_attention.router import (
    ElasticRouter,
    boundary_pool,
    expand_to_query_heads,
    route_inference,
    route_train,
    tau_cosine,
    tau_exponential,
)


def test_parameter_count_at_head_dim_128():
    assert sum(p.numel() for p in ElasticRouter(128).parameters()) == 263_682


def test_initial_routing_is_near_fifty_fifty():
    torch.manual_seed(0)
    router = ElasticRouter(128)
    probs = torch.softmax(router(torch.randn(64, 8, 128)), dim=-1)
    assert (probs - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 9])
def test_pooling_modes_hand_computed(length):
    """budget 3: the paper counts the union of the first and last 3 tokens once; the released inference code
    concatenates them (the overlap twice, divided by 2 * min(T, 3)); the released training code takes them all."""
    keys = torch.arange(10.0)[None, :, None, None] ** 2  # distinct values, so every weighting shows
    vals = [float(v) ** 2 for v in range(length)]
    head, tail = vals[:3], vals[-3:]
    union = [v for i, v in enumerate(vals) if i < 3 or i >= length - 3]
    got = {mode: float(boundary_pool(keys, torch.tensor([length]), budget=3, mode=mode)[0, 0, 0])
           for mode in ("boundary", "boundary_concat", "segment")}
    assert got["boundary"] == pytest.approx(sum(union) / len(union))
    assert got["boundary_concat"] == pytest.approx((sum(head) + sum(tail)) / (len(head) + len(tail)))
    assert got["segment"] == pytest.approx(sum(vals) / length)
    differs = not got["boundary"] == pytest.approx(got["boundary_concat"])
    assert differs == (3 < length < 6)  # only budget+1 .. 2*budget-1 tokens overlap


def test_boundary_pooling_hand_computed_with_padding():
    keys = torch.arange(10, dtype=torch.float32).view(1, 10, 1, 1).repeat(2, 1, 1, 1)
    pooled = boundary_pool(keys, torch.tensor([10, 6]), budget=2)
    assert pooled[0, 0, 0] == pytest.approx((0 + 1 + 8 + 9) / 4)
    assert pooled[1, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)  # padding (6..9) never counts
    short = boundary_pool(keys[:1, :3], budget=2)  # head and tail overlap: each token once
    assert short[0, 0, 0] == pytest.approx(1.0)
    assert boundary_pool(keys, torch.tensor([10, 6]), mode="segment")[1, 0, 0] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="pooling mode 'concat' must be one of"):
        boundary_pool(keys, mode="concat")


def test_straight_through_gradient_reaches_the_router():
    torch.manual_seed(2)
    router = ElasticRouter(16)
    z = route_train(router(torch.randn(3, 4, 16)), tau=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.detach(), z.detach().round(), atol=1e-6)  # hard {0, 1} forward
    (z * torch.arange(4.0)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in router.parameters())
    assert router.router_mlp[-1].weight.grad.abs().sum() > 0


def test_inference_decisions_and_expansion():
    logits = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])
    z = route_inference(logits)
    assert z.tolist() == [[1, 0]]
    assert expand_to_query_heads(z, 3).tolist() == [[1, 1, 1, 0, 0, 0]]
    assert msr(z).tolist() == [0.5]


def test_temperature_schedules():
    assert tau_cosine(0, 100) == pytest.approx(1.5) and tau_cosine(30, 100) == pytest.approx(1.25)
    assert tau_cosine(60, 100) == 1.0 and tau_cosine(99, 100) == 1.0
    assert tau_exponential(0.0) == 1.5 and tau_exponential(1.0) == max(1.0, 1.5 * math.exp(-0.6))
    with pytest.raises(ValueError, match="tau=0"):
        route_train(torch.zeros(1, 1, 2), tau=0)
