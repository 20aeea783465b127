"""Guess-and-check: a task whose first step decides its answer, for Re² in miniature
(``benchmarks/re2_miniature.py``).

Question: "Find x with x + a = c." (x, a single digits, c = x + a). The response guesses x, checks the guess, and
answers:

    Try 4: 4 + 3 = 7, not 9. The answer is \\boxed{4}.

The guess is the early step that decides the end: after a wrong guess the response is doomed, because the answer
boxed is the guess. The check (``4 + 3 = 7, not 9`` or ``6 + 3 = 9, right``) makes the doom visible a few tokens
later, as a reasoning model's "wait, that is not right"; and checking (adding) is easier than solving
(subtracting), as verifying a step is easier than finding it. Abandoning a failed attempt and starting afresh pays:

    Try 4: 4 + 3 = 7, not 9. It's better to redo the question.

The warm start (``warm_start_example``) knows some answers and not others: on questions whose c is a single digit
("small", 55 of the 100) its guess is right ``known_share`` of the time, elsewhere it guesses a digit at random.
The mixture is right about a third of the time; a tiny model after 1,000 warm-start steps is right about one
sample in eight (it half learns the half-known subtraction): sometimes, not always. GRPO can sharpen what it half
knows but has nothing to sharpen on the large sums. It shows the redo ending rarely (``redo_share`` of its examples,
always after a failed check, as a writer abandons a failed attempt): known, never a habit.

Rows follow verl's RL dataset schema like ``verl_ext.testing.arithmetic``; answers are graded by math-verify.
"""

from __future__ import annotations

import random
from pathlib import Path

DATA_SOURCE = "verl_ext/guess_check"
PROMPT_TEMPLATE = "Find x with x + {a} = {c}. Put the final answer in \\boxed{{}}."
REDO_PHRASE = "It's better to redo the question."
DIGITS = range(10)


def question(x: int, a: int) -> str:
    """The question whose answer is ``x``: 'Find x with x + a = c.' (c = x + a)."""
    _check_digits(x=x, a=a)
    return PROMPT_TEMPLATE.format(a=a, c=x + a)


def attempt(x: int, a: int, guess: int, redo: bool = False) -> str:
    """A response guessing ``guess``: the check, then the boxed guess (or, with ``redo``, the redo phrase)."""
    _check_digits(x=x, a=a, guess=guess)
    verdict = "right" if guess == x else f"not {x + a}"
    check = f"Try {guess}: {guess} + {a} = {guess + a}, {verdict}."
    return f"{check} {REDO_PHRASE}" if redo else f"{check} The answer is \\boxed{{{guess}}}."


def all_problems() -> list[tuple[int, int]]:
    """Every (x, a): 100 questions."""
    return [(x, a) for x in DIGITS for a in DIGITS]


def to_row(x: int, a: int, split: str, index: int) -> dict:
    text = question(x, a)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": text}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(x)},
        "extra_info": {"split": split, "index": index, "question": text, "answer": str(x)},
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
        pd.DataFrame([to_row(x, a, split, i) for i, (x, a) in enumerate(problems)]).to_parquet(path)
    return paths


def is_small(x: int, a: int) -> bool:
    """Questions whose sum c is a single digit: the ones the warm start half knows."""
    return x + a < 10


def warm_start_example(rng: random.Random, redo_share: float, known_share: float = 0.5,
                       problems=None) -> tuple[str, str]:
    """(question, response) for one warm-start example: a question; a guess, right with probability
    ``known_share`` on small sums and otherwise a digit drawn uniformly (right one time in ten); and, with
    probability ``redo_share`` when the guess fails its check, the redo phrase instead of the boxed guess."""
    if not (0 <= redo_share <= 1 and 0 <= known_share <= 1):
        raise ValueError(f"redo_share={redo_share} and known_share={known_share} must be probabilities.")
    x, a = rng.choice(problems or all_problems())
    known = is_small(x, a) and rng.random() < known_share
    guess = x if known else rng.choice(DIGITS)
    redo = guess != x and rng.random() < redo_share
    return question(x, a), attempt(x, a, guess, redo)


def corpus() -> list[str]:
    """Questions and responses of every kind: the text a tiny tokenizer for this task is trained on."""
    texts = []
    for x, a in all_problems():
        texts.append(question(x, a))
        texts += [attempt(x, a, g) for g in DIGITS] + [attempt(x, a, (x + 1) % 10, redo=True)]
    return texts


def _check_digits(**values: int) -> None:
    bad = {k: v for k, v in values.items() if v not in DIGITS}
    if bad:
        raise ValueError(f"{bad}: x, a and the guess are single digits (0-9).")
