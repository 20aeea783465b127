"""A short supervised warm start of a tiny model on the arithmetic task, so RL on it has a signal.

A random-weight model never produces ``\\boxed{N}``, so every reward is 0 and GRPO advantages vanish. A minute of
teacher-forced training on reference responses (loss on response tokens only) teaches the format and some of the
sums, which makes rewards vary within a group.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from verl_ext.testing import arithmetic


def _encode(tokenizer, a: int, op: str, b: int, redo: bool = False) -> tuple[list[int], int]:
    question, _ = arithmetic.make_problem(a, op, b)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response = arithmetic.redo_response(a, op, b) if redo else arithmetic.reference_response(a, op, b)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return prompt_ids + response_ids + [tokenizer.eos_token_id], len(prompt_ids)


def supervised_step(model, optimizer, batch: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """One teacher-forced step on (token ids, prompt length) pairs; loss only on the tokens after the prompt."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention[row, : len(ids)] = 1
    loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def warm_start(
    model_dir: str | Path,
    max_seconds: float = 45.0,
    max_steps: int = 400,
    batch_size: int = 32,
    lr: float = 3e-3,
    holdout_fraction: float = 0.3,
    redo_fraction: float = 0.3,
    seed: int = 0,
) -> dict:
    """Train the model in ``model_dir`` in place; returns ``{"steps", "seconds", "first_loss", "last_loss"}``.

    Trains on a fixed subset of problems (``1 - holdout_fraction``) so held-out problems stay only partly solved.
    For a ``redo_fraction`` of the problems a second example abandons a wrong attempt with Re²'s redo phrase instead of answering, so a
    Re² run on the model sees all three outcomes (correct, incorrect, redo).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    problems = arithmetic.all_problems(ops="+-")
    rng.shuffle(problems)
    train = problems[: int(len(problems) * (1 - holdout_fraction))]
    examples = [_encode(tokenizer, *p) for p in train]
    examples += [_encode(tokenizer, *p, redo=True) for p in train if rng.random() < redo_fraction]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start = time.perf_counter()
    first_loss = last_loss = float("nan")
    step = 0
    while step < max_steps and time.perf_counter() - start < max_seconds:
        batch = rng.sample(examples, min(batch_size, len(examples)))
        loss = supervised_step(model, optimizer, batch, tokenizer.pad_token_id)
        last_loss = float(loss.detach())
        if step == 0:
            first_loss = last_loss
        step += 1
    model.eval()
    model.save_pretrained(model_dir)
    return {"steps": step, "seconds": round(time.perf_counter() - start, 2), "first_loss": first_loss, "last_loss": last_loss}


def warm_start_judge(model_dir: str | Path, prompts: list[list[int]], max_steps: int = 60, batch_size: int = 4,
                     lr: float = 3e-3, seed: int = 0) -> dict:
    """Teach a tiny model the judge output format: the verdict "[[A]]" or "[[B]]" first (letters drawn at random).

    ``prompts`` are chat-templated judge prompts as token ids. The model learns the format, not the judgement, so a
    judge run on it has parsable verdicts near 50% accuracy.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not prompts:
        raise ValueError("warm_start_judge needs at least one judge prompt.")
    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    verdicts = {v: tokenizer(v + " Agent " + v[2] + " is better.", add_special_tokens=False)["input_ids"]
                for v in ("[[A]]", "[[B]]")}
    losses = []
    for _ in range(max_steps):
        batch = [(p, verdicts[rng.choice(["[[A]]", "[[B]]"])] + [tokenizer.eos_token_id])
                 for p in rng.sample(prompts, min(batch_size, len(prompts)))]
        loss = supervised_step(model, optimizer, [(p + v, len(p)) for p, v in batch], tokenizer.pad_token_id)
        losses.append(float(loss.detach()))
    model.eval()
    model.save_pretrained(model_dir)
    return {"steps": max_steps, "first_loss": losses[0], "last_loss": losses[-1]}
