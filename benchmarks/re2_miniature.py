"""Re² in miniature: a tiny Qwen2 warm-started from scratch on CPU on a guess-and-check task, trained through verl's
own trainer (hf rollout) with Re² and with a budget-matched GRPO baseline, three seeds each.

    .venv/bin/python benchmarks/re2_miniature.py [--quick] [--seeds 0 1 2] [--steps 40] [--out runs/re2_miniature]
                                                 [--re2-override KEY=VALUE ...] [--baseline-override KEY=VALUE ...]

The task (``verl_ext.testing.guess_check``): "Find x with x + a = c."; a response guesses x, checks the guess
("4 + 3 = 7, not 9" or "6 + 3 = 9, right") and boxes it. The guess decides the answer and the check shows a failed
guess a few tokens later, so abandoning a failed attempt and starting afresh pays, as Re² assumes of reasoning
models. The warm start (per seed, seeded, step-capped) half knows the small sums, guesses the large ones at random,
and ends 2% of its examples with the redo phrase after a failed check: the starting policy solves about 1 sample in
8 and redoes 1.5-3% of the time (the paper: 0.5%).

Methods (``verl_ext/config/re2_miniature.yaml``, ``re2_miniature_baseline.yaml``), identical optimiser and data:

- Re²: n = 4 prefixes x m = 4 continuations per question (the paper's 8 x 8 scaled down), R = 5 (the paper's),
  rho ~ U[0, 0.6] (paper 0.8; why: ``re2_miniature.yaml``), GRPO per prefix group, the three-way reward;
- GRPO baseline: n + n*m = 20 responses per question (``recipes/re2/config/dapo_baseline.yaml``'s matching: as many
  responses per step as Re² samples); a redo scores 0 (no answer).

Neither regenerates a batch (no dynamic sampling), so the generated tokens are counted exactly: Re²'s
``re2/generated_tokens`` (full responses and continuations), the baseline's ``response_length/mean`` x rows.
Validation on 36 held-out questions, 16 samples each, every ``val_every`` steps: accuracy under the redo rule
(avg@k: per question, the mean correctness of its non-redo samples) and the redo rate. Comparisons are at equal
generated tokens: each seed's two validation curves, linearly interpolated at the smaller of the two runs' final
token counts. At the end, 64 samples per held-out question from each final checkpoint (and the warm start) give
the majority-vote test-time-scaling curve at 1...64 samples, redo samples counted against the budget.

Last line: one JSON object of the headline figures (README "Re² in miniature" and BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from verl_ext.cpu_smoke import (SPEC, new_run_dir, read_metrics, run_trainer, trainer_command,  # noqa: E402
                                val_accuracy, val_redo_rate)
from verl_ext.testing import guess_check  # noqa: E402

METHODS = {"re2": "re2_miniature", "baseline": "re2_miniature_baseline"}
RECIPE_VERSION = 1  # bump when the model recipe changes, so cached models are rebuilt


@dataclasses.dataclass(frozen=True)
class Size:
    steps: int = 40              # training steps per run (8 questions each)
    val_every: int = 5
    warm_steps: int = 1000       # supervised warm start: its checks are right ~96% of the time
    redo_share: float = 0.02     # of the warm start's examples: a failed check, then the redo phrase
    num_train: int = 64
    num_val: int = 36
    tts_samples: int = 64        # per held-out question, from each final checkpoint
    budgets: tuple = (1, 2, 4, 8, 16, 32, 64)
    overrides: tuple = ()


QUICK = Size(steps=1, val_every=1, warm_steps=20, num_val=4, tts_samples=4, budgets=(1, 2, 4),
             overrides=("actor_rollout_ref.rollout.val_kwargs.n=2",))


def prepare_model(cache: Path, size: Size, seed: int) -> Path:
    """The warm-started guess-and-check model for ``seed``, built once per recipe (atomically written)."""
    from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model
    from verl_ext.testing.warm_start import warm_start_on

    spec = TinyModelSpec(**(SPEC.__dict__ | {"seed": seed}))
    recipe = {"spec": spec.__dict__, "warm_steps": size.warm_steps, "redo_share": size.redo_share,
              "version": RECIPE_VERSION}
    model_dir = cache / f"guess-check-{hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]}"
    if (model_dir / "config.json").exists():
        return model_dir
    building = model_dir.with_name(model_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    build_tiny_model(building, spec, corpus=guess_check.corpus())
    warm_start_on(building, lambda rng: guess_check.warm_start_example(rng, size.redo_share), size.warm_steps,
                  seed=seed)
    (building / "recipe.json").write_text(json.dumps(recipe, indent=1))
    building.rename(model_dir)
    return model_dir


def _run_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "hydra" / ".hydra" / "config.yaml").read_text())


def curve(run_dir: Path) -> dict:
    """Validation points of one run against cumulative generated tokens: steps, tokens, accuracy (redo rule),
    redo rate; and the per-step training figures."""
    records = read_metrics(run_dir / "metrics.jsonl")
    cfg = _run_config(run_dir)
    rows = int(cfg["data"]["train_batch_size"]) * int(cfg["actor_rollout_ref"]["rollout"]["n"])
    tokens, cumulative = {0: 0.0}, 0.0
    for r in records:
        data = r["data"]
        if "timing_s/step" in data:
            step_tokens = data.get("re2/generated_tokens")
            if step_tokens is None:  # the baseline: every row is a full response, every row trained
                step_tokens = data["response_length/mean"] * rows
            cumulative += step_tokens
            tokens[r["step"]] = cumulative
    vals = [(r["step"], r["data"]) for r in records if val_accuracy(r["data"]) is not None]
    return {"steps": [s for s, _ in vals], "tokens": [tokens[s] for s, _ in vals],
            "acc": [val_accuracy(d) for _, d in vals], "redo": [val_redo_rate(d) for _, d in vals],
            "final_tokens": cumulative, "val_n": int(cfg["actor_rollout_ref"]["rollout"]["val_kwargs"]["n"])}


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation of the points (xs increasing) at ``x`` within their range."""
    if not xs or not xs[0] <= x <= xs[-1]:
        raise ValueError(f"x={x} is outside the curve's range {xs[:1]}..{xs[-1:]}.")
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def train(method: str, model_dir: Path, data: tuple[Path, Path], out: Path, size: Size, seed: int,
          overrides: tuple = ()) -> Path:
    config = METHODS[method]
    run_dir = new_run_dir(out, config, seed)
    cmd = trainer_command(model_dir, *data, run_dir, size.steps, config, seed, (*size.overrides, *overrides),
                          val_every=size.val_every)
    print(f"  {method}: {size.steps} steps through verl's trainer, run folder {run_dir}", flush=True)
    code = run_trainer(run_dir, cmd, size.steps)
    if code != 0:
        raise RuntimeError(f"{method} (seed {seed}) failed with exit {code}; the end of {run_dir / 'trainer.log'} "
                           "says why.")
    return run_dir


