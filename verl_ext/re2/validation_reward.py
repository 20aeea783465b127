"""verl reward function for Re² validation rows: graded answer plus the redo flag.

    reward.custom_reward_function.path=pkg://verl_ext.re2.validation_reward

verl averages every returned key per data source (``val-core/<source>/acc/mean@N``, ``val-aux/<source>/redo/...``),
so validation logs accuracy (a redo counts as not solved) and the redo rate. Accuracy under the redo rule needs
per-question aggregation: run ``python -m verl_ext.re2.eval avg`` on the dumped generations
(``trainer.validation_data_dir``).
"""

from __future__ import annotations

import functools

from verl_ext.re2.redo import DEFAULT_REDO_PHRASE
from verl_ext.re2.redo import redo_rule as _redo_rule
from verl_ext.scoring.verl_reward import compute_score as grade_math

_rule = functools.lru_cache(maxsize=None)(_redo_rule)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, redo_rule: str = "anywhere",
                  redo_phrase: str = DEFAULT_REDO_PHRASE, **kwargs):
    redo = _rule(redo_phrase, redo_rule)(solution_str)
    result = grade_math(data_source, solution_str, ground_truth, extra_info)
    if redo:
        result["score"] = result["acc"] = 0.0
    result["redo"] = float(redo)
    return result
