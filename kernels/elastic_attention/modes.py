"""The registry of Elastic Attention's attention modes: one frozen ``Mode`` per mode, everything a back end needs
to know about it, in one place.

| mode | code | sees (causal included) | settings |
|---|---|---|---|
| ``full`` | 0 | every earlier key (dense causal) | - |
| ``streaming`` | 1 | keys j < sink or i - j < window (token-exact) | sink, window |
| ``streaming_blocks`` | 2 | the official kernel's variant: sink and window rounded up to whole blocks | sink, window, round_block |
| ``block_sparse`` | 3 | the key blocks a per-head block mask keeps (XAttention's selection) | block_mask, mask_block |

A back end never compares a head's code with a particular mode: it looks the code up (``get``) and reads the entry.
``visible`` is the one definition of what a mode sees: the naive oracle (``naive.py``) and the CPU back end's masked
fallback evaluate it; the fast paths and the Triton tile rules implement the same set and are tested against it.
The codes are what mode tables hold, so the built-in ones never change.

Adding a mode: a ``Mode`` here (``register`` below; a test uses ``registered``), its tile rule in ``triton_common``
if it should run on Triton, and tests (``tests/kernels/test_mode_registry_on_cpu.py`` adds a toy mode). Without a
CPU fast path the CPU back end attends through ``visible`` (O(T^2) memory per head); without a tile rule the Triton
back end refuses the mode by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Iterator, Optional, Union

import torch

FULL = 0
STREAMING = 1
STREAMING_BLOCKS = 2
BLOCK_SPARSE = 3


@dataclasses.dataclass(frozen=True, eq=False)
class Settings:
    """Everything a mode's rules may read; each mode names the fields it uses (``Mode.settings``)."""

    sink: int = 0
    window: int = 1
    round_block: int = 1
    block_mask: Optional[torch.Tensor] = None  # (..., nqb, nkb) bool; leading dims broadcast in front of the result
    mask_block: Optional[int] = None  # tokens per block_mask block


# (query positions i, key positions j, settings) -> bool, broadcast of i against j (e.g. (c, 1) against (1, n)).
Visible = Callable[[torch.Tensor, torch.Tensor, Settings], torch.Tensor]
# (i0, i1, settings) -> (keys (nk,) int64, visible (i1 - i0, nk) bool): a superset of the keys queries i0..i1-1 see,
# and the exact visibility among them (``backward.attention_backward``'s ``keys_of``).
KeySpan = Callable[[int, int, Settings], "tuple[torch.Tensor, torch.Tensor]"]


def _causal(i, j, s: Settings):
    return j <= i


def _sink_window(i, j, s: Settings):
    return (j <= i) & ((j < s.sink) | (i - j < s.window))


