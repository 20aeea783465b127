"""Device helpers shared by the Triton kernels: each head mode's key-tile ranges, tile visibility, and the tile
product (``mma``)."""

import triton
import triton.language as tl

from . import modes

# Globals read inside @triton.jit must be constexpr.
FULL = tl.constexpr(modes.FULL)
STREAMING = tl.constexpr(modes.STREAMING)
STREAMING_BLOCKS = tl.constexpr(modes.STREAMING_BLOCKS)
BLOCK_SPARSE = tl.constexpr(modes.BLOCK_SPARSE)


@triton.jit
def tile_visibility(offs_m, offs_n, mode, sink, window, round_block):
    """(BM, BN) bool: which (query, key) pairs of a tile the head's mode lets through (causal included)."""
    i = offs_m[:, None]
    j = offs_n[None, :]
    vis = j <= i
    exact = (j < sink) | (i - j < window)
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    rounded = (j // round_block < sink_blocks) | (i // round_block - j // round_block < window_blocks)
    sparse_ok = tl.where(mode == STREAMING, exact, tl.where(mode == STREAMING_BLOCKS, rounded, True))
    return vis & sparse_ok


@triton.jit
def tile_is_whole(m0, n0, mode, sink, window, round_block, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """True when every pair of the (query tile at m0, key tile at n0) is visible, so no element mask is needed."""
    causal = n0 + BLOCK_N - 1 <= m0
    in_sink = n0 + BLOCK_N <= sink
    in_window = m0 + BLOCK_M - 1 - n0 < window
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    in_sink_blocks = (n0 + BLOCK_N - 1) // round_block < sink_blocks
    in_window_blocks = (m0 + BLOCK_M - 1) // round_block - n0 // round_block < window_blocks
    sparse_ok = tl.where(mode == STREAMING, in_sink | in_window,
                         tl.where(mode == STREAMING_BLOCKS, in_sink_blocks | in_window_blocks, True))
    return causal & sparse_ok


@triton.jit
def key_tile_ranges(m0, length, mode, sink, window, round_block, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key tiles of a query tile as two ranges [0, n_sink) and [lo, hi) (FULL: n_sink = 0, lo = 0)."""
    hi = tl.cdiv(tl.minimum(length, m0 + BLOCK_M), BLOCK_N)
    lo_exact = tl.maximum(m0 - window + 1, 0)
    sink_exact = sink
    sink_blocks = tl.cdiv(sink, round_block)
    window_blocks = tl.cdiv(window, round_block)
    lo_rounded = tl.maximum((m0 // round_block - window_blocks + 1) * round_block, 0)
    sink_rounded = sink_blocks * round_block
    lo_key = tl.where(mode == STREAMING, lo_exact, tl.where(mode == STREAMING_BLOCKS, lo_rounded, 0))
    sink_key = tl.where(mode == STREAMING, sink_exact, tl.where(mode == STREAMING_BLOCKS, sink_rounded, 0))
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
