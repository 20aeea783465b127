"""Re² in miniature, on a task where its premise holds: a tiny Qwen2 warm-started from scratch on CPU on
pick-and-check, its premise measured and gated, then trained through verl's own trainer with Re² and with a
budget-matched GRPO baseline on equal terms, five seeds chosen before looking.

    .venv/bin/python experiments/re2_miniature.py [--quick] [--seeds 0 1 2 3 4] [--out runs/re2_miniature]

The task (``verl_ext.testing.pick_check``): "Find x in 3, 5, 8 with x + 4 = 9."; a response picks a candidate,
checks it ("3 + 4 = 7, not 9") and boxes it. The pick decides the answer; the check shows a bad pick a few tokens
later. The warm start picks uniformly (right a third of the time on every question), checks truthfully, and ends 2%
of its examples with the redo phrase after a failed check.

Per seed (resumable: a finished seed's ``seed-<s>/result.json`` is read back, not rerun):

1. **Premise, measured on the warm start and gated** (``re2_miniature_analysis.premise``): from
   ``python -m verl_ext.re2.dump`` on the held-out questions, restarting (a fresh attempt) against continuing after
   a wrong start (prefixes of wrong answers at the training range of fractions), and whether the check's verdict is
   true. The run stops, saying which, unless restart >= 2x continuation and the check is right >= 0.8.
2. **Training on equal terms** (``verl_ext/config/re2_miniature*.yaml``): the same questions, learning rate, KL
   anchor, steps and optimizer steps per step (re2.update_steps=matched; ``training/optimizer_steps`` is read back
   and reported), and as many generated responses per step (GRPO: n + n*m per question). Accuracy under the redo
   rule is compared at equal generated tokens (each seed's two validation curves at the smaller final count).
3. **The evaluation chain a user runs** (dump, then ``python -m verl_ext.re2.eval avg|tts|prefix``) on the best
   and the last checkpoint of each arm and on the warm start: test-time scaling at 1..64 samples under the redo
   rule with 95% intervals over questions; the paper's Section-3 analysis (continuations against prefix fraction
   and prefix quality, redo or not) on the warm start and on Re²'s last checkpoint; redo after a failed check
   against after a passed one.

Last line: one JSON object of the headline figures (BENCHMARKS.md and the README's Re² showcase).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from re2_miniature_analysis import evaluate_checkpoint, premise, section3
from verl_ext.cpu_smoke import SPEC, new_run_dir, read_metrics, run_trainer, trainer_command, val_accuracy, val_redo_rate
from verl_ext.testing import pick_check

METHODS = {"re2": "re2_miniature", "baseline": "re2_miniature_baseline"}
GATE = {"premise_ratio": 2.0, "check_truth": 0.8}
RECIPE_VERSION = 1  # bump when the model recipe changes, so cached models are rebuilt


@dataclasses.dataclass(frozen=True)
class Size:
    steps: int = 40              # training steps per run (8 questions each)
    val_every: int = 10          # validation and a checkpoint every val_every steps (the pilot's 5 spent as many
                                 # generations on validation as on training: 9 x 36 x 16 against 40 x 8 x 20)
    warm_steps: int = 1000       # supervised warm start
    redo_share: float = 0.02     # of the warm start's examples: a failed check, then the redo phrase
    num_train: int = 64
    num_val: int = 36
    premise_samples: int = 8     # per held-out question, from the warm start (each also continued from prefixes)
    tts_samples: int = 64        # per held-out question, from each evaluated checkpoint
    budgets: tuple = (1, 2, 4, 8, 16, 32, 64)
    overrides: tuple = ()
    enforce_gate: bool = True


# One step of everything. A 20-step warm start cannot learn the task, so the premise is measured and reported but
# not enforced: the chain after it must run all the same.
QUICK = Size(steps=1, val_every=1, warm_steps=20, num_val=4, premise_samples=2, tts_samples=4, budgets=(1, 2, 4),
             overrides=("actor_rollout_ref.rollout.val_kwargs.n=2",), enforce_gate=False)


def gate_failures(premise: dict) -> dict:
    """{measured quantity: (value, floor)} for every premise figure below its floor (``GATE``)."""
    return {k: (premise[k], floor) for k, floor in GATE.items() if not premise[k] >= floor}


def prepare_model(cache: Path, size: Size, seed: int) -> Path:
    """The warm-started pick-and-check model for ``seed``, built once per recipe (atomically written)."""
    from verl_ext.testing.tiny_model import build_tiny_model
    from verl_ext.testing.warm_start import warm_start_on

    spec = dataclasses.replace(SPEC, seed=seed)
    recipe = {"task": "pick_check", "spec": spec.__dict__, "warm_steps": size.warm_steps,
              "redo_share": size.redo_share, "version": RECIPE_VERSION}
    model_dir = cache / f"pick-check-{hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]}"
    if (model_dir / "config.json").exists():
        return model_dir
    building = model_dir.with_name(model_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    build_tiny_model(building, spec, corpus=pick_check.corpus(seed))
    warm_start_on(building, lambda rng: pick_check.warm_start_example(rng, size.redo_share, seed), size.warm_steps,
                  seed=seed)
    (building / "recipe.json").write_text(json.dumps(recipe, indent=1))
    building.rename(model_dir)
    return model_dir


def _run_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "hydra" / ".hydra" / "config.yaml").read_text())


def curve(run_dir: Path) -> dict:
    """One run against cumulative generated tokens: validation points (accuracy under the redo rule, redo rate) and
    the per-step figures every comparison must share (optimizer steps, rows trained, Re²'s degenerate rewards)."""
    records = read_metrics(run_dir / "metrics.jsonl")
    cfg = _run_config(run_dir)
    rows = int(cfg["data"]["train_batch_size"]) * int(cfg["actor_rollout_ref"]["rollout"]["n"])
    tokens, cumulative, steps = {0: 0.0}, 0.0, []
    for r in records:
        data = r["data"]
        if "timing_s/step" not in data:
            continue
        step_tokens = data.get("re2/generated_tokens")
        if step_tokens is None:  # the baseline: every row is a full response, every row trained
            step_tokens = data["response_length/mean"] * rows
        cumulative += step_tokens
        tokens[r["step"]] = cumulative
        steps.append({"step": r["step"], "optimizer_steps": data.get("training/optimizer_steps"),
                      "rows": data.get("re2/trained_rows", rows), "lr": data.get("actor/lr"),
                      "degenerate_frac": data.get("re2/redo_reward_degenerate_frac")})
    vals = [(r["step"], r["data"]) for r in records if val_accuracy(r["data"]) is not None]
    return {"steps": [s for s, _ in vals], "tokens": [tokens[s] for s, _ in vals],
            "acc": [val_accuracy(d) for _, d in vals], "redo": [val_redo_rate(d) for _, d in vals],
            "final_tokens": cumulative, "per_step": steps,
            "val_n": int(cfg["actor_rollout_ref"]["rollout"]["val_kwargs"]["n"])}


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation of the points (xs increasing) at ``x`` within their range."""
    if not xs or not xs[0] <= x <= xs[-1]:
        raise ValueError(f"x={x} is outside the curve's range {xs[:1]}..{xs[-1:]}.")
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def train(method: str, model_dir: Path, data: tuple[Path, Path], out: Path, size: Size, seed: int) -> Path:
    config = METHODS[method]
    run_dir = new_run_dir(out, config, seed)
    extra = (*size.overrides, f"trainer.save_freq={size.val_every}")  # a checkpoint at every validation
    cmd = trainer_command(model_dir, *data, run_dir, size.steps, config, seed, extra, val_every=size.val_every)
    print(f"  {method}: {size.steps} steps through verl's trainer, run folder {run_dir}", flush=True)
    if run_trainer(run_dir, cmd, size.steps) != 0:
        raise RuntimeError(f"{method} (seed {seed}) failed; the end of {run_dir / 'trainer.log'} says why.")
    return run_dir


def checkpoint(run_dir: Path, step: int) -> Path:
    """A step's Hugging Face folder (weights, config and tokenizer: ``save_contents`` has ``hf_model``)."""
    hf = run_dir / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"
    if not (hf / "config.json").exists() or not (hf / "tokenizer_config.json").exists():
        raise RuntimeError(f"{hf} holds no model and tokenizer; the run must save hf_model at every validation "
                           "(actor_rollout_ref.actor.checkpoint.save_contents, trainer.save_freq).")
    return hf


def run_seed(seed: int, size: Size, out: Path) -> dict:
    done = out / f"seed-{seed}" / "result.json"
    if done.exists():  # resumable per seed
        print(f"seed {seed}: done before, read from {done}", flush=True)
        return json.loads(done.read_text())
    start = time.perf_counter()
    phase_s = {}  # where a seed's time goes: what the whole experiment's budget is spent on

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        phase_s[name] = round(now - since, 1)
        return now

    model_dir = prepare_model(out / ".cache", size, seed)
    t = lap("warm_start", start)
    data = pick_check.write_parquet(out / f"data-s{seed}", size.num_train, size.num_val, seed)
    work = out / f"seed-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    result = {"seed": seed, "model": str(model_dir)}
    result["premise"] = premise(model_dir, data[1], work / "premise", size, seed)
    t = lap("premise", t)
    p = result["premise"]
    print(f"seed {seed}: premise on the warm start: restart {p['restart_success']:.3f}, continuation after a wrong "
          f"start {p['continuation_success']:.3f} (x{p['premise_ratio']:.1f}), check right {p['check_truth']:.3f}",
          flush=True)
    result["gate"] = gate_failures(p)
    if result["gate"] and size.enforce_gate:
        result["gate_failed"] = result["gate"]
        done.write_text(json.dumps(result, indent=1))
        return result
    result["curves"], runs = {}, {}
    for method in METHODS:
        runs[method] = train(method, model_dir, data, out, size, seed)
        t = lap(f"train_{method}", t)
        result["curves"][method] = curve(runs[method])
        result[f"run_dir_{method}"] = str(runs[method])
    c = result["curves"]
    budget = min(c["re2"]["final_tokens"], c["baseline"]["final_tokens"])
    result["equal_tokens"] = budget
    for method in METHODS:
        result[f"acc_{method}_end"] = interpolate(c[method]["tokens"], c[method]["acc"], budget)
    result["acc_gain"] = result["acc_re2_end"] - result["acc_baseline_end"]
    result["redo_rate_start"], result["redo_rate_end"] = c["re2"]["redo"][0], c["re2"]["redo"][-1]
    evaluated = {"start": ("start", model_dir, None)}
    for method, run_dir in runs.items():
        points = [(s, a) for s, a in zip(c[method]["steps"], c[method]["acc"]) if s > 0]
        best = max(points, key=lambda p: (p[1], p[0]))[0]
        evaluated[f"{method}_last"] = (method, checkpoint(run_dir, size.steps), run_dir)
        evaluated[f"{method}_best"] = (method, checkpoint(run_dir, best), run_dir)
        result[f"best_step_{method}"] = best
    result["eval"] = {}
    for name, (_, path, config) in evaluated.items():
        same = next((n for n, (_, q, _) in evaluated.items() if q == path and n in result["eval"]), None)
        # the best checkpoint is often the last: one evaluation serves both (same weights, same seed)
        result["eval"][name] = (result["eval"][same] if same else
                                evaluate_checkpoint(path, data[1], work / name, size, seed, config))
    t = lap("evaluation_chain", t)
    result["section3"] = {"start": p["section3"],
                          "re2_last": section3(evaluated["re2_last"][1], data[1], work / "section3_re2_last",
                                               size, seed, runs["re2"])}
    lap("section3", t)
    result["phase_s"] = phase_s
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"seed {seed}: redo rate {result['redo_rate_start']:.3f} -> {result['redo_rate_end']:.3f}; at "
          f"{budget:.0f} tokens accuracy Re² {result['acc_re2_end']:.3f}, baseline {result['acc_baseline_end']:.3f} "
          f"({result['wall_s']:.0f} s)", flush=True)
    done.write_text(json.dumps(result, indent=1))
    return result


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(results: list[dict], size: Size, wall: float) -> dict:
    trained = [r for r in results if "gate_failed" not in r]
    summary = {"seeds": [r["seed"] for r in results], "steps": size.steps, "questions": size.num_val,
               "premise_ratio": _mean(r["premise"]["premise_ratio"] for r in results),
               "check_truth": _mean(r["premise"]["check_truth"] for r in results),
               "gate_failed_seeds": [r["seed"] for r in results if "gate_failed" in r], "wall_s": round(wall, 1)}
    phases = sorted({k for r in results for k in r.get("phase_s", {})})
    summary["phase_s_mean"] = {k: round(_mean(r["phase_s"].get(k) for r in results if "phase_s" in r), 1)
                               for k in phases}
    if not trained:
        return summary
    gains = [r["acc_gain"] for r in trained]
    last = len(size.budgets) - 1
    tts = {name: [_mean(r["eval"][name]["tts"][i] for r in trained) for i in range(len(size.budgets))]
           for name in trained[0]["eval"]}
    summary.update({
        "redo_rate_start": _mean(r["redo_rate_start"] for r in trained),
        "redo_rate_end": _mean(r["redo_rate_end"] for r in trained),
        "acc_re2_end": _mean(r["acc_re2_end"] for r in trained),
        "acc_baseline_end": _mean(r["acc_baseline_end"] for r in trained),
        "acc_gain_mean": statistics.fmean(gains), "acc_gain_positive_seeds": sum(g > 0 for g in gains),
        "optimizer_steps_re2": _mean(s["optimizer_steps"] for r in trained for s in r["curves"]["re2"]["per_step"]),
        "optimizer_steps_baseline": _mean(s["optimizer_steps"] for r in trained
                                          for s in r["curves"]["baseline"]["per_step"]),
        "redo_reward_degenerate_frac": _mean(s["degenerate_frac"] for r in trained
                                             for s in r["curves"]["re2"]["per_step"]),
        "tts_budgets": list(size.budgets), "tts": tts,
        "tts64_gain_mean": statistics.fmean(r["eval"]["re2_last"]["tts"][last] - r["eval"]["baseline_last"]["tts"][last]
                                            for r in trained),
        "tts64_gain_best_mean": statistics.fmean(r["eval"]["re2_best"]["tts"][last]
                                                 - r["eval"]["baseline_best"]["tts"][last] for r in trained),
        "redo_after_failed_check": _mean(r["eval"]["re2_last"]["redo_after_failed_check"] for r in trained),
        "redo_after_passed_check": _mean(r["eval"]["re2_last"]["redo_after_passed_check"] for r in trained),
    })
    summary["goals"] = {
        "redo_rate_end_ge_0.10_and_10x": summary["redo_rate_end"] >= 0.10
        and summary["redo_rate_end"] >= 10 * summary["redo_rate_start"],
        "acc_gain_mean_ge_0.03": summary["acc_gain_mean"] >= 0.03,
        "gain_positive_on_4_of_5": summary["acc_gain_positive_seeds"] >= min(4, len(trained)),
        "tts64_re2_ahead": summary["tts64_gain_mean"] > 0}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one step, tiny sizes (CI: every figure produced)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default="runs/re2_miniature")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else Size()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = [run_seed(seed, size, out) for seed in args.seeds]
    summary = summarise(results, size, time.perf_counter() - start)
    (out / "results.json").write_text(json.dumps({"summary": summary, "seeds": results,
                                                  "size": dataclasses.asdict(size)}, indent=1))
    if summary["gate_failed_seeds"]:
        print(f"Re²'s premise does not hold for seeds {summary['gate_failed_seeds']} (gate {GATE}); those seeds "
              "were not trained. See results.json.", flush=True)
    if any("gate_failed" not in r for r in results):
        from re2_miniature_plots import plot_all

        plot_all(out, [r for r in results if "gate_failed" not in r], summary)
        print(f"figures and results in {out}/ (results.json, learning_curves.png, tts.png, section3.png)")
    print(json.dumps(summary))
    return 1 if len(summary["gate_failed_seeds"]) == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
