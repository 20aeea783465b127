"""Every public Elastic Attention op on every back end takes any strided view of its inputs: a transposed tensor
(last dimension not contiguous), a slice of a wider tensor (``x[..., 0]`` of (..., D, 2)), a batch-strided view
(``x[::2]``) give exactly what the contiguous copy gives, forward and gradients. Mode tables are integer codes;
anything else is a clear error."""

import pytest
import torch

from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.ops import elastic_attention_pair, elastic_decode, elastic_prefill

BACKENDS = ["reference", "triton"]
LAYOUTS = ["transposed", "sliced", "batch_strided"]


def _strided(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A view equal to x with the given non-standard strides."""
    if layout == "transposed":  # stored as (..., D, H), viewed as (..., H, D)
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":  # every other element of a (..., D, 2) tensor
        wide = torch.stack([x, torch.full_like(x, float("nan"))], dim=-1)
        return wide[..., 0]
    wide = torch.stack([x, torch.full_like(x, float("nan"))], dim=1)  # rows interleaved with NaN rows
    return wide.flatten(0, 1)[::2]


def _inputs(packed: bool):
    g = torch.Generator().manual_seed(0)
    shape = (70,) if packed else (2, 40)
    return [torch.randn(*shape, h, 32, generator=g) for h in (4, 2, 2)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("packed", [False, True])
def test_prefill(backend, layout, packed):
    q, k, v = _inputs(packed)
    kwargs = dict(cu_seqlens=torch.tensor([0, 33, 70])) if packed else dict(lengths=torch.tensor([40, 29]))
    table = torch.tensor([[M.FULL, M.STREAMING, M.STREAMING_BLOCKS, M.STREAMING], [M.STREAMING, M.FULL, M.FULL,
                                                                                  M.STREAMING_BLOCKS]])
    want = elastic_prefill(q, k, v, table, sink=3, window=8, round_block=16, backend=backend, **kwargs)
    views = [_strided(x, layout) for x in (q, k, v)]
    assert not all(x.is_contiguous() for x in views)
    got = elastic_prefill(*views, table, sink=3, window=8, round_block=16, backend=backend, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pair_forward_and_gradients(backend, layout):
    q, k, v = _inputs(packed=True)
    z = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 1.0]])
    cu = torch.tensor([0, 33, 70])
    w = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for make in (lambda x: x, lambda x: _strided(x, layout)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = elastic_attention_pair(*(make(x) for x in leaves), z, cu_seqlens=cu, sink=3, window=8, backend=backend)
        results.append((out, torch.autograd.grad((out * w).sum(), leaves)))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_decode(backend, layout):
    g = torch.Generator().manual_seed(2)
    q, kc, vc = torch.randn(2, 4, 32, generator=g), torch.randn(2, 50, 2, 32, generator=g), torch.randn(2, 50, 2, 32,
                                                                                                        generator=g)
    lens, sparse = torch.tensor([50, 21]), torch.tensor([[True, False, True, False], [False, False, True, True]])
    want = elastic_decode(q, kc, vc, lens, sparse, sink=3, window=8, backend=backend)
    got = elastic_decode(*(_strided(x, layout) for x in (q, kc, vc)), lens, sparse, sink=3, window=8,
                         backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mode_tables_must_be_integer_codes(backend):
    q, k, v = _inputs(packed=False)
    table = torch.zeros(2, 4, dtype=torch.long)
    for bad in (table.bool(), table.float(), [[0, 0, 0, 0], [0, 0, 0, 0]]):
        with pytest.raises(ValueError, match="modes must be an integer tensor of mode codes"):
            elastic_prefill(q, k, v, bad, backend=backend)
    for dtype in (torch.int8, torch.int32, torch.int64):  # any integer width is accepted
        elastic_prefill(q, k, v, table.to(dtype), backend=backend)
    with pytest.raises(ValueError, match="sparse_heads must be a bool"):
        elastic_decode(q[:, 0], k, v, torch.tensor([40, 40]), torch.zeros(2, 4), backend=backend)


def test_triton_decode_refuses_gradients_and_float64_goes_to_the_reference():
    g = torch.Generator().manual_seed(3)
    q, kc, vc = torch.randn(1, 4, 32, generator=g), torch.randn(1, 9, 2, 32, generator=g), torch.randn(1, 9, 2, 32,
                                                                                                      generator=g)
    args = (torch.tensor([9]), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no backward"):
        elastic_decode(q.requires_grad_(), kc, vc, *args, backend="triton")
    with pytest.raises(ValueError, match="backend='reference' for float64"):
        elastic_decode(q.detach().double(), kc.double(), vc.double(), *args, backend="triton")
    out = elastic_decode(q.detach().double(), kc.double(), vc.double(), *args, backend="reference")
    assert out.dtype == torch.float64
