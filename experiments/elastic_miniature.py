"""Elastic Attention in miniature: a tiny Qwen3 pretrained from scratch on CPU on a long-range retrieval task and a
local task (``elastic_miniature_tasks``), routers trained on the frozen backbone with the paper's objective at
several sparsity budgets, then hard routing against all-dense, all-sparse and static head masks.

    .venv/bin/python experiments/elastic_miniature.py [--preset heads16|hops2|hops3|small|quick] [--seeds 0 1 2 3 4]
                                                      [--out runs/elastic_miniature]

Per seed, in order:
1. pretrain the dense model until it solves both tasks (step caps, never time; round-2 presets stop on a
   calibration draw and end the seed with a message if the caps are reached unsolved);
2. the oracle static check, before any router trains: the best static masks per head count on the calibration
   draw (``elastic_miniature_static.search``), the heads retrieval needs, and whether a static mask at the paper's
   targets' mean Omega_MSR can keep them all (then a fixed mask cannot lose, whatever the routers do);
3. the static curve: those masks on the held-out sequences;
4. routers trained at every retrieval budget of the preset (local target 1.0), each from the same initial routers,
   batches and Gumbel noise; each routed model evaluated with hard decisions on the held-out sequences.

The routed model is compared with the static curve at its own mean Omega_MSR over both tasks (the upper concave
hull of the whole-head points: a per-input draw between two static masks reaches it): on retrieval at the paper's
targets (retrieval 0.7, local 1.0; ``routed_minus_static_retrieval``) and on the mean accuracy of both tasks at
every budget (``below_static_curve_points``). The whole-head masks either side (``static_floor`` / ``static_ceil``)
and the first miniature's static mask (the heads routed to full most often on retrieval: ``static_frequency``) are
reported beside it.

Results per seed in OUT/seed-S/ (results.json and the figures); a seed whose results.json exists is not run again.
Last line: one JSON object of the headline figures over all seeds (BENCHMARKS.md, README).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from elastic_miniature_plots import plot_all, plot_seeds_curve
from elastic_miniature_static import frequency_mask, mask_of, search, static_at, static_full_heads
from elastic_miniature_tasks import PRESETS, TASKS, Size, task_sets
from elastic_miniature_train import answer_logits, build_model, evaluate, pretrain, train_routers
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.hf import enable_elastic_attention
from verl_ext.elastic_attention.state import set_static_heads

GOALS = {"routed_within_dense": 0.02, "beats_static_margin": 0.05, "beats_static_seeds": 4, "msr_gap_mean": 0.25}


@torch.no_grad()
def retrieval_accuracy(model, size: Size, ids: torch.Tensor, answers: torch.Tensor, mask: torch.Tensor) -> float:
    set_static_heads(model, mask)
    model.eval()
    pred = answer_logits(model, ids, answers, size.route_on_prompt).argmax(-1)
    return float((pred == ids.gather(1, answers)).float().mean())


def oracle_check(model, size: Size, calib: dict, log) -> dict:
    """Best static masks per head count on the calibration draw, and the heads retrieval needs (the all-full
    accuracy there, within 0.02); whether a static mask at the paper's targets' mean Omega_MSR keeps them all."""
    shape = (size.layers, size.heads)
    found = search(lambda m: retrieval_accuracy(model, size, *calib["retrieval"], m), shape,
                   tolerance=GOALS["routed_within_dense"])
    nominal_msr = (size.targets[0] + size.targets[1]) / 2
    full = static_full_heads(nominal_msr, size.kv_heads)
    check = {**found, "nominal_mean_msr": nominal_msr, "nominal_static_full": full,
             "keeps_all_nominal": found["needed"] <= full}
    log(f"oracle static check: retrieval needs {found['needed']} of {size.kv_heads} heads full (calibration acc by "
        f"head count {[round(a, 3) for a in found['acc'][:found['needed'] + 2]]}, target {found['target']:.3f}); a "
        f"static mask at the targets' mean Omega_MSR {nominal_msr:.3f} has {full:.2f}: "
        + ("it can keep them all, so a fixed mask ties by construction" if check["keeps_all_nominal"]
           else "it cannot keep them all"))
    return check


def static_curve(model, size: Size, heads: list, eval_sets: dict) -> list[dict]:
    """The best static mask of every head count on the held-out sequences."""
    curve = []
    for k in range(size.kv_heads + 1):
        set_static_heads(model, mask_of(heads[k], (size.layers, size.heads)))
        r = evaluate(model, eval_sets, size.route_on_prompt)
        curve.append({"k": k, "msr": 1.0 - k / size.kv_heads, **{f"acc_{t}": r[t]["acc"] for t in TASKS},
                      **{f"correct_{t}": r[t]["correct"] for t in TASKS}, "n": r["retrieval"]["n"],
                      "acc_mean": (r["retrieval"]["acc"] + r["local"]["acc"]) / 2})
    set_static_heads(model, None)
    return curve


def run_seed(size: Size, seed: int, out: Path, log=print) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    eval_sets = task_sets(size, size.eval_sequences, seed + 1000)  # held-out sequences, never trained or chosen on
    calib = task_sets(size, size.calib_sequences, seed + 2000)     # what static masks and the stop are chosen on
    model = build_model(size, seed)
    pre = pretrain(model, size, calib if size.calibrated else eval_sets, seed, log)
    dense_plain = evaluate(model, eval_sets, size.route_on_prompt)
    dense_calib = evaluate(model, calib, size.route_on_prompt)
    solved = min(dense_calib[t]["acc"] for t in TASKS) >= size.solved
    summary = {"seed": seed, "preset_heads": size.kv_heads, "pretrain_steps": pre["steps"], "dense_solved": solved,
               **{f"acc_dense_plain_{t}": dense_plain[t]["acc"] for t in TASKS}}
    if not solved and size.calibrated:
        log(f"the dense model did not solve both tasks within the pretraining caps (calibration accuracy "
            f"{ {t: round(dense_calib[t]['acc'], 3) for t in TASKS} }, needed {size.solved}): no routers trained")
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        (out / "results.json").write_text(json.dumps({"summary": summary, "pretrain": pre,
                                                      "size": dataclasses.asdict(size)}, indent=1))
        return summary
    config = ElasticAttentionConfig(sink=size.sink, window=size.window, pool_budget=size.pool_budget)
    torch.manual_seed(seed + 3)  # the routers' init
    model = enable_elastic_attention(model, config)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if "router" in n}
    rng = torch.get_rng_state()  # every budget's Gumbel noise starts from here
    oracle = oracle_check(model, size, calib, log)
    shape = (size.layers, size.heads)
    results = {}
    for name, mask in (("dense", torch.ones(shape, dtype=torch.long)), ("sparse", torch.zeros(shape, dtype=torch.long))):
        set_static_heads(model, mask)
        results[name] = evaluate(model, eval_sets, size.route_on_prompt)
    set_static_heads(model, None)
    curve = static_curve(model, size, oracle["heads"], eval_sets)
    budgets = {}
    for budget in size.budgets:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in initial:
                    p.copy_(initial[n])
        torch.set_rng_state(rng)
        routing = train_routers(model, size, seed, (budget, size.targets[1]), log)
        routed = evaluate(model, eval_sets, size.route_on_prompt)
        mean_msr = (routed["retrieval"]["msr"] + routed["local"]["msr"]) / 2
        acc_mean = (routed["retrieval"]["acc"] + routed["local"]["acc"]) / 2
        static_mean = static_at(curve, mean_msr, "acc_mean")
        budgets[str(budget)] = {"routed": routed, "history": routing["history"], "mean_msr": mean_msr,
                                "acc_mean": acc_mean, "static_curve_acc_mean": static_mean,
                                "below_static_curve": acc_mean < static_mean - 1e-9,
                                "calib_full_rate": evaluate(model, {"retrieval": calib["retrieval"]},
                                                            size.route_on_prompt)["retrieval"]["full_rate"]}
        log(f"budget {budget}: routed mean Omega_MSR {mean_msr:.3f}, mean acc {acc_mean:.3f}; static curve there "
            f"{static_mean:.3f}")
    paper = budgets[str(size.targets[0])]
    routed = paper["routed"]
    results["routed"] = routed
    rates = {t: torch.tensor(routed[t]["full_rate"]) for t in TASKS}
    full = static_full_heads(paper["mean_msr"], size.kv_heads)
    # Whole-head static masks around the routed model's mean Omega_MSR (the headline compares with their mix).
    for name, k in (("static_floor", math.floor(full + 1e-9)), ("static_ceil", math.ceil(full - 1e-9))):
        set_static_heads(model, mask_of(oracle["heads"][k], shape))
        results[name] = evaluate(model, eval_sets, size.route_on_prompt)
    # The first miniature's static baseline: the heads routed to full most often on retrieval (round 2: counted on
    # the calibration draw; the first miniature counted them on the held-out sequences).
    rate = paper["calib_full_rate"] if size.calibrated else routed["retrieval"]["full_rate"]
    set_static_heads(model, frequency_mask(torch.tensor(rate), round(full)))
    results["static_frequency"] = evaluate(model, eval_sets, size.route_on_prompt)
    set_static_heads(model, None)
    static_retrieval = static_at(curve, paper["mean_msr"], "acc_retrieval")
    summary.update({
        "router_steps": size.router_steps,
        "msr_retrieval": routed["retrieval"]["msr"], "msr_local": routed["local"]["msr"],
        "msr_gap": routed["local"]["msr"] - routed["retrieval"]["msr"], "mean_msr": paper["mean_msr"],
        "static_full_heads": full, "needed_heads": oracle["needed"],
        "oracle_keeps_all": oracle["needed"] <= full + 1e-9, "oracle_keeps_all_nominal": oracle["keeps_all_nominal"],
        **{f"acc_{m}_{t}": results[m][t]["acc"] for m in results for t in TASKS},
        "acc_static_retrieval": static_retrieval,
        "acc_static_local": static_at(curve, paper["mean_msr"], "acc_local"),
        "curve": [{"budget": float(b), "mean_msr": v["mean_msr"], "acc_mean": v["acc_mean"],
                   "static_acc_mean": v["static_curve_acc_mean"], "below": v["below_static_curve"]}
                  for b, v in budgets.items()],
        "wall_s": round(time.perf_counter() - start, 1)})
    summary["routed_minus_dense"] = min(summary[f"acc_routed_{t}"] - summary[f"acc_dense_{t}"] for t in TASKS)
    summary["routed_minus_static_retrieval"] = summary["acc_routed_retrieval"] - static_retrieval
    static = mask_of(oracle["heads"][round(full)], shape)
    (out / "results.json").write_text(json.dumps({
        "summary": summary, "results": results, "pretrain": pre, "oracle": oracle, "static_curve": curve,
        "budgets": budgets, "size": dataclasses.asdict(size), "full_rate": {t: r.tolist() for t, r in rates.items()},
        "static_mask": static.tolist()}, indent=1))
    plot_all(out, results, rates, static, paper["history"], (size.targets[0], size.targets[1]),
             size.answer_classes, curve, budgets, size.eval_sequences)
    return summary


def aggregate(summaries: list[dict], wall_s: float) -> dict:
    """The headline figures over seeds (``wall_s``: the seeds' own run times, so a resumed run reports the whole
    experiment's cost)."""
    unsolved = [s["seed"] for s in summaries if not s.get("dense_solved", True)]
    summaries = [s for s in summaries if s.get("dense_solved", True)]
    if not summaries:
        return {"seeds": [], "unsolved_seeds": unsolved, "wall_s": round(wall_s, 1),
                "goals": {"dense_model_solved_some_seed": False}}
    seeds = [s["seed"] for s in summaries]
    beats = [s["seed"] for s in summaries if s["routed_minus_static_retrieval"] >= GOALS["beats_static_margin"]]
    below = sum(p["below"] for s in summaries for p in s["curve"])
    report = {
        "seeds": seeds, "unsolved_seeds": unsolved,
        "routed_minus_dense_worst": min(s["routed_minus_dense"] for s in summaries),
        "beats_static_seeds": beats,
        "msr_gap_mean": sum(s["msr_gap"] for s in summaries) / len(summaries),
        "below_static_curve_points": below,
        "curve_points": sum(len(s["curve"]) for s in summaries),
        "oracle_static_keeps_all": [s["seed"] for s in summaries if s["oracle_keeps_all"]],
        "needed_heads": {str(s["seed"]): s["needed_heads"] for s in summaries},
        "static_full_heads": {str(s["seed"]): s["static_full_heads"] for s in summaries},
        "routed_minus_static_retrieval": {str(s["seed"]): round(s["routed_minus_static_retrieval"], 4)
                                          for s in summaries},
        "wall_s": round(wall_s, 1)}
    needed_seeds = min(GOALS["beats_static_seeds"], len(seeds))
    report["goals"] = {
        "routed_within_0.02_of_dense_every_seed": report["routed_minus_dense_worst"] >= -GOALS["routed_within_dense"],
        f"beats_static_by_0.05_on_{needed_seeds}_of_{len(seeds)}": len(beats) >= needed_seeds,
        "msr_gap_mean_ge_0.25": report["msr_gap_mean"] >= GOALS["msr_gap_mean"],
        "on_or_above_static_curve_everywhere": below == 0}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="heads16",
                        help="heads16 (default: 16 KV heads, decoys, instructions, three budgets), hops2 / hops3 "
                             "(the same with chains of 2 / 3 lookups), small (the first miniature), quick (CI)")
    parser.add_argument("--quick", action="store_true", help="the same as --preset quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seed", type=int, default=None, help="one seed (the same as --seeds S)")
    parser.add_argument("--out", default="runs/elastic_miniature")
    parser.add_argument("--pairs", type=int, default=None,
                        help="key-value pairs per sequence, every one queried (default: the preset's)")
    parser.add_argument("--pool-budget", type=int, default=None,
                        help="first and last tokens whose mean pre-RoPE key the routers read (default 16)")
    args = parser.parse_args(argv)
    size = PRESETS["quick" if args.quick else args.preset]
    if args.pool_budget is not None:
        if args.pool_budget < 1:
            parser.error(f"--pool-budget must be >= 1, got {args.pool_budget}")
        size = dataclasses.replace(size, pool_budget=args.pool_budget)
    if args.pairs is not None:
        try:
            size = dataclasses.replace(size, pairs=args.pairs, queries=1 if size.decoys else args.pairs)
        except ValueError as err:
            parser.error(f"--pairs {args.pairs}: {err}")
    seeds = [args.seed] if args.seed is not None else args.seeds
    out, summaries = Path(args.out), []
    for seed in seeds:
        done = out / f"seed-{seed}" / "results.json"
        if done.exists():
            stored = json.loads(done.read_text())
            differ = sorted(k for k, v in dataclasses.asdict(size).items() if json.loads(json.dumps(v))
                            != stored["size"].get(k))
            if differ:
                parser.error(f"{done} was run with other settings ({', '.join(differ)}); use another --out or "
                             "remove it to rerun")
            summary = stored["summary"]
            print(f"seed {seed}: done before ({done}), not run again")
        else:
            summary = run_seed(size, seed, out / f"seed-{seed}", log=lambda m, s=seed: print(f"[seed {s}] {m}"))
        print(json.dumps({k: v for k, v in summary.items() if k != "curve"}))
        summaries.append(summary)
    report = aggregate(summaries, sum(s["wall_s"] for s in summaries))
    plot_seeds_curve(out, [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in seeds])
    print(f"figures and results in {out}/ (accuracy_vs_msr_seeds.png; per seed: seed-S/)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
