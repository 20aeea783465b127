"""Convert MemoryRewardBench to verl RL parquet for a judge validation run.

    python -m verl_ext.memrm.convert DATA OUT.parquet --tokenizer JUDGE_DIR [--order seeded|dual] [--cap 131072]
        [--records RUN/records.jsonl --model NAME --sampling TAG]   (resume: leave out pairs already scored)
        [--official-prompts REPO]   (the official system prompts, from your clone of the official repository)

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

from typing import Iterable, Iterator

from verl_ext.memrm.loaders import iter_items
from verl_ext.memrm.prompts import (DEFAULT_CAP, OUR_PROMPTS, PromptSet, correct_letter, judge_messages, order_table,
                                   template_text)
from verl_ext.memrm.records import RecordStore, prompt_sha, record_key
from verl_ext.memrm.schema import TASK_SHORT


def fit_messages(tokenizer, messages: list[dict], cap: int) -> tuple[list[dict], int, bool]:
    """Messages whose templated prompt is under ``cap`` tokens, from one tokenisation with offsets.

    The official cut keeps the templated prompt's first cap/2 and last cap/2 - 5 tokens; the cut falls inside the
    user message (the trajectories), so the same tokens are removed there, located by character offsets.
    """
    text = template_text(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    n = len(encoded["input_ids"])
    if n < cap:
        return messages, n, False
    user = messages[-1]["content"]
    user_start = text.rfind(user)
    if user_start < 0:
        raise ValueError("the chat template altered the user message; cannot locate the cut inside it.")
    offsets = encoded["offset_mapping"]
    margin = 4  # tokens may merge differently where the two halves meet
    user_first = next(i for i, (a, _) in enumerate(offsets) if a >= user_start)
    # Official head: cap/2 tokens. With a small cap the system prompt alone may exceed that; it is kept whole and
    # the tail shrinks, so the judge always sees its instructions.
    head_tokens = max(cap // 2 - margin, user_first)
    tail_tokens = cap - 5 - 2 * margin - head_tokens
    user_end = user_start + len(user)
    after_user = sum(1 for a, _ in offsets if a >= user_end)
    if tail_tokens <= after_user:
        raise ValueError(f"truncation cap {cap} leaves no room for the trajectories: the system prompt and chat "
                         f"template take {user_first + after_user} tokens of this judge's tokenizer; raise --cap.")
    head_end = offsets[head_tokens][0]
    tail_start = offsets[n - tail_tokens][0]
    cut = user[: head_end - user_start] + user[tail_start - user_start :]
    fitted = messages[:-1] + [{"role": messages[-1]["role"], "content": cut}]
    return fitted, head_tokens + tail_tokens, True


def _rows_per_task(items: Iterable) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.task] = counts.get(item.task, 0) + 1
    return counts


def iter_rows(data: str | Path, tokenizer, order: str = "seeded", cap: int = DEFAULT_CAP, done: set[str] | None = None,
              model: str = "", sampling: str = "", stats: dict | None = None,
              prompts: PromptSet = OUR_PROMPTS) -> Iterator[dict]:
    """verl rows, streamed: two passes over the data (row counts for the official order, then the rows)."""
    if order not in ("seeded", "dual"):
        raise ValueError(f"order mode {order!r} must be 'seeded' or 'dual'.")
    stats = stats if stats is not None else {}
    stats.update({"items": 0, "rows": 0, "truncated": 0, "skipped_done": 0})
    table = order_table(_rows_per_task(iter_items(data)))
    for item in iter_items(data):
        stats["items"] += 1
        first = table[(item.task, item.index)]
        views = [(first, "official")] + ([((first[1], first[0]), "swap")] if order == "dual" else [])
        for item_order, view in views:
            messages = judge_messages(item, item_order, prompts)
            sha = prompt_sha(messages)
            if done is not None and record_key(model, sha, sampling, item_order) in done:
                stats["skipped_done"] += 1
                continue
            fitted, tokens, truncated = fit_messages(tokenizer, messages, cap)
            stats["truncated"] += int(truncated)
            stats["rows"] += 1
            yield {
                "data_source": f"memrm/{TASK_SHORT[item.task]}/{item.setting}/{item.ctx_length}/{view}",
                "prompt": fitted,
                "ability": "judge",
                "reward_model": {"style": "rule", "ground_truth": correct_letter(item_order)},
                "extra_info": {"pair_id": item.pair_id, "task": item.task, "setting": item.setting,
                               "ctx_length": item.ctx_length, "order": list(item_order), "view": view,
                               "prompt_sha": sha, "truncated": truncated, "prompt_tokens": tokens,
                               "chosen_chars": len(item.chosen), "rejected_chars": len(item.rejected),
                               "index": item.index, "prompt_set": prompts.label},
            }


def write_parquet(rows: Iterable[dict], output: str | Path, batch_rows: int = 32) -> int:
    """Stream rows into one parquet file, ``batch_rows`` at a time (bounded memory); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer, batch, total = None, [], 0

    def flush():
        nonlocal writer
        table = pa.Table.from_pylist(batch)
        writer = writer or pq.ParquetWriter(output, table.schema)
        writer.write_table(table.cast(writer.schema))

    try:
        for row in rows:
            batch.append(row)
            if len(batch) == batch_rows:
                flush()
                total, batch = total + len(batch), []
        if batch:
            flush()
            total += len(batch)
    finally:
        if writer is not None:
            writer.close()
    if total == 0:  # everything was already scored: an empty file with the columns verl expects
        pq.write_table(pa.table({c: pa.array([], pa.string()) for c in
                                 ("data_source", "prompt", "ability", "reward_model", "extra_info")}), output)
    return total


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
    parser.add_argument("--official-prompts", metavar="REPO",
                        help="your clone of the official MemoryRewardBench repository: judge with its system prompts")
    args = parser.parse_args(argv)
    prompts = OUR_PROMPTS
    if args.official_prompts:
        from verl_ext.memrm.official_prompts import load_official_prompts

        prompts = load_official_prompts(args.official_prompts)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    done = RecordStore(args.records).done_keys() if args.records else None
    stats: dict = {}
    write_parquet(iter_rows(args.data, tokenizer, args.order, args.cap, done, args.model, args.sampling, stats,
                            prompts), args.output)
    stats["prompt_set"] = prompts.label
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
