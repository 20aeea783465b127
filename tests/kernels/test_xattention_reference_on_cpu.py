import math

import pytest
import torch

from verl_ext.kernels.elastic_attention.cpu import block_sparse_attention, full_attention
from verl_ext.kernels.elastic_attention.xattention import antidiagonal_tile_scores, xattention_block_mask


def _qkv(t, hq=4, hkv=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, t, hq, d, generator=g), torch.randn(1, t, hkv, d, generator=g), torch.randn(1, t, hkv, d, generator=g))


def test_antidiagonal_scores_against_a_loop():
    q, k, _ = _qkv(8, hq=1, hkv=1)
    s = 4
    scores = antidiagonal_tile_scores(q, k, s)
    for a in range(2):
        for b in range(2):
            expected = sum(float(q[0, a * s + r, 0] @ k[0, b * s + s - 1 - r, 0]) for r in range(s))
            assert scores[0, 0, a, b].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [63, 100, 257])
def test_threshold_one_keeps_every_causal_block_and_equals_full_attention(t):
    q, k, v = _qkv(t, seed=t)
    mask = xattention_block_mask(q, k, stride=4, block=16, threshold=1.0)
    out = block_sparse_attention(q, k, v, mask, 16)
    nb = math.ceil(t / 16)
    assert torch.equal(mask[0, 0], torch.ones(nb, nb, dtype=torch.bool).tril())
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_small_threshold_keeps_only_sink_and_diagonal_plus_the_heaviest():
    q, k, _ = _qkv(128, seed=3)
    mask = xattention_block_mask(q, k, stride=4, block=16, threshold=1e-6)
    nb = 8
    for row in range(nb):
        kept = mask[0, 0, row].nonzero().flatten().tolist()
        assert 0 in kept and row in kept and len(kept) <= 3  # sink, diagonal, and the single heaviest block
    denser = xattention_block_mask(q, k, stride=4, block=16, threshold=0.9)
    assert bool((denser | mask).eq(denser).all())  # a higher threshold keeps a superset


def test_bad_arguments():
    q, k, _ = _qkv(32)
    with pytest.raises(ValueError, match="multiple of stride"):
        xattention_block_mask(q, k, stride=5, block=16)
    with pytest.raises(ValueError, match="threshold=0"):
        xattention_block_mask(q, k, threshold=0)
