"""The CPU training smoke: Re² (default) or plain GRPO on a tiny local model through verl's own trainer.

    python -m verl_ext.cpu_smoke [--out runs/cpu_smoke] [--steps 2] [--config-name re2_cpu_smoke|cpu_smoke]
                                 [extra hydra overrides ...]

Builds (once) a tiny Qwen2 with a locally trained tokenizer and a short supervised warm start, writes the built-in
arithmetic task as verl RL parquet, then runs ``python -m verl.trainer.main_ppo`` with the chosen config delta
(rollout ``hf``, math-verify grading; Re²'s two-stage rollout and three-way reward for ``re2_cpu_smoke``) and
prints where the step metrics went (JSON lines, one per step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from verl_ext.config import config_dir
from verl_ext.testing import arithmetic
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


def prepare(out: Path, warm_start_seconds: float = 60.0) -> tuple[Path, Path, Path]:
    """Tiny model (with warm start) and data under ``out``; reused when already there."""
    model_dir, data_dir = out / "model", out / "data"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, TinyModelSpec())
        if warm_start_seconds > 0:
            from verl_ext.testing.warm_start import warm_start

            warm_start(model_dir, max_seconds=warm_start_seconds, max_steps=400)
    train, val = arithmetic.write_parquet(data_dir, num_train=96, num_val=16)
    return model_dir, train, val


def trainer_command(
    model_dir: Path, train: Path, val: Path, out: Path, steps: int, config_name: str = "cpu_smoke", extra=()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={config_dir()}",
        f"--config-name={config_name}",
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={steps}",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        *extra,
    ]


def run(out: Path, steps: int = 2, extra=(), warm_start_seconds: float = 60.0,
        config_name: str = "re2_cpu_smoke") -> dict:
    """Run the smoke; returns {"metrics": path, "returncode": int, "seconds": float}."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir, train, val = prepare(out, warm_start_seconds)
    metrics = out / "metrics.jsonl"
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics), RAY_DEDUP_LOGS="0", TOKENIZERS_PARALLELISM="false")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    cmd = trainer_command(model_dir, train, val, out, steps, config_name, extra)
    start = time.perf_counter()
    with open(out / "trainer.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    return {"metrics": str(metrics), "log": str(out / "trainer.log"), "returncode": proc.returncode,
            "seconds": round(time.perf_counter() - start, 1)}


def read_metrics(path: str | Path) -> list[dict]:
    """The step records verl's file logger wrote: [{"step": n, "data": {metric: value}}]."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/cpu_smoke")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--config-name", default="re2_cpu_smoke",
                        choices=["re2_cpu_smoke", "cpu_smoke", "elastic_grpo_cpu_smoke"])
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for verl's trainer")
    args = parser.parse_args(argv)
    result = run(Path(args.out), args.steps, args.overrides, config_name=args.config_name)
    if result["returncode"] != 0:
        print(f"verl trainer failed (exit {result['returncode']}); log: {result['log']}", file=sys.stderr)
        return result["returncode"]
    records = read_metrics(result["metrics"])
    for record in records:
        data = record["data"]
        keys = ("critic/score/mean", "re2/redo_rate", "re2/acc_non_redo", "elastic/rollout_msr/mean",
                "training/rollout_probs_diff_max", "actor/pg_loss", "timing_s/step")
        print(f"step {record['step']}: " + ", ".join(f"{k}={data[k]:.4g}" for k in keys if k in data))
    print(f"metrics: {result['metrics']} ({len(records)} steps, {result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
