"""Write a MemoryRewardBench report from per-sample records.

    python -m verl_ext.memrm.report RECORDS.jsonl --out DIR [--config run_config.json]

Writes ``results.json`` (task-spec version, config, verl / package versions, every aggregate and every per-sample
record), ``results.md`` (accuracy per setting x length with n, task x length, overall micro / macro, position bias,
dual order, length baselines) and two plots: ``accuracy_by_length.png`` (per task) and ``position_bias.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from verl_ext.memrm.aggregate import summarise
from verl_ext.memrm.records import RecordStore
from verl_ext.memrm.schema import LENGTHS, SETTINGS, SPEC_VERSION, TASKS


def _versions() -> dict:
    out = {}
    for package in ("verl", "verl-ext", "transformers", "torch", "vllm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _fmt(c) -> str:
    return f"{100 * c['accuracy']:.1f} ({c['n']})" if c else "–"


def markdown(summary: dict) -> str:
    strict = summary["strict"]
    lines = [f"# MemoryRewardBench results ({SPEC_VERSION})", "",
             f"Overall (strict, micro): **{100 * strict['overall_micro']['accuracy']:.2f}%** over "
             f"{strict['overall_micro']['n']} pairs; macro over tasks {100 * strict['macro_over_tasks']:.2f}%, "
             f"over settings {100 * strict['macro_over_settings']:.2f}%; lenient micro "
             f"{100 * summary['lenient']['overall_micro']['accuracy']:.2f}%.", "",
             "Accuracy % (n) per setting and length, strict parse:", "",
             "| setting | " + " | ".join(LENGTHS) + " | all |", "|---|" + "---|" * (len(LENGTHS) + 1)]
    for task in TASKS:
        for setting in SETTINGS[task]:
            row = [_fmt(strict["setting_x_length"].get(f"{setting}/{l}")) for l in LENGTHS]
            lines.append(f"| {setting} | " + " | ".join(row) + f" | {_fmt(strict['setting'].get(setting))} |")
        row = [_fmt(strict["task_x_length"].get(f"{task}/{l}")) for l in LENGTHS]
        lines.append(f"| **{task}** | " + " | ".join(row) + f" | {_fmt(strict['task'].get(task))} |")
    pos, base = summary["position"], summary["baselines"]
    lines += ["", f"Position: P(pick A) = {pos['p_pick_A']:.3f}; P(pick A | chosen is B) = "
              f"{pos['p_pick_A_when_chosen_is_B']:.3f}; strict parse failures {100 * pos['parse_failure_rate']:.1f}%, "
              f"lenient {100 * pos['lenient_parse_failure_rate']:.1f}%.",
              f"Length-only baselines: always-A {100 * base['always_A']:.1f}%, always-B {100 * base['always_B']:.1f}%, "
              f"pick-longer {100 * base['pick_longer']:.1f}%, pick-shorter {100 * base['pick_shorter']:.1f}%."]
    for name, by_length in (summary.get("pass_through") or {}).items():
        lines += ["", f"`{name}` (passed through from the judge's rollout) beside accuracy:", "",
                  f"| length | mean {name} | accuracy % (n) |", "|---|---|---|"]
        for length, c in by_length.items():
            lines.append(f"| {length} | {c['mean']:.3f} | {100 * c['accuracy']:.1f} ({c['n']}) |")
    if summary["dual_order"]:
        d = summary["dual_order"]
        lines.append(f"Dual order ({d['pairs']} pairs): mean accuracy {100 * d['mean_accuracy_both_orders']:.1f}%, "
                     f"both correct {100 * d['both_correct']:.1f}%, consistency {100 * d['consistency']:.1f}%.")
    return "\n".join(lines) + "\n"


def plots(summary: dict, out: Path) -> None:
    """accuracy_by_length.png (per task, n and 95% Wilson interval per point, chance line) and position_bias.png
    (rates over the parsed verdicts, the parse failures beside them, n on every bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = list(range(len(LENGTHS)))
    tasks = summary["strict"]["tasks_present"]
    for k, task in enumerate(tasks):
        cells = [summary["strict"]["task_x_length"].get(f"{task}/{l}") for l in LENGTHS]
        shift = (k - (len(tasks) - 1) / 2) * 0.08  # side by side, so no interval hides another
        xs = [i + shift for i, c in zip(x, cells) if c]
        acc = [c["accuracy"] for c in cells if c]
        err = [[c["accuracy"] - c["ci95"][0] for c in cells if c], [c["ci95"][1] - c["accuracy"] for c in cells if c]]
        line = ax.errorbar(xs, acc, yerr=err, marker="o", capsize=3, label=task)
        for xi, c in zip(xs, [c for c in cells if c]):
            # staggered per task and in the task's colour, so labels at the same point never overprint
            ax.annotate(f"n={c['n']}", (xi, c["accuracy"]), textcoords="offset points", xytext=(4, 4 + 8 * k),
                        fontsize=6, color=line[0].get_color())
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance (0.5)")
    ax.set_xticks(x, LENGTHS)
    ax.set(xlabel="context length bucket", ylabel="accuracy (strict parse), 95% CI", ylim=(0, 1.2),
           yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0], title="Judge accuracy by context length")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: covers no point
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_length.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    pos = summary["position"]
    labels = ["P(pick A)", "P(pick A | chosen is B)", "verdicts not parsed"]
    values = [pos["p_pick_A"], pos["p_pick_A_when_chosen_is_B"], pos["parse_failure_rate"]]
    ns = [pos.get("n_parsed"), pos.get("n_chosen_b_parsed"), pos.get("n")]
    bars = ax.bar(labels, [0 if v != v else v for v in values], color=["tab:blue", "tab:blue", "tab:red"])
    for bar, value, n in zip(bars, values, ns):
        text = "no parsed verdict" if value != value else f"{value:.2f}" + (f" (n={n})" if n is not None else "")
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="unbiased (0.5)")
    ax.set(ylim=(0, 1.1), ylabel="fraction of judgements", title="Position bias of the judge")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "position_bias.png", dpi=120)
    plt.close(fig)


def write_report(records_path: str | Path, out: str | Path, config: dict | None = None) -> dict:
    store = RecordStore(records_path)
    records = list(store.load().values())
    if not records:
        raise ValueError(f"{records_path} holds no complete records.")
    summary = summarise(records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompt_sets = Counter(str(r.get("prompt_set", "unrecorded")) for r in records)
    result = {"spec_version": SPEC_VERSION, "config": config or {}, "versions": _versions(),
              "prompt_sets": dict(prompt_sets), "partial_lines_skipped": store.partial_lines, "summary": summary,
              "records": records}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    sets = ", ".join(f"{label} ({n} records)" for label, n in sorted(prompt_sets.items()))
    note = f"\n\nJudge system prompts: {sets}" + (" (mixed: results are not one protocol)." if len(prompt_sets) > 1 else ".")
    (out / "results.md").write_text(markdown(summary) + note + "\n")
    plots(summary, out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records")
    parser.add_argument("--out", default="memrm_report")
    parser.add_argument("--config", help="JSON file describing the run (judge, sampling, order mode, cap)")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    result = write_report(args.records, args.out, config)
    strict = result["summary"]["strict"]["overall_micro"]
    print(json.dumps({"overall_strict": strict["accuracy"], "n": strict["n"], "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
