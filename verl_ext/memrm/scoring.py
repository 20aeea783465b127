"""Per-sample scoring of a judge output, and the verl reward function of the validation recipe.

    reward.custom_reward_function.path=pkg://verl_ext.memrm.scoring
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.records_path=RUN/records.jsonl   (per-sample records, for the report)
    reward.custom_reward_function.reward_kwargs.pass_through=[NAME, ...]          (numeric rollout fields to keep)

``score`` is the strict (official) correctness; the lenient parse, parse success and P(pick A) ride along as
numbers, which verl averages per ``data_source`` (one data source per task / setting / length / view). Each name in
``pass_through`` that the judge's rollout put in the sample's extra fields (e.g. an Elastic Attention judge's
``elastic_msr``) is copied, as a number, into the score dict and the record; the report then shows its mean beside
accuracy per length bucket.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from verl_ext.memrm.parsing import parse_lenient, parse_strict
from verl_ext.memrm.records import RecordStore, record_key


def score_output(output: str, correct_letter: str) -> dict:
    """Strict and lenient verdicts of one judge output against the letter that picks ``chosen``."""
    if correct_letter not in ("A", "B"):
        raise ValueError(f"ground truth {correct_letter!r} must be 'A' or 'B'.")
    strict, lenient = parse_strict(output), parse_lenient(output)
    return {
        "verdict_strict": strict,
        "verdict_lenient": lenient,
        "correct_strict": float(strict == correct_letter),
        "correct_lenient": float(lenient == correct_letter),
        "parsed_strict": float(strict is not None),
        "parsed_lenient": float(lenient is not None),
        "picked_A": float(strict == "A"),
    }


def passed_through(extra_info: Optional[dict], names: Sequence[str], data_source: str) -> dict:
    """The numeric ``names`` present in ``extra_info`` (absent or None: left out, not 0)."""
    out = {}
    for name in names:
        value = (extra_info or {}).get(name)
        if value is None:
            continue
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{data_source}: pass-through field {name!r} is {value!r}, not a number; remove it from "
                             "reward.custom_reward_function.reward_kwargs.pass_through.") from err
    return out


def compute_score(data_source, solution_str, ground_truth, extra_info=None, records_path: Optional[str] = None,
                  model: str = "", sampling: str = "", pass_through: Sequence[str] = (), **kwargs) -> dict:
    if ground_truth not in ("A", "B"):
        index = (extra_info or {}).get("pair_id")
        raise ValueError(f"pair {index} of {data_source!r}: reward_model.ground_truth={ground_truth!r} must be 'A' or 'B'; "
                         "convert the benchmark with python -m verl_ext.memrm.convert.")
    result = {**score_output(solution_str, ground_truth), **passed_through(extra_info, list(pass_through), data_source)}
    if records_path:
        info = dict(extra_info or {})
        key = record_key(model, info.get("prompt_sha", ""), sampling, info.get("order", []))
        RecordStore(records_path).append({"key": key, "model": model, "sampling": sampling, "output": solution_str,
                                          "correct_letter": ground_truth, "time": time.time(),
                                          "pass_through": list(pass_through), **info, **result})
    return {"score": result["correct_strict"], **{k: v for k, v in result.items() if not k.startswith("verdict")}}