def _sink_window_blocks(i, j, s: Settings):
    b = s.round_block
    sink_blocks, window_blocks = math.ceil(s.sink / b), math.ceil(s.window / b)
    return (j <= i) & ((j // b < sink_blocks) | (i // b - j // b < window_blocks))


def _kept_blocks(i, j, s: Settings):
    mask = s.block_mask
    kept = mask[..., (i // s.mask_block).clamp(max=mask.shape[-2] - 1),
                (j // s.mask_block).clamp(max=mask.shape[-1] - 1)]
    causal = j <= i
    return causal & kept.to(causal.device)


def _sink_and_window(i0: int, i1: int, sink_end: int, lo: int, rule: Visible, s: Settings):
    """The sink [0, sink_end) then the window [lo, i1), without overlap, and ``rule`` among them."""
    keys = torch.cat([torch.arange(0, min(sink_end, lo, i1)), torch.arange(min(lo, i1), i1)])
    return keys, rule(torch.arange(i0, i1)[:, None], keys[None, :], s)


def _sink_window_keys(i0: int, i1: int, s: Settings):
    """Key span of a token-exact streaming chunk: the sink, then the window of its first query up to its last."""
    return _sink_and_window(i0, i1, s.sink, max(0, i0 - s.window + 1), _sink_window, s)


def _sink_window_blocks_keys(i0: int, i1: int, s: Settings):
    """Key span of a block-rounded streaming chunk: whole sink blocks, then whole window blocks."""
    b = s.round_block
    lo = max(0, (i0 // b - math.ceil(s.window / b) + 1) * b)
    return _sink_and_window(i0, i1, math.ceil(s.sink / b) * b, lo, _sink_window_blocks, s)


# Which cached positions j the new token (at position length - 1) sees while decoding (``Mode.decode``).
DECODE_RULES = {
    "dense": lambda j, length, s: j < length,
    "sink_window": lambda j, length, s: (j < length) & ((j < s.sink) | (length - 1 - j < s.window)),
}


@dataclasses.dataclass(frozen=True)
class Mode:
    """One attention mode. ``visible`` includes causality. ``cpu``: the CPU fast path, a differentiable callable
    (q (B, T, Hq, D), k, v (B, T, Hkv, D), settings, scale) -> O (B, T, Hq, D), or the name of one of
    ``cpu.FAST_PATHS`` (this module cannot import cpu.py, which dispatches through it); None: masked attention
    through ``visible``. ``key_span``: the keys a query chunk can see, so backwards cost
    O(T * visible keys); None: every earlier key, filtered by ``visible``. ``tile_rule``: a name in
    ``triton_common.RULES``; None: no Triton path. ``needs_block_mask``: the op needs ``block_mask`` and
    ``mask_block`` (and rows cannot turn dense from ``dense_from``: the kernel lists a head's kept tiles only).
    ``dense``: sees every earlier key, so ``dense_from`` changes nothing. ``decode``: a ``DECODE_RULES`` name, what
    the head sees while decoding with sparse KV."""

    name: str
    code: int
    settings: tuple[str, ...]
    description: str
    visible: Visible
    cpu: Union[None, str, Callable] = None
    key_span: Optional[KeySpan] = None
    tile_rule: Optional[str] = None
    needs_block_mask: bool = False
    dense: bool = False
    decode: str = "dense"


class UnknownModeError(KeyError, ValueError):
    """A code or name that is not registered: a KeyError for lookups, a ValueError for argument checks."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


_REGISTRY: dict[int, Mode] = {}


def known() -> tuple[Mode, ...]:
    """The registered modes, by code."""
    return tuple(sorted(_REGISTRY.values(), key=lambda m: m.code))


def known_text() -> str:
    """``"0=full, 1=streaming, ..."``: what error messages list."""
    return ", ".join(f"{m.code}={m.name}" for m in known())


def get(code_or_name: Union[int, str, torch.Tensor]) -> Mode:
    """The mode of a code (int, or 0-d tensor) or a name; UnknownModeError naming the known modes otherwise."""
    if isinstance(code_or_name, str):
        for mode in _REGISTRY.values():
            if mode.name == code_or_name:
                return mode
        raise UnknownModeError(f"mode {code_or_name!r} is unknown; known modes: {known_text()}.")
    code = int(code_or_name)
    if code not in _REGISTRY:
        raise UnknownModeError(f"mode code {code} is unknown; known modes: {known_text()}.")
    return _REGISTRY[code]


def register(mode: Mode) -> Mode:
    """Add ``mode``; ValueError when its code or name is taken or a field cannot work."""
    if not isinstance(mode.code, int) or not 0 <= mode.code < 2**31:
        raise ValueError(f"mode {mode.name!r}: code={mode.code!r} must be an int in [0, 2**31) (tables are int32).")
    for other in _REGISTRY.values():
        if other.code == mode.code or other.name == mode.name:
            raise ValueError(f"mode {mode.name!r} (code {mode.code}) clashes with the registered {other.name!r} "
                             f"(code {other.code}); known modes: {known_text()}.")
    if mode.decode not in DECODE_RULES:
        raise ValueError(f"mode {mode.name!r}: decode={mode.decode!r} must be one of {sorted(DECODE_RULES)}.")
    if not (mode.cpu is None or isinstance(mode.cpu, str) or callable(mode.cpu)):
        raise ValueError(f"mode {mode.name!r}: cpu must be None, a cpu.FAST_PATHS name or a callable.")
    if not (mode.tile_rule is None or isinstance(mode.tile_rule, str)):
        raise ValueError(f"mode {mode.name!r}: tile_rule must be None or a triton_common.RULES name.")
    _REGISTRY[mode.code] = mode
    return mode


@contextlib.contextmanager
def registered(mode: Mode) -> Iterator[Mode]:
    """``mode`` registered inside the block and removed after it; the other modes are never touched."""
    register(mode)
    try:
        yield mode
    finally:
        del _REGISTRY[mode.code]


def check_codes(codes: torch.Tensor) -> list[Mode]:
    """The modes of a mode table's distinct codes, by code; UnknownModeError for an unregistered one (back ends
    call it before computing anything)."""
    return [get(c) for c in sorted(set(codes.flatten().tolist()))]


def lookup(codes: torch.Tensor, attribute: Callable[[Mode], object], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor shaped like ``codes``: ``attribute(mode)`` of each entry's mode (e.g. a per-head flag)."""
    distinct, inverse = torch.unique(codes.cpu(), return_inverse=True)
    values = torch.tensor([attribute(get(c)) for c in distinct.tolist()], dtype=dtype)
    return values[inverse]


def visible(code: int, i: torch.Tensor, j: torch.Tensor, sink: int = 0, window: int = 1, round_block: int = 1,
            block_mask: Optional[torch.Tensor] = None, mask_block: Optional[int] = None) -> torch.Tensor:
    """Does query ``i`` see key ``j`` in mode ``code`` (``Mode.visible`` with the settings spelled out)."""
    return get(code).visible(i, j, Settings(sink, window, round_block, block_mask, mask_block))


def streaming(round_block: Optional[int]) -> Mode:
    """The streaming mode: token-exact without ``round_block``, block-rounded with it (the training pair's sparse
    branch, ``cpu.streaming_attention``'s ``block_size``)."""
    return get(STREAMING if round_block is None else STREAMING_BLOCKS)


for _mode in (
    Mode("full", FULL, (), "dense causal attention", _causal, cpu="full", tile_rule="causal", dense=True),
    Mode("streaming", STREAMING, ("sink", "window"), "sink + local window, token-exact", _sink_window,
         cpu="streaming", key_span=_sink_window_keys, tile_rule="sink_window", decode="sink_window"),
    Mode("streaming_blocks", STREAMING_BLOCKS, ("sink", "window", "round_block"),
         "sink + local window rounded up to whole blocks (the official kernel)", _sink_window_blocks,
         cpu="streaming_blocks", key_span=_sink_window_blocks_keys, tile_rule="sink_window_blocks",
         decode="sink_window"),
    Mode("block_sparse", BLOCK_SPARSE, ("block_mask", "mask_block"), "the kept blocks of a per-head block mask",
         _kept_blocks, cpu="block_sparse", tile_rule="block_list", needs_block_mask=True),
):
    register(_mode)
