"""Routing report: ``python -m verl_ext.elastic_attention.report MODEL PROMPTS.jsonl --out DIR [--adapter A]``.

Runs every prompt's prefill through the elastic model (deterministic routing) and writes ``report.json`` (per-task
Omega_MSR and Omega_ESR with n, every prompt's decisions), ``report.md`` (the per-task table) and
``routing_heatmap.png`` (layers x KV heads: the share of prompts routing each head to the retrieval mode, labelled
with its registry description: dense causal attention, or XAttention's kept blocks under ``--pattern xa-ssa``; per
task).
PROMPTS.jsonl rows: ``{"prompt": text or chat messages, "task": label}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from verl_ext.elastic_attention import mode_table
from verl_ext.elastic_attention.config import PATTERNS, XATTENTION_FIELDS, ElasticAttentionConfig, XAttentionSettings
from verl_ext.elastic_attention.hf import enable_elastic_attention
from verl_ext.elastic_attention.metrics import esr, msr
from verl_ext.elastic_attention.router import expand_to_query_heads
from verl_ext.elastic_attention.state import elastic_decisions, elastic_layers


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
        decisions = elastic_decisions(model)  # (1, L, H_kv)
        records.append({"task": row["task"], "tokens": ids.shape[1], "decisions": decisions[0].tolist(),
                        "msr": float(msr(decisions)[0]), "esr": sequence_esr(model, config, ids.shape[1])})
    return records


def sequence_esr(model, config: ElasticAttentionConfig, length: int) -> float:
    """Omega_ESR of the single sequence of the last forward, from every layer's modes (and block masks)."""
    attns = elastic_layers(model)
    groups = model.config.num_attention_heads // model.config.num_key_value_heads
    codes = torch.stack([mode_table.table(config, expand_to_query_heads(a.elastic.decisions, groups))[0]
                         for a in attns])
    masks = [None if a.elastic.block_mask is None else a.elastic.block_mask[0] for a in attns]
    return esr(codes, length, config.sink, config.window, config.block_size or 1, masks, config.xattention.block)


def summarise(records: list[dict]) -> dict:
    by_task = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    return {task: {"n": len(rs), "msr": sum(r["msr"] for r in rs) / len(rs), "esr": sum(r["esr"] for r in rs) / len(rs),
                   "full_share": torch.tensor([r["decisions"] for r in rs], dtype=torch.float32).mean(0).tolist()}
            for task, rs in sorted(by_task.items())}


def heatmap(summary: dict, path: Path, retrieval: str = "the retrieval mode") -> None:
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
    fig.colorbar(image, ax=axes[0].tolist(), label=f"share of prompts routing\nthe head to {retrieval}")
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the colorbar label is outside the axes grid
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("--adapter", help="router adapter safetensors (ours or an official checkpoint)")
    parser.add_argument("--out", default="elastic_report")
    parser.add_argument("--sink", type=int, default=128)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--pattern", default="fa-ssa", choices=sorted(PATTERNS),
                        help="retrieval mode - sparse mode (the paper's names)")
    defaults = XAttentionSettings()
    for name in XATTENTION_FIELDS:
        parser.add_argument(f"--xattention-{name}", type=type(getattr(defaults, name)), default=getattr(defaults, name),
                            help="XAttention setting (fa-xa, xa-ssa)")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_ext.elastic_attention.adapter import load_router_adapter

    xattention = XAttentionSettings(**{n: getattr(args, f"xattention_{n}") for n in XATTENTION_FIELDS})
    config = ElasticAttentionConfig(pattern=args.pattern, sink=args.sink, window=args.window, xattention=xattention)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = enable_elastic_attention(AutoModelForCausalLM.from_pretrained(args.model).eval(), config)
    if args.adapter:
        load_router_adapter(model, args.adapter)
    records = route_prompts(model, tokenizer, load_prompts(args.prompts), config)
    summary = summarise(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"config": config.flat_options(), "summary": summary, "records": records}))
    lines = ["| task | n | Omega_MSR | Omega_ESR |", "|---|---|---|---|"]
    lines += [f"| {t} | {s['n']} | {s['msr']:.3f} | {s['esr']:.3f} |" for t, s in summary.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    retrieval = config.kernel_modes[0]
    heatmap(summary, out / "routing_heatmap.png", f"{retrieval.description}\n({retrieval.name})")
    print(json.dumps({t: {"n": s["n"], "msr": s["msr"], "esr": s["esr"]} for t, s in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