def final_checkpoint(run_dir: Path, steps: int) -> Path:
    """The last step's Hugging Face folder (weights, config and tokenizer: ``save_contents`` has ``hf_model``)."""
    hf = run_dir / "checkpoints" / f"global_step_{steps}" / "actor" / "huggingface"
    if not (hf / "config.json").exists() or not (hf / "tokenizer_config.json").exists():
        raise RuntimeError(f"{hf} holds no model and tokenizer; the run must save hf_model at its last step "
                           "(actor_rollout_ref.actor.checkpoint.save_contents).")
    return hf


def run_seed(seed: int, size: Size, out: Path, grader, overrides: dict | None = None) -> dict:
    from re2_miniature_eval import evaluate

    start = time.perf_counter()
    model_dir = prepare_model(out / ".cache", size, seed)
    print(f"seed {seed}: warm-started model {model_dir} ({time.perf_counter() - start:.0f} s)", flush=True)
    data_dir = out / f"data-s{seed}"
    data = guess_check.write_parquet(data_dir, size.num_train, size.num_val, seed)
    _, val = guess_check.split_problems(size.num_train, size.num_val, seed)
    questions, answers = [guess_check.question(x, a) for x, a in val], [str(x) for x, _ in val]
    result = {"seed": seed, "curves": {}, "tts": {}}
    final = {}
    for method in METHODS:
        run_dir = train(method, model_dir, data, out, size, seed, tuple((overrides or {}).get(method, ())))
        result["curves"][method] = curve(run_dir)
        final[method] = final_checkpoint(run_dir, size.steps)
        result[f"run_dir_{method}"] = str(run_dir)
    for name, path in (("start", model_dir), *final.items()):
        result["tts"][name] = evaluate(path, questions, answers, size.tts_samples, list(size.budgets), seed, grader)
    c = result["curves"]
    budget = min(c["re2"]["final_tokens"], c["baseline"]["final_tokens"])
    result["equal_tokens"] = budget
    for method in METHODS:
        result[f"acc_{method}_end"] = interpolate(c[method]["tokens"], c[method]["acc"], budget)
    result["acc_gain"] = result["acc_re2_end"] - result["acc_baseline_end"]
    result["redo_rate_start"], result["redo_rate_end"] = c["re2"]["redo"][0], c["re2"]["redo"][-1]
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"seed {seed}: redo rate {result['redo_rate_start']:.3f} -> {result['redo_rate_end']:.3f}; at "
          f"{budget:.0f} tokens accuracy Re² {result['acc_re2_end']:.3f}, baseline {result['acc_baseline_end']:.3f} "
          f"({result['wall_s']:.0f} s)", flush=True)
    return result


