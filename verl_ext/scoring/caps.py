"""Answers certain to be pathological, refused before any parsing: scored 0 and counted, never sent to sympy.

sympy evaluates integer powers and factorials exactly, in C, where no signal can interrupt it: ``9^{9^{9}}`` keeps a
core busy for minutes, and only killing the process ends it. Each cap below refuses a form whose exact value is
astronomically large or whose parse is needlessly deep; answers of ordinary math data are far inside them. What the
caps cannot predict (``\\sum_{n=1}^{300} n^{n}`` looks harmless) is still ended by the per-item timeout.

| cap | limit |
|---|---|
| answer length (the last ``\\boxed{}``'s content) | ``MAX_ANSWER_CHARS`` = 1000 characters |
| bracket nesting (``{``, ``(``, ``[``) | ``MAX_NESTING`` = 16 levels |
| integer power ``a^{b}`` or tower ``a^{b^{c}}`` of literals | its exact value above ``MAX_POWER_DIGITS`` = 10^6 digits |
| factorial ``n!`` of a literal | n above ``MAX_FACTORIAL`` = 10^5 |
"""

from __future__ import annotations

import math
import re
from typing import Optional

MAX_ANSWER_CHARS = 1000
MAX_NESTING = 16
MAX_POWER_DIGITS = 10**6
MAX_FACTORIAL = 10**5

_INT = r"\s*\{?\s*(\d+)\s*\}?\s*"
# A chain of integer literals joined by ^, braces optional: 9^9, 9^{9^{9}}, {10}^{10^{6}}.
_TOWER = re.compile(r"(?<![\d.])\{?(\d+)\}?\s*\^" + _INT + r"(?:\^" + _INT + r")?(?:\^" + _INT + r")?")
_FACTORIAL = re.compile(r"(?<![\d.])(\d+)\s*\}?\s*!")


def _digits_of_tower(numbers: list[int]) -> float:
    """log10 of a^(b^(c...)), evaluated from the top without forming the number (inf when astronomically large)."""
    exponent = 1.0
    for value in reversed(numbers[1:]):
        try:
            exponent = value ** exponent if exponent < 64 else math.inf
        except OverflowError:
            exponent = math.inf
    base = numbers[0]
    if base <= 1:
        return 1.0
    return exponent * math.log10(base)


def _max_nesting(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth = max(0, depth - 1)
    return deepest


def refusal_reason(answer: str) -> Optional[str]:
    """Why ``answer`` is refused before parsing (which cap, with the value), or None."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"answer of {len(answer)} characters > {MAX_ANSWER_CHARS}"
    nesting = _max_nesting(answer)
    if nesting > MAX_NESTING:
        return f"bracket nesting {nesting} > {MAX_NESTING}"
    for match in _TOWER.finditer(answer):
        numbers = [int(g) for g in match.groups() if g is not None]
        digits = _digits_of_tower(numbers)
        if digits > MAX_POWER_DIGITS:
            return f"integer power {match.group(0).strip()} has ~{digits:.3g} digits > {MAX_POWER_DIGITS}"
    for match in _FACTORIAL.finditer(answer):
        if int(match.group(1)) > MAX_FACTORIAL:
            return f"factorial of {match.group(1)} > {MAX_FACTORIAL}"
    return None
