"""Verdict parsing: the official strict rule and a lenient diagnostic.

- strict (official, the headline): the first 5 characters of the first 5 lines must contain ``[[A]]`` or
  ``[[B]]``; anything else is no verdict and scores 0.
- lenient: drop ``<think>...</think>`` (and an unterminated ``<think>``), then take the last ``[[A]]``/``[[B]]``
  anywhere in the text.
"""

from __future__ import annotations

import re
from typing import Optional

_VERDICT = re.compile(r"\[\[([AB])\]\]")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def parse_strict(output) -> Optional[str]:
    """'A', 'B' or None (not a string, preamble before the verdict, or no verdict)."""
    if not isinstance(output, str):
        return None
    head = "\n".join(output.split("\n")[:5])[:5]
    if "[[A]]" in head:
        return "A"
    if "[[B]]" in head:
        return "B"
    return None


def parse_lenient(output) -> Optional[str]:
    if not isinstance(output, str):
        return None
    text = _THINK.sub("", output)
    if "<think>" in text:  # reasoning that never closed: nothing after it is a verdict
        text = text.split("<think>", 1)[0]
    found = _VERDICT.findall(text)
    return found[-1] if found else None
