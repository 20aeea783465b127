"""MemoryRewardBench conversion throughput on synthetic 128K-token items (prompt build + truncation + parquet).

    python benchmarks/memrm_prep.py [--items 200] [--tokens 131072]

Writes ``--items`` pairs in the Hugging Face schema whose judge prompt is about ``--tokens`` tokens of a fast
(Rust) byte-level BPE tokenizer (the tiny model's), then streams them through ``verl_ext.memrm.convert`` at the
official 131,072-token cap, every item being cut. Baseline in the same run: tokenising the same prompts once, the
least work any converter must do. Peak RSS of this process (the converter streams, so it stays flat in the number
of items). Targets on 2 cores: >= 50 items/s, <= 2 GB. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from verl_ext.memrm.convert import iter_rows, write_parquet
from verl_ext.memrm.loaders import iter_items
from verl_ext.memrm.prompts import judge_messages
from verl_ext.memrm.synthetic import RAW_LABELS
from verl_ext.testing.tiny_model import train_tokenizer

WORDS = "memory update step agent context the key was moved to kitchen garden office answer boxed".split()


def write_items(folder: Path, items: int, chars_per_side: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    settings = list(RAW_LABELS)
    block = " ".join(rng.choice(WORDS) for _ in range(4000))
    with open(folder / "Long-context_Reasoning.jsonl", "w") as f:
        for i in range(items):
            task, subtask = RAW_LABELS[settings[i % 4]]
            text = (block * (chars_per_side // len(block) + 1))[:chars_per_side]
            f.write(json.dumps({"task": task, "subtask": subtask, "ctx_length": "128k", "question": text[: chars_per_side // 3],
                                "chosen": text, "rejected": text[::-1]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=131072)
    args = parser.parse_args()
    tokenizer = train_tokenizer(512)
    probe = " ".join(WORDS * 50)
    chars_per_token = len(probe) / len(tokenizer(probe, add_special_tokens=False)["input_ids"])
    chars_per_side = int(args.tokens * chars_per_token * 0.45)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench"
        data.mkdir()
        write_items(data, args.items, chars_per_side)
        start = time.perf_counter()
        for item in iter_items(data):
            messages = judge_messages(item, (0, 1))
            tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                      add_special_tokens=False)
        tokenize_s = time.perf_counter() - start
        stats: dict = {}
        start = time.perf_counter()
        write_parquet(iter_rows(data, tokenizer, "seeded", 131072, stats=stats), Path(tmp) / "out.parquet")
        convert_s = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    per_s = args.items / convert_s
    print(f"{args.items} items of ~{args.tokens} prompt tokens; {stats['truncated']} cut at 131,072")
    print(f"convert: {per_s:.1f} items/s; tokenise-only baseline: {args.items / tokenize_s:.1f} items/s; "
          f"convert / baseline time = {convert_s / tokenize_s:.2f}x; peak RSS {peak_gb:.2f} GB")
    print(json.dumps({"items_per_s": round(per_s, 2), "tokenize_only_items_per_s": round(args.items / tokenize_s, 2),
                      "convert_over_tokenize": round(convert_s / tokenize_s, 2), "peak_rss_gb": round(peak_gb, 3),
                      "items": args.items, "truncated": stats["truncated"], "prompt_tokens": args.tokens}))


if __name__ == "__main__":
    main()
