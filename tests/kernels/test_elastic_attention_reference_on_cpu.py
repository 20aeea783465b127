"""Reference attention modes against the slow obvious masked versions, on odd shapes, GQA, both streaming variants."""

import pytest
import torch

from verl_ext.kernels.elastic_attention.cpu import full_attention, streaming_attention
from verl_ext.kernels.elastic_attention.naive import dense_masked_streaming, streaming_visible


def _qkv(b, t, hq, hkv, d, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, hq, d, generator=g, dtype=torch.float64), torch.randn(b, t, hkv, d, generator=g, dtype=torch.float64),
            torch.randn(b, t, hkv, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("t", [63, 100, 1031])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("block_size", [None, 16])
def test_streaming_matches_the_masked_reference(t, groups, block_size):
    q, k, v = _qkv(2, t, 2 * groups, 2, 16, seed=t + groups)
    out = streaming_attention(q, k, v, sink=7, window=40, block_size=block_size, chunk=32)
    ref = dense_masked_streaming(q, k, v, sink=7, window=40, block_size=block_size)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_visibility_hand_checked():
    vis = streaming_visible(6, sink=1, window=2)
    assert vis[5].tolist() == [True, False, False, False, True, True]  # sink + the last 2 tokens
    blocks = streaming_visible(8, sink=1, window=3, block_size=2)        # 1 sink block, 2 window blocks
    assert blocks[7].tolist() == [True, True, False, False, True, True, True, True]


def test_window_covering_everything_equals_full_attention():
    q, k, v = _qkv(1, 70, 4, 2, 8, seed=3)
    torch.testing.assert_close(streaming_attention(q, k, v, sink=0, window=1000), full_attention(q, k, v))


def test_block_sparse_visibility_hand_checked():
    """modes.visible for a block mask: a query sees the keys of its kept blocks, causally."""
    from verl_ext.kernels.elastic_attention import modes

    mask = torch.tensor([[[True, False], [False, True]]])  # one head, 2 x 2 blocks: the diagonal only
    pos = torch.arange(4)
    vis = modes.visible(modes.BLOCK_SPARSE, pos[:, None], pos[None, :], block_mask=mask, mask_block=2)[0]
    assert vis.tolist() == [[True, False, False, False], [True, True, False, False],
                            [False, False, True, False], [False, False, True, True]]
    with pytest.raises(ValueError, match="mode code 9 is unknown"):
        modes.visible(9, pos[:, None], pos[None, :])


def test_bad_shapes():
    q, k, v = _qkv(1, 10, 3, 2, 8, seed=0)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        full_attention(q, k, v)


@pytest.mark.parametrize("window,chunk", [(1, 8), (5, 5), (9, 4), (33, 32), (64, 16)])
@pytest.mark.parametrize("sink", [0, 3])
def test_streaming_edge_cases(window, chunk, sink):
    q, k, v = _qkv(1, 157, 4, 2, 8, seed=window * 7 + chunk + sink)
    torch.testing.assert_close(streaming_attention(q, k, v, sink=sink, window=window, chunk=chunk),
                               dense_masked_streaming(q, k, v, sink=sink, window=window), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(dtype):
    q, k, v = (x.to(dtype) for x in _qkv(1, 300, 4, 1, 16, seed=11))
    out = streaming_attention(q, k, v, sink=4, window=64, chunk=32)
    ref = dense_masked_streaming(q.double(), k.double(), v.double(), sink=4, window=64)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
