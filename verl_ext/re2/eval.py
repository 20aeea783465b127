"""Evaluate Re² generations: ``python -m verl_ext.re2.eval {avg,tts,prefix} GENERATIONS.jsonl --out DIR``.

Input: JSON lines, one sample each. verl's validation dumps (``trainer.validation_data_dir``) work as they are:
``input`` (the prompt: samples with the same input are one question), ``output`` (the response), ``gts`` (ground
truth). Also accepted: ``question``/``prompt``, ``response``, ``ground_truth``/``answer``. ``prefix`` additionally
needs ``prefix_fraction`` and ``prefix_source_correct`` per continuation.

  avg     accuracy under the redo rule (avg@k), plain accuracy, redo rate, rounds; accuracy vs response length
  tts     majority-vote accuracy at budgets 1, 2, 4, ... with redo samples counted against the budget
  prefix  continuation accuracy vs prefix fraction, for prefixes of incorrect and of correct responses

Each writes ``<command>.json`` and a PNG plot into ``--out``. Redo detection: ``--redo-rule eval`` (official
evaluation: phrase present, or no "boxed" in the last 100 characters), ``anywhere`` or ``strict``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verl_ext.re2.evaluation import (
    Sample,
    accuracy_by_bins,
    accuracy_by_prefix_fraction,
    avg_at_k,
    default_budgets,
    majority_vote_curve,
)
from verl_ext.re2.redo import DEFAULT_REDO_PHRASE, redo_rule
from verl_ext.scoring.math_grader import MathGrader, last_boxed


def _pick(row: dict, keys: tuple[str, ...], line: int, what: str):
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    raise ValueError(f"line {line}: no {what} field (looked for {list(keys)}).")


def load_records(path: Path) -> list[dict]:
    records = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not JSON ({exc.msg}); fix or remove the line.") from exc
    if not records:
        raise ValueError(f"{path} has no samples.")
    return records


def to_samples(records: list[dict], rule: str, phrase: str, grader: MathGrader) -> list[Sample]:
    redo = redo_rule(phrase, rule)
    rows = []
    for line, row in enumerate(records, start=1):
        question = str(_pick(row, ("input", "question", "prompt"), line, "question"))
        text = str(_pick(row, ("output", "response"), line, "response"))
        truth = _pick(row, ("gts", "ground_truth", "answer"), line, "ground truth")
        rows.append((question, text, str(truth), redo(text)))
    graded = iter(grader.grade_many([(text, truth) for _, text, truth, redo in rows if not redo]))
    return [Sample(question, last_boxed(text), (not redo) and next(graded).correct, redo, len(text))
            for question, text, truth, redo in rows]


def _plot(path: Path, xs, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str, logx=False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, ys in series.items():
        ax.plot(xs if not isinstance(xs, dict) else xs[label], ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_ext.re2.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["avg", "tts", "prefix"])
    parser.add_argument("generations", type=Path, help="JSON lines of samples (see above)")
    parser.add_argument("--out", type=Path, default=Path("re2_eval"), help="folder for the JSON and PNG outputs")
    parser.add_argument("--redo-rule", choices=["eval", "anywhere", "strict"], default="eval")
    parser.add_argument("--redo-phrase", default=DEFAULT_REDO_PHRASE)
    parser.add_argument("--budgets", type=int, nargs="*", help="tts budgets (default 1, 2, 4, ... up to n)")
    parser.add_argument("--resamples", type=int, default=500, help="tts draws per question and budget")
    parser.add_argument("--grade-timeout", type=float, default=5.0, help="seconds per answer for math-verify")
    args = parser.parse_args(argv)
    records = load_records(args.generations)
    grader = MathGrader(timeout_s=args.grade_timeout)
    try:
        samples = to_samples(records, args.redo_rule, args.redo_phrase, grader)
    finally:
        grader.close()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "avg":
        result = avg_at_k(samples)
        answered = [s for s in samples if not s.redo]
        result["accuracy_by_length"] = accuracy_by_bins([s.length for s in answered], [s.correct for s in answered])
        bins = result["accuracy_by_length"]
        _plot(args.out / "avg_length.png", [b["mean"] for b in bins], {"accuracy": [b["accuracy"] for b in bins]},
              "response length (characters)", "accuracy", "Accuracy vs length (non-redo samples)")
    elif args.command == "tts":
        per_question = min(len([s for s in samples if s.question == q]) for q in {s.question for s in samples})
        budgets = args.budgets or default_budgets(per_question)
        curve = majority_vote_curve(samples, budgets, args.resamples)
        result = {"budgets": budgets, "majority_vote_accuracy": [curve[k] for k in budgets],
                  "resamples": args.resamples, "questions": len({s.question for s in samples})}
        _plot(args.out / "tts.png", budgets, {"Re² majority vote": result["majority_vote_accuracy"]},
              "samples per question (redo counts against the budget)", "accuracy", "Test-time scaling", logx=True)
    else:
        fractions, sources = [], []
        for line, row in enumerate(records, start=1):
            fractions.append(float(_pick(row, ("prefix_fraction",), line, "prefix_fraction")))
            sources.append(bool(_pick(row, ("prefix_source_correct",), line, "prefix_source_correct")))
        result = {}
        series, xs = {}, {}
        for label, flag in (("prefix from incorrect response", False), ("prefix from correct response", True)):
            rows = [i for i, s in enumerate(sources) if s == flag]
            if rows:
                curve = accuracy_by_prefix_fraction([fractions[i] for i in rows], [samples[i].correct for i in rows])
                result[label] = curve
                xs[label], series[label] = [c["fraction"] for c in curve], [c["accuracy"] for c in curve]
        _plot(args.out / "prefix.png", xs, series, "prefix fraction of the original response", "continuation accuracy",
              "Continuing from a prefix")
    (args.out / f"{args.command}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)} or {"written": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
