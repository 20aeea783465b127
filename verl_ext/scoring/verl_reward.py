"""verl reward function for math answers graded by math-verify.

Use with verl's reward managers::

    reward.custom_reward_function.path=pkg://verl_ext.scoring.verl_reward
    reward.custom_reward_function.name=compute_score

Returns a dict so verl records ``acc`` and the grading outcome per row next to ``score``.
"""

from __future__ import annotations

from verl_ext.scoring.math_grader import STATUS_ERROR, STATUS_REFUSED, STATUS_TIMEOUT, default_grader


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """1.0 if the last ``\\boxed{}`` of ``solution_str`` equals ``ground_truth`` (math-verify), else 0.0."""
    if ground_truth is None:
        index = (extra_info or {}).get("index")
        raise ValueError(
            f"row {index} of data_source={data_source!r} has no reward_model.ground_truth; every row needs one."
        )
    grade = default_grader().grade(solution_str, str(ground_truth))
    return {
        "score": 1.0 if grade.correct else 0.0,
        "acc": float(grade.correct),
        "grading_timeout": float(grade.status == STATUS_TIMEOUT),
        "grading_refused": float(grade.status == STATUS_REFUSED),
        "grading_error": float(grade.status == STATUS_ERROR),
    }
