"""The CPU main job: Re² (default) or plain GRPO on a tiny local model through verl's own trainer, with the story
told on the console.

    python -m verl_ext.cpu_smoke [--config-name re2_cpu_smoke|cpu_smoke|elastic_grpo_cpu_smoke] [--steps N]
                                 [--seed S] [--out runs] [--resume RUN_DIR] [extra hydra overrides ...]

Builds a tiny Qwen2 with a locally trained tokenizer and warm-starts it for a fixed number of seeded steps on the
built-in arithmetic task (it knows the sums but boxes its answer only about a third of the time; Re²'s redo phrase
is rare), writes the task as verl RL parquet, then runs ``python -m verl.trainer.main_ppo`` with the chosen config
delta. Validation (sampled answers on held-out questions) runs before the first step and after the last.

Every run writes to its own folder, ``<out>/<config>/<time>-s<seed>/``: ``metrics.jsonl`` (verl's file logger, a
JSON line per step), ``trainer.log`` (everything verl printed), ``curve.png``, ``generations/`` (the validation
dumps ``python -m verl_ext.re2.eval`` reads) and ``checkpoints/``. ``--resume RUN_DIR`` continues that run instead.
The built model is cached by its recipe under ``<out>/.cache``, so a second run skips the build. The console shows a
line per step, a summary, and last one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from verl_ext.config import config_dir
from verl_ext.testing import arithmetic
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

CONFIGS = ("re2_cpu_smoke", "cpu_smoke", "elastic_grpo_cpu_smoke", "elastic_grpo_vllm_cpu_smoke")
DEFAULT_STEPS = {"re2_cpu_smoke": 20, "cpu_smoke": 20, "elastic_grpo_cpu_smoke": 2, "elastic_grpo_vllm_cpu_smoke": 2}
CONFIG_ROLLOUT = {"elastic_grpo_vllm_cpu_smoke": "vllm"}  # the others generate with hf unless overridden
SPEC = TinyModelSpec(intermediate=512)  # a wider MLP learns the sums within the warm start's steps
WARM_START = {"steps": 600, "boxed_share": 0.4, "redo_share": 0.02}
VAL_EVERY = 10  # validation before the first step, every VAL_EVERY steps and after the last
NUM_TRAIN, NUM_VAL = 136, 64  # disjoint questions of the 200 single-digit sums and differences
RECIPE_VERSION = 1  # bump when the model recipe changes, so cached models are rebuilt


def _quiet_transformers() -> None:
    """transformers' weight-loading progress bars and notices are noise on this console."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


HEAD_DIMS = (16, 32)  # 16: the quick default; 32: the smallest vLLM's CPU attention runs (same width, fewer heads)


