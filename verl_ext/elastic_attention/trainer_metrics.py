"""Elastic Attention's step metrics for the ``verl_ext_sync`` trainer mode (``verl_ext.trainer_mode``).

Each response's prefill Omega_MSR travels from the ``hf`` rollout in its ``extra_fields`` (``elastic_msr``); the
contributor logs ``elastic/rollout_msr/{mean,min,max,responses}``. The rollout / actor log-prob agreement is verl's
own ``training/rollout_probs_diff_*`` (rollout.calculate_log_probs).
"""

from __future__ import annotations

import numpy as np


def rollout_msr_metrics(extra_fields: list) -> dict:
    """Omega_MSR statistics over the responses that carry one (none: no metrics)."""
    values = [e["elastic_msr"] for e in extra_fields if isinstance(e, dict) and e.get("elastic_msr") is not None]
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {"elastic/rollout_msr/mean": float(arr.mean()), "elastic/rollout_msr/min": float(arr.min()),
            "elastic/rollout_msr/max": float(arr.max()), "elastic/rollout_msr/responses": float(arr.size)}


def rollout_metric_contributor(extra_fields: list[dict], question_keys: list[str]) -> dict[str, float]:
    """``verl_ext_sync`` step contributor (nothing for runs without Elastic Attention: no row carries it)."""
    return rollout_msr_metrics(extra_fields)
