"""Figures of ``elastic_miniature.py``: per-task Omega_MSR and accuracy per method (95% Wilson intervals, n), the
routing heatmaps per task, accuracy against Omega_MSR (one seed's methods, and routed against the static curve at
every budget, per seed and over seeds), and the router-training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from verl_ext.stats import wilson_interval  # noqa: E402

METHODS = ("dense", "routed", "static", "static_frequency", "sparse")
TASKS = ("retrieval", "local")
COLORS = {"dense": "#4c72b0", "routed": "#dd8452", "static": "#55a868", "static_frequency": "#8172b3",
          "sparse": "#c44e52"}


def _acc_interval(r: dict) -> tuple[float, float]:
    low, high = wilson_interval(r["correct"], r["n"])
    return r["acc"] - low, high - r["acc"]


def plot_bars(out: Path, results: dict, chance: float) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = [m for m in METHODS if m in results]
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(TASKS))]
        accs = [results[m][t]["acc"] for t in TASKS]
        errs = list(zip(*[_acc_interval(results[m][t]) for t in TASKS]))
        axes[0].bar(xs, accs, width, yerr=errs, capsize=3, color=COLORS[m], label=m)
        axes[1].bar(xs, [results[m][t]["msr"] for t in TASKS], width, color=COLORS[m], label=m)
    n = results["dense"]["retrieval"]["n"]
    axes[0].axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.3f})")
    axes[0].set(title=f"Accuracy on queried values (n = {n} per task, 95% CI)", ylabel="accuracy", ylim=(0, 1.05))
    axes[1].set(title="Model sparsity ratio (share of sparse heads)", ylabel="Omega_MSR", ylim=(0, 1.05))
    for ax in axes:
        ax.set_xticks(range(len(TASKS)), TASKS)
        ax.set_xlabel("task")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "accuracy_msr.png", dpi=120)
    plt.close(fig)


def plot_scatter(out: Path, results: dict) -> None:
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    # Methods often land on the same point (e.g. dense on both tasks at (0, 1)): each series is shifted by its own
    # small x offset and local uses open markers, so no series hides behind another.
    series = [(m, t) for m in METHODS if m in results for t in TASKS]
    for i, (m, t) in enumerate(series):
        r = results[m][t]
        low, high = _acc_interval(r)
        ax.errorbar(r["msr"] + (i - (len(series) - 1) / 2) * 0.007, r["acc"], yerr=[[low], [high]],
                    fmt="o" if t == "retrieval" else "s", mfc=COLORS[m] if t == "retrieval" else "none",
                    color=COLORS[m], capsize=3, label=f"{m}, {t}")
    ax.set(xlabel="Omega_MSR (share of sparse heads; series offset by < 0.03)", ylabel="accuracy (95% CI)",
           xlim=(-0.05, 1.05),
           ylim=(-0.05, 1.05), title="Accuracy against sparsity")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_msr.png", dpi=120)
    plt.close(fig)


def plot_heatmaps(out: Path, rates: dict, static: torch.Tensor, n: int) -> None:
    panels = [(f"routed, {t} (n = {n} sequences)", rates[t]) for t in TASKS] + [(f"best static mask ({int(static.sum())} full heads)", static.float())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, grid) in zip(axes, panels):
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("KV head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
    fig.colorbar(im, ax=axes, label="share routed to full attention", shrink=0.9)
    fig.savefig(out / "routing_heatmaps.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_training(out: Path, history: list, targets: tuple) -> None:
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for t, target, color in zip(TASKS, targets, ("#4c72b0", "#dd8452")):
        axes[0].plot(steps, [h[f"omega_{t}"] for h in history], color=color, label=f"{t} (target {target})")
        axes[0].axhline(target, color=color, ls="--", lw=1)
    axes[0].set(xlabel="router step", ylabel="Omega_MSR (straight-through)", ylim=(-0.05, 1.05),
                title="Sparsity per task during router training")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [h["ce"] for h in history], color="black")
    axes[1].set(xlabel="router step", ylabel="cross-entropy (nats)", title="Answer loss (backbone frozen)")
    fig.tight_layout()
    fig.savefig(out / "router_training.png", dpi=120)
    plt.close(fig)


def _curve_axes(ax, curve: list, budgets: dict, label_static: bool, label_routed: bool, alpha: float = 1.0) -> None:
    n = curve[0]["n"]
    xs = [p["msr"] for p in curve]
    ax.plot(xs, [p["acc_mean"] for p in curve], "-", color=COLORS["static"], alpha=alpha, marker=".",
            label="best static mask (searched, every head count)" if label_static else None)
    for b, (budget, r) in enumerate(sorted(budgets.items(), key=lambda kv: float(kv[0]))):
        lows, highs = zip(*[wilson_interval(r["routed"][t]["correct"], r["routed"][t]["n"]) for t in TASKS])
        low, high = sum(lows) / 2, sum(highs) / 2  # the mean of the two tasks' intervals (each n answers)
        ax.errorbar(r["mean_msr"], r["acc_mean"], yerr=[[r["acc_mean"] - low], [high - r["acc_mean"]]], fmt="o",
                    color=COLORS["routed"], alpha=alpha, capsize=3,
                    label=f"routed (retrieval targets {', '.join(sorted(budgets))})" if label_routed and b == 0
                    else None)
    ax.set(xlabel="mean Omega_MSR over both tasks", ylabel=f"accuracy, mean of both tasks (n = {n} per task)",
           ylim=(-0.05, 1.05), xlim=(-0.05, 1.05))


def plot_curve(out: Path, curve: list, budgets: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.4))
    _curve_axes(ax, curve, budgets, True, True)
    ax.set_title("Routed vs static head masks across budgets (95% CI)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_msr_budgets.png", dpi=120)
    plt.close(fig)


def plot_seeds_curve(out: Path, seed_results: list) -> None:
    """Every seed's static curve and routed points on one plot (one seed's own intervals in its folder)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, r in enumerate(seed_results):
        _curve_axes(ax, r["static_curve"], r["budgets"], i == 0, i == 0, alpha=0.6)
    seeds = [r["summary"]["seed"] for r in seed_results]
    ax.set_title(f"Routed vs best static mask, {len(seeds)} seeds ({', '.join(map(str, seeds))})")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_msr_seeds.png", dpi=120)
    plt.close(fig)


def plot_all(out: Path, results: dict, rates: dict, static: torch.Tensor, history: list, targets: tuple,
             answer_classes: int, curve: list, budgets: dict, n_sequences: int) -> None:
    plot_bars(out, results, 1.0 / answer_classes)
    plot_curve(out, curve, budgets)
    plot_scatter(out, results)
    plot_heatmaps(out, rates, static, n_sequences)
    plot_training(out, history, targets)
