"""Aggregation of per-sample MemoryRewardBench records: cells with n and 95% intervals, micro and macro averages,
dual-order consistency and position bias, and length-only baselines.

Every accuracy is a micro average over the samples of its cell (the official "Avg." is the micro average over all
pairs); macro averages weight the 3 tasks, or the 10 settings, equally. Empty cells are absent, never -1 or 0.
Headline numbers use the official single order (view ``official``); dual-order figures appear when swapped views
were scored.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

from verl_ext.memrm.schema import ALL_SETTINGS, LENGTHS, SETTINGS, TASKS
from verl_ext.stats import wilson_interval  # noqa: F401  (re-exported: the reports use it)


def cell(values: Sequence[float]) -> dict:
    n = len(values)
    acc = sum(values) / n
    low, high = wilson_interval(sum(values), n)
    return {"accuracy": acc, "n": n, "ci95": [low, high]}


def _cells(records: Sequence[dict], key_fn, metric: str) -> dict:
    groups: dict = defaultdict(list)
    for r in records:
        groups[key_fn(r)].append(float(r[metric]))
    return {k: cell(v) for k, v in sorted(groups.items())}


def accuracy_tables(records: Sequence[dict], metric: str = "correct_strict") -> dict:
    """Per setting x length, task x length, setting, task; overall micro; macro over tasks and over settings."""
    if not records:
        raise ValueError("no records to aggregate.")
    by_setting = _cells(records, lambda r: r["setting"], metric)
    by_task = _cells(records, lambda r: r["task"], metric)
    out = {
        "setting_x_length": {f"{s}/{l}": c for (s, l), c in _cells(records, lambda r: (r["setting"], r["ctx_length"]), metric).items()},
        "task_x_length": {f"{t}/{l}": c for (t, l), c in _cells(records, lambda r: (r["task"], r["ctx_length"]), metric).items()},
        "length": _cells(records, lambda r: r["ctx_length"], metric),
        "setting": by_setting,
        "task": by_task,
        "overall_micro": cell([float(r[metric]) for r in records]),
        "macro_over_tasks": sum(c["accuracy"] for c in by_task.values()) / len(by_task),
        "macro_over_settings": sum(c["accuracy"] for c in by_setting.values()) / len(by_setting),
        "tasks_present": [t for t in TASKS if t in by_task],
        "settings_present": [s for s in ALL_SETTINGS if s in by_setting],
    }
    return out


def dual_order(records: Sequence[dict]) -> dict:
    """Consistency and accuracy over pairs judged in both orders (strict verdicts)."""
    views: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        views[r["pair_id"]][r["view"]] = r
    pairs = [v for v in views.values() if "official" in v and "swap" in v]
    if not pairs:
        return {}

    def picked_chosen(r):
        return r["verdict_strict"] == r["correct_letter"]

    consistent = [float(r["verdict_strict"] is not None and s["verdict_strict"] is not None
                        and picked_chosen(r) == picked_chosen(s)) for r, s in ((p["official"], p["swap"]) for p in pairs)]
    return {
        "pairs": len(pairs),
        "mean_accuracy_both_orders": sum(float(picked_chosen(r)) for p in pairs for r in p.values()) / (2 * len(pairs)),
        "both_correct": sum(float(picked_chosen(p["official"]) and picked_chosen(p["swap"])) for p in pairs) / len(pairs),
        "consistency": sum(consistent) / len(pairs),
    }


def position_bias(records: Sequence[dict]) -> dict:
    parsed = [r for r in records if r["verdict_strict"] is not None]
    chosen_b = [r for r in parsed if r["correct_letter"] == "B"]
    return {
        "p_pick_A": sum(r["verdict_strict"] == "A" for r in parsed) / len(parsed) if parsed else math.nan,
        "p_pick_A_when_chosen_is_B": (sum(r["verdict_strict"] == "A" for r in chosen_b) / len(chosen_b)
                                      if chosen_b else math.nan),
        "parse_failure_rate": 1 - len(parsed) / len(records) if records else math.nan,
        "lenient_parse_failure_rate": (1 - sum(r["verdict_lenient"] is not None for r in records) / len(records)
                                       if records else math.nan),
        "n": len(records), "n_parsed": len(parsed), "n_chosen_b_parsed": len(chosen_b),
    }


def length_baselines(records: Sequence[dict]) -> dict:
    """Judges that never read: always A, always B, pick the longer / shorter trajectory (ties count wrong)."""
    n = len(records)
    return {
        "always_A": sum(r["correct_letter"] == "A" for r in records) / n,
        "always_B": sum(r["correct_letter"] == "B" for r in records) / n,
        "pick_longer": sum(r["chosen_chars"] > r["rejected_chars"] for r in records) / n,
        "pick_shorter": sum(r["chosen_chars"] < r["rejected_chars"] for r in records) / n,
    }


def pass_through_by_length(records: Sequence[dict]) -> dict:
    """{field: {length: {mean, n, accuracy}}} for every pass-through field the records carry (the names listed in
    each record's ``pass_through``; see ``scoring.compute_score``); records without a value are left out."""
    names = sorted({name for r in records for name in r.get("pass_through") or ()})
    out = {}
    for name in names:
        rows = [r for r in records if r.get(name) is not None]
        by_length = {}
        for length in LENGTHS:
            picked = [r for r in rows if r["ctx_length"] == length]
            if picked:
                by_length[length] = {"mean": sum(float(r[name]) for r in picked) / len(picked), "n": len(picked),
                                     "accuracy": sum(r["correct_strict"] for r in picked) / len(picked)}
        if by_length:
            out[name] = by_length
    return out


def summarise(records: Iterable[dict]) -> dict:
    records = list(records)
    official = [r for r in records if r.get("view", "official") == "official"] or records
    return {
        "pass_through": pass_through_by_length(official),
        "strict": accuracy_tables(official, "correct_strict"),
        "lenient": accuracy_tables(official, "correct_lenient"),
        "position": position_bias(official),
        "dual_order": dual_order(records),
        "baselines": length_baselines(official),
        "lengths": list(LENGTHS),
        "settings": {t: list(SETTINGS[t]) for t in TASKS},
    }
