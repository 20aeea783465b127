"""Re²'s metrics for the ``verl_ext_sync`` trainer mode (``verl_ext.trainer_mode``): per step, from the rows'
``reward_extra_info`` (written by ``Re2AgentLoopWorker``), ``re2/*`` and ``grading/*``; per validation, accuracy
under the redo rule and the redo rate per data source.
"""

from __future__ import annotations

from verl_ext.re2.eval_metrics import Sample, avg_at_k
from verl_ext.re2.filtering import re2_metrics


def redo_rule_validation_metrics(data_sources, sample_uids, reward_extra_infos: dict) -> dict[str, float]:
    """Per data source: accuracy under the redo rule (avg@k; redo samples excluded per question) and redo rate,
    from the validation rewards' ``acc`` and ``redo`` (``verl_ext.re2.validation_reward``). Empty if absent."""
    acc, redo = reward_extra_infos.get("acc"), reward_extra_infos.get("redo")
    if acc is None or redo is None or len(acc) != len(sample_uids):
        return {}
    by_source: dict[str, list[Sample]] = {}
    for source, uid, a, r in zip(data_sources, sample_uids, acc, redo):
        by_source.setdefault(str(source), []).append(Sample(str(uid), None, bool(a), bool(r)))
    out = {}
    for source, samples in by_source.items():
        result = avg_at_k(samples)
        out[f"val-core/{source}/re2_avg_redo_rule"] = result["avg_redo_rule"]
        out[f"val-aux/{source}/re2_redo_rate"] = result["redo_rate"]
    return out


def step_metrics(infos: list[dict], question_keys: list[str]) -> dict[str, float]:
    """Re² metrics from the trained rows' reward_extra_info; pre-filter counts come once per question."""
    if not infos:
        return {}
    metrics = re2_metrics(
        [i["re2_outcome"] for i in infos], [i["re2_length"] for i in infos], [i["score"] for i in infos],
        [i["re2_group"] for i in infos],
    )
    per_question = {}
    for key, info in zip(question_keys, infos):
        per_question[key] = {k[len("re2_q_"):]: v for k, v in info.items() if k.startswith("re2_q_")}
    totals = {name: sum(q[name] for q in per_question.values()) for name in next(iter(per_question.values()))}
    answered = totals["continuations"] - totals["redo"]
    if answered:
        metrics["re2/acc_non_redo"] = totals["correct"] / answered
    else:  # every continuation redid: no accuracy to report (absent, not 0)
        metrics.pop("re2/acc_non_redo", None)
    metrics.update({
        "re2/redo_rate": totals["redo"] / max(totals["continuations"], 1),
        "re2/degenerate_group_frac": totals["degenerate_groups"] / max(totals["groups"], 1),
        "re2/kept_frac": totals["kept"] / max(totals["continuations"], 1),
        "re2/num_continuations": float(totals["continuations"]),
        "re2/trained_rows": float(len(infos)),
        "grading/timeouts": float(totals["grading_timeouts"]),
        "grading/refused": float(totals.get("grading_refused", 0)),
    })
    if totals.get("redo"):  # how often a redo met Eq. 1's degenerate case (reward -1), of all redo continuations
        metrics["re2/redo_reward_degenerate_frac"] = totals.get("redo_reward_degenerate", 0) / totals["redo"]
    if "generated_tokens" in totals:  # full responses and continuations, every question of the step
        metrics["re2/generated_tokens"] = float(totals["generated_tokens"])
    return metrics


def step_metric_contributor(extra_fields: list[dict], question_keys: list[str]) -> dict[str, float]:
    """``verl_ext_sync`` step contributor: Re²'s metrics when the rows carry Re²'s reward_extra_info."""
    infos = [e.get("reward_extra_info", {}) for e in extra_fields]
    if not infos or not all("re2_outcome" in i for i in infos):
        return {}
    return step_metrics(infos, question_keys)


def validation_metric_contributor(data_sources, sample_uids, reward_extra_infos: dict) -> dict[str, float]:
    """``verl_ext_sync`` validation contributor: accuracy under the redo rule and the redo rate per data source."""
    return redo_rule_validation_metrics(data_sources, sample_uids, reward_extra_infos)
