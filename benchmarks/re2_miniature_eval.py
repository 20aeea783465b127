"""Held-out evaluation of one checkpoint for Re² in miniature: k samples per question, graded by math-verify, then
accuracy under the redo rule (avg@k) and the majority-vote test-time-scaling curve (``verl_ext.re2.evaluation``).

Sampling is transformers' own ``generate`` at temperature 1 (as training and validation sample), seeded, on a fixed
number of threads, batched over questions: the same checkpoint and seed give the same samples.
"""

from __future__ import annotations

from pathlib import Path

import torch

from verl_ext.re2.evaluation import Sample, avg_at_k, majority_vote_per_question, mean_ci95
from verl_ext.re2.eval import to_samples
from verl_ext.re2.redo import RedoSpec
from verl_ext.scoring.math_grader import MathGrader


def sample(model_dir: Path, questions: list[str], k: int, max_new_tokens: int, seed: int,
           batch: int = 256) -> list[list[str]]:
    """``k`` sampled responses per question (chat-templated prompts), [question][sample]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # generation continues every row from its own last prompt token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    rows = [i for i in range(len(questions)) for _ in range(k)]
    out: list[list[str]] = [[] for _ in questions]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator_seed = seed
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(generator_seed)
            generator_seed += 1
            with torch.no_grad():
                ids = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                     max_new_tokens=max_new_tokens)
            for i, seq in zip(chunk, ids[:, enc["input_ids"].shape[1]:]):
                out[i].append(tokenizer.decode(seq, skip_special_tokens=True))
    finally:
        torch.set_num_threads(threads)
    return out


def score(questions: list[str], answers: list[str], responses: list[list[str]], grader: MathGrader,
          rule: str = "anywhere") -> list[Sample]:
    """One ``Sample`` per response (``verl_ext.re2.eval.to_samples``): redo under ``rule`` (verl validation's rule by
    default), else graded."""
    records = [{"input": q, "output": text, "gts": a} for q, a, texts in zip(questions, answers, responses)
               for text in texts]
    return to_samples(records, RedoSpec(rule=rule), grader)


def evaluate(model_dir: Path, questions: list[str], answers: list[str], k: int, budgets: list[int], seed: int,
             grader: MathGrader, max_new_tokens: int = 32, resamples: int = 200) -> dict:
    """avg@k under the redo rule, redo rate and the majority-vote curve (mean and 95% half-width over questions)."""
    samples = score(questions, answers, sample(model_dir, questions, k, max_new_tokens, seed), grader)
    per_question = majority_vote_per_question(samples, budgets, resamples, seed)
    result = avg_at_k(samples)
    return {"avg_redo_rule": result["avg_redo_rule"], "avg_plain": result["avg_plain"],
            "redo_rate": result["redo_rate"], "samples": result["samples"], "budgets": budgets,
            "tts": [float(per_question[b].mean()) for b in budgets],
            "tts_ci95": [mean_ci95(per_question[b]) for b in budgets]}
