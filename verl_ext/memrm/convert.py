"""Convert MemoryRewardBench to verl RL parquet for a judge validation run.

    python -m verl_ext.memrm.convert DATA OUT.parquet --tokenizer JUDGE_DIR [--order seeded|dual] [--cap 131072]
        [--records RUN/records.jsonl --model NAME --sampling TAG]   (resume: leave out pairs already scored)

Each row: ``prompt`` = [system, user] judge messages, ``reward_model.ground_truth`` = the letter that picks
``chosen``, ``data_source`` = ``memrm/<task>/<setting>/<length>/<view>`` (verl reports metrics per data source),
``extra_info`` = pair id, task, setting, length, order, view, prompt hash, truncation and side lengths. Prompts at or
over ``--cap`` tokens of the judge's tokenizer lose the middle of the user message (the official head/tail cut of
the templated prompt); the number of cut items is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verl_ext.memrm.loaders import load_items
from verl_ext.memrm.prompts import DEFAULT_CAP, correct_letter, judge_messages, presentations
from verl_ext.memrm.records import RecordStore, prompt_sha, record_key
from verl_ext.memrm.schema import TASK_SHORT


def _template_tokens(tokenizer, messages: list[dict]) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    except TypeError:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_messages(tokenizer, messages: list[dict], cap: int) -> tuple[list[dict], int, bool]:
    """Messages whose templated prompt is under ``cap`` tokens.

    Like the official cut of the templated prompt (first cap/2 tokens + last cap/2 - 5), the user message loses its
    middle; the system prompt and template are kept whole, so they count against the head.
    """
    full = _template_tokens(tokenizer, messages)
    if len(full) < cap:
        return messages, len(full), False
    user_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    overhead = len(full) - len(user_ids)
    if overhead + 32 >= cap:
        raise ValueError(f"truncation cap {cap} leaves no room for the question: the system prompt and chat template "
                         f"alone take {overhead} tokens of this judge's tokenizer; raise --cap.")
    budget = cap - overhead - 8  # margin for re-tokenising at the cut
    while True:
        head = min(max(0, cap // 2 - overhead), budget // 2)
        tail = budget - head
        cut = tokenizer.decode(user_ids[:head]) + tokenizer.decode(user_ids[-tail:])
        fitted = messages[:-1] + [{"role": messages[-1]["role"], "content": cut}]
        length = len(_template_tokens(tokenizer, fitted))
        if length < cap:
            return fitted, length, True
        budget -= length - cap + 1


def convert(data: str | Path, tokenizer, order: str = "seeded", cap: int = DEFAULT_CAP, done: set[str] | None = None,
            model: str = "", sampling: str = "") -> tuple[list[dict], dict]:
    items = load_items(data)
    rows, stats = [], {"items": len(items), "rows": 0, "truncated": 0, "skipped_done": 0}
    for p in presentations(items, order):
        messages = judge_messages(p.item, p.order)
        sha = prompt_sha(messages)
        if done is not None and record_key(model, sha, sampling, p.order) in done:
            stats["skipped_done"] += 1
            continue
        fitted, tokens, truncated = fit_messages(tokenizer, messages, cap)
        stats["truncated"] += int(truncated)
        item = p.item
        rows.append({
            "data_source": f"memrm/{TASK_SHORT[item.task]}/{item.setting}/{item.ctx_length}/{p.view}",
            "prompt": fitted,
            "ability": "judge",
            "reward_model": {"style": "rule", "ground_truth": correct_letter(p.order)},
            "extra_info": {"pair_id": item.pair_id, "task": item.task, "setting": item.setting,
                           "ctx_length": item.ctx_length, "order": list(p.order), "view": p.view, "prompt_sha": sha,
                           "truncated": truncated, "prompt_tokens": tokens, "chosen_chars": len(item.chosen),
                           "rejected_chars": len(item.rejected), "index": item.index},
        })
    stats["rows"] = len(rows)
    return rows, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="benchmark folder or file (HF 6-field schema or the raw evaluator schema)")
    parser.add_argument("output")
    parser.add_argument("--tokenizer", required=True, help="the judge's tokenizer folder (truncation is per judge)")
    parser.add_argument("--order", choices=["seeded", "dual"], default="seeded")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--records", help="records.jsonl of an earlier run: pairs already scored are left out")
    parser.add_argument("--model", default="", help="judge name used in record keys (with --records)")
    parser.add_argument("--sampling", default="", help="sampling tag used in record keys (with --records)")
    args = parser.parse_args(argv)
    import pandas as pd
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    done = RecordStore(args.records).done_keys() if args.records else None
    rows, stats = convert(args.data, tokenizer, args.order, args.cap, done, args.model, args.sampling)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.output)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
