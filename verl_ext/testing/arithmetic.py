"""A small built-in arithmetic task in verl's RL parquet format, for CPU smoke runs of every recipe.

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model`` (``style``, ``ground_truth``), ``extra_info`` (``split``, ``index``, ``question``, ``answer``).
The target response ends in ``\\boxed{N}`` so the math-verify grader scores it.
"""

from __future__ import annotations

import random
from pathlib import Path

DATA_SOURCE = "verl_ext/arithmetic"
PROMPT_TEMPLATE = "Compute {a} {op} {b}. Put the final answer in \\boxed{{}}."


def make_problem(a: int, op: str, b: int) -> tuple[str, str]:
    """(question, answer) for ``a op b`` with op in + - *."""
    if op not in "+-*":
        raise ValueError(f"op={op!r} must be one of '+', '-', '*'.")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return PROMPT_TEMPLATE.format(a=a, op=op, b=b), str(value)


def reference_response(a: int, op: str, b: int) -> str:
    """The response the warm start teaches: a one-line computation and a boxed answer."""
    _, answer = make_problem(a, op, b)
    return f"{a} {op} {b} = {answer}. The answer is \\boxed{{{answer}}}."


def unboxed_response(a: int, op: str, b: int) -> str:
    """The same computation without the boxed answer: the grader finds no answer, so it scores 0. The warm start
    mixes it in, leaving a policy that knows the sums but boxes them only some of the time: what RL fixes first."""
    _, answer = make_problem(a, op, b)
    return f"{a} {op} {b} = {answer}."


def redo_response(a: int, op: str, b: int) -> str:
    """An abandoned attempt: a wrong intermediate result, then Re²'s redo phrase."""
    _, answer = make_problem(a, op, b)
    return f"{a} {op} {b} = {int(answer) + 1}? It's better to redo the question."


def all_problems(max_operand: int = 9, ops: str = "+-") -> list[tuple[int, str, int]]:
    return [(a, op, b) for op in ops for a in range(max_operand + 1) for b in range(max_operand + 1)]


def to_row(a: int, op: str, b: int, split: str, index: int) -> dict:
    question, answer = make_problem(a, op, b)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": question}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "question": question, "answer": answer},
    }


def build_rows(num_train: int, num_val: int, seed: int = 0, max_operand: int = 9, ops: str = "+-") -> tuple[list, list]:
    """Disjoint train/val rows drawn from all ``a op b`` with operands in [0, max_operand]."""
    problems = all_problems(max_operand, ops)
    if num_train + num_val > len(problems):
        raise ValueError(
            f"num_train + num_val = {num_train + num_val} exceeds the {len(problems)} distinct problems; "
            "raise max_operand or ask for fewer rows."
        )
    random.Random(seed).shuffle(problems)
    train = [to_row(*p, split="train", index=i) for i, p in enumerate(problems[:num_train])]
    val = [to_row(*p, split="val", index=i) for i, p in enumerate(problems[num_train : num_train + num_val])]
    return train, val


def write_parquet(out_dir: str | Path, num_train: int = 64, num_val: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir``; returns their paths."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, val = build_rows(num_train, num_val, seed)
    paths = out / "train.parquet", out / "val.parquet"
    for rows, path in zip((train, val), paths):
        pd.DataFrame(rows).to_parquet(path)
    return paths


def corpus(max_operand: int = 9, ops: str = "+-*") -> list[str]:
    """Every question and reference response: the text the tiny tokenizer is trained on."""
    texts = []
    for a, op, b in all_problems(max_operand, ops):
        texts.append(make_problem(a, op, b)[0])
        texts.append(reference_response(a, op, b))
        texts.append(redo_response(a, op, b))
    return texts
