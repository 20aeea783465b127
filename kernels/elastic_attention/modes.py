"""The registry of Elastic Attention's attention modes: each mode's code in the kernels' mode table, the settings
it reads, its validation and its visibility rule (which key each query sees) in one place.

| mode | code | sees | settings |
|---|---|---|---|
| ``full`` | 0 | every earlier key (dense causal) | - |
| ``streaming`` | 1 | keys j < sink or i - j < window (token-exact) | sink, window |
| ``streaming_blocks`` | 2 | the official kernel's variant: sink and window rounded up to whole blocks | sink, window, round_block |
| ``block_sparse`` | 3 | the key blocks a per-head block mask keeps (XAttention's selection) | block_mask, mask_block |

``visible`` is the one definition of the rules: the slow reference (``mode_table_reference``), the exact backward
(``prefill_grad``) and the streaming fast path's key sets (``reference.streaming_keys``) use it; the Triton kernels
implement the same rules tile by tile (``triton_common``) and are tested against it. Adding a mode: a row here, its
tile rule in ``triton_common`` if it needs one, and tests; the pattern that uses it is named in
``verl_ext.elastic_attention.config``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

FULL = 0
STREAMING = 1
STREAMING_BLOCKS = 2
BLOCK_SPARSE = 3


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    code: int
    settings: tuple[str, ...]
    description: str


MODES = {m.code: m for m in (
    Mode("full", FULL, (), "dense causal attention"),
    Mode("streaming", STREAMING, ("sink", "window"), "sink + local window, token-exact"),
    Mode("streaming_blocks", STREAMING_BLOCKS, ("sink", "window", "round_block"),
         "sink + local window rounded up to whole blocks (the official kernel)"),
    Mode("block_sparse", BLOCK_SPARSE, ("block_mask", "mask_block"), "the kept blocks of a per-head block mask"),
)}
NAMES = {code: mode.name for code, mode in MODES.items()}


def check_settings(code: int, sink: int, window: int, round_block: int, mask_block: Optional[int] = None) -> None:
    """ValueError naming the setting when ``code``'s settings cannot work."""
    if code not in MODES:
        raise ValueError(f"mode code {code} is unknown; known: {NAMES}.")
    if code in (STREAMING, STREAMING_BLOCKS) and (sink < 0 or window < 1):
        raise ValueError(f"streaming needs sink >= 0 and window >= 1; got sink={sink}, window={window}.")
    if code == STREAMING_BLOCKS and round_block < 1:
        raise ValueError(f"streaming_blocks needs round_block >= 1; got {round_block}.")
    if code == BLOCK_SPARSE and (mask_block is None or mask_block < 1):
        raise ValueError("block_sparse needs mask_block >= 1 and a block mask.")


def visible(code: int, i: torch.Tensor, j: torch.Tensor, sink: int = 0, window: int = 1, round_block: int = 1,
            block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None) -> torch.Tensor:
    """Bool, broadcast of query positions ``i`` against key positions ``j`` (e.g. (c, 1) against (1, n)): does the
    query see the key in mode ``code``, causal included. ``block_mask`` (..., nqb, nkb) for BLOCK_SPARSE (leading
    head dimensions broadcast in front of the result)."""
    causal = j <= i
    if code == FULL:
        return causal
    if code == STREAMING:
        return causal & ((j < sink) | (i - j < window))
    if code == STREAMING_BLOCKS:
        sink_blocks, window_blocks = math.ceil(sink / round_block), math.ceil(window / round_block)
        return causal & ((j // round_block < sink_blocks) | (i // round_block - j // round_block < window_blocks))
    if code == BLOCK_SPARSE:
        kept = block_mask[..., (i // mask_block).clamp(max=block_mask.shape[-2] - 1),
                          (j // mask_block).clamp(max=block_mask.shape[-1] - 1)]
        return causal & kept.to(causal.device)
    raise ValueError(f"mode code {code} is unknown; known: {NAMES}.")
