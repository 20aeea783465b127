"""Sampling parameters of the ``hf`` rollout and the per-step token sampler.

``SamplingParams.from_request`` takes the dict verl's agent loop sends to a rollout server (``temperature``,
``top_p``, ``top_k`` with -1 meaning off, ``repetition_penalty``, ``logprobs``, ``max_tokens``/``max_new_tokens``),
plus the vLLM-style keys a recipe may add (``n``, ``stop``, ``stop_token_ids``, ``ignore_eos``, ``seed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import torch


def stable_seed(*parts: object) -> int:
    """A 62-bit seed from ``parts`` (ints, strings), the same in every process and run: Python's ``hash`` is salted
    per process. 62 bits fit every engine's seed field (vLLM's and torch's generators take it)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


# Keys vLLM accepts that change nothing for a transformers sampler here; accepted so recipes written for vLLM run.
_NEUTRAL_KEYS = {"skip_special_tokens", "spaces_between_special_tokens", "detokenize", "include_stop_str_in_output"}


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """One request's sampling settings. ``temperature == 0`` is greedy decoding."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    seed: Optional[int] = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1; the prompt leaves no room to generate.")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy).")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1].")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k={self.top_k} must be -1 (off) or a positive count.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1 means off).")
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1.")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_request(cls, params: dict[str, Any], default_max_tokens: int) -> "SamplingParams":
        """Build from an agent-loop request dict; unknown keys are an error naming them."""
        params = dict(params)
        max_tokens = params.pop("max_tokens", None)
        max_new = params.pop("max_new_tokens", None)
        if max_tokens is not None and max_new is not None and max_tokens != max_new:
            raise ValueError(f"max_tokens={max_tokens} and max_new_tokens={max_new} disagree; pass one of them.")
        limit = max_tokens if max_tokens is not None else max_new
        top_k = params.pop("top_k", -1)
        stop = params.pop("stop", None) or ()
        if isinstance(stop, str):
            stop = (stop,)
        kwargs = dict(
            max_new_tokens=int(limit if limit is not None else default_max_tokens),
            temperature=float(params.pop("temperature", 1.0)),
            top_p=float(params.pop("top_p", 1.0)),
            top_k=-1 if top_k is None or int(top_k) <= 0 else int(top_k),
            repetition_penalty=float(params.pop("repetition_penalty", 1.0)),
            n=int(params.pop("n", 1)),
            stop=tuple(stop),
            stop_token_ids=tuple(int(t) for t in (params.pop("stop_token_ids", None) or ())),
            ignore_eos=bool(params.pop("ignore_eos", False)),
            logprobs=bool(params.pop("logprobs", False)),
            seed=params.pop("seed", None),
        )
        unknown = sorted(set(params) - _NEUTRAL_KEYS)
        if unknown:
            raise ValueError(
                f"hf rollout does not support sampling parameter(s) {unknown}. Supported: max_tokens, max_new_tokens, "
                "temperature, top_p, top_k, repetition_penalty, n, stop, stop_token_ids, ignore_eos, logprobs, seed."
            )
        return cls(**kwargs)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty: divide positive / multiply negative logits of already-seen tokens.

    logits (B, V) float; seen (B, V) bool; penalty (B,) float, 1 = off.
    """
    factor = penalty[:, None].expand_as(logits)
    penalised = torch.where(logits > 0, logits / factor, logits * factor)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask logits outside each row's top-k set and top-p nucleus with -inf.

    logits (B, V) already divided by temperature; top_k (B,) long, -1 = off; top_p (B,) float, 1 = off.
    The most likely token always survives.
    """
    vocab = logits.shape[-1]
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    ranks = torch.arange(vocab, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
    drop = ranks >= k[:, None]
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the mass strictly before it already reaches top_p.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop |= mass_before >= top_p[:, None]
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


def sample_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    generator: Optional[torch.Generator] | Sequence[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; rows with temperature 0 take the argmax.

    logits (B, V) after any repetition penalty. Returns (tokens (B,) long, logprobs (B,) float), the log-probability
    being under the temperature-scaled, unfiltered distribution, which is what verl's actor recomputes
    (``logits / temperature``); greedy rows report the raw distribution. ``generator``: one for the batch, or one per
    row (B of them), so a row's draw depends on its own generator only, not on which rows share its batch.
    """
    logits = logits.float()
    greedy = temperature == 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)
    scaled = logits / scale[:, None]
    filtered = filter_top_k_top_p(scaled, top_k, top_p)
    probs = torch.softmax(filtered, dim=-1)
    if isinstance(generator, (list, tuple)):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for {probs.shape[0]} rows; pass one per row.")
        sampled = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generator)])
    else:
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled)
    logprobs = torch.log_softmax(scaled, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs
