"""Pick-and-check: a task in which Re²'s premise holds by construction, for Re² in miniature
(``experiments/re2_miniature.py``).

Question: "Find x in 3, 5, 8 with x + 4 = 9." Three candidate digits, exactly one right (x + a = c, digits 0-9). The
response picks a candidate, checks it, and answers:

    Try 5: 5 + 4 = 9, right. The answer is \\boxed{5}.
    Try 3: 3 + 4 = 7, not 9. The answer is \\boxed{3}.
    Try 3: 3 + 4 = 7, not 9. It's better to redo the question.

Why Re²'s premise holds here (and is measured before training, ``experiments/re2_miniature.py``'s gate):

- **A first attempt is right about a third of the time**, on every question: the warm start picks a candidate
  uniformly (``warm_start_example``), so there is something to learn from on every question and no question is out
  of reach, unlike guess-and-check's large sums.
- **A bad start is costly**: the pick, in the first tokens, decides the answer (the boxed answer is the pick), so a
  continuation of a prefix that holds a wrong pick cannot be right; only a prefix cut before the pick leaves a fresh
  third. Restarting succeeds about a third of the time; continuing after a wrong start, rarely.
- **A truthful check exposes it**: "3 + 4 = 7, not 9" is addition of two digits, which the warm start teaches well,
  so the verdict is right for nearly every response (``check_truth``) and a redo can be selective.

The warm start ends ``redo_share`` of its examples with the redo phrase, always after a failed check: known, rare.
Rows follow verl's RL dataset schema like ``verl_ext.testing.arithmetic``; answers are graded by math-verify.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Optional

DATA_SOURCE = "verl_ext/pick_check"
PROMPT_TEMPLATE = "Find x in {candidates} with x + {a} = {c}. Put the final answer in \\boxed{{}}."
REDO_PHRASE = "It's better to redo the question."
DIGITS = range(10)
CHOICES = 3
_CHECK = re.compile(r"Try (\d): (\d) \+ (\d) = (\d+), (right|not (\d+))\.")


def candidates(x: int, a: int, seed: int = 0) -> tuple[int, ...]:
    """The three candidates of question (x, a): x and two other digits, in an order fixed by (x, a, seed)."""
    _check_digits(x=x, a=a)
    rng = random.Random(f"{seed}:{x}:{a}")
    picks = [x, *rng.sample([d for d in DIGITS if d != x], CHOICES - 1)]
    rng.shuffle(picks)
    return tuple(picks)


def question(x: int, a: int, seed: int = 0) -> str:
    return PROMPT_TEMPLATE.format(candidates=", ".join(map(str, candidates(x, a, seed))), a=a, c=x + a)


def attempt(x: int, a: int, pick: int, redo: bool = False) -> str:
    """A response picking ``pick``: the check, then the boxed pick (or, with ``redo``, the redo phrase)."""
    _check_digits(x=x, a=a, pick=pick)
    verdict = "right" if pick == x else f"not {x + a}"
    check = f"Try {pick}: {pick} + {a} = {pick + a}, {verdict}."
    return f"{check} {REDO_PHRASE}" if redo else f"{check} The answer is \\boxed{{{pick}}}."


def check_truth(x: int, a: int, response: str) -> Optional[bool]:
    """Whether the response's check is well formed and true (its sum right, its verdict right for its pick); None
    when it has no check."""
    match = _CHECK.search(response)
    if match is None:
        return None
    pick, first, second, total = (int(match.group(i)) for i in range(1, 5))
    says_right = match.group(5) == "right"
    sum_true = first == pick and second == a and total == pick + a
    verdict_true = says_right == (pick == x) and (says_right or int(match.group(6)) == x + a)
    return sum_true and verdict_true


def all_problems() -> list[tuple[int, int]]:
    """Every (x, a): 100 questions."""
    return [(x, a) for x in DIGITS for a in DIGITS]


def to_row(x: int, a: int, split: str, index: int, seed: int = 0) -> dict:
    text = question(x, a, seed)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": text}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(x)},
        "extra_info": {"split": split, "index": index, "question": text, "answer": str(x), "x": x, "a": a},
    }


def split_problems(num_train: int, num_val: int, seed: int = 0) -> tuple[list, list]:
    """Disjoint (x, a) lists for training and held-out validation, shuffled by ``seed``."""
    problems = all_problems()
    if num_train < 1 or num_val < 1 or num_train + num_val > len(problems):
        raise ValueError(f"num_train={num_train} and num_val={num_val} must be >= 1 and add up to at most "
                         f"{len(problems)} (the distinct questions); ask for fewer rows.")
    random.Random(seed).shuffle(problems)
    return problems[:num_train], problems[num_train:num_train + num_val]


def write_parquet(out_dir: str | Path, num_train: int = 64, num_val: int = 36, seed: int = 0) -> tuple[Path, Path]:
    """``train.parquet`` and ``val.parquet`` under ``out_dir``; returns their paths."""
    import pandas as pd

    train, val = split_problems(num_train, num_val, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.parquet", out / "val.parquet"
    for problems, split, path in zip((train, val), ("train", "val"), paths):
        pd.DataFrame([to_row(x, a, split, i, seed) for i, (x, a) in enumerate(problems)]).to_parquet(path)
    return paths


def warm_start_example(rng: random.Random, redo_share: float, seed: int = 0) -> tuple[str, str]:
    """(question, response) for one warm-start example: a question, a candidate picked uniformly (right one time in
    three), a true check; with probability ``redo_share`` when the pick fails its check, the redo phrase instead of
    the boxed pick."""
    if not 0 <= redo_share <= 1:
        raise ValueError(f"redo_share={redo_share} must be a probability.")
    x, a = rng.choice(all_problems())
    pick = rng.choice(candidates(x, a, seed))
    redo = pick != x and rng.random() < redo_share
    return question(x, a, seed), attempt(x, a, pick, redo)


def corpus(seed: int = 0) -> list[str]:
    """Questions and responses of every kind: the text a tiny tokenizer for this task is trained on."""
    texts = []
    for x, a in all_problems():
        texts.append(question(x, a, seed))
        texts += [attempt(x, a, p) for p in candidates(x, a, seed)] + [attempt(x, a, (x + 1) % 10, redo=True)]
    return texts


def _check_digits(**values: int) -> None:
    bad = {k: v for k, v in values.items() if v not in DIGITS}
    if bad:
        raise ValueError(f"{bad}: x, a and the pick are single digits (0-9).")
