"""Seconds per GRPO step of verl's trainer on CPU: 8 prompts x n=2 x 32 new tokens on the tiny model.

    python benchmarks/cpu_smoke_step.py [--steps 4] [--out runs/bench]

Runs `python -m verl.trainer.main_ppo` (the cpu_smoke config with its fast-polling replay buffer, EOS ignored so every
response is exactly 32 tokens, no validation) and reads verl's own `timing_s/step`. Target: <= 1.0 s per step. Step 1 pays one-off warm-ups, so `step_s` is the median of the later steps.
Baseline measured in the same run: the same 16 x 32-token generation done in-process by the hf engine alone, so
`step_over_generate` says how much the trainer (log-probs, update, weight sync, Ray) adds on top of generation.
Peak memory: the largest sum of RSS over the trainer's process tree (driver, Ray daemons, workers), sampled every
0.2 s; shared pages are counted once per process, so it is an upper bound. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from _timing import median_seconds
from verl_ext import cpu_smoke
from verl_ext.rollout.hf_engine import HFGenerationEngine
from verl_ext.rollout.sampling import SamplingParams
from verl_ext.testing import arithmetic

OVERRIDES = ["actor_rollout_ref.rollout.ignore_eos=true", "data.max_response_length=32", "data.train_batch_size=8",
             "actor_rollout_ref.rollout.n=2"]


class TreeRSSSampler(threading.Thread):
    """Peak of the summed RSS of this process's descendants."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for proc in me.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def generate_only_seconds(model_dir: Path, repeats: int = 3) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    engine = HFGenerationEngine(model, tok, [tok.eos_token_id], tok.pad_token_id)
    rows, _ = arithmetic.build_rows(8, 0)
    prompts = [tok(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False)["input_ids"] for r in rows]
    params = [SamplingParams(max_new_tokens=32, n=2, ignore_eos=True, logprobs=True)] * len(prompts)
    return median_seconds(lambda: engine.generate(prompts, params), repeats)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2: step 1 is warm-up")
    sampler = TreeRSSSampler()
    sampler.start()
    result = cpu_smoke.run(Path(args.out), "cpu_smoke", steps=args.steps, extra=OVERRIDES, quiet=True, validate=False)
    sampler.stop.set()
    sampler.join()
    if result["returncode"] != 0:
        sys.exit(f"trainer failed, see {result['log']}")
    records = [r for r in cpu_smoke.read_metrics(result["metrics"]) if "timing_s/step" in r["data"]]
    step_times = [r["data"]["timing_s/step"] for r in records]
    gen_times = [r["data"]["timing_s/gen"] for r in records]
    lengths = [r["data"]["response_length/mean"] for r in records]
    step_s = statistics.median(step_times[1:])
    generate_s = generate_only_seconds(Path(result["model_dir"]))
    for i, (s, g, n) in enumerate(zip(step_times, gen_times, lengths), start=1):
        print(f"step {i}: {s:.2f} s (gen {g:.2f} s), mean response length {n:.1f}")
    print(f"baseline hf engine alone, 16 x 32 tokens: {generate_s:.3f} s; trainer step / baseline = {step_s / generate_s:.1f}x")
    print(json.dumps({
        "step_s": round(step_s, 3),
        "first_step_s": round(step_times[0], 3),
        "gen_s": round(statistics.median(gen_times[1:]), 3),
        "hf_generate_only_s": round(generate_s, 3),
        "step_over_generate": round(step_s / generate_s, 2),
        "peak_rss_gb": round(sampler.peak / 2**30, 2),
        "run_wall_s": result["wall_s"],
        "steps": args.steps,
        "prompts": 8, "n": 2, "new_tokens": 32,
    }))


if __name__ == "__main__":
    main()
