"""The CPU preparation of a verl trainer config, on verl's real ppo_trainer composed with our CPU delta."""

import pytest
from hydra import compose, initialize_config_dir

from verl_ext.config import config_dir
from verl_ext.config_checks import ConfigError
from verl_ext.platform.cpu_config import prepare_cpu_config


def _compose(tmp_path, *overrides):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(config_name="cpu_smoke", overrides=[f"actor_rollout_ref.model.path={model}", *overrides])


def test_fills_cpu_defaults(tmp_path):
    cfg = _compose(tmp_path, "trainer.n_gpus_per_node=2")
    changes = prepare_cpu_config(cfg)
    assert cfg.trainer.device == "cpu"
    assert cfg.ray_kwargs.ray_init.num_gpus == 2
    assert cfg.ray_kwargs.ray_init.num_cpus >= 3 * 2 + 1 + 1 + 2
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert any("num_gpus=2" in c for c in changes)


@pytest.mark.parametrize("rollout", ["sglang", "trtllm"])
def test_gpu_only_rollout_is_refused_with_the_fix(tmp_path, rollout):
    cfg = _compose(tmp_path, f"actor_rollout_ref.rollout.name={rollout}")
    with pytest.raises(ConfigError, match=rf"rollout.name='{rollout}' needs a GPU.*rollout.name=hf.*vllm"):
        prepare_cpu_config(cfg)


def test_runtime_env_variables_become_strings(tmp_path):
    cfg = _compose(tmp_path, "+ray_kwargs.ray_init.runtime_env.env_vars.SOME_FLAG=0")
    changes = prepare_cpu_config(cfg)
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.SOME_FLAG == "0"  # Ray refuses anything but str
    assert any("SOME_FLAG='0'" in c for c in changes)


def test_too_few_declared_slots_is_refused(tmp_path):
    cfg = _compose(tmp_path, "trainer.n_gpus_per_node=2", "+ray_kwargs.ray_init.num_gpus=1")
    with pytest.raises(ConfigError, match="num_gpus=1 declares fewer rank slots.*set it to 2"):
        prepare_cpu_config(cfg)


def test_flash_attention_on_cpu_is_refused(tmp_path):
    cfg = _compose(tmp_path, "+actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2")
    with pytest.raises(ConfigError, match="flash_attention_2.*sdpa"):
        prepare_cpu_config(cfg)