def model_spec(head_dim: int = 16) -> TinyModelSpec:
    """The main job's model with ``head_dim`` (``SPEC`` itself at 16): same width and layers, hidden/head_dim heads."""
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim={head_dim}; the main job's model comes with {HEAD_DIMS}.")
    heads = SPEC.hidden // head_dim
    return dataclasses.replace(SPEC, heads=heads, kv_heads=max(1, heads // 2))


def prepare_model(cache: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """The warm-started tiny model for ``seed``, built once per recipe and reused (atomically written)."""
    _quiet_transformers()
    spec = model_spec(head_dim)
    recipe = {"spec": spec.__dict__ | {"seed": seed}, "warm_start": WARM_START, "version": RECIPE_VERSION}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    model_dir = cache / f"tiny-{key}"
    if (model_dir / "config.json").exists():
        return model_dir
    from verl_ext.testing.warm_start import warm_start

    building = cache / f".building-{key}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    build_tiny_model(building, dataclasses.replace(spec, seed=seed))
    warm_start(building, seed=seed, **WARM_START)
    (building / "recipe.json").write_text(json.dumps(recipe, indent=1))
    try:
        building.rename(model_dir)
    except OSError:  # another run finished the same recipe first (a shared cache): theirs is the same model
        if not (model_dir / "config.json").exists():
            raise
        shutil.rmtree(building, ignore_errors=True)
    return model_dir


def new_run_dir(root: Path, config_name: str, seed: int) -> Path:
    base = root / config_name / (time.strftime("%Y%m%d-%H%M%S") + f"-s{seed}")
    run, k = base, 1
    while run.exists():
        run, k = base.with_name(f"{base.name}-{k}"), k + 1
    run.mkdir(parents=True)
    return run


def trainer_command(model_dir: Path, train: Path, val: Path, run: Path, steps: int, config_name: str, seed: int,
                    extra=(), validate: bool = True, val_every: int = VAL_EVERY) -> list[str]:
    validation = ([f"trainer.test_freq={min(val_every, steps)}", "trainer.val_before_train=true"] if validate
                  else ["trainer.test_freq=-1", "trainer.val_before_train=false"])
    return [
        sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={config_dir()}", f"--config-name={config_name}",
        f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={train}", f"data.val_files={val}",
        f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}", *validation,
        f"trainer.default_local_dir={run / 'checkpoints'}", f"trainer.validation_data_dir={run / 'generations'}",
        f"trainer.experiment_name={run.name}", f"hydra.run.dir={run / 'hydra'}", f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}", *extra,
    ]


def read_metrics(path: str | Path) -> list[dict]:
    """The step records verl's file logger wrote: [{"step": n, "data": {metric: value}}]."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _val(data: dict, suffix: str):
    return next((v for k, v in data.items() if k.startswith("val-") and k.endswith(suffix)), None)


def val_accuracy(data: dict):
    """Accuracy under the redo rule (Re²), else verl's mean accuracy over the validation samples."""
    value = _val(data, "/re2_avg_redo_rule")
    if value is None:
        value = next((v for k, v in data.items() if k.startswith("val-core/") and "/acc/mean@" in k), None)
    return value


def val_redo_rate(data: dict):
    return _val(data, "/re2_redo_rate")


class Progress(threading.Thread):
    """Prints a line per record verl's file logger writes, while the trainer runs."""

    def __init__(self, metrics: Path, steps: int, start_step: int = 0):
        super().__init__(daemon=True)
        self.metrics, self.steps, self.start_step = metrics, steps, start_step
        self.stop = threading.Event()
        self.seen = 0
        self.step_seconds: list[float] = []

    def run(self):
        while not self.stop.wait(0.5):
            self.flush()

    def flush(self):
        records = read_metrics(self.metrics) if self.metrics.exists() else []
        for record in records[self.seen:]:
            print(self.line(record), flush=True)
        self.seen = len(records)

    def line(self, record: dict) -> str:
        data, step = record["data"], record["step"]
        parts = []
        if "timing_s/step" in data:
            self.step_seconds.append(data["timing_s/step"])
            done = step - self.start_step
            eta = (self.steps - step) * sum(self.step_seconds) / len(self.step_seconds)
            parts = [f"step {step:>3}/{self.steps}"]
            if "re2/acc_non_redo" in data:  # all continuations, before the filter keeps groups that differ
                parts.append(f"accuracy {data['re2/acc_non_redo']:.3f}")
            elif "critic/score/mean" in data:
                parts.append(f"reward {data['critic/score/mean']:.3f}")
            if "re2/redo_rate" in data:
                parts.append(f"redo {data['re2/redo_rate']:.3f}")
            if "elastic/rollout_msr/mean" in data:
                parts.append(f"MSR {data['elastic/rollout_msr/mean']:.2f}")
            parts += [f"{data['timing_s/step']:.1f} s", f"ETA {eta:.0f} s" if done < self.steps else "done"]
        acc = val_accuracy(data)
        if acc is not None:
            redo = val_redo_rate(data)
            parts.append(f"validation: accuracy {acc:.3f}" + (f", redo rate {redo:.3f}" if redo is not None else ""))
        return "  ".join(parts) if parts else f"step {step}: (no step figures)"


def summarise(records: list[dict]) -> dict:
    """Headline figures from a run's records: first and last validation, per-step figures."""
    vals = [(r["step"], r["data"]) for r in records if val_accuracy(r["data"]) is not None]
    train = [r for r in records if "timing_s/step" in r["data"]]
    first, last = (vals[0][1], vals[-1][1]) if vals else ({}, {})
    return {
        "steps": len(train),
        "val_acc_start": val_accuracy(first), "val_acc_end": val_accuracy(last),
        "redo_rate_start": val_redo_rate(first), "redo_rate_end": val_redo_rate(last),
        "val_steps": [step for step, _ in vals], "val_acc": [val_accuracy(d) for _, d in vals],
        "val_samples": [_val_samples(d) for _, d in vals],
        "train_steps": [r["step"] for r in train],
        "train_acc": [r["data"].get("re2/acc_non_redo", r["data"].get("critic/score/mean")) for r in train],
        "train_redo_rate": [r["data"].get("re2/redo_rate") for r in train],
    }


def _val_samples(data: dict) -> int | None:
    """Validation answers behind the accuracy: questions x answers per question (from verl's mean@N key)."""
    n = next((int(k.rsplit("@", 1)[1]) for k in data if k.startswith("val-core/") and "/acc/mean@" in k), None)
    return n * NUM_VAL if n else None


def plot_curve(summary: dict, path: Path, title: str) -> None:
    """Train reward per step and validation accuracy (start, end) against the step: curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from verl_ext.stats import wilson_interval

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(summary["train_steps"], summary["train_acc"], marker=".", color="tab:blue", alpha=0.7,
            label="training accuracy (all responses of the step)")
    if summary["val_acc"]:
        n = summary["val_samples"][0]
        lows, highs = zip(*[wilson_interval(a * n, n) if n else (a, a) for a, n in zip(summary["val_acc"],
                                                                                summary["val_samples"])])
        err = [[a - lo for a, lo in zip(summary["val_acc"], lows)], [hi - a for a, hi in zip(summary["val_acc"], highs)]]
        ax.errorbar(summary["val_steps"], summary["val_acc"], yerr=err, marker="o", color="tab:green", capsize=3,
                    label=f"validation accuracy, held-out questions (n={n} answers, 95% CI)")
    if any(r is not None for r in summary["train_redo_rate"]):
        ax.plot(summary["train_steps"], summary["train_redo_rate"], color="tab:orange", linestyle="--",
                label="training redo rate")
    ax.set_xlabel("training step (0: before training)")
    ax.set_ylabel("fraction of responses")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_trainer(run_dir: Path, cmd: list[str], steps: int, resume: bool = False, quiet: bool = False) -> int:
    """Run verl's trainer command ``cmd`` in ``run_dir``: its output to ``trainer.log``, its step metrics to
    ``metrics.jsonl`` (a line per step on the console unless ``quiet``); returns the exit code."""
    metrics = run_dir / "metrics.jsonl"
    previous = read_metrics(metrics)
    if previous and not resume:
        raise RuntimeError(f"{metrics} exists; a new run never writes into an old run's folder.")
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics), RAY_DEDUP_LOGS="0", TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    if resume and metrics.exists():  # verl's file logger truncates its file: keep the earlier steps
        metrics.rename(run_dir / f"metrics-until-step{previous[-1]['step'] if previous else 0}.jsonl")
    progress = Progress(metrics, steps, start_step=previous[-1]["step"] if (resume and previous) else 0)
    if not quiet:
        progress.start()
    with open(run_dir / "trainer.log", "a") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)
    progress.stop.set()
    if not quiet:
        progress.join()
        progress.flush()
    return proc.returncode


def run(root: Path, config_name: str = "re2_cpu_smoke", steps: int | None = None, seed: int = 0, extra=(),
        resume: Path | None = None, quiet: bool = False, validate: bool = True, cache: Path | None = None,
        head_dim: int | None = None) -> dict:
    """Run the job; returns the summary (with ``run_dir``, ``model_dir``, ``returncode``, ``wall_s``). The model
    cache is ``cache`` (default ``root/.cache``); ``head_dim`` defaults to 32 with the vLLM rollout (its CPU
    attention's smallest), 16 otherwise."""
    start = time.perf_counter()
    engine = rollout_name(extra, CONFIG_ROLLOUT.get(config_name, "hf"))
    head_dim = head_dim or (32 if engine == "vllm" else 16)
    steps = steps or DEFAULT_STEPS[config_name]
    root = root.resolve()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    run_dir = resume.resolve() if resume else new_run_dir(root, config_name, seed)
    say(f"verl-ext CPU main job: {config_name} on a tiny Qwen2 (head_dim {head_dim}), {steps} training steps through "
        f"verl's trainer with the {engine} rollout (seed {seed}).")
    say(f"  run folder {run_dir} (trainer.log: everything verl prints)")
    model_dir = prepare_model(cache or root / ".cache", seed, head_dim)
    train, val = arithmetic.write_parquet(run_dir / "data", num_train=NUM_TRAIN, num_val=NUM_VAL, seed=seed)
    say(f"  model {model_dir} (built and warm-started in {time.perf_counter() - start:.0f} s); starting verl "
        "(Ray and its workers: about a minute) ...")
    returncode = run_trainer(run_dir, trainer_command(model_dir, train, val, run_dir, steps, config_name, seed, extra,
                                                      validate), steps, resume=resume is not None, quiet=quiet)
    metrics = run_dir / "metrics.jsonl"
    records = read_metrics(metrics)
    summary = summarise(records)
    summary.update({"run_dir": str(run_dir), "model_dir": str(model_dir), "returncode": returncode,
                    "config": config_name, "seed": seed, "rollout": engine, "head_dim": head_dim,
                    "metrics": str(metrics), "log": str(run_dir / "trainer.log"),
                    "wall_s": round(time.perf_counter() - start, 1)})
    if records:
        plot_curve(summary, run_dir / "curve.png", f"{config_name}, seed {seed}: {summary['steps']} steps")
    return summary


def rollout_name(overrides, default: str = "hf") -> str:
    """The rollout engine a list of hydra overrides asks for (the config's ``default`` when none does)."""
    names = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("actor_rollout_ref.rollout.name=")]
    return names[-1] if names else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-name", default="re2_cpu_smoke", choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default per config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs", help="parent of the run folders")
    parser.add_argument("--resume", default=None, help="an earlier run folder to continue")
    parser.add_argument("--cache", default=None, help="where built models are kept (default OUT/.cache)")
    parser.add_argument("--head-dim", type=int, choices=HEAD_DIMS, default=None,
                        help="the tiny model's head_dim (default 16; 32 with the vLLM rollout, the smallest its CPU "
                             "attention runs)")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for verl's trainer")
    args = parser.parse_args(argv)
    s = run(Path(args.out), args.config_name, args.steps, args.seed, args.overrides,
            Path(args.resume) if args.resume else None, cache=Path(args.cache) if args.cache else None,
            head_dim=args.head_dim)
    if s["returncode"] != 0:
        print(f"verl's trainer failed (exit {s['returncode']}); the end of {s['log']} says why.", file=sys.stderr)
        return s["returncode"]
    acc0, acc1 = s["val_acc_start"], s["val_acc_end"]
    if acc0 is not None and acc1 is not None:
        print(f"Validation accuracy {acc0:.3f} -> {acc1:.3f} ({acc1 - acc0:+.3f}) over {s['steps']} steps"
              + (f"; redo rate {s['redo_rate_start']:.3f} -> {s['redo_rate_end']:.3f}"
                 if s["redo_rate_start"] is not None else "") + f"; {s['wall_s']:.0f} s in all.")
    print(f"Metrics: {s['metrics']} (a JSON line per step); log: {s['log']}")
    print(f"Learning curve: {Path(s['run_dir']) / 'curve.png'}")
    keys = ("steps", "wall_s", "val_acc_start", "val_acc_end", "redo_rate_start", "redo_rate_end", "metrics", "run_dir",
            "model_dir", "rollout", "head_dim")
    print(json.dumps({k: s[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
