"""Figures of Re² in miniature (``benchmarks/re2_miniature.py``): learning curves against generated tokens and the
test-time-scaling curve, each method's seeds drawn thin and their mean thick (the band: the seeds' min to max)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"re2": "tab:orange", "baseline": "tab:blue", "start": "tab:gray"}
LABELS = {"re2": "Re²", "baseline": "GRPO, budget-matched", "start": "warm start (before RL)"}


def _seeds(k: int) -> str:
    return f"{k} seed" + ("s" if k != 1 else "")


def _mean_curve(curves: list[dict], key: str, grid: np.ndarray) -> np.ndarray:
    """(seeds, len(grid)): each seed's curve interpolated on the common token grid."""
    return np.array([np.interp(grid, c["tokens"], c[key]) for c in curves])


def plot_learning_curves(path: Path, results: list[dict], val_samples: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, ylabel in ((axes[0], "acc", "accuracy under the redo rule (avg@k)"),
                            (axes[1], "redo", "redo rate")):
        for method in ("baseline", "re2"):
            curves = [r["curves"][method] for r in results]
            for c in curves:
                ax.plot(np.array(c["tokens"]) / 1e3, c[key], color=COLOURS[method], alpha=0.35, linewidth=0.8,
                        marker=".")
            grid = np.linspace(0, min(c["tokens"][-1] for c in curves), 50)
            values = _mean_curve(curves, key, grid)
            ax.plot(grid / 1e3, values.mean(0), color=COLOURS[method], linewidth=2.2,
                    label=f"{LABELS[method]}: mean of {_seeds(len(curves))} (thin: each seed; band: min-max)")
            ax.fill_between(grid / 1e3, values.min(0), values.max(0), color=COLOURS[method], alpha=0.12)
        equal = np.mean([r["equal_tokens"] for r in results]) / 1e3
        ax.axvline(equal, color="black", linestyle=":", linewidth=1)
        ax.annotate("equal-token comparison", (equal, 0.97), ha="right", va="top", rotation=90, fontsize=7)
        ax.set(xlabel="generated tokens, cumulative (thousands)", ylabel=ylabel, ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_title(f"Held-out accuracy ({val_samples})")
    axes[1].set_title("Held-out redo rate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Re² in miniature: guess-and-check task, tiny Qwen2 on CPU through verl's trainer")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tts(path: Path, results: list[dict], budgets: list[int], questions: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in ("start", "baseline", "re2"):
        values = np.array([r["tts"][method]["tts"] for r in results])  # (seeds, budgets)
        mean = values.mean(0)
        err = [mean - values.min(0), values.max(0) - mean]
        ax.errorbar(budgets, mean, yerr=err, marker="o", capsize=3, color=COLOURS[method],
                    linestyle="--" if method == "start" else "-",
                    label=f"{LABELS[method]} (mean of {_seeds(len(values))}; bars: min-max)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set(xlabel="samples per question (redo samples count against the budget)",
           ylabel=f"majority-vote accuracy ({questions} held-out questions)", ylim=(0, 1.02),
           title="Test-time scaling after training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_all(out: Path, results: list[dict], summary: dict) -> None:
    questions = results[0]["tts"]["start"]["samples"] // summary["tts_budgets"][-1]  # k = the largest budget
    val_n = results[0]["curves"]["re2"].get("val_n", 16)  # samples per question at each validation
    plot_learning_curves(out / "learning_curves.png", results, f"{questions} questions x {val_n} samples")
    plot_tts(out / "tts.png", results, summary["tts_budgets"], questions)


if __name__ == "__main__":  # redraw from a run's results.json: python benchmarks/re2_miniature_plots.py OUT_DIR
    import json
    import sys

    out = Path(sys.argv[1])
    data = json.loads((out / "results.json").read_text())
    plot_all(out, data["seeds"], data["summary"])
