"""Elastic Attention in miniature: a tiny Qwen3 pretrained from scratch on CPU on a long-range retrieval task and a
local task, routers trained on the frozen backbone with the paper's objective, then hard routing against all-dense,
all-sparse and a static head mask of the same mean Omega_MSR.

    .venv/bin/python experiments/elastic_miniature.py [--quick] [--out runs/elastic_miniature] [--seed 0]

The tasks share one mechanism (look a key up, answer its value) and differ only in how far back the key sits:

- retrieval ("sparsity-sensitive"): ``RET filler x L (k v) x P SEP filler x D (QRY k v) x Q``: every queried pair
  is more than D >= 512 tokens back, far outside the streaming heads' sink + window (the L = 16 leading filler
  tokens keep the pairs out of the sink too);
- local ("sparsity-robust"): ``LOC filler x (L + D) SEP (k v) x P (QRY k v) x Q``: the same length, the pairs
  within the last ~32 tokens, which a streaming head (sink 4 + window 32) sees.

The default is one pair per sequence (a needle: find the one value token and copy it), which a 2-layer model learns
in a few hundred CPU steps. With 8 pairs the lookup needs an induction circuit (match the queried key, copy the
token after it); a 2-layer, 64-wide model stayed at the "one of the 8 in-context values" plateau (answer loss
ln 8, accuracy ~0.14) through 2,000 steps, so that variant is an option (``--pairs``), not the default.

Both sequences have the same length; only their first token and their layout differ, which is what a router reading
the pre-RoPE keys of the first and last prompt tokens can pick up. Accuracy is over queried values (teacher-forced
argmax at each answer position); Omega_MSR per sequence from the hard decisions (``metrics.msr``).

Router training is the objective of ``verl_ext.elastic_attention.router_engine`` (the verl SFT engine's loss) run in
a plain loop: Gumbel-softmax straight-through decisions with the exponential temperature schedule of
``RouterTrainingConfig.tau``, ``SparsityLagrangian`` with per-task targets (retrieval 0.7, local 1.0, the paper's
sensitive / robust targets), one AdamW with the multipliers' group on gradient ascent, and the backbone frozen
(``freeze_backbone``). Its LM loss is on the answer tokens only: the filler is random, so a loss on it teaches
nothing. The static mask keeps full the heads the routers send to full attention most often on retrieval inputs,
as many as the routed model's mean Omega_MSR over both tasks leaves (the same mean sparsity, fixed for every input,
as DuoAttention / PruLong do).

Last line: one JSON object of the headline figures (README "Elastic Attention in miniature" and BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.hf import enable_elastic_attention
from verl_ext.elastic_attention.metrics import msr
from verl_ext.elastic_attention.router_objective import (SparsityLagrangian, freeze_backbone,
                                                         training_omega)
from verl_ext.elastic_attention.state import elastic_decisions, set_router_temperature, set_static_heads
warnings.filterwarnings("ignore", message=r".* engine is not available")  # verl's optional engines, irrelevant here
from verl_ext.elastic_attention.router_engine import RouterTrainingConfig

PAD, RET, LOC, SEP, QRY = 0, 1, 2, 3, 4
TASKS = ("retrieval", "local")


@dataclasses.dataclass(frozen=True)
class Size:
    layers: int = 2
    heads: int = 4               # KV heads = query heads: every head routes on its own
    hidden: int = 64
    pairs: int = 1               # P key-value pairs per sequence
    queries: int = 1             # Q queried pairs per sequence (distinct pairs, in a random order)
    lead: int = 16               # L filler tokens before the retrieval pairs: outside the sink
    distance: int = 512          # D filler tokens between the pairs and the queries (retrieval)
    n_keys: int = 64
    n_values: int = 64
    n_filler: int = 256
    short_distance: int = 24     # pretraining starts with the lookup at this distance (both tasks)
    short_steps: int = 1500      # its cap; it ends earlier once both are solved at that distance
    short_batch: int = 32
    pretrain_steps: int = 1500   # then at the tasks' distance; the cap, ends earlier once dense attention solves both
    pretrain_batch: int = 8
    pretrain_lr: float = 2e-3
    solved: float = 0.97         # dense accuracy on both tasks that ends pretraining
    router_steps: int = 300
    router_batch: int = 8
    router_lr: float = 5e-3
    lambda_lr: float = 5e-2
    targets: tuple = (0.7, 1.0)  # retrieval (sensitive), local (robust)
    sink: int = 4
    window: int = 32
    pool_budget: int = 16
    eval_sequences: int = 256    # per task (x queries answers each)
    eval_every: int = 250


QUICK = Size(heads=2, hidden=32, pairs=2, queries=2, lead=8, distance=64, short_distance=8, short_steps=3,
             short_batch=4, pretrain_steps=3, pretrain_batch=4, router_steps=4,
             router_batch=4, eval_sequences=8, window=16, pool_budget=8, eval_every=3)


def vocab(size: Size) -> dict:
    keys = 8
    values = keys + size.n_keys
    filler = values + size.n_values
    return {"keys": keys, "values": values, "filler": filler, "total": filler + size.n_filler}


def sample(task: str, size: Size, g: torch.Generator) -> tuple[list[int], list[int]]:
    """One sequence of ``task`` and the positions of its queried values."""
    v = vocab(size)
    keys = (torch.randperm(size.n_keys, generator=g)[:size.pairs] + v["keys"]).tolist()
    values = (torch.randint(0, size.n_values, (size.pairs,), generator=g) + v["values"]).tolist()
    pairs = [t for kv in zip(keys, values) for t in kv]
    filler = (torch.randint(0, size.n_filler, (size.lead + size.distance,), generator=g) + v["filler"]).tolist()
    body = ([RET, *filler[:size.lead], *pairs, SEP, *filler[size.lead:]] if task == "retrieval"
            else [LOC, *filler, SEP, *pairs])
    ids, answers = list(body), []
    for i in torch.randperm(size.pairs, generator=g)[:size.queries].tolist():
        ids += [QRY, keys[i], values[i]]
        answers.append(len(ids) - 1)
    return ids, answers


def batch(task_ids: list[int], size: Size, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and (B, Q) answer positions, tasks as given (0 retrieval, 1 local)."""
    rows = [sample(TASKS[t], size, g) for t in task_ids]
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def answer_logits(model, ids: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """(B, Q, V) logits predicting each queried value. Every sequence of a size has its answers at the same
    positions, so only those rows go through the LM head (``logits_to_keep``)."""
    if not bool((answers == answers[:1]).all()):
        raise ValueError("answer positions differ between sequences; batch sequences of one layout.")
    return model(input_ids=ids, logits_to_keep=answers[0] - 1).logits


def answer_loss(model, ids, answers) -> torch.Tensor:
    logits = answer_logits(model, ids, answers)
    return F.cross_entropy(logits.flatten(0, 1).float(), ids.gather(1, answers).flatten())


def build_model(size: Size, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=vocab(size)["total"], hidden_size=size.hidden, intermediate_size=4 * size.hidden,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.heads, head_dim=size.hidden // size.heads,  # GQA-free
                         max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=PAD,
                         attn_implementation="sdpa")
    return Qwen3ForCausalLM(config).float()


@torch.no_grad()
def evaluate(model, eval_sets: dict) -> dict:
    """{task: {acc, correct, n, msr, full_rate}} with hard decisions (elastic models) or dense attention.
    ``full_rate`` is the (L, H_kv) share of the task's sequences each head went to full attention (elastic only)."""
    model.eval()
    out = {}
    elastic = hasattr(model.model.layers[0].self_attn, "elastic")
    for task, (ids, answers) in eval_sets.items():
        correct, decisions = 0, []
        for i in range(0, len(ids), 32):
            pred = answer_logits(model, ids[i:i + 32], answers[i:i + 32]).argmax(-1)
            correct += int((pred == ids[i:i + 32].gather(1, answers[i:i + 32])).sum())
            if elastic:
                decisions.append(elastic_decisions(model))  # (B, L, H_kv) of this forward
        n = answers.numel()
        out[task] = {"acc": correct / n, "correct": correct, "n": n, "msr": 0.0}
        if decisions:
            z = torch.cat(decisions)
            out[task].update(msr=float(msr(z).mean()), full_rate=z.float().mean(0).tolist())
    return out


def pretrain(model, size: Size, eval_sets: dict, seed: int, log) -> dict:
    """Teach the lookup at a short distance first (short sequences: a large batch is cheap), then at the tasks'
    own distance until dense attention solves both (step caps, never time)."""
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=size.pretrain_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    short = dataclasses.replace(size, distance=size.short_distance)
    short_eval = {t: batch([i] * size.eval_sequences, short, torch.Generator().manual_seed(seed + 1001))
                  for i, t in enumerate(TASKS)}
    history, step = [], 0
    for phase, (shape, steps, n, evals) in enumerate([(short, size.short_steps, size.short_batch, short_eval),
                                                      (size, size.pretrain_steps, size.pretrain_batch, eval_sets)]):
        for _ in range(steps):
            step += 1
            model.train()
            ids, answers = batch([s % 2 for s in range(n)], shape, g)
            loss = answer_loss(model, ids, answers)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % size.eval_every == 0:
                acc = evaluate(model, evals)
                history.append({"step": step, "distance": shape.distance, "loss": float(loss.detach()),
                                **{t: acc[t]["acc"] for t in TASKS}})
                log(f"pretrain step {step} (distance {shape.distance}): loss {float(loss.detach()):.3f}, dense acc "
                    f"retrieval {acc['retrieval']['acc']:.3f}, local {acc['local']['acc']:.3f}")
                if min(acc[t]["acc"] for t in TASKS) >= size.solved:
                    break
    return {"steps": step, "history": history}


def train_routers(model, size: Size, seed: int, log) -> dict:
    g = torch.Generator().manual_seed(seed + 2)
    schedule = RouterTrainingConfig(tasks=TASKS, targets=size.targets)
    objective = SparsityLagrangian(list(size.targets))
    with torch.no_grad():  # multipliers start at U[0, 0.5) (the released code's init, the engine's default)
        for p in objective.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * schedule.lambda_init_max)
    opt = torch.optim.AdamW([
        {"params": freeze_backbone(model), "lr": size.router_lr, "weight_decay": 0.1},
        {"params": list(objective.parameters()), "lr": size.lambda_lr, "weight_decay": schedule.lambda_weight_decay,
         "maximize": True}], betas=(0.9, 0.95))
    history = []
    for step in range(size.router_steps):
        model.train()
        set_router_temperature(model, schedule.tau(step, size.router_steps))
        tasks = torch.tensor([s % 2 for s in range(size.router_batch)])
        ids, answers = batch(tasks.tolist(), size, g)
        ce = answer_loss(model, ids, answers)
        omega = training_omega(model)
        penalty, _ = objective(omega, tasks)
        opt.zero_grad()
        (ce + penalty).backward()
        opt.step()
        with torch.no_grad():
            for p in objective.parameters():
                p.clamp_(min=0)  # multipliers of an inequality-free Lagrangian stay non-negative
        row = {"step": step, "ce": float(ce.detach()), "penalty": float(penalty.detach()),
               **{f"omega_{t}": float(omega.detach()[tasks == i].mean()) for i, t in enumerate(TASKS)}}
        history.append(row)
        if step % 25 == 0 or step == size.router_steps - 1:
            log(f"router step {step}: ce {row['ce']:.3f}, omega retrieval {row['omega_retrieval']:.2f} / local "
                f"{row['omega_local']:.2f} (targets {size.targets[0]} / {size.targets[1]})")
    set_router_temperature(model, None)
    return {"history": history}


