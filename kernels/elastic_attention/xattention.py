"""XAttention's block-mask estimation: which key blocks each query block of a head keeps (the masks the
``block_sparse`` mode reads; ``cpu.block_sparse_attention`` and the Triton prefill attend with them).

Estimation (XAttention, Xu et al. 2025): inside every stride x stride tile of QK^T, the sum along the tile's
antidiagonal approximates the tile's mass; it is one GEMM on strided rearrangements of Q and K. Tile scores are
scaled by 1/(sqrt(D) * stride), softmaxed over the causal key tiles of each query tile, summed into block x block
blocks, and each query block keeps its most important key blocks until their share of the row reaches the
threshold tau; the first (sink) block and the diagonal block are always kept.

Defaults follow the paper (stride 16, tau 0.9, block 64); the released evaluation file uses tau 0.8 and block 128.
Layout: q (B, T, Hq, D), k (B, T, Hkv, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .utils import check_bthd, expand_kv

STRIDE, THRESHOLD, BLOCK = 16, 0.9, 64


def antidiagonal_tile_scores(q: torch.Tensor, k: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, H, T/stride, T/stride): for tile (a, b), sum_r q[a*s + r] . k[b*s + s-1-r]. q, k: (B, T, H, D), T % s == 0."""
    b, t, h, d = q.shape
    n = t // stride
    q_anti = q.reshape(b, n, stride, h, d).permute(0, 3, 1, 2, 4).reshape(b, h, n, stride * d)
    k_anti = k.reshape(b, n, stride, h, d).flip(2).permute(0, 3, 1, 2, 4).reshape(b, h, n, stride * d)
    return torch.matmul(q_anti.float(), k_anti.float().transpose(-1, -2))


def xattention_block_mask(q, k, stride: int = STRIDE, block: int = BLOCK, threshold: float = THRESHOLD) -> torch.Tensor:
    """(B, Hq, nb, nb) bool block mask (nb = ceil(T / block)), causal at block level."""
    groups = check_bthd(q, k, k)
    if block % stride:
        raise ValueError(f"block={block} must be a multiple of stride={stride}.")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1].")
    b, t, hq, d = q.shape
    padded = math.ceil(t / block) * block
    pad = padded - t
    qp = F.pad(q, (0, 0, 0, 0, 0, pad))
    kp = F.pad(expand_kv(k, groups), (0, 0, 0, 0, 0, pad))
    scores = antidiagonal_tile_scores(qp, kp, stride) / (math.sqrt(d) * stride)
    n = padded // stride
    tile_causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    valid_tiles = math.ceil(t / stride)
    tile_causal[:, valid_tiles:] = False  # padding keys carry no mass
    probs = torch.softmax(scores.masked_fill(~tile_causal, float("-inf")), dim=-1)
    per = block // stride
    nb = padded // block
    block_mass = probs.reshape(b, hq, nb, per, nb, per).sum(dim=(3, 5)) / per  # rows sum to 1
    order = block_mass.argsort(dim=-1, descending=True)
    sorted_mass = block_mass.gather(-1, order)
    before = sorted_mass.cumsum(-1) - sorted_mass
    keep_sorted = before < threshold  # keep blocks until the kept share reaches the threshold
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    eye = torch.eye(nb, dtype=torch.bool, device=q.device)
    keep = keep | eye | torch.zeros_like(eye).index_fill(1, torch.tensor([0], device=q.device), True)
    return keep & torch.ones(nb, nb, dtype=torch.bool, device=q.device).tril()

