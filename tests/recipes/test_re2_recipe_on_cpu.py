"""The Re² recipe configs compose over verl's ppo_trainer and every knob resolves to something registered."""

import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
from verl.utils.import_utils import load_class_from_fqn

from verl_ext.re2.config import Re2Config

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "re2"


def _compose(name):
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        return compose(config_name=name, overrides=["actor_rollout_ref.model.path=/models/x"])


def test_re2_trainer_config_is_the_paper_setup():
    cfg = _compose("re2_trainer")
    re2 = Re2Config.from_mapping(OmegaConf.to_container(cfg.re2))
    assert (cfg.actor_rollout_ref.rollout.n, re2.continuations_per_prefix, re2.max_redo_rounds) == (8, 8, 5)
    assert (re2.rho_max, re2.p_empty, re2.overlong.scale) == (0.8, 0.0, 0.5)
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert actor.optim.lr == 1e-6 and actor.loss_agg_mode == "token-mean" and not actor.use_kl_loss
    assert cfg.data.max_prompt_length >= 2048 + 0.8 * 4096
    core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    get_trainer_cls(cfg.trainer.v1.trainer_mode)
    load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")


def test_dapo_baseline_matches_the_response_budget():
    re2, dapo = _compose("re2_trainer"), _compose("dapo_baseline")
    per_question = re2.actor_rollout_ref.rollout.n * (1 + re2.re2.continuations_per_prefix)
    assert dapo.actor_rollout_ref.rollout.n == per_question
    assert dapo.actor_rollout_ref.actor.optim.lr == re2.actor_rollout_ref.actor.optim.lr


@pytest.mark.parametrize("script", sorted(p.name for p in RECIPE.glob("run_*.sh")))
def test_run_scripts_are_valid_and_explain_themselves(script):
    assert subprocess.run(["bash", "-n", str(RECIPE / script)]).returncode == 0
    res = subprocess.run(["bash", str(RECIPE / script)], capture_output=True, text=True)
    assert res.returncode == 2 and "Usage" in res.stdout + res.stderr


def test_prompt_template_carries_the_redo_phrase():
    text = (RECIPE / "prompts" / "redo_instruction.txt").read_text()
    assert "{question}" in text and "It's better to redo the question." in text and "\\boxed{}" in text
