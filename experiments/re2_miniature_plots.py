"""Figures of Re² in miniature (``experiments/re2_miniature.py``): learning curves against generated tokens,
test-time scaling under the redo rule, and the Section-3 analysis of continuations from prefixes. Seeds are drawn
thin and their mean thick; intervals are 95% t-intervals over seeds (n in every legend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"re2": "tab:orange", "baseline": "tab:blue", "start": "tab:gray"}
LABELS = {"re2": "Re²", "baseline": "GRPO, budget-matched", "start": "warm start (before RL)"}
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # t(0.975, n - 1) by n - 1


def _interval(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean over axis 0 (seeds); 0 for one seed."""
    n = values.shape[0]
    if n < 2:
        return np.zeros(values.shape[1:])
    return T95.get(n - 1, 1.96) * values.std(0, ddof=1) / np.sqrt(n)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(path: Path, results: list[dict], val_samples: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, ylabel in ((axes[0], "acc", "accuracy under the redo rule (avg@k)"),
                            (axes[1], "redo", "redo rate")):
        for method in ("baseline", "re2"):
            curves = [r["curves"][method] for r in results]
            for c in curves:
                ax.plot(np.array(c["tokens"]) / 1e3, c[key], color=COLOURS[method], alpha=0.3, linewidth=0.8,
                        marker=".")
            grid = np.linspace(0, min(c["tokens"][-1] for c in curves), 50)
            values = np.array([np.interp(grid, c["tokens"], c[key]) for c in curves])
            mean, half = values.mean(0), _interval(values)
            ax.plot(grid / 1e3, mean, color=COLOURS[method], linewidth=2.2,
                    label=f"{LABELS[method]}: mean of {len(curves)} seeds (band: 95% CI; thin: each seed)")
            ax.fill_between(grid / 1e3, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1),
                            color=COLOURS[method], alpha=0.15)
        equal = np.mean([r["equal_tokens"] for r in results]) / 1e3
        ax.axvline(equal, color="black", linestyle=":", linewidth=1)
        ax.annotate("equal-token comparison", (equal, 0.97), ha="right", va="top", rotation=90, fontsize=7)
        ax.set(xlabel="generated tokens, cumulative (thousands)", ylabel=ylabel, ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_title(f"Held-out accuracy ({val_samples})")
    axes[1].set_title("Held-out redo rate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Re² in miniature: pick-and-check, tiny Qwen2 on CPU through verl's trainer, equal optimizer steps")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tts(path: Path, results: list[dict], budgets: list[int], questions: int) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    for name, method, style in (("start", "start", "--"), ("baseline_last", "baseline", "-"), ("re2_last", "re2", "-"),
                                ("baseline_best", "baseline", ":"), ("re2_best", "re2", ":")):
        values = np.array([r["eval"][name]["tts"] for r in results])  # (seeds, budgets)
        mean = values.mean(0)
        which = {"start": "", "last": ", last checkpoint", "best": ", best validation checkpoint"}[name.split("_")[-1]]
        ax.errorbar(budgets, mean, yerr=_interval(values), marker="o" if style == "-" else ".", capsize=3,
                    color=COLOURS[method], linestyle=style, alpha=1.0 if style != ":" else 0.7,
                    label=f"{LABELS[method]}{which} (n={len(values)} seeds, 95% CI)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set(xlabel="samples per question (redo samples count against the budget)",
           ylabel=f"majority-vote accuracy ({questions} held-out questions)", ylim=(0, 1.02),
           title="Test-time scaling under the redo rule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_section3(path: Path, results: list[dict]) -> None:
    """Continuation accuracy and redo rate against the prefix fraction, for prefixes of wrong and of correct answers,
    on the warm start and after Re² (cells pooled over seeds; 95% Wilson intervals, n per cell in the legend)."""
    from verl_ext.stats import wilson_interval

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, ylabel in ((axes[0], "correct", "continuation accuracy"), (axes[1], "redo", "continuation redo rate")):
        for model, style in (("start", "--"), ("re2_last", "-")):
            for source, colour in (("wrong", "tab:red"), ("correct", "tab:green")):
                cells: dict[str, list[int]] = {}
                for r in results:
                    for fraction, cell in r["section3"][model][source].items():
                        total = cells.setdefault(fraction, [0, 0])
                        total[0] += cell[key]
                        total[1] += cell["n"]
                if not cells:
                    continue
                xs = sorted(cells, key=float)
                ys = [cells[x][0] / cells[x][1] for x in xs]
                lows, highs = zip(*[wilson_interval(cells[x][0], cells[x][1]) for x in xs])
                ax.errorbar([float(x) for x in xs], ys, yerr=[np.subtract(ys, lows), np.subtract(highs, ys)],
                            color=colour, linestyle=style, marker="o", capsize=2,
                            label=f"{'warm start' if model == 'start' else 'after Re²'}, prefix of a {source} answer "
                                  f"(n={min(c[1] for c in cells.values())}-{max(c[1] for c in cells.values())} per point)")
        ax.set(xlabel="prefix: fraction of the answer kept", ylabel=ylabel, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_title("Continuing from a prefix (paper Section 3)")
    axes[1].set_title("Abandoning it")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the two-row legend sits below the axes
    plt.close(fig)


def plot_all(out: Path, results: list[dict], summary: dict) -> None:
    val_n = results[0]["curves"]["re2"]["val_n"]
    plot_learning_curves(out / "learning_curves.png", results, f"{summary['questions']} questions x {val_n} samples")
    plot_tts(out / "tts.png", results, summary["tts_budgets"], summary["questions"])
    plot_section3(out / "section3.png", results)


if __name__ == "__main__":  # redraw from a run's results.json: python experiments/re2_miniature_plots.py OUT_DIR
    import json
    import sys

    out = Path(sys.argv[1])
    data = json.loads((out / "results.json").read_text())
    plot_all(out, [r for r in data["seeds"] if "gate_failed" not in r], data["summary"])
