"""verl reward function for Re² validation rows: graded answer plus the redo flag.

    reward.custom_reward_function.path=pkg://verl_ext.re2.validation_reward
    reward.custom_reward_function.reward_kwargs.re2=${re2}      (the Re² configs set both)

The redo rule, phrase and variants are the trainer config's ``re2`` block, passed whole (``reward_kwargs.re2``), so
validation scores with the redo specification training uses. verl averages every returned key per data source
(``val-core/<source>/acc/mean@N``, ``val-aux/<source>/redo/...``), so validation logs accuracy (a redo counts as
not solved) and the redo rate; the ``verl_ext_sync`` trainer mode adds accuracy under the redo rule per question
(``val-core/<source>/re2_avg_redo_rule``). ``python -m verl_ext.re2.eval avg`` reads the dumped generations.
"""

from __future__ import annotations

import functools
import json

from verl_ext.re2.config import Re2Config
from verl_ext.scoring.verl_reward import compute_score as grade_math


@functools.lru_cache(maxsize=None)
def _spec(re2_json: str):
    return Re2Config.from_mapping(json.loads(re2_json)).redo_spec


def _plain(block) -> dict:
    from omegaconf import OmegaConf

    if block is None:
        return {}
    return OmegaConf.to_container(block, resolve=True) if OmegaConf.is_config(block) else dict(block)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, re2=None, **kwargs):
    """``re2``: the trainer config's ``re2`` block (a mapping; the Re² defaults when absent)."""
    redo = _spec(json.dumps(_plain(re2), sort_keys=True)).is_redo(solution_str)
    result = grade_math(data_source, solution_str, ground_truth, extra_info)
    if redo:
        result["score"] = result["acc"] = 0.0
    result["redo"] = float(redo)
    return result
