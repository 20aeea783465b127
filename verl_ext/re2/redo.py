"""The redo specification: the phrase, the texts that count as saying it, where generation stops, and the rule.

A Re² policy abandons an attempt by saying a fixed phrase (default "It's better to redo the question.") and
stopping. One ``RedoSpec`` says everything about it, and every reader takes it from the ``re2`` block of the trainer
config: the rollout's stop strings, the detector that cuts a response after the phrase, the training reward, the
validation reward and the evaluation commands (``python -m verl_ext.re2.eval --config``, ``verl_ext.re2.dump``).

**Markers.** A response says the phrase when its text contains one of the spec's *markers*, literal and
case-sensitive: by default the phrase after its first apostrophe without the final period (``s better to redo the
question``), the official code's substring, so "It's", "It’s", "Its" and "It is better to redo the question" all
count, and "IT'S BETTER..." or a doubled space do not. The rollout stops on exactly the markers (stop strings are
literal substrings of the generated text in vLLM and in the hf rollout alike), so a response is cut by the stop
string if and only if the detector finds the phrase in it: nothing stops without being counted as a redo, and
nothing counted as a redo runs on. ``variants`` replaces the default marker list (e.g. to add a second phrasing).

Redo rules (``rule``; see recipes/re2/README.md), where in the text a marker counts:
- ``anywhere`` (default): a marker anywhere in the response; consistent with the truncation, which is what the
  model is trained to produce, and with the stop strings at generation.
- ``strict``: the official reward manager's check, decision for decision: a marker in the slice
  ``text[-len(text)//3:]`` (the last ceil(n/3) characters), and either no ``boxed{...}`` (regex ``boxed\{.*?\}``:
  a closing brace on the same line) or the marker's last occurrence starting more than 40 characters after the last
  such match starts.
- ``eval``: the official evaluation scripts' check: a marker anywhere, or no ``boxed`` in the last 100 characters
  (an unfinished or unanswered sample counts as a redo).

``RedoDetector`` finds the phrase in generated token ids with one tokenizer, ``truncate_after_redo`` cuts a response
right after it and appends "." and EOS, and ``classify`` maps a response to ``correct`` / ``incorrect`` / ``redo``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional, Sequence

DEFAULT_REDO_PHRASE = "It's better to redo the question."
APOSTROPHES = "'’‘`ʼ′"

CORRECT, INCORRECT, REDO = "correct", "incorrect", "redo"
OUTCOMES = (CORRECT, INCORRECT, REDO)
REDO_RULES = ("anywhere", "strict", "eval")
RedoRule = Callable[[str], bool]


def official_substring(phrase: str) -> str:
    """What the official code searches for: the phrase without its final period and without what precedes its
    first apostrophe ("It's better to redo the question." -> "s better to redo the question")."""
    core = phrase.strip().rstrip(".").strip()
    if not core:
        raise ValueError(f"redo phrase {phrase!r} is empty; set re2.redo_phrase to a sentence.")
    for apostrophe in APOSTROPHES:
        if apostrophe in core:
            return core.split(apostrophe, 1)[1]
    return core


@dataclasses.dataclass(frozen=True)
class RedoSpec:
    """The one redo specification (the ``re2`` block's ``redo_phrase``, ``redo_variants`` and ``redo_rule``)."""

    phrase: str = DEFAULT_REDO_PHRASE
    variants: tuple[str, ...] = ()  # literal markers; empty: the phrase's official substring
    rule: str = "anywhere"

    def __post_init__(self):
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.rule not in REDO_RULES:
            raise ValueError(f"redo rule {self.rule!r} is unknown; use one of {REDO_RULES}.")
        if any(not str(v).strip() for v in self.markers):
            raise ValueError(f"redo variants {list(self.variants)} include an empty marker; list non-empty texts.")

    @property
    def markers(self) -> tuple[str, ...]:
        """The literal texts that count as the phrase (and stop generation)."""
        return self.variants or (official_substring(self.phrase),)

    @property
    def stop_strings(self) -> list[str]:
        return list(self.markers)

    @property
    def pattern(self) -> re.Pattern:
        return re.compile("|".join(re.escape(m) for m in sorted(self.markers, key=len, reverse=True)))

    def find(self, text: str) -> Optional[re.Match]:
        """The first marker in ``text`` (the longest at a tie), or None."""
        return self.pattern.search(text)

    def is_redo(self, text: str) -> bool:
        """Whether ``text`` counts as a redo under this spec's rule."""
        return _RULES[self.rule](self, text)

    def with_rule(self, rule: str) -> "RedoSpec":
        return dataclasses.replace(self, rule=rule)


def _anywhere(spec: RedoSpec, text: str) -> bool:
    return spec.find(text) is not None


_OFFICIAL_BOXED = re.compile(r"boxed\{.*?\}")


def _strict(spec: RedoSpec, text: str) -> bool:
    boxes = list(_OFFICIAL_BOXED.finditer(text))
    box = boxes[-1].start() if boxes else None
    tail = text[-len(text) // 3:]
    last = max(text.rfind(m) for m in spec.markers)
    return any(m in tail for m in spec.markers) and (box is None or last - box > 40)


def _eval(spec: RedoSpec, text: str) -> bool:
    return spec.find(text) is not None or "boxed" not in text[-100:]


_RULES = {"anywhere": _anywhere, "strict": _strict, "eval": _eval}


def redo_rule(phrase: str = DEFAULT_REDO_PHRASE, name: str = "anywhere") -> RedoRule:
    """``text -> bool``: whether a response counts as a redo under the named rule (``REDO_RULES``), with the
    phrase's default marker (a ``RedoSpec`` takes variants)."""
    return RedoSpec(phrase, rule=name).is_redo


def is_redo(text: str, phrase: str = DEFAULT_REDO_PHRASE, rule: str = "anywhere") -> bool:
    """Whether ``text`` counts as a redo under ``rule`` (builds the spec each call; keep one for loops)."""
    return redo_rule(phrase, rule)(text)


@dataclasses.dataclass(frozen=True)
class RedoMatch:
    """``token_end``: number of tokens whose decoding first contains the phrase; ``char_start``/``char_end``: the
    phrase in the decoded text of those tokens (from the start of the word its marker begins in)."""

    token_end: int
    char_start: int
    char_end: int


class RedoDetector:
    """Finds the redo phrase in token ids with one tokenizer (binary search over decoded prefixes: O(log n) decodes).
    ``spec`` is a ``RedoSpec`` (or a phrase, with its default marker)."""

    def __init__(self, tokenizer, spec: RedoSpec | str = DEFAULT_REDO_PHRASE):
        self.tokenizer = tokenizer
        self.spec = spec if isinstance(spec, RedoSpec) else RedoSpec(spec)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def find_text(self, text: str) -> Optional[re.Match]:
        return self.spec.find(text)

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
        text = self.decode(token_ids[:lo])
        match = self.find_text(text)
        return RedoMatch(token_end=lo, char_start=phrase_start(text, match.start()), char_end=match.end())

    def truncate(self, token_ids: Sequence[int], eos_token_id: int) -> list[int]:
        """``truncate_after_redo`` with this detector."""
        return truncate_after_redo(token_ids, self, eos_token_id)


def phrase_start(text: str, marker_start: int) -> int:
    """Where the sentence a marker belongs to starts: the start of the word the marker begins in ("It's better"
    -> at "I"), so a prefix cut before the phrase holds none of it."""
    start = marker_start
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start


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


def classify(text: str, correct: bool, rule: RedoRule) -> str:
    """``redo`` if the response redoes under ``rule``, else ``correct``/``incorrect`` from its graded answer."""
    if rule(text):
        return REDO
    return CORRECT if correct else INCORRECT