def summarise(results: list[dict], size: Size, wall: float) -> dict:
    mean = lambda key: sum(r[key] for r in results) / len(results)  # noqa: E731
    gains = [r["acc_gain"] for r in results]
    tts = {m: [sum(r["tts"][m]["tts"][i] for r in results) / len(results) for i in range(len(size.budgets))]
           for m in ("start", *METHODS)}
    summary = {
        "seeds": [r["seed"] for r in results], "steps": size.steps,
        "redo_rate_start": mean("redo_rate_start"), "redo_rate_end": mean("redo_rate_end"),
        "acc_re2_end": mean("acc_re2_end"), "acc_baseline_end": mean("acc_baseline_end"),
        "acc_gain_mean": sum(gains) / len(gains), "acc_gain_min_seed": min(gains),
        "equal_tokens_mean": mean("equal_tokens"),
        "tts_budgets": list(size.budgets), "tts_re2": tts["re2"], "tts_baseline": tts["baseline"],
        "tts_start": tts["start"], "wall_s": round(wall, 1)}
    from8 = [i for i, b in enumerate(size.budgets) if b >= 8]
    summary["targets"] = {
        "redo_rate_end_ge_0.10_and_10x": summary["redo_rate_end"] >= 0.10
        and summary["redo_rate_end"] >= 10 * summary["redo_rate_start"],
        "acc_gain_mean_ge_0.03": summary["acc_gain_mean"] >= 0.03,
        "gain_positive_every_seed": min(gains) > 0,
        "tts_re2_above_from_8": bool(from8) and all(tts["re2"][i] > tts["baseline"][i] for i in from8)}
    return summary


def main(argv=None) -> int:
    from verl_ext.scoring.math_grader import MathGrader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one step, tiny sizes (CI: figures produced)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 40)")
    parser.add_argument("--re2-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a hydra override for the Re² runs only, e.g. algorithm.adv_estimator=re2_rebalanced")
    parser.add_argument("--baseline-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a hydra override for the baseline runs only")
    parser.add_argument("--out", default="runs/re2_miniature")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else Size()
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        size = dataclasses.replace(size, steps=args.steps, val_every=min(size.val_every, args.steps))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    grader = MathGrader(timeout_s=5.0)
    try:
        overrides = {"re2": args.re2_override, "baseline": args.baseline_override}
        results = [run_seed(seed, size, out, grader, overrides) for seed in args.seeds]
    finally:
        grader.close()
    summary = summarise(results, size, time.perf_counter() - start)
    record = {"summary": summary, "seeds": results, "size": dataclasses.asdict(size), "overrides": overrides}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    from re2_miniature_plots import plot_all

    plot_all(out, results, summary)
    print(f"figures and results in {out}/ (results.json, learning_curves.png, tts.png)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
