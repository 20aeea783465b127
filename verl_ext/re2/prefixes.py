"""Prefix construction for Re²'s prefix-conditioned rollouts.

From each of a question's n full responses: cut it before its first redo phrase (an abandoned attempt's restart
signal is not a useful prefix), keep its first ``floor(rho * len)`` tokens with rho ~ U[0, rho_max], or nothing with
probability ``p_empty`` (paper: 0; official code: 0.3). The continuation prompt is the chat prompt's token ids
followed by the prefix's token ids: joined at token level, never decoded and re-encoded, so the prefix is exactly
what the policy sampled. The prefix belongs to the prompt and gets no loss.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Optional, Sequence

from verl_ext.re2.redo import RedoDetector


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """rho ~ U[rho_min, rho_max]; an empty prefix with probability p_empty."""

    rho_min: float = 0.0
    rho_max: float = 0.8
    p_empty: float = 0.0

    def __post_init__(self):
        if not 0 <= self.rho_min <= self.rho_max <= 1:
            raise ValueError(f"need 0 <= rho_min={self.rho_min} <= rho_max={self.rho_max} <= 1 (paper: U[0, 0.8]).")
        if not 0 <= self.p_empty <= 1:
            raise ValueError(f"p_empty={self.p_empty} must be a probability (paper 0, official code 0.3).")


def sample_rho(config: PrefixConfig, rng: random.Random) -> float:
    """One truncation ratio: 0 with probability p_empty, else U[rho_min, rho_max]."""
    if config.p_empty > 0 and rng.random() < config.p_empty:
        return 0.0
    return rng.uniform(config.rho_min, config.rho_max)


def cut_before_redo(response_ids: Sequence[int], detector: Optional[RedoDetector]) -> list[int]:
    """The response's tokens before the token that completes its first redo phrase (all of it if none)."""
    response_ids = list(response_ids)
    if detector is None:
        return response_ids
    match = detector.find(response_ids)
    if match is None:
        return response_ids
    # Drop whole tokens back to where the phrase starts: the prefix must not contain any of the phrase.
    keep = match.token_end
    while keep > 0 and detector.find_text(detector.decode(response_ids[:keep])) is not None:
        keep -= 1
    text = detector.decode(response_ids[:keep])
    while keep > 0 and len(text) > match.char_start:
        keep -= 1
        text = detector.decode(response_ids[:keep])
    return response_ids[:keep]


def make_prefix(response_ids: Sequence[int], rho: float, detector: Optional[RedoDetector] = None,
                eos_token_ids: Sequence[int] = ()) -> list[int]:
    """First ``floor(rho * len)`` tokens of the response cut before its redo phrase and stripped of EOS."""
    if not 0 <= rho <= 1:
        raise ValueError(f"rho={rho} must be in [0, 1].")
    body = [t for t in cut_before_redo(response_ids, detector) if t not in set(eos_token_ids)]
    return body[: math.floor(rho * len(body))]


@dataclasses.dataclass(frozen=True)
class PrefixGroup:
    """One prefix of a question: its continuation prompt and ids. ``uid`` identifies the prefix group."""

    question_uid: str
    uid: str
    prefix_index: int
    rho: float
    prefix_ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]

    @property
    def continuation_prompt_ids(self) -> list[int]:
        return list(self.prompt_ids) + list(self.prefix_ids)


def prefix_group_uid(question_uid: str, prefix_index: int) -> str:
    return f"{question_uid}/p{prefix_index}"


def build_prefix_groups(
    question_uid: str,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    config: PrefixConfig,
    rng: random.Random,
    detector: Optional[RedoDetector] = None,
    eos_token_ids: Sequence[int] = (),
) -> list[PrefixGroup]:
    """One prefix group per full response of the question (n responses -> n groups)."""
    if not responses:
        raise ValueError(f"question {question_uid}: no full responses to build prefixes from.")
    groups = []
    for index, response in enumerate(responses):
        rho = sample_rho(config, rng)
        prefix = make_prefix(response, rho, detector, eos_token_ids)
        groups.append(PrefixGroup(question_uid, prefix_group_uid(question_uid, index), index, rho, tuple(prefix),
                                  tuple(prompt_ids)))
    return groups
