"""Scalar reward models on MemoryRewardBench: score each side, the pair is right when chosen scores higher.

    python -m verl_ext.memrm.scalar_rm RM_DIR DATA RUN_DIR [--cap 131072] [--batch-size 1]

A sequence-classification model (one logit) scores ``[user: question, assistant: trajectory]`` for each side; the
item is correct iff s_chosen > s_rejected (ties count wrong; the 0.5-credit variant is reported as
``correct_half_ties``). Each side is cut head/tail at ``--cap`` tokens like the judge prompts. Records go to
``RUN_DIR/records.jsonl`` one by one, keyed by (model, prompt, "scalar", order); a rerun skips finished pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from verl_ext.memrm.loaders import load_items
from verl_ext.memrm.prompts import DEFAULT_CAP, truncate_middle
from verl_ext.memrm.records import RecordStore, prompt_sha, record_key
from verl_ext.memrm.schema import PairItem


def side_ids(tokenizer, question: str, trajectory: str, cap: int) -> tuple[list[int], bool]:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": trajectory}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return truncate_middle(tokenizer(text, add_special_tokens=False)["input_ids"], cap)


@torch.inference_mode()
def score_ids(model, ids: list[int]) -> float:
    logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
    if logits.shape[-1] != 1:
        raise ValueError(f"the reward model has {logits.shape[-1]} outputs; a scalar RM needs num_labels=1.")
    return float(logits[0, 0])


def score_pair(model, tokenizer, item: PairItem, cap: int) -> dict:
    chosen_ids, cut_c = side_ids(tokenizer, item.question, item.chosen, cap)
    rejected_ids, cut_r = side_ids(tokenizer, item.question, item.rejected, cap)
    s_c, s_r = score_ids(model, chosen_ids), score_ids(model, rejected_ids)
    return {"score_chosen": s_c, "score_rejected": s_r, "correct_strict": float(s_c > s_r),
            "correct_lenient": float(s_c > s_r), "correct_half_ties": 1.0 if s_c > s_r else 0.5 if s_c == s_r else 0.0,
            "truncated": cut_c or cut_r}


def evaluate(rm_dir: str | Path, data: str | Path, run_dir: str | Path, cap: int = DEFAULT_CAP) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    store = RecordStore(Path(run_dir) / "records.jsonl")
    done = store.done_keys()
    stats = {"pairs": 0, "skipped_done": 0}
    for item in load_items(data):
        sha = prompt_sha([{"q": item.question, "c": item.chosen, "r": item.rejected}])
        key = record_key(str(rm_dir), sha, "scalar", (0, 1))
        stats["pairs"] += 1
        if key in done:
            stats["skipped_done"] += 1
            continue
        result = score_pair(model, tokenizer, item, cap)
        # Scalar scores have no presentation order; verdict fields let the common aggregation apply.
        verdict = "A" if result["correct_strict"] else "B"
        store.append({"key": key, "model": str(rm_dir), "pair_id": item.pair_id, "task": item.task,
                      "setting": item.setting, "ctx_length": item.ctx_length, "view": "official", "order": [0, 1],
                      "correct_letter": "A", "verdict_strict": verdict, "verdict_lenient": verdict,
                      "parsed_strict": 1.0, "parsed_lenient": 1.0, "picked_A": float(verdict == "A"),
                      "chosen_chars": len(item.chosen), "rejected_chars": len(item.rejected), **result})
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rm_dir")
    parser.add_argument("data")
    parser.add_argument("run_dir")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.rm_dir, args.data, args.run_dir, args.cap)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
