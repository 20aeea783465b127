"""The redo phrase: detection on token ids, truncation right after it, and the three outcome classes.

A Re² policy abandons an attempt by saying a fixed phrase (default "It's better to redo the question.") and
stopping. ``RedoDetector`` finds the phrase in generated token ids (tolerant of apostrophe variants and spacing),
``truncate_after_redo`` cuts the response right after it and appends "." and EOS, and ``classify`` maps a response
to ``correct`` / ``incorrect`` / ``redo``.

Two redo rules exist (see recipes/re2/README.md):
- ``anywhere`` (default): the phrase anywhere in the response; consistent with the truncation, which is what the
  model is trained to produce, and with the stop string at generation.
- ``strict`` (the official reward manager): the phrase starts in the last third of the response text, and either
  there is no ``boxed{`` or the last phrase starts more than 40 characters after the last ``boxed{``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

DEFAULT_REDO_PHRASE = "It's better to redo the question."
APOSTROPHES = "'’‘`ʼ′"

CORRECT, INCORRECT, REDO = "correct", "incorrect", "redo"
OUTCOMES = (CORRECT, INCORRECT, REDO)


def phrase_pattern(phrase: str) -> re.Pattern:
    """Regex for ``phrase`` without its final period: any apostrophe variant, any run of whitespace, any case."""
    core = phrase.strip().rstrip(".").strip()
    if not core:
        raise ValueError(f"redo phrase {phrase!r} is empty; set re2.redo_phrase to a sentence.")
    parts = []
    for char in core:
        if char in APOSTROPHES:
            parts.append(rf"\s?[{re.escape(APOSTROPHES)}]\s?")
        elif char.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts).replace(r"\s+\s+", r"\s+"), re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class RedoMatch:
    """``token_end``: number of tokens whose decoding first contains the phrase; ``char_start``/``char_end``: the
    phrase in the decoded text of those tokens."""

    token_end: int
    char_start: int
    char_end: int


class RedoDetector:
    """Finds the redo phrase in token ids with one tokenizer (binary search over decoded prefixes: O(log n) decodes)."""

    def __init__(self, tokenizer, phrase: str = DEFAULT_REDO_PHRASE):
        self.tokenizer = tokenizer
        self.phrase = phrase
        self.pattern = phrase_pattern(phrase)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def find_text(self, text: str) -> Optional[re.Match]:
        return self.pattern.search(text)

    def find(self, token_ids: Sequence[int]) -> Optional[RedoMatch]:
        """The first occurrence of the phrase, or None."""
        token_ids = list(token_ids)
        if not token_ids or self.find_text(self.decode(token_ids)) is None:
            return None
        lo, hi = 1, len(token_ids)  # smallest k whose decoded prefix contains the phrase
        while lo < hi:
            mid = (lo + hi) // 2
            if self.find_text(self.decode(token_ids[:mid])):
                hi = mid
            else:
                lo = mid + 1
        match = self.find_text(self.decode(token_ids[:lo]))
        return RedoMatch(token_end=lo, char_start=match.start(), char_end=match.end())

    def truncate(self, token_ids: Sequence[int], eos_token_id: int) -> list[int]:
        """``truncate_after_redo`` with this detector."""
        return truncate_after_redo(token_ids, self, eos_token_id)


def truncate_after_redo(token_ids: Sequence[int], detector: RedoDetector, eos_token_id: int) -> list[int]:
    """Cut a response right after its first redo phrase, then "." and EOS; unchanged if there is no phrase.

    When the token that completes the phrase also carries text after it, only that last token is re-encoded (up to
    the end of the phrase); every earlier token is kept as sampled. Idempotent; never makes a response longer than
    the phrase + "." + EOS.
    """
    token_ids = list(token_ids)
    match = detector.find(token_ids)
    if match is None:
        return token_ids
    kept = token_ids[: match.token_end]
    text = detector.decode(kept)
    if text[match.char_end :] == "." and detector.decode(kept + [eos_token_id]) == text:
        tail: list[int] = []
    else:
        # Rebuild the last token: the text it contributes up to the end of the phrase, then the period.
        head = kept[:-1]
        head_text = detector.decode(head)
        if not text.startswith(head_text):
            head, head_text = [], ""
        rest = text[len(head_text) : match.char_end] + "."
        kept = head
        tail = detector.tokenizer.encode(rest, add_special_tokens=False)
    result = kept + tail
    if not result or result[-1] != eos_token_id:
        result.append(eos_token_id)
    return result


def is_redo(text: str, detector_or_pattern, rule: str = "anywhere") -> bool:
    """Whether ``text`` counts as a redo under ``rule`` (``anywhere`` or the official ``strict``)."""
    pattern = detector_or_pattern.pattern if isinstance(detector_or_pattern, RedoDetector) else detector_or_pattern
    matches = list(pattern.finditer(text))
    if not matches:
        return False
    if rule == "anywhere":
        return True
    if rule != "strict":
        raise ValueError(f"redo rule {rule!r} is unknown; use 'anywhere' or 'strict'.")
    if not any(m.start() >= len(text) * 2 / 3 for m in matches):
        return False  # official: the phrase must start in the last third of the response string
    last_boxed = text.rfind("boxed{")
    return last_boxed < 0 or matches[-1].start() > last_boxed + 40


def classify(text: str, correct: bool, pattern, rule: str = "anywhere") -> str:
    """``redo`` if the response redoes under ``rule``, else ``correct``/``incorrect`` from its graded answer."""
    if is_redo(text, pattern, rule):
        return REDO
    return CORRECT if correct else INCORRECT
