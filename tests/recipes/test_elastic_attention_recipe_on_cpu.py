"""The router-training recipe config composes over verl's sft_trainer_engine with the paper's settings, the GRPO
configs switch actor and rollout (hf or vLLM) to Elastic Attention, and every run script forwards to its launcher."""

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl_ext.elastic_attention.router_engine import RouterTrainingConfig

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "elastic_attention"


def test_router_training_config_is_the_paper_setup():
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        cfg = compose(config_name="router_training", overrides=["model.path=/models/x", "data.train_files=t.parquet"])
    settings = RouterTrainingConfig.from_config(OmegaConf.to_container(cfg.elastic, resolve=True))
    assert dict(zip(settings.tasks, settings.targets)) == {"single_qa": 0.7, "multihop_qa": 0.7,
                                                           "summarization": 1.0, "code": 1.0, "icl": 1.0}
    attention = settings.attention_config()
    assert (attention.sink, attention.window, attention.pool_budget) == (128, 2048, 100)
    assert (cfg.optim.lr, settings.lambda_lr, tuple(cfg.optim.betas), cfg.optim.weight_decay) == (5e-4, 1e-3,
                                                                                                  (0.9, 0.95), 0.1)
    assert (cfg.optim.lr_scheduler_type, cfg.optim.lr_warmup_steps_ratio) == ("cosine", 0.2)
    assert (cfg.data.train_batch_size, cfg.trainer.total_training_steps, cfg.data.max_token_len_per_gpu) == (
        48, 300, 65536)
    assert cfg.engine.strategy == "fsdp2" and cfg.model.use_remove_padding
    assert list(cfg.data.elastic_tasks) == list(settings.tasks)


def test_run_scripts_print_usage_without_arguments():
    for script in ("run_router_training.sh", "run_llama31_8b.sh"):
        run = subprocess.run(["bash", str(RECIPE / script)], capture_output=True, text=True)
        assert run.returncode == 2 and "MODEL_DIR TRAIN_PARQUET OUT_DIR" in run.stdout, script


def test_grpo_elastic_config_switches_actor_and_rollout():
    from transformers import Qwen2Config
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from verl_ext.elastic_attention.override_keys import settings_from_hf_config

    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        cfg = compose(config_name="grpo_elastic", overrides=[
            "actor_rollout_ref.model.path=/models/x",
            "actor_rollout_ref.model.override_config.elastic_adapter=/runs/r/router_adapter.safetensors"])
    hf_config = Qwen2Config()
    for key, value in cfg.actor_rollout_ref.model.override_config.items():
        setattr(hf_config, key, value)  # what verl does with override_config
    settings = settings_from_hf_config(hf_config)
    assert settings.adapter == "/runs/r/router_adapter.safetensors" and not settings.trainable
    assert settings.attention.decode == "dense" and cfg.actor_rollout_ref.rollout.name == "hf"
    get_trainer_cls(cfg.trainer.v1.trainer_mode)
    run = subprocess.run(["bash", str(RECIPE / "run_grpo_elastic.sh")], capture_output=True, text=True)
    assert run.returncode == 2 and "MODEL_DIR ROUTERS" in run.stdout


def test_grpo_elastic_vllm_config_follows_the_actor(tmp_path):
    """The vLLM variant: the rollout's hf_overrides carry the actor's adapter and decode mode and pass the engine
    checks; the run script maps the checkpoint's architecture (and refuses an unsupported one)."""
    from transformers import Qwen3Config

    from verl_ext.elastic_attention import vllm_routing
    from verl_ext.elastic_attention.override_keys import settings_from_hf_config

    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        cfg = compose(config_name="grpo_elastic_vllm", overrides=[
            "actor_rollout_ref.model.path=/models/x",
            "actor_rollout_ref.model.override_config.elastic_adapter=/runs/r/router_adapter.safetensors",
            "actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides.architectures=[ElasticQwen3ForCausalLM]"])
    rollout = cfg.actor_rollout_ref.rollout
    overrides = OmegaConf.to_container(rollout.engine_kwargs.vllm.hf_overrides, resolve=True)
    hf_config = Qwen3Config()
    for key, value in overrides.items():
        setattr(hf_config, key, value)  # what vLLM does with hf_overrides
    settings = settings_from_hf_config(hf_config, source="hf_overrides")
    assert settings.adapter == "/runs/r/router_adapter.safetensors" and settings.attention.decode == "dense"
    vllm_routing.check_engine("disable", enforce_eager=rollout.enforce_eager,
                              enable_prefix_caching=rollout.enable_prefix_caching,
                              enable_chunked_prefill=rollout.enable_chunked_prefill,
                              max_num_batched_tokens=rollout.max_num_batched_tokens,
                              max_model_len=rollout.max_model_len or 32768, speculative=False,
                              pipeline_parallel_size=rollout.pipeline_model_parallel_size,
                              decode=settings.attention.decode)
    assert rollout.name == "vllm" and overrides["architectures"] == ["ElasticQwen3ForCausalLM"]
    run = subprocess.run(["bash", str(RECIPE / "run_grpo_elastic_vllm.sh")], capture_output=True, text=True)
    assert run.returncode == 2 and "MODEL_DIR ROUTERS" in run.stdout
    (tmp_path / "config.json").write_text('{"architectures": ["MistralForCausalLM"]}')
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the script's python is this one
    run = subprocess.run(["bash", str(RECIPE / "run_grpo_elastic_vllm.sh"), str(tmp_path), "r", "t", "v", "x"],
                         capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert run.returncode != 0 and "this checkpoint is 'MistralForCausalLM'" in run.stderr


def test_vllm_rollout_settings_must_be_the_actors():
    """A vLLM rollout routed differently from the actor (or not at all) is refused in the driver."""
    import pytest

    from verl_ext.elastic_attention.override_keys import check_rollout_matches_actor

    def compose_vllm(*extra):
        with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
            return compose(config_name="grpo_elastic_vllm", overrides=[
                "actor_rollout_ref.model.path=/models/x",
                "actor_rollout_ref.model.override_config.elastic_adapter=/runs/r.safetensors", *extra])

    check_rollout_matches_actor(compose_vllm())  # the recipe's interpolations keep them equal
    with pytest.raises(ValueError, match="elastic_window actor=1024 rollout=2048"):
        check_rollout_matches_actor(compose_vllm("+actor_rollout_ref.model.override_config.elastic_window=1024"))
    with pytest.raises(ValueError, match="on for the actor but off for the vLLM rollout"):
        check_rollout_matches_actor(compose_vllm(
            "actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides.elastic_attention=false"))
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        hf = compose(config_name="grpo_elastic",
                     overrides=["+actor_rollout_ref.model.override_config.elastic_window=9"])
    check_rollout_matches_actor(hf)  # the hf rollout reads the actor's own keys

    # In the driver, before Ray starts: the registered config check refuses it (ConfigError naming the key).
    from verl_ext.config_checks import ConfigError
    from verl_ext.elastic_attention.override_keys import check_override_config

    with pytest.raises(ConfigError, match="elastic_window actor=1024 rollout=2048"):
        check_override_config(compose_vllm("+actor_rollout_ref.model.override_config.elastic_window=1024"))
    check_override_config(compose_vllm())
