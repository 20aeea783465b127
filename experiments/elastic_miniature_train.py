"""Model, evaluation and training loops of ``elastic_miniature.py``: a tiny Qwen3 pretrained from scratch on the
tasks (``elastic_miniature_tasks``), and routers trained on the frozen backbone with the paper's objective.

Router training is the objective of ``verl_ext.elastic_attention.router_engine`` (the verl SFT engine's loss) run in
a plain loop: Gumbel-softmax straight-through decisions with the exponential temperature schedule of
``RouterTrainingConfig.tau``, ``SparsityLagrangian`` with per-task targets, one AdamW with the multipliers' group on
gradient ascent, and the backbone frozen (``freeze_backbone``). Its LM loss is on the answer tokens only: the filler
is random, so a loss on it teaches nothing. Accuracy is over queried values (teacher-forced argmax at each answer
position); Omega_MSR per sequence from the hard decisions (``metrics.msr``).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from elastic_miniature_tasks import PAD, TASKS, Size, batch, vocab
from verl_ext.elastic_attention.metrics import msr
from verl_ext.elastic_attention.router_objective import SparsityLagrangian, freeze_backbone, training_omega
from verl_ext.elastic_attention.state import elastic_decisions, set_router_temperature

warnings.filterwarnings("ignore", message=r".* engine is not available")  # verl's optional engines, irrelevant here
from verl_ext.elastic_attention.router_engine import RouterTrainingConfig  # noqa: E402


def answer_logits(model, ids: torch.Tensor, answers: torch.Tensor, prompt_only: bool = False) -> torch.Tensor:
    """(B, Q, V) logits predicting each queried value. Every sequence of a size has its answers at the same
    positions, so only those rows go through the LM head (``logits_to_keep``). ``prompt_only``: the last token (the
    last answer) is left out of the input, so routers, which pool the sequence's first and last tokens, never see
    it (the logits are causal: no prediction changes otherwise)."""
    if not bool((answers == answers[:1]).all()):
        raise ValueError("answer positions differ between sequences; batch sequences of one layout.")
    if prompt_only:
        if int(answers[0, -1]) != ids.shape[1] - 1:
            raise ValueError("prompt_only needs the last answer to be the sequence's last token.")
        ids = ids[:, :-1]
    return model(input_ids=ids, logits_to_keep=answers[0] - 1).logits


def answer_loss(model, ids, answers, prompt_only: bool = False) -> torch.Tensor:
    logits = answer_logits(model, ids, answers, prompt_only)
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
def evaluate(model, eval_sets: dict, prompt_only: bool = False) -> dict:
    """{task: {acc, correct, n, msr, full_rate}} with hard decisions (elastic models) or dense attention.
    ``full_rate`` is the (L, H_kv) share of the task's sequences each head went to full attention (elastic only)."""
    model.eval()
    out = {}
    elastic = hasattr(model.model.layers[0].self_attn, "elastic")
    for task, (ids, answers) in eval_sets.items():
        correct, decisions = 0, []
        for i in range(0, len(ids), 32):
            pred = answer_logits(model, ids[i:i + 32], answers[i:i + 32], prompt_only).argmax(-1)
            correct += int((pred == ids[i:i + 32].gather(1, answers[i:i + 32])).sum())
            if elastic:
                decisions.append(elastic_decisions(model))  # (B, L, H_kv) of this forward
        n = answers.numel()
        out[task] = {"acc": correct / n, "correct": correct, "n": n, "msr": 0.0}
        if decisions:
            z = torch.cat(decisions)
            out[task].update(msr=float(msr(z).mean()), full_rate=z.float().mean(0).tolist())
    return out


def pretrain(model, size: Size, stop_sets: dict, seed: int, log) -> dict:
    """Teach the lookup at a short distance first (short sequences: a large batch is cheap), then at the tasks'
    own distance until dense attention solves both on ``stop_sets`` (step caps, never time)."""
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=size.pretrain_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    short = dataclasses.replace(size, distance=size.short_distance, hop_gap=0, curriculum=True)  # sets side by side
    short_eval = {t: batch([i] * size.eval_sequences, short, torch.Generator().manual_seed(seed + 1001))
                  for i, t in enumerate(TASKS)}
    history, step = [], 0
    for phase, (shape, steps, n, evals) in enumerate([(short, size.short_steps, size.short_batch, short_eval),
                                                      (size, size.pretrain_steps, size.pretrain_batch, stop_sets)]):
        for _ in range(steps):
            step += 1
            model.train()
            ids, answers = batch([s % 2 for s in range(n)], shape, g)
            loss = answer_loss(model, ids, answers, size.route_on_prompt)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % size.eval_every == 0:
                acc = evaluate(model, evals, size.route_on_prompt)
                history.append({"step": step, "distance": shape.distance, "loss": float(loss.detach()),
                                **{t: acc[t]["acc"] for t in TASKS}})
                log(f"pretrain step {step} (distance {shape.distance}): loss {float(loss.detach()):.3f}, dense acc "
                    f"retrieval {acc['retrieval']['acc']:.3f}, local {acc['local']['acc']:.3f}")
                if min(acc[t]["acc"] for t in TASKS) >= size.solved:
                    break
    return {"steps": step, "history": history}


def train_routers(model, size: Size, seed: int, targets: tuple, log) -> dict:
    """Routers on the frozen backbone toward per-task Omega_MSR ``targets`` (retrieval, local). Every budget sees the
    same batches (the generator is seeded here)."""
    g = torch.Generator().manual_seed(seed + 2)
    schedule = RouterTrainingConfig(tasks=TASKS, targets=targets)
    objective = SparsityLagrangian(list(targets))
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
        ce = answer_loss(model, ids, answers, size.route_on_prompt)
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
                f"{row['omega_local']:.2f} (targets {targets[0]} / {targets[1]})")
    set_router_temperature(model, None)
    return {"history": history}
