"""``ElasticAttentionConfig``: every Elastic Attention setting, validated at construction (a leaf of this package: it
imports no model code, only the kernels' mode registry, so configs, checks and the vLLM plugin read it cheaply).

A router decides, per sequence and KV head, between two attention modes; the **pattern** names the pair, in the
paper's words (retrieval mode for z = 1, sparse mode for z = 0):

| pattern | z = 1 (retrieval heads) | z = 0 (sparse heads) |
|---|---|---|
| ``fa-ssa`` (default, the paper's main setting) | full attention | streaming: sink + local window |
| ``fa-xa`` | full attention | XAttention block-sparse |
| ``xa-ssa`` (the paper's fastest) | XAttention block-sparse | streaming |

Each of the paper's modes runs as a mode of the kernels' registry (``verl_ext.kernels.elastic_attention.modes``:
codes, visibility, block-mask need, decode rule): full as ``full``, streaming as ``streaming`` (``streaming_blocks``
with ``block_size``: ``modes.streaming``), XAttention as ``block_sparse`` reading XAttention's block masks.
``sparse_kernel_mode`` names any registered mode for the sparse heads instead (a mode beyond the paper's; unknown
names are refused with the known ones). ``kernel_modes`` is the one reading of the pair; everything downstream asks
the registry's ``Mode`` (``dense``, ``needs_block_mask``, ``decode``, ``visible``), never a mode's name.

Each mode's settings are its own: streaming's ``sink``, ``window`` and ``block_size`` (None: token-exact; an int:
the official kernel's block-rounded pattern), XAttention's ``xattention`` (stride, block, threshold).

``from_options`` builds a config from a mapping (verl's ``override_config`` keys without their ``elastic_`` prefix,
the ``hf`` rollout's engine kwargs, the router-training ``attention`` block). Where verl carries the settings as HF
config attributes the form is flat (``xattention_stride``; ``flat_options``); elsewhere ``xattention`` may be a
nested mapping. The keys of earlier releases (``sparse_mode``, ``xattn_stride`` / ``xattn_block`` /
``xattn_threshold``) are mapped with a DeprecationWarning.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Optional

from verl_ext.kernels.elastic_attention import modes as M

SINK, WINDOW = 128, 2048
PATTERNS = {"fa-ssa": ("full", "streaming"), "fa-xa": ("full", "xattention"), "xa-ssa": ("xattention", "streaming")}
# The paper's mode names -> the registry mode each runs as, given block_size (streaming's block rounding).
PAPER_MODES: dict[str, Callable[[Optional[int]], M.Mode]] = {
    "full": lambda block_size: M.get("full"),
    "streaming": M.streaming,
    "xattention": lambda block_size: M.get("block_sparse"),
}
POOL_MODES = ("boundary", "boundary_concat", "segment")
BACKENDS = ("auto", "triton", "reference")


@dataclasses.dataclass(frozen=True)
class XAttentionSettings:
    """XAttention's block selection: antidiagonal scoring every ``stride`` tokens, ``block``-token blocks kept until
    their share of each query block's mass reaches ``threshold``. Paper: 16 / 64 / 0.9 (the released evaluation
    file: threshold 0.8, block 128)."""

    stride: int = 16
    block: int = 64
    threshold: float = 0.9

    def __post_init__(self):
        if self.stride < 1 or self.block < 16 or self.block % self.stride or self.block % 16:
            raise ValueError(f"xattention.block={self.block} must be a multiple of 16 and of stride={self.stride} "
                             "(>= 1); the paper uses stride 16, block 64.")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"xattention.threshold={self.threshold} must be in (0, 1]; the paper uses 0.9.")


@dataclasses.dataclass(frozen=True)
class ElasticAttentionConfig:
    """``force``: None (route), "full" or "sparse" (every head in the pattern's retrieval / sparse mode).
    ``decode``: "dense" (the paper) or "sparse_kv" (each head keeps its mode's decode rule while decoding, streaming
    heads their sink + window; beyond the paper). ``backend``: "auto" (the Triton kernels on CUDA, the PyTorch references elsewhere), "triton" (also on CPU
    under TRITON_INTERPRET=1: the tests) or "reference"; ``ops.resolve_backend`` is the one reading of it.
    ``pool_mode``: "boundary" (the paper), "boundary_concat" (the released inference code), "segment" (the released
    training code); see ``router.boundary_pool``. ``sparse_kernel_mode``: None (the pattern's sparse mode) or the
    name of a registered kernel mode the sparse heads run instead (it reads ``sink`` / ``window`` / ``block_size``
    as its settings)."""

    pattern: str = "fa-ssa"
    sink: int = SINK
    window: int = WINDOW
    block_size: Optional[int] = None
    xattention: XAttentionSettings = XAttentionSettings()
    pool_budget: int = 100
    pool_mode: str = "boundary"
    decode: str = "dense"
    force: Optional[str] = None
    hidden_mult: int = 4
    backend: str = "auto"
    sparse_kernel_mode: Optional[str] = None

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern={self.pattern!r} must be one of {sorted(PATTERNS)} (retrieval mode - sparse "
                             "mode, the paper's names).")
        if isinstance(self.xattention, Mapping):
            object.__setattr__(self, "xattention", XAttentionSettings(**self.xattention))
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} must be one of {BACKENDS}.")
        if self.decode not in ("dense", "sparse_kv"):
            raise ValueError(f"decode={self.decode!r} must be 'dense' (paper) or 'sparse_kv'.")
        if self.sparse_kernel_mode is not None:
            try:
                M.get(str(self.sparse_kernel_mode))  # a name, never a code: codes are the tables' business
            except M.UnknownModeError as err:
                raise ValueError(f"sparse_kernel_mode={self.sparse_kernel_mode!r}: {err} Register the mode in "
                                 "verl_ext.kernels.elastic_attention.modes, or leave it None (the pattern's)."
                                 ) from None
        if self.decode == "sparse_kv" and self.kernel_modes[1].decode == "dense":
            raise ValueError(f"decode='sparse_kv' keeps the sparse heads' decode rule while decoding; the sparse mode "
                             f"{self.sparse_mode!r} of pattern={self.pattern!r} decodes densely. Use decode='dense' "
                             "(the paper) or a '-ssa' pattern.")
        if self.force not in (None, "full", "sparse"):
            raise ValueError(f"force={self.force!r} must be None, 'full' or 'sparse'.")
        if self.pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode={self.pool_mode!r} must be one of {POOL_MODES}: boundary (paper), "
                             "boundary_concat (released inference code), segment (released training code).")
        if self.sink < 0 or self.window < 1 or self.pool_budget < 1 or self.hidden_mult < 1:
            raise ValueError("sink >= 0, window >= 1, pool_budget >= 1 and hidden_mult >= 1 are required.")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be None (token-exact streaming) or >= 1.")

    @property
    def retrieval_mode(self) -> str:
        return PATTERNS[self.pattern][0]

    @property
    def sparse_mode(self) -> str:
        """The sparse heads' mode: the pattern's (the paper's name) or ``sparse_kernel_mode`` (a registry name)."""
        return self.sparse_kernel_mode or PATTERNS[self.pattern][1]

    @property
    def kernel_modes(self) -> tuple[M.Mode, M.Mode]:
        """(retrieval, sparse): the registry modes the two kinds of heads run."""
        retrieval = PAPER_MODES[self.retrieval_mode](self.block_size)
        if self.sparse_kernel_mode is not None:
            return retrieval, M.get(str(self.sparse_kernel_mode))
        return retrieval, PAPER_MODES[self.sparse_mode](self.block_size)

    @property
    def uses_xattention(self) -> bool:
        """Does a mode of the pair read block masks (XAttention estimates them)."""
        return any(mode.needs_block_mask for mode in self.kernel_modes)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def flat_keys(cls) -> list[str]:
        """The option names of the flat form: every field, XAttention's settings as ``xattention_<setting>``."""
        return [f for f in cls.fields() if f != "xattention"] + [f"xattention_{f}" for f in XATTENTION_FIELDS]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], source: str = "elastic attention options"
                     ) -> "ElasticAttentionConfig":
        """A config from a mapping of options: the flat form (``xattention_stride``, ...), or XAttention's settings
        nested under ``xattention``; the keys of earlier releases are mapped with a DeprecationWarning. ``source``
        names where the keys were set, for errors and warnings."""
        values = dict(options)
        xattention = dict(values.pop("xattention", None) or {})
        if "sparse_mode" in values:
            legacy = values.pop("sparse_mode")
            mapped = {"streaming": "fa-ssa", "xattention": "fa-xa"}.get(legacy)
            if mapped is None:
                raise ValueError(f"{source}: sparse_mode={legacy!r} (deprecated) must be 'streaming' or 'xattention'; "
                                 f"use pattern= one of {sorted(PATTERNS)}.")
            warnings.warn(f"{source}: sparse_mode={legacy!r} is deprecated; use pattern={mapped!r}.",
                          DeprecationWarning, stacklevel=2)
            values.setdefault("pattern", mapped)
        for name in XATTENTION_FIELDS:
            if f"xattn_{name}" in values:
                warnings.warn(f"{source}: xattn_{name} is deprecated; use xattention_{name} (or xattention.{name}).",
                              DeprecationWarning, stacklevel=2)
                xattention.setdefault(name, values.pop(f"xattn_{name}"))
            if f"xattention_{name}" in values:
                xattention[name] = values.pop(f"xattention_{name}")
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(f"{source}: unknown Elastic Attention option(s) {unknown}; known: {cls.flat_keys()}.")
        try:
            return cls(**values, xattention=XAttentionSettings(**xattention))
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from err

    def flat_options(self) -> dict:
        """The flat form ``from_options`` reads back: what verl's ``override_config`` and vLLM's ``hf_overrides``
        carry as ``elastic_<option>`` keys (verl sets each key as one HF config attribute, so no nesting)."""
        return {**{f: getattr(self, f) for f in self.fields() if f != "xattention"},
                **{f"xattention_{f}": getattr(self.xattention, f) for f in XATTENTION_FIELDS}}


LEGACY_OPTIONS = ("sparse_mode", "xattn_stride", "xattn_block", "xattn_threshold")
XATTENTION_FIELDS = ("stride", "block", "threshold")
