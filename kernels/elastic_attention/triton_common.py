"""What the Triton kernels share: the tile rules (each mode's key-tile ranges and tile visibility, by rule id), the
tile product (``mma``), and the launchers' host helpers (rule tables, dot flags, autotuning).

The kernels never see mode codes: the launchers turn a mode table into a table of tile-rule ids (``rule_table``),
refusing, before any launch, an unknown code or a mode without a rule (``Mode.tile_rule`` names one of ``RULES``),
so no id reaches a kernel that the helpers below do not implement. A mode with a Triton path: its rule here
(an id in ``RULES`` and its branch in ``tile_visibility``, ``tile_is_whole`` and ``key_tile_ranges``), or the
name of an existing rule that computes the same set.
"""

import torch
import triton
import triton.language as tl

from . import modes as M

RULES = {
    "causal": 0,              # every key tile up to the diagonal
    "sink_window": 1,         # sink tiles, then window tiles; token-exact element mask
    "sink_window_blocks": 2,  # the same, sink and window rounded up to whole round_block blocks
    "block_list": 3,          # the key tiles listed per query tile (``triton_prefill.block_mask_tiles``)
}
# Globals read inside @triton.jit must be constexpr.
CAUSAL = tl.constexpr(RULES["causal"])
SINK_WINDOW = tl.constexpr(RULES["sink_window"])
SINK_WINDOW_BLOCKS = tl.constexpr(RULES["sink_window_blocks"])
BLOCK_LIST = tl.constexpr(RULES["block_list"])

LOG2E = 1.4426950408889634  # the kernels' softmax runs in exp2: scores are scaled by scale * log2(e)


def rule_id(mode: M.Mode) -> int:
    """The tile rule id of ``mode``; ValueError naming the modes that have one when it has none."""
    if mode.tile_rule is None:
        runnable = ", ".join(m.name for m in M.known() if m.tile_rule is not None)
        raise ValueError(f"mode {mode.name!r} (code {mode.code}) has no Triton tile rule, so the Triton back end "
                         f"cannot run it (it runs: {runnable}; known modes: {M.known_text()}). Use "
                         "backend='reference', or give the mode a tile rule in triton_common.")
    if mode.tile_rule not in RULES:
        raise ValueError(f"mode {mode.name!r} names the tile rule {mode.tile_rule!r}, which triton_common does not "
                         f"define ({sorted(RULES)}).")
    return RULES[mode.tile_rule]


def rule_table(codes: torch.Tensor) -> torch.Tensor:
    """A mode table (S, Hq) of codes -> (S, Hq) int32 tile-rule ids on the CPU, every code checked first."""
    M.check_codes(codes)
    return M.lookup(codes, rule_id, torch.int32)


def dot_flags(q: torch.Tensor) -> dict:
    """The kernels' tile-product flags: exact fp32 products for fp32 inputs; fp32 products for bf16 in the
    interpreter, whose bf16 tl.dot is wrong (triton 3.7.1)."""
    return {"IEEE": q.dtype == torch.float32, "UPCAST": q.device.type != "cuda" and q.dtype == torch.bfloat16}


_TUNED = {}


def tuned(name: str, kernel, configs, key):
    """``kernel`` autotuned on CUDA over ``configs`` (built once per name)."""
    if name not in _TUNED:
        _TUNED[name] = triton.autotune(configs, key=key)(kernel)
    return _TUNED[name]


@triton.jit
def tile_visibility(offs_m, offs_n, rule, sink, window, round_block):
    """(BM, BN) bool: which (query, key) pairs of a tile the head's rule lets through (causal included; a
    ``block_list`` head's tiles are listed whole, so inside them it is causal)."""
    i = offs_m[:, None]
    j = offs_n[None, :]
    vis = j <= i
    exact = (j < sink) | (i - j < window)
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    rounded = (j // round_block < sink_blocks) | (i // round_block - j // round_block < window_blocks)
    sparse_ok = tl.where(rule == SINK_WINDOW, exact, tl.where(rule == SINK_WINDOW_BLOCKS, rounded, True))
    return vis & sparse_ok


@triton.jit
def tile_is_whole(m0, n0, rule, sink, window, round_block, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """True when every pair of the (query tile at m0, key tile at n0) is visible, so no element mask is needed."""
    causal = n0 + BLOCK_N - 1 <= m0
    in_sink = n0 + BLOCK_N <= sink
    in_window = m0 + BLOCK_M - 1 - n0 < window
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    in_sink_blocks = (n0 + BLOCK_N - 1) // round_block < sink_blocks
    in_window_blocks = (m0 + BLOCK_M - 1) // round_block - n0 // round_block < window_blocks
    sparse_ok = tl.where(rule == SINK_WINDOW, in_sink | in_window,
                         tl.where(rule == SINK_WINDOW_BLOCKS, in_sink_blocks | in_window_blocks, True))
    return causal & sparse_ok


@triton.jit
def key_tile_ranges(m0, length, rule, sink, window, round_block, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key tiles of a query tile as two ranges [0, n_sink) and [lo, hi) (``causal``: n_sink = 0, lo = 0)."""
    hi = tl.cdiv(tl.minimum(length, m0 + BLOCK_M), BLOCK_N)
    lo_exact = tl.maximum(m0 - window + 1, 0)
    sink_exact = sink
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    lo_rounded = tl.maximum((m0 // round_block - window_blocks + 1) * round_block, 0)
    sink_rounded = sink_blocks * round_block
    lo_key = tl.where(rule == SINK_WINDOW, lo_exact, tl.where(rule == SINK_WINDOW_BLOCKS, lo_rounded, 0))
    sink_key = tl.where(rule == SINK_WINDOW, sink_exact, tl.where(rule == SINK_WINDOW_BLOCKS, sink_rounded, 0))
    lo = lo_key // BLOCK_N
    n_sink = tl.minimum(tl.cdiv(sink_key, BLOCK_N), lo)
    return n_sink, lo, hi


@triton.jit
def mma(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation. IEEE: exact fp32 products (no TF32) for fp32 inputs. UPCAST: multiply in fp32;
    set only under TRITON_INTERPRET for bf16, whose tl.dot the interpreter gets wrong (triton 3.7.1)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)
