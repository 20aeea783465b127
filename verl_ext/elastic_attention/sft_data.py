"""Router-training samples for verl's SFT trainer: verl's multi-turn chat dataset plus, per token, the sample's task
id and whether the token belongs to the prompt (the routers pool over the prompt; the Lagrangian picks the task's
target). Both travel as tensors shaped like ``input_ids``, so verl's packing and micro-batching carry them unchanged.

Rows: a ``messages`` chat (user prompt, assistant answer) and a ``task`` name from ``data.elastic_tasks``.
``python -m verl_ext.elastic_attention.sft_data IN OUT`` converts the released training data's raw columns
(context, question, answer, metadata.task / metadata.is_prefix) into such rows, laid out as the official packing
script renders them.
"""

from __future__ import annotations

import argparse

import torch
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

TASK_KEY = "task"
# Instructions the official packing script puts around summarisation and code samples.
SUMMARY_PREFIX, SUMMARY_SUFFIX = "Summarize the following text.\n\n", "\n\nSummary:"
CODE_PREFIX = "Please complete the code given below.\n\n"


class ElasticRouterSFTDataset(MultiTurnSFTDataset):
    def __init__(self, parquet_files, tokenizer, config, processor=None, max_samples: int = -1):
        super().__init__(parquet_files, tokenizer, config, processor=processor, max_samples=max_samples)
        tasks = list(config.get("elastic_tasks") or [])
        if not tasks:
            raise ValueError("data.elastic_tasks is empty: list the task names, in the order of elastic.targets.")
        self.lm_loss = config.get("elastic_lm_loss", "all")
        if TASK_KEY not in self.dataframe.columns:
            raise ValueError(f"router-training data needs a {TASK_KEY!r} column (one of {tasks}); columns are "
                             f"{list(self.dataframe.columns)}.")
        index = {name: i for i, name in enumerate(tasks)}
        ids = []
        for row, name in enumerate(self.dataframe[TASK_KEY].tolist()):
            if name not in index:
                raise ValueError(f"row {row}: task {name!r} is not in data.elastic_tasks {tasks}.")
            ids.append(index[name])
        self.task_ids = ids

    def __getitem__(self, item):
        sample = super().__getitem__(item)
        loss_mask = sample["loss_mask"]
        answer = loss_mask.nonzero()
        if answer.numel() == 0:
            raise ValueError(f"row {item}: no assistant tokens to learn from: the chat needs an assistant answer that data.max_length does not cut off.")
        prompt_len = int(answer[0])
        if prompt_len == 0:
            raise ValueError(f"row {item}: the chat starts with the answer; the routers need a prompt before it.")
        n = loss_mask.shape[0]
        sample["elastic_prompt_mask"] = (torch.arange(n) < prompt_len).long()
        sample["elastic_task_ids"] = torch.full((n,), self.task_ids[item], dtype=torch.long)
        if self.lm_loss == "all":  # the official code's labels cover the whole sequence but its first token
            sample["loss_mask"] = torch.ones_like(loss_mask)
        return sample


def official_row_to_chat(context: str, question: str, answer: str, task: str, is_prefix: bool) -> dict:
    """One released training row as a chat: question before or after the context (``is_prefix``), with the
    official instruction around summarisation and code samples."""
    if task == "summarization":
        prompt = SUMMARY_PREFIX + context + SUMMARY_SUFFIX
    elif task == "code":
        prompt = CODE_PREFIX + context
    else:
        prompt = f"{question}\n\n{context}" if is_prefix else f"{context}\n\n{question}"
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            TASK_KEY: task}


def main(argv=None):
    import pandas as pd

    parser = argparse.ArgumentParser(description="released Elastic Attention training rows -> router-training parquet")
    parser.add_argument("source", help="parquet or jsonl with context, question, answer, metadata")
    parser.add_argument("out", help="output parquet")
    args = parser.parse_args(argv)
    frame = pd.read_json(args.source, lines=True) if args.source.endswith(".jsonl") else pd.read_parquet(args.source)
    rows = []
    for i, rec in enumerate(frame.to_dict("records")):
        meta = rec.get("metadata") or {}
        missing = [k for k in ("context", "answer") if not isinstance(rec.get(k), str)]
        if missing or "task" not in meta:
            raise ValueError(f"row {i}: needs string context and answer and metadata.task; missing {missing or ['task']}.")
        rows.append(official_row_to_chat(rec["context"], rec.get("question") or "", rec["answer"], meta["task"],
                                         bool(meta.get("is_prefix", False))))
    pd.DataFrame(rows).to_parquet(args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
