"""Attention backward from the forward's output and log-sum-exp, recomputing the probabilities chunk by chunk.

For one head whose query i sees the key set V(i) (causal, streaming, block-sparse, ...), the forward gives
O = P V and lse_i = logsumexp_{j in V(i)} s_ij with s = scale * q k^T and P_ij = exp(s_ij - lse_i) on V(i).
Given dO (and d lse when the caller used the log-sum-exp too):

    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O) + d lse),  dQ = scale dS K,  dK = scale dS^T Q

The probabilities are recomputed from the saved lse for one query chunk at a time, over only the keys that chunk
can see, so memory is O(chunk x visible keys) and a streaming head costs O(T * (sink + window)), as in its forward.
This is the backward of every forward that cannot differentiate through its own log-sum-exp: the CPU flash path of
``cpu.streaming_attention`` (whose partial results are merged by their lse) and the Triton mode-table prefill
(which has no backward kernel). ``keys_of`` is where a mode's ``key_span`` (``modes.py``) comes in.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

KeysOf = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                       d_out: torch.Tensor, scale: float, keys_of: KeysOf, chunk: int = 256,
                       d_lse: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of one sequence, every head already paired with its own key/value head.

    q, k, v, out, d_out: (T, H, D); lse, d_lse: (T, H), natural log, -inf for a row that sees nothing.
    ``keys_of(i0, i1)`` -> (keys (nk,) int64 key positions, visible (i1 - i0, nk) or (H, i1 - i0, nk) bool): the
    keys queries i0..i1-1 may see, a superset of each query's set, and the exact visibility among them.
    Returns float32-or-wider gradients shaped like q, k, v (the caller casts and reduces GQA groups).
    """
    acc = torch.promote_types(q.dtype, torch.float32)
    t, h, d = q.shape
    dq = torch.zeros(t, h, d, dtype=acc, device=q.device)
    dk = torch.zeros_like(dq)
    dv = torch.zeros_like(dq)
    delta = (d_out.to(acc) * out.to(acc)).sum(-1)  # (T, H)
    if d_lse is not None:
        delta = delta - d_lse.to(acc)
    finite_lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse).to(acc)
    for i0 in range(0, t, chunk):
        i1 = min(t, i0 + chunk)
        keys, visible = keys_of(i0, i1)
        if keys.numel() == 0:
            continue
        keys = keys.to(q.device)
        qc = q[i0:i1].to(acc).transpose(0, 1)  # (H, c, D)
        kc = k[keys].to(acc).transpose(0, 1)   # (H, nk, D)
        vc = v[keys].to(acc).transpose(0, 1)
        do = d_out[i0:i1].to(acc).transpose(0, 1)
        scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
        p = torch.exp(scores - finite_lse[i0:i1].T[..., None]).masked_fill(~visible.to(q.device), 0.0)
        dv.index_add_(0, keys, torch.matmul(p.transpose(-1, -2), do).transpose(0, 1))
        ds = p * (torch.matmul(do, vc.transpose(-1, -2)) - delta[i0:i1].T[..., None])
        dq[i0:i1] = torch.matmul(ds, kc).transpose(0, 1) * scale
        dk.index_add_(0, keys, torch.matmul(ds.transpose(-1, -2), qc).transpose(0, 1) * scale)
    return dq, dk, dv


def reduce_groups(dx: torch.Tensor, groups: int) -> torch.Tensor:
    """(T, Hkv * groups, D) gradients of expanded keys or values -> (T, Hkv, D): GQA heads share one KV head."""
    if groups == 1:
        return dx
    t, h, d = dx.shape
    return dx.view(t, h // groups, groups, d).sum(2)
