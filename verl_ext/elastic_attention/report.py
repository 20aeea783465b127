"""Routing report: ``python -m verl_ext.elastic_attention.report MODEL PROMPTS.jsonl --out DIR [--adapter A]``.

Runs every prompt's prefill through the elastic model (deterministic routing) and writes ``report.json`` (per-task
Omega_MSR and Omega_ESR with n, every prompt's decisions), ``report.md`` (the per-task table) and
``routing_heatmap.png`` (layers x KV heads: the share of prompts routing each head to full attention, per task).
PROMPTS.jsonl rows: ``{"prompt": text or chat messages, "task": label}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from verl_ext.elastic_attention.hf import ElasticAttentionConfig, elastic_decisions, enable_elastic_attention
from verl_ext.elastic_attention.metrics import esr, msr


def load_prompts(path: str | Path) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("prompt") or not row.get("task"):
            raise ValueError(f"{path} line {number}: needs a non-empty 'prompt' (text or chat messages) and 'task'.")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no prompts.")
    return rows


@torch.inference_mode()
def route_prompts(model, tokenizer, rows: list[dict], config: ElasticAttentionConfig) -> list[dict]:
    records = []
    for row in rows:
        prompt = row["prompt"]
        text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                                                                      tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        model(input_ids=ids)
        decisions = elastic_decisions(model)  # (1, L, H)
        records.append({"task": row["task"], "tokens": ids.shape[1], "decisions": decisions[0].tolist(),
                        "msr": float(msr(decisions)[0]),
                        "esr": float(esr(decisions, torch.tensor([ids.shape[1]]), config.sink, config.window)[0])})
    return records


def summarise(records: list[dict]) -> dict:
    by_task = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    return {task: {"n": len(rs), "msr": sum(r["msr"] for r in rs) / len(rs), "esr": sum(r["esr"] for r in rs) / len(rs),
                   "full_share": torch.tensor([r["decisions"] for r in rs], dtype=torch.float32).mean(0).tolist()}
            for task, rs in sorted(by_task.items())}


def heatmap(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks) + 1.2, 3.4), squeeze=False,
                             layout="constrained")
    for k, (ax, task) in enumerate(zip(axes[0], tasks)):
        image = ax.imshow(summary[task]["full_share"], vmin=0, vmax=1, cmap="viridis", aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"{task}\n$\\Omega_{{MSR}}$ {summary[task]['msr']:.2f} (n={summary[task]['n']} prompts)",
                     fontsize=9)
        ax.set_xlabel("KV head")
        if k == 0:
            ax.set_ylabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes[0].tolist(), label="share of prompts routing the head to full attention")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("--adapter", help="router adapter safetensors (ours or an official checkpoint)")
    parser.add_argument("--out", default="elastic_report")
    parser.add_argument("--sink", type=int, default=128)
    parser.add_argument("--window", type=int, default=2048)
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_ext.elastic_attention.adapter import load_router_adapter

    config = ElasticAttentionConfig(sink=args.sink, window=args.window)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(args.model).eval(), config)
    if args.adapter:
        load_router_adapter(model, args.adapter)
    records = route_prompts(model, tokenizer, load_prompts(args.prompts), config)
    summary = summarise(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"config": config.__dict__, "summary": summary, "records": records}))
    lines = ["| task | n | Omega_MSR | Omega_ESR |", "|---|---|---|---|"]
    lines += [f"| {t} | {s['n']} | {s['msr']:.3f} | {s['esr']:.3f} |" for t, s in summary.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    heatmap(summary, out / "routing_heatmap.png")
    print(json.dumps({t: {"n": s["n"], "msr": s["msr"], "esr": s["esr"]} for t, s in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
