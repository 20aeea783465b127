"""Re² and its baseline take the same number of optimizer steps per training step (re2.update_steps=matched, the
default), shown on the composed configs of each pair: the paper recipe and its DAPO baseline, both arms of Re² in
miniature, and the CPU main jobs. The official code's count (update_steps=official) is m times the baseline's. The
trainer logs the count it took each step (training/optimizer_steps; tests/e2e/test_re2_smoke_on_cpu.py)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from verl_ext.config import config_dir
from verl_ext.re2.config import match_update_steps, optimizer_steps_per_training_step

RECIPES = str(Path(__file__).resolve().parents[2] / "recipes" / "re2" / "config")


def _steps(folder, name, *overrides):
    with initialize_config_dir(config_dir=folder, version_base=None):
        config = compose(config_name=name, overrides=["actor_rollout_ref.model.path=/model", *overrides])
    match_update_steps(config)  # what the driver does before Ray starts
    return optimizer_steps_per_training_step(config)


@pytest.mark.parametrize("folder,re2,baseline", [
    (RECIPES, "re2_trainer", "dapo_baseline"),
    (config_dir(), "re2_miniature", "re2_miniature_baseline"),
    (config_dir(), "re2_cpu_smoke", "cpu_smoke"),
])
def test_paired_configs_take_the_same_optimizer_steps(folder, re2, baseline):
    assert _steps(folder, re2) == _steps(folder, baseline) == 1


def test_the_official_count_is_m_times_the_baselines():
    official = _steps(RECIPES, "re2_trainer", "re2.update_steps=official")
    assert official == 8 * _steps(RECIPES, "dapo_baseline")  # m = 8: about 8 Adam steps per training step


def test_matched_holds_at_several_mini_batches_per_step():
    assert _steps(RECIPES, "re2_trainer", "actor_rollout_ref.actor.ppo_mini_batch_size=8") == \
        _steps(RECIPES, "dapo_baseline", "actor_rollout_ref.actor.ppo_mini_batch_size=8") == 4


def test_matching_sizes_batches_by_tokens_when_verl_needs_it():
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        config = compose(config_name="re2_cpu_smoke", overrides=["actor_rollout_ref.model.path=/model"])
    changes = match_update_steps(config)
    actor = config.actor_rollout_ref.actor
    assert actor.ppo_mini_batch_size == 16 and actor.use_dynamic_bsz  # 8 questions x m=2 > train_batch_size 8
    assert any("update_steps=matched" in c for c in changes)
