"""Each runtime patch of verl internals, and a check that fails if the pinned verl changes underneath it."""

import inspect

import pytest
import verl

from verl_ext import _verl_compat


def test_pinned_verl_version():
    assert verl.__version__ == "0.9.1", "verl_ext's compatibility patches are written against verl 0.9.1"


def test_process_group_backend_patch_targets_the_duplicate_cpu_backend():
    import verl.utils.distributed as dist_utils

    patched = dist_utils.initialize_global_process_group_ray
    assert getattr(patched, "__verl_ext_patched__", False)
    original_source = inspect.getsource(patched.__wrapped__)
    # The bug the patch exists for: verl always prefixes "cpu:gloo," before "{device}:{backend}".
    assert 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in original_source


def test_engine_workers_see_the_patched_function():
    import verl.checkpoint_engine.base as ckpt_base
    import verl.workers.engine_workers as engine_workers

    assert engine_workers.initialize_global_process_group_ray.__verl_ext_patched__
    assert ckpt_base.initialize_global_process_group_ray.__verl_ext_patched__


def test_patched_backend_initialises_gloo_on_cpu(monkeypatch):
    import torch.distributed as dist
    import verl.utils.distributed as dist_utils

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist_utils.initialize_global_process_group_ray(timeout_second=30)
    try:
        assert dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()


def test_rollout_adapter_is_in_verls_private_registry():
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class

    from verl_ext.rollout.hf_adapter import HFServerAdapter

    assert _ROLLOUT_REGISTRY[("hf", "async")] == _verl_compat.HF_ADAPTER_FQN
    assert get_rollout_class("hf", "async") is HFServerAdapter


def test_config_check_wraps_auto_set_device():
    import verl.trainer.main_ppo as main_ppo
    import verl.utils.device as device_utils

    assert device_utils.auto_set_device.__verl_ext_patched__
    assert main_ppo.auto_set_device is device_utils.auto_set_device, "main_ppo must import the patched hook"


def test_cpu_engines_registered():
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is FSDPEngineWithLMHead


def test_a_moved_target_fails_loudly(monkeypatch):
    import verl.workers.rollout.base as rollout_base

    monkeypatch.setattr(rollout_base, "_ROLLOUT_REGISTRY", None)
    with pytest.raises(_verl_compat.VerlLayoutChanged, match="_ROLLOUT_REGISTRY"):
        _verl_compat.register_rollout_adapter()


def test_private_verl_methods_the_re2_extensions_override_still_exist():
    """Re² subclasses verl's v1 agent-loop worker and sync trainer; these are the (private) seams it relies on."""
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    worker = AgentLoopWorkerTQ.__ray_actor_class__
    assert list(inspect.signature(worker._run_prompt).parameters)[:5] == ["self", "prompt", "sampling_params", "trajectory", "trace"]
    assert list(inspect.signature(worker._agent_loop_postprocess).parameters)[:3] == ["self", "output", "validate"]
    assert list(inspect.signature(PPOTrainer._compute_advantage).parameters) == ["self", "batch", "metrics"]
    assert list(inspect.signature(PPOTrainer._val_metrics_update).parameters)[:5] == [
        "self", "data_sources", "sample_uids", "reward_extra_infos_dict", "sample_turns"]
    assert 'self.trainer_mode == "sync"' in inspect.getsource(PPOTrainer._build_replay_buffer)


def test_engine_hooks_are_installed_and_their_targets_exist():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine, FSDPEngineWithLMHead

    assert FSDPEngine._build_module.__verl_ext_patched__
    assert FSDPEngineWithLMHead.forward_step.__verl_ext_patched__
    _verl_compat.patch_engine_hooks()  # idempotent
    assert FSDPEngine._build_module.__wrapped__.__name__ == "_build_module"
    # Router training's seams (subclassed, not patched) and the trainer metrics hook of the elastic trainers.
    assert "_build_engine" in SFTTrainer.__dict__ and "_build_optimizer" in FSDPEngine.__dict__
    assert list(inspect.signature(FSDPEngine.optimizer_step).parameters) == ["self"]
    assert list(inspect.signature(PPOTrainer._compute_metrics).parameters) == [
        "self", "batch", "metrics", "timing_raw", "global_steps", "epoch"]
    assert 'model_type == "language_model"' in inspect.getsource(FSDPEngine._build_module.__wrapped__)


def test_models_without_the_switch_are_untouched(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.verl_actor import before_forward, prepare_module

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert prepare_module(model) is None
    assert not any("elastic_router" in n for n, _ in model.named_parameters())
    before_forward(model, {})  # no routers: no prompt lengths needed