def static_mask(rate_retrieval: torch.Tensor, mean_msr: float) -> torch.Tensor:
    """The static (L, H_kv) mask with round((1 - mean_msr) * heads) full heads: those routed to full most often on
    retrieval inputs (ties broken by position)."""
    n_full = int(round((1.0 - mean_msr) * rate_retrieval.numel()))
    order = torch.argsort(rate_retrieval.flatten(), descending=True, stable=True)
    mask = torch.zeros(rate_retrieval.numel(), dtype=torch.long)
    mask[order[:n_full]] = 1
    return mask.view_as(rate_retrieval)


def run(size: Size, seed: int, out: Path, log=print) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 1000)  # held-out sequences, never trained on
    eval_sets = {t: batch([i] * size.eval_sequences, size, g) for i, t in enumerate(TASKS)}
    model = build_model(size, seed)
    pre = pretrain(model, size, eval_sets, seed, log)
    dense_plain = evaluate(model, eval_sets)
    config = ElasticAttentionConfig(sink=size.sink, window=size.window, pool_budget=size.pool_budget)
    torch.manual_seed(seed + 3)  # the routers' init
    model = enable_elastic_attention(model, config)
    routing = train_routers(model, size, seed, log)
    results = {"routed": evaluate(model, eval_sets)}
    rates = {t: torch.tensor(results["routed"][t]["full_rate"]) for t in TASKS}
    layers, heads = rates["retrieval"].shape
    for name, mask in (("dense", torch.ones(layers, heads, dtype=torch.long)),
                       ("sparse", torch.zeros(layers, heads, dtype=torch.long))):
        set_static_heads(model, mask)
        results[name] = evaluate(model, eval_sets)
    mean_msr = (results["routed"]["retrieval"]["msr"] + results["routed"]["local"]["msr"]) / 2
    static = static_mask(rates["retrieval"], mean_msr)
    set_static_heads(model, static)
    results["static"] = evaluate(model, eval_sets)
    set_static_heads(model, None)
    wall = time.perf_counter() - start
    summary = {
        "seed": seed, "pretrain_steps": pre["steps"], "router_steps": size.router_steps,
        "msr_retrieval": results["routed"]["retrieval"]["msr"], "msr_local": results["routed"]["local"]["msr"],
        "msr_static": results["static"]["retrieval"]["msr"],
        **{f"acc_{m}_{t}": results[m][t]["acc"] for m in ("dense", "routed", "static", "sparse") for t in TASKS},
        "acc_dense_plain_retrieval": dense_plain["retrieval"]["acc"], "wall_s": round(wall, 1)}
    summary["targets"] = {
        "msr_gap_ge_0.3": summary["msr_local"] - summary["msr_retrieval"] >= 0.3,
        "routed_within_0.02_of_dense": all(summary[f"acc_dense_{t}"] - summary[f"acc_routed_{t}"] <= 0.02
                                           for t in TASKS),
        "routed_beats_static_by_0.05": summary["acc_routed_retrieval"] - summary["acc_static_retrieval"] >= 0.05}
    (out / "results.json").write_text(json.dumps({"summary": summary, "results": results, "pretrain": pre,
                                                  "routing": routing, "size": dataclasses.asdict(size),
                                                  "full_rate": {t: r.tolist() for t, r in rates.items()},
                                                  "static_mask": static.tolist()}, indent=1))
    from elastic_miniature_plots import plot_all

    plot_all(out, results, rates, static, routing["history"], size.targets, size.n_values)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (CI: figures produced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/elastic_miniature")
    parser.add_argument("--pairs", type=int, default=None,
                        help="key-value pairs per sequence, every one queried (default 1: the needle lookup)")
    parser.add_argument("--pool-budget", type=int, default=None,
                        help="first and last tokens whose mean pre-RoPE key the routers read (default 16)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else Size()
    if args.pool_budget is not None:
        if args.pool_budget < 1:
            parser.error(f"--pool-budget must be >= 1, got {args.pool_budget}")
        size = dataclasses.replace(size, pool_budget=args.pool_budget)
    if args.pairs is not None:
        if not 1 <= args.pairs <= size.n_keys:
            parser.error(f"--pairs must be in 1..{size.n_keys} (distinct keys per sequence), got {args.pairs}")
        size = dataclasses.replace(size, pairs=args.pairs, queries=args.pairs)
    summary = run(size, args.seed, Path(args.out))
    print(f"figures and results in {args.out}/ (results.json, accuracy_msr.png, accuracy_vs_msr.png, routing_heatmaps.png, router_training.png)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
