"""The MemoryRewardBench recipe on CPU, end to end: a tiny judge over the synthetic benchmark in verl's validation
loop, then the report.

    python -m verl_ext.memrm.demo [--out runs] [--per-cell 1] [--seed 0]

Writes the synthetic benchmark (every setting x length, released label forms, chosen/rejected lengths balanced so
length predicts nothing), converts it for the judge, teaches a tiny model the judge's output format (the verdict
first; it learns the format, not the judgement, so its accuracy is near chance), runs ``python -m
verl.trainer.main_ppo --config-name memrm_cpu_smoke`` (validation only) and writes the report. The run folder
``<out>/memrm_demo/<time>-s<seed>/`` holds the benchmark, ``val.parquet``, ``records.jsonl``, ``trainer.log``,
``metrics.jsonl`` and ``report/`` (``results.md``, ``results.json``, two PNGs). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CAP = 1000  # the tiny judge's window (tokens)
JUDGE_STEPS = 150


def teach_judge(judge: Path, parquet: Path, seed: int = 0) -> Path:
    """Teach the tiny model in ``judge`` the verdict-first format on the converted prompts of ``parquet``."""
    import pandas as pd
    from transformers import AutoTokenizer

    from verl_ext.testing.warm_start import warm_start_judge

    tok = AutoTokenizer.from_pretrained(judge)
    prompts = [tok(tok.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False)["input_ids"] for p in pd.read_parquet(parquet).prompt]
    warm_start_judge(judge, prompts, max_steps=JUDGE_STEPS, seed=seed)
    return judge


def validation_command(run: Path, judge: Path, parquet: Path, extra=(), records: str = "records.jsonl"
                       ) -> tuple[list[str], dict]:
    """(command, environment) of verl's validation loop over ``parquet`` with the judge; per-sample records to
    ``run/records``."""
    from verl_ext.config import config_dir

    env = dict(os.environ, RAY_AUTH_MODE="disabled", VERL_FILE_LOGGER_PATH=str(run / "metrics.jsonl"),
               PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={config_dir()}",
           "--config-name=memrm_cpu_smoke", f"actor_rollout_ref.model.path={judge}", f"data.train_files={parquet}",
           f"data.val_files={parquet}", f"trainer.default_local_dir={run / 'checkpoints'}",
           f"hydra.run.dir={run / 'hydra'}", f"+reward.custom_reward_function.reward_kwargs.records_path={run / records}",
           "+reward.custom_reward_function.reward_kwargs.model=tiny-judge", *extra]
    return cmd, env


def validate(run: Path, judge: Path, parquet: Path, extra=(), records: str = "records.jsonl",
             log: str = "trainer.log") -> int:
    """verl's validation loop over ``parquet`` with the judge; per-sample records to ``run/records``."""
    cmd, env = validation_command(run, judge, parquet, extra, records)
    with open(run / log, "a") as out:
        return subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=run).returncode


def run(root: Path, per_cell: int = 1, seed: int = 0) -> dict:
    from transformers.utils import logging as hf_logging

    from verl_ext.memrm.convert import main as convert_main
    from verl_ext.memrm.report import write_report
    from verl_ext.memrm.synthetic import write_benchmark
    from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    run_dir = root.resolve() / "memrm_demo" / (time.strftime("%Y%m%d-%H%M%S") + f"-s{seed}")
    run_dir.mkdir(parents=True)
    print(f"MemoryRewardBench on CPU: a tiny judge over the synthetic benchmark in verl's validation loop.\n"
          f"  run folder {run_dir} (trainer.log: everything verl prints)", flush=True)
    bench = write_benchmark(run_dir / "bench", per_cell=per_cell, seed=seed)
    judge = build_tiny_model(run_dir / "judge", TinyModelSpec(seed=seed))
    if convert_main([str(bench), str(run_dir / "val.parquet"), "--tokenizer", str(judge), "--cap", str(CAP),
                     "--model", "tiny-judge"]) != 0:
        raise RuntimeError("conversion failed")
    teach_judge(judge, run_dir / "val.parquet", seed)
    print(f"  judge built and taught the verdict format in {time.perf_counter() - start:.0f} s; judging ...",
          flush=True)
    code = validate(run_dir, judge, run_dir / "val.parquet")
    if code != 0:
        return {"returncode": code, "run_dir": str(run_dir)}
    result = write_report(run_dir / "records.jsonl", run_dir / "report")
    summary, records = result["summary"], result["records"]
    pos, base = summary["position"], summary["baselines"]
    out = {"returncode": 0, "run_dir": str(run_dir), "pairs": len(records),
           "accuracy": summary["strict"]["overall_micro"]["accuracy"],
           "parse_rate": 1 - pos["parse_failure_rate"], "pick_longer": base["pick_longer"],
           "pick_shorter": base["pick_shorter"], "report": str(run_dir / "report" / "results.md"),
           "wall_s": round(time.perf_counter() - start, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--per-cell", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = run(Path(args.out), args.per_cell, args.seed)
    if out["returncode"] != 0:
        print(f"verl's trainer failed; the end of {out['run_dir']}/trainer.log says why.", file=sys.stderr)
        return out["returncode"]
    print(f"{out['pairs']} pairs judged: strict accuracy {out['accuracy']:.3f} (chance 0.5; the tiny judge learned "
          f"the format, not the judgement), verdicts parsed {out['parse_rate']:.0%}; length-only baselines "
          f"pick-longer {out['pick_longer']:.2f}, pick-shorter {out['pick_shorter']:.2f}.")
    print(f"Report: {out['report']} (and results.json, accuracy_by_length.png, position_bias.png beside it)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
