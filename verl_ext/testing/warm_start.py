"""A short supervised warm start of a tiny model on the arithmetic task, so RL on it has something to improve.

A random-weight model never produces ``\\boxed{N}``, so every reward is 0 and GRPO advantages vanish. The warm start
teaches the sums on every problem (teacher forcing, loss on response tokens only) in a mixture of styles:

- ``boxed_share`` of the examples end with the boxed answer (``reference_response``), the rest stop after the
  computation (``unboxed_response``): the policy knows most sums but boxes them only about that often, so its
  validation accuracy starts low but not at zero, and RL visibly raises it (boxing is one behaviour across every
  question, so what RL learns on the training questions carries to held-out ones);
- ``redo_share`` of the examples abandon a wrong attempt with Re²'s redo phrase: the phrase is known but rare.

It is capped by steps and seeded, never by time, and runs on a fixed number of threads, so the same call gives
the same model on a loaded machine as on an idle one. ``warm_start_on`` is the same loop for any task's examples
(``verl_ext.testing.pick_check`` for Re² in miniature).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch

from verl_ext.testing import arithmetic


def _encode(tokenizer, question: str, response: str) -> tuple[list[int], int]:
    """(chat prompt + response + EOS token ids, prompt length)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return prompt_ids + response_ids + [tokenizer.eos_token_id], len(prompt_ids)


def arithmetic_example(rng: random.Random, boxed_share: float, redo_share: float) -> tuple[str, str]:
    """(question, response): a problem, then its style (boxed with ``boxed_share``, a redo with ``redo_share``,
    otherwise unboxed)."""
    draw = rng.random()  # the style before the problem: the order every cached main-job model was built with
    a, op, b = rng.choice(arithmetic.all_problems(ops="+-"))
    style = (arithmetic.reference_response if draw < boxed_share
             else arithmetic.redo_response if draw < boxed_share + redo_share else arithmetic.unboxed_response)
    return arithmetic.make_problem(a, op, b)[0], style(a, op, b)


def _trainable(model_dir: Path, seed: int):
    """(tokenizer, float32 model in train mode, seeded random.Random); torch's generator seeded too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    torch.manual_seed(seed)
    return tokenizer, model, random.Random(seed)


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


def warm_start(model_dir: str | Path, steps: int = 600, batch_size: int = 32, lr: float = 3e-3,
               boxed_share: float = 0.3, redo_share: float = 0.02, seed: int = 0, threads: int = 2) -> dict:
    """Train the model in ``model_dir`` in place on the arithmetic task for ``steps`` steps; returns
    ``{"steps", "first_loss", "last_loss"}``. Every example is a fresh draw of ``arithmetic_example``."""
    if not 0 <= boxed_share <= 1 or not 0 <= redo_share <= 1 - boxed_share:
        raise ValueError(f"warm start needs 0 <= redo_share <= 1 - boxed_share; got boxed_share={boxed_share}, "
                         f"redo_share={redo_share}.")
    return warm_start_on(model_dir, lambda rng: arithmetic_example(rng, boxed_share, redo_share), steps,
                         batch_size, lr, seed, threads)


def warm_start_on(model_dir: str | Path, draw: Callable[[random.Random], tuple[str, str]], steps: int,
                  batch_size: int = 32, lr: float = 3e-3, seed: int = 0, threads: int = 2) -> dict:
    """Teacher-forced training of the model in ``model_dir`` (in place) on examples ``draw(rng) -> (question,
    response)``, a fresh draw per example; returns ``{"steps", "first_loss", "last_loss"}``."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"warm start needs steps >= 1 and batch_size >= 1; got steps={steps}, "
                         f"batch_size={batch_size}.")
    model_dir = Path(model_dir)
    tokenizer, model, rng = _trainable(model_dir, seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # float reductions depend on the thread count: fix it for reproducibility
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    try:
        for _ in range(steps):
            batch = [_encode(tokenizer, *draw(rng)) for _ in range(batch_size)]
            losses.append(float(supervised_step(model, optimizer, batch, tokenizer.pad_token_id).detach()))
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    model.save_pretrained(model_dir)
    return {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1]}


def warm_start_judge(model_dir: str | Path, prompts: list[list[int]], max_steps: int = 60, batch_size: int = 4,
                     lr: float = 3e-3, seed: int = 0) -> dict:
    """Teach a tiny model the judge output format: the verdict "[[A]]" or "[[B]]" first (letters drawn at random).

    ``prompts`` are chat-templated judge prompts as token ids. The model learns the format, not the judgement, so a
    judge run on it has parsable verdicts near 50% accuracy.
    """
    if not prompts:
        raise ValueError("warm_start_judge needs at least one judge prompt.")
    model_dir = Path(model_dir)
    tokenizer, model, rng = _trainable(model_dir, seed)
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
