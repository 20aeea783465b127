"""Evaluate Re² generations: ``python -m verl_ext.re2.eval {avg,tts,prefix} GENERATIONS.jsonl --out DIR``.

Input: JSON lines, one sample each: ``python -m verl_ext.re2.dump`` writes them (``samples.jsonl`` for avg and tts,
``prefix.jsonl`` for prefix), and verl's validation dumps (``trainer.validation_data_dir``, e.g. the main job's
``generations/<step>.jsonl``) work as they are:
``input`` (the prompt: samples with the same input are one question), ``output`` (the response), ``gts`` (ground
truth). Also accepted: ``question``/``prompt``, ``response``, ``ground_truth``/``answer``. ``prefix`` additionally
needs ``prefix_fraction`` and ``prefix_source_correct`` per continuation.

  avg     accuracy under the redo rule (avg@k), plain accuracy, redo rate, rounds; accuracy vs response length
  tts     majority-vote accuracy at budgets 1, 2, 4, ... with redo samples counted against the budget
  prefix  continuation accuracy vs prefix fraction, for prefixes of incorrect and of correct responses

Each writes ``<command>.json`` and a PNG plot (95% intervals, n per point) into ``--out``. Redo detection uses the
run's own redo specification: ``--config`` takes the run folder (or its trainer config file) and reads the phrase
and its variants from the ``re2`` block (the defaults without it). ``--redo-rule eval`` (official evaluation: the
phrase present, or no "boxed" in the last 100 characters: an unfinished answer counts as a redo), ``anywhere`` or
``strict``; ``avg`` also reports the figures under the run's own rule (``anywhere`` by default), the one verl's
validation metric (``val-core/<source>/re2_avg_redo_rule``) uses, each named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verl_ext.re2.eval_metrics import (
    Sample,
    accuracy_by_bins,
    accuracy_by_prefix_fraction,
    avg_at_k,
    default_budgets,
    majority_vote_per_question,
    mean_ci95,
)
from verl_ext.re2.config import re2_config_from_file
from verl_ext.re2.redo import RedoSpec
from verl_ext.scoring.math_grader import MathGrader, last_boxed
from verl_ext.stats import wilson_interval



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


def to_samples(records: list[dict], spec: RedoSpec, grader: MathGrader) -> list[Sample]:
    """One ``Sample`` per record: a redo under ``spec`` (phrase, variants, rule), else graded by math-verify."""
    redo = spec.is_redo
    rows = []
    for line, row in enumerate(records, start=1):
        question = str(_pick(row, ("input", "question", "prompt"), line, "question"))
        text = str(_pick(row, ("output", "response"), line, "response"))
        truth = _pick(row, ("gts", "ground_truth", "answer"), line, "ground truth")
        rows.append((question, text, str(truth), redo(text)))
    graded = iter(grader.grade_many([(text, truth) for _, text, truth, redo in rows if not redo]))
    return [Sample(question, last_boxed(text), (not redo) and next(graded).correct, redo, len(text))
            for question, text, truth, redo in rows]


def _plot(path: Path, series: dict[str, dict], xlabel: str, ylabel: str, title: str, logx: bool = False) -> None:
    """series: label -> {"x": [...], "y": [...], "err": [...] (95% half-widths), "n": [...] (optional)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, s) in enumerate(series.items()):
        line = ax.errorbar(s["x"], s["y"], yerr=s.get("err"), marker="o", capsize=3, label=label)
        for x, y, n in zip(s["x"], s["y"], s.get("n") or []):  # staggered, in the series' colour: never overprint
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(3, 4 + 8 * k), fontsize=6,
                        color=line[0].get_color())
    if logx:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for s in series.values() for x in s["x"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
    # Headroom above 1 for the n labels; the legend sits below the axes so it covers no point.
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 1.2), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(series), 3))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _binned(curve: list[dict], x: str) -> dict:
    """A plot series from per-bin accuracies with n: 95% Wilson half-widths (asymmetric, as [low, high])."""
    lows, highs = zip(*[wilson_interval(c["accuracy"] * c["n"], c["n"]) for c in curve])
    return {"x": [c[x] for c in curve], "y": [c["accuracy"] for c in curve], "n": [c["n"] for c in curve],
            "err": [[c["accuracy"] - lo for c, lo in zip(curve, lows)], [hi - c["accuracy"] for c, hi in zip(curve, highs)]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_ext.re2.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["avg", "tts", "prefix"])
    parser.add_argument("generations", type=Path, help="JSON lines of samples (see above)")
    parser.add_argument("--out", type=Path, default=Path("re2_eval"), help="folder for the JSON and PNG outputs")
    parser.add_argument("--config", type=Path, default=None,
                        help="the run folder (or its trainer config): the redo phrase and variants it trained with")
    parser.add_argument("--redo-rule", choices=["eval", "anywhere", "strict"], default="eval")
    parser.add_argument("--budgets", type=int, nargs="*", help="tts budgets (default 1, 2, 4, ... up to n)")
    parser.add_argument("--resamples", type=int, default=500, help="tts draws per question and budget")
    parser.add_argument("--grade-timeout", type=float, default=5.0, help="seconds per answer for math-verify")
    args = parser.parse_args(argv)
    records = load_records(args.generations)
    run_spec = re2_config_from_file(args.config).redo_spec  # the rule training and validation used
    args.spec = run_spec.with_rule(args.redo_rule)
    print(f"redo specification: phrase {run_spec.phrase!r}, markers {list(run_spec.markers)}"
          + (f" (from {args.config})" if args.config else " (defaults)"))
    grader = grader_for_rule = MathGrader(timeout_s=args.grade_timeout)
    try:
        samples = to_samples(records, args.spec, grader)
        _run(args, records, samples, grader_for_rule, run_spec)
    finally:
        grader.close()
    return 0


def _run(args, records, samples, grader_for_rule, run_spec: RedoSpec) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    validation_rule = run_spec.rule  # what verl's validation metric of the run applies
    result = {"redo_phrase": run_spec.phrase, "redo_markers": list(run_spec.markers)}
    if args.command == "avg":
        result.update({"rule": args.redo_rule, **avg_at_k(samples)})
        if args.redo_rule != validation_rule:  # the figures verl's validation metric reports, named as such
            with_verl_rule = to_samples(records, run_spec, grader_for_rule)
            result["verl_validation_rule"] = {"rule": validation_rule, **avg_at_k(with_verl_rule)}
        answered = [s for s in samples if not s.redo]
        result["accuracy_by_length"] = accuracy_by_bins([s.length for s in answered], [s.correct for s in answered])
        _plot(args.out / "avg_length.png", {"non-redo samples": _binned(result["accuracy_by_length"], "mean")},
              "response length (characters, bin mean)", "accuracy (95% CI)", "Accuracy vs response length")
        for name, r in [(args.redo_rule, result)] + ([(validation_rule, result["verl_validation_rule"])]
                                                     if "verl_validation_rule" in result else []):
            print(f"redo rule {name!r}{' (verl validation metric)' if name == validation_rule else ''}: avg@k "
                  f"{r['avg_redo_rule']:.3f} +- {r['avg_redo_rule_ci95']:.3f}, redo rate {r['redo_rate']:.3f} "
                  f"({r['questions']} questions, {r['samples']} samples)")
    elif args.command == "tts":
        per_question = min(len([s for s in samples if s.question == q]) for q in {s.question for s in samples})
        budgets = args.budgets or default_budgets(per_question)
        per_q = majority_vote_per_question(samples, budgets, args.resamples)
        result.update({"rule": args.redo_rule, "budgets": budgets,
                  "majority_vote_accuracy": [float(per_q[k].mean()) for k in budgets],
                  "ci95": [mean_ci95(per_q[k]) for k in budgets],
                  "resamples": args.resamples, "questions": len({s.question for s in samples})})
        means, halves = result["majority_vote_accuracy"], result["ci95"]
        err = [[min(h, m) for m, h in zip(means, halves)], [min(h, 1 - m) for m, h in zip(means, halves)]]
        _plot(args.out / "tts.png", {f"majority vote over {result['questions']} questions": {
                  "x": budgets, "y": means, "err": err}},
              "samples per question (redo samples count against the budget)", "accuracy (95% CI over questions)",
              "Test-time scaling", logx=True)
    else:
        fractions, sources = [], []
        for line, row in enumerate(records, start=1):
            fractions.append(float(_pick(row, ("prefix_fraction",), line, "prefix_fraction")))
            sources.append(bool(_pick(row, ("prefix_source_correct",), line, "prefix_source_correct")))
        series = {}
        for label, flag in (("prefix from incorrect response", False), ("prefix from correct response", True)):
            rows = [i for i, s in enumerate(sources) if s == flag]
            if rows:
                curve = accuracy_by_prefix_fraction([fractions[i] for i in rows], [samples[i].correct for i in rows])
                result[label] = curve
                series[label] = _binned(curve, "fraction")
        _plot(args.out / "prefix.png", series, "prefix fraction of the original response",
              "continuation accuracy (95% CI)", "Continuing from a prefix")
    (args.out / f"{args.command}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))} or {"written": str(args.out)}))


if __name__ == "__main__":
    sys.exit(main())
