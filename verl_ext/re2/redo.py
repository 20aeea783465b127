"""The redo phrase: detection on token ids, truncation right after it, and the three outcome classes.

A Re² policy abandons an attempt by saying a fixed phrase (default "It's better to redo the question.") and
stopping. ``RedoDetector`` finds the phrase in generated token ids (tolerant of apostrophe variants and spacing),
``truncate_after_redo`` cuts the response right after it and appends "." and EOS, and ``classify`` maps a response
to ``correct`` / ``incorrect`` / ``redo``.

Redo rules (``redo_rule(phrase, name)``; see recipes/re2/README.md):
- ``anywhere`` (default): the phrase anywhere in the response (any apostrophe, spacing or case); consistent with the
  truncation, which is what the model is trained to produce, and with the stop string at generation.
- ``strict``: the official reward manager's check, decision for decision: a case-sensitive substring search for the
  phrase after its apostrophe (``s better to redo the question``, so "It is better..." counts and an upper-case or
  double-spaced variant does not) in the slice ``text[-len(text)//3:]`` (the last ceil(n/3) characters), and either
  no ``boxed{...}`` (regex ``boxed\{.*?\}``: a closing brace on the same line) or the substring's last occurrence
  starting more than 40 characters after the last such match starts.
- ``eval``: the official evaluation scripts' check: the phrase anywhere, or no ``boxed`` in the last 100 characters
  (an unfinished or unanswered sample counts as a redo).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional, Sequence

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


REDO_RULES = ("anywhere", "strict", "eval")
RedoRule = Callable[[str], bool]


def official_substring(phrase: str) -> str:
    """What the official code searches for: the phrase without its final period and without what precedes its
    first apostrophe ("It's better to redo the question." -> "s better to redo the question")."""
    core = phrase.strip().rstrip(".").strip()
    for apostrophe in APOSTROPHES:
        if apostrophe in core:
            return core.split(apostrophe, 1)[1]
    return core


_OFFICIAL_BOXED = re.compile(r"boxed\{.*?\}")


def strict_redo(text: str, substring: str) -> bool:
    """The official reward manager's ``check_strict_redo`` (see the module doc), on the official substring."""
    boxes = list(_OFFICIAL_BOXED.finditer(text))
    box = boxes[-1].start() if boxes else None
    return substring in text[-len(text) // 3:] and (box is None or text.rfind(substring) - box > 40)


def redo_rule(phrase: str = DEFAULT_REDO_PHRASE, name: str = "anywhere") -> RedoRule:
    """``text -> bool``: whether a response counts as a redo under the named rule (``REDO_RULES``)."""
    if name == "anywhere":
        pattern = phrase_pattern(phrase)
        return lambda text: pattern.search(text) is not None
    if name == "strict":
        substring = official_substring(phrase)
        return lambda text: strict_redo(text, substring)
    if name == "eval":
        pattern = phrase_pattern(phrase)
        return lambda text: pattern.search(text) is not None or "boxed" not in text[-100:]
    raise ValueError(f"redo rule {name!r} is unknown; use one of {REDO_RULES}.")


def is_redo(text: str, phrase: str = DEFAULT_REDO_PHRASE, rule: str = "anywhere") -> bool:
    """Whether ``text`` counts as a redo under ``rule`` (builds the rule each call; keep ``redo_rule`` for loops)."""
    return redo_rule(phrase, rule)(text)


def classify(text: str, correct: bool, rule: RedoRule) -> str:
    """``redo`` if the response redoes under ``rule``, else ``correct``/``incorrect`` from its graded answer."""
    if rule(text):
        return REDO
    return CORRECT if correct else INCORRECT
