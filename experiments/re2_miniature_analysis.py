"""Re² in miniature, the measurements (``experiments/re2_miniature.py``): every one runs the evaluation chain a
user runs after training, ``python -m verl_ext.re2.dump`` then ``python -m verl_ext.re2.eval``, as subprocesses,
and reads their files.

- ``premise``: on the warm start, the success of a fresh attempt (restart) against that of continuations of
  prefixes cut from wrong answers at the training range of fractions (rho <= rho_max), and how often the check's
  verdict is true (``pick_check.check_truth``);
- ``evaluate_checkpoint``: test-time scaling under the redo rule (``eval tts``), avg@k (``eval avg``), and redo after
  a failed check against after a passed one;
- ``section3``: the paper's Section-3 analysis, continuation accuracy and redo rate against the prefix fraction and
  the quality of the answer the prefix was cut from (``eval prefix`` plus the redo rate per cell).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from verl_ext.re2.config import Re2Config, re2_config_from_file
from verl_ext.re2.eval import load_records, to_samples
from verl_ext.scoring.math_grader import MathGrader
from verl_ext.testing import pick_check

RHO_MAX = 0.6  # re2_miniature.yaml's rho ~ U[0, 0.6]: the prefixes training continues from
_QUESTION = re.compile(r"with x \+ (\d) = (\d+)\.")


def _cli(*args: str) -> None:
    run = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} failed:\n{(run.stdout + run.stderr)[-3000:]}")


def _dump(model: Path, val: Path, out: Path, n: int, prefix: int, seed: int, config: Path | None) -> Path:
    if not (out / "samples.jsonl").exists():  # a finished dump is kept (experiments resume)
        _cli("verl_ext.re2.dump", str(model), str(val), str(out), "--n", str(n), "--prefix-continuations", str(prefix),
             "--max-new-tokens", "32", "--seed", str(seed), *(["--config", str(config)] if config else []))
    return out


def _eval(command: str, records: Path, out: Path, config: Path | None, *extra: str) -> dict:
    _cli("verl_ext.re2.eval", command, str(records), "--out", str(out), "--redo-rule", "anywhere",
         *(["--config", str(config)] if config else []), *extra)
    return json.loads((out / f"{command}.json").read_text())


def _task(question: str) -> tuple[int, int]:
    """(x, a) of a pick-and-check question (from its text: the chat-templated prompt holds it)."""
    match = _QUESTION.search(question)
    a, c = int(match.group(1)), int(match.group(2))
    return c - a, a


def _graded(path: Path, spec) -> tuple[list[dict], list]:
    records = load_records(path)
    grader = MathGrader(timeout_s=5.0)
    try:
        return records, to_samples(records, spec, grader)
    finally:
        grader.close()


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def premise(model: Path, val: Path, work: Path, size, seed: int) -> dict:
    """Restart vs continuation after a wrong start, and the check's truth, on ``model`` (the warm start)."""
    dump = _dump(model, val, work, size.premise_samples, 2, seed, None)
    spec = Re2Config().redo_spec
    records, samples = _graded(dump / "samples.jsonl", spec)
    restart = sum(s.correct for s in samples) / len(samples)
    truth = [pick_check.check_truth(*_task(r["input"]), r["output"]) for r in records]
    prefix_records, continued = _graded(dump / "prefix.jsonl", spec)
    after_wrong = [s for r, s in zip(prefix_records, continued)
                   if not r["prefix_source_correct"] and r["prefix_fraction"] <= RHO_MAX + 1e-9]
    wins = sum(s.correct for s in after_wrong)
    # The ratio's continuation rate is smoothed by half a success (Jeffreys): a rate measured as 0 gives a finite,
    # conservative ratio instead of infinity.
    smoothed = (wins + 0.5) / (len(after_wrong) + 1)
    return {"restart_success": restart, "continuation_success": _rate(wins, len(after_wrong)),
            "continuations_after_wrong_start": len(after_wrong), "premise_ratio": restart / smoothed,
            "check_truth": sum(t is True for t in truth) / len(truth), "samples": len(samples),
            "section3": _section3_table(prefix_records, continued, dump, None)}


def evaluate_checkpoint(model: Path, val: Path, work: Path, size, seed: int, config: Path | None) -> dict:
    """Test-time scaling, avg@k and redo selectivity of one checkpoint, scored with its run's redo specification."""
    dump = _dump(model, val, work, size.tts_samples, 0, seed, config)
    budgets = [str(b) for b in size.budgets]
    tts = _eval("tts", dump / "samples.jsonl", work / "tts", config, "--budgets", *budgets)
    avg = _eval("avg", dump / "samples.jsonl", work / "avg", config)
    spec = re2_config_from_file(config).redo_spec
    records = load_records(dump / "samples.jsonl")
    failed = [r for r in records if ", not " in r["output"]]
    passed = [r for r in records if ", right." in r["output"]]
    return {"tts": tts["majority_vote_accuracy"], "tts_ci95": tts["ci95"], "avg_redo_rule": avg["avg_redo_rule"],
            "avg_plain": avg["avg_plain"], "redo_rate": avg["redo_rate"],
            "redo_after_failed_check": _rate(sum(spec.is_redo(r["output"]) for r in failed), len(failed)),
            "redo_after_passed_check": _rate(sum(spec.is_redo(r["output"]) for r in passed), len(passed)),
            "failed_checks": len(failed), "passed_checks": len(passed),
            "check_truth": _rate(sum(pick_check.check_truth(*_task(r["input"]), r["output"]) is True for r in records),
                                 len(records))}


def section3(model: Path, val: Path, work: Path, size, seed: int, config: Path | None) -> dict:
    dump = _dump(model, val, work, size.premise_samples, 2, seed, config)
    records, samples = _graded(dump / "prefix.jsonl", re2_config_from_file(config).redo_spec)
    return _section3_table(records, samples, dump, config)


def _section3_table(records: list[dict], samples: list, dump: Path, config: Path | None) -> dict:
    """Per prefix source (a correct or a wrong answer) and fraction: continuations, accuracy, redo rate; plus what
    ``eval prefix`` writes (its JSON and PNG next to the dump)."""
    _eval("prefix", dump / "prefix.jsonl", dump / "prefix", config)
    table: dict[str, dict[str, dict]] = {"correct": {}, "wrong": {}}
    for r, s in zip(records, samples):
        cell = table["correct" if r["prefix_source_correct"] else "wrong"].setdefault(
            f"{r['prefix_fraction']:.1f}", {"n": 0, "correct": 0, "redo": 0})
        cell["n"] += 1
        cell["correct"] += bool(s.correct)
        cell["redo"] += bool(s.redo)
    for cells in table.values():
        for cell in cells.values():
            cell["accuracy"], cell["redo_rate"] = cell["correct"] / cell["n"], cell["redo"] / cell["n"]
    return table
