"""Driver-side config checks on verl's real ppo_trainer composed with our configs: each bad value names the field,
the valid choices or the nearest known name, and the fix. ``tests/e2e/test_fail_fast_on_cpu.py`` runs the same
cases through ``python -m verl.trainer.main_ppo``."""

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import verl_ext  # noqa: F401  (loads the plugin: registries and checks)
from verl_ext.config import config_dir
from verl_ext.config_checks import ConfigError, check_dataset_files, check_trainer_config
from verl_ext.testing import arithmetic


def _compose(tmp_path, *overrides, name="cpu_smoke"):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(config_name=name, overrides=[f"actor_rollout_ref.model.path={model}", *overrides])


def _parquet(tmp_path, name, edit):
    rows, _ = arithmetic.build_rows(4, 0)
    frame = edit(pd.DataFrame(rows))
    path = tmp_path / f"{name}.parquet"
    frame.to_parquet(path)
    return path


def test_the_shipped_configs_pass(tmp_path):
    for name in ("cpu_smoke", "re2_cpu_smoke", "elastic_grpo_cpu_smoke"):
        check_trainer_config(_compose(tmp_path, name=name))


@pytest.mark.parametrize("field,value,message", [
    ("actor_rollout_ref.rollout.name", "hff", r"rollout.name='hff' is not a registered rollout \(did you mean 'hf'\?\)"
                                              r"\. Known: \[.*'hf'.*\]\. On a machine without a GPU use"),
    ("algorithm.adv_estimator", "re22", r"adv_estimator='re22' is not a registered advantage estimator \(did you "
                                         r"mean 're2'\?\). Known: \[.*'grpo'.*'re2'.*\]"),
    ("trainer.v1.trainer_mode", "verl_ext_snc", r"trainer_mode='verl_ext_snc' is not a registered v1 trainer mode \(did "
                                                 r"you mean 'verl_ext_sync'\?\)"),
    ("reward.reward_manager.name", "naiv", r"reward_manager.name='naiv' is not a registered reward manager \(did "
                                            r"you mean 'naive'\?\)"),
])
def test_unknown_registry_names(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        check_trainer_config(_compose(tmp_path, f"{field}={value}", name="re2_cpu_smoke"))


def test_missing_model_folder(tmp_path):
    cfg = _compose(tmp_path, f"actor_rollout_ref.model.path={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match=r"model.path=.*nope' is not a folder.*verl_ext.testing.tiny_model"):
        check_trainer_config(cfg)


def test_hub_ids_are_left_to_transformers(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    check_trainer_config(_compose(tmp_path, "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B"))


def _empty_content(frame):
    frame.at[1, "prompt"] = [{"role": "user", "content": "  "}]
    return frame


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.assign(prompt=[f.prompt[0], f.prompt[1], [], f.prompt[3]]), r"row 2 \(0-based\) of .*: 'prompt' is empty"),
    (_empty_content, r"row 1 \(0-based\) of .*: 'prompt' message 0 \(user\) has empty content"),
    (lambda f: f.drop(columns=["prompt"]), r"has no 'prompt' column \(data.prompt_key\)"),
    (lambda f: f.drop(columns=["reward_model"]), r"has no 'reward_model' column.*reward_model.ground_truth"),
    (lambda f: f.assign(reward_model=[{"style": "rule"}] * 4), r"row 0 \(0-based\) of .* has no reward_model.ground_truth"),
])
def test_dataset_rows(tmp_path, edit, message):
    path = _parquet(tmp_path, "bad", edit)
    for field in ("data.train_files", "data.val_files"):
        with pytest.raises(ConfigError, match=f"{field}: .*" + message):
            check_dataset_files(_compose(tmp_path, f"{field}={path}"))


def test_ground_truth_is_not_needed_when_a_reward_model_scores(tmp_path):
    path = _parquet(tmp_path, "no_truth", lambda f: f.drop(columns=["reward_model"]))
    check_dataset_files(_compose(tmp_path, f"data.train_files={path}", "reward.reward_model.enable=true"))


@pytest.mark.parametrize("key,message", [
    ("elastic_attenton", r"override_config.elastic_attenton: unknown Elastic Attention key \(did you mean "
                         r"'elastic_attention'\?\)"),
    ("elastic_windw", r"override_config.elastic_windw: unknown Elastic Attention key \(did you mean 'elastic_window'"),
    ("elasticattention", r"unknown Elastic Attention key \(did you mean 'elastic_attention'\?\)"),
])
def test_elastic_switch_typos(tmp_path, key, message):
    with pytest.raises(ConfigError, match=message):
        check_trainer_config(_compose(tmp_path, f"+actor_rollout_ref.model.override_config.{key}=true"))


def test_elastic_values_are_checked_in_the_driver(tmp_path):
    cfg = _compose(tmp_path, "+actor_rollout_ref.model.override_config.elastic_attention=true",
                   "+actor_rollout_ref.model.override_config.elastic_decode=sparse")
    with pytest.raises(ConfigError, match="decode='sparse' must be 'dense'"):
        check_trainer_config(cfg)


def test_re2_block(tmp_path):
    with pytest.raises(ConfigError, match=r"re2.max_redo_round: unknown Re² key \(did you mean 'max_redo_rounds'"):
        check_trainer_config(_compose(tmp_path, "+re2.max_redo_round=3", name="re2_cpu_smoke"))
    with pytest.raises(ConfigError, match="re2.continuations_per_prefix=1"):
        check_trainer_config(_compose(tmp_path, "re2.continuations_per_prefix=1", name="re2_cpu_smoke"))
