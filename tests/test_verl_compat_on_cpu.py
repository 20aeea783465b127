"""Each runtime patch of verl internals does what it exists for (the seams they rely on: tests/test_seams_on_cpu.py)."""

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


def test_engine_hooks_are_installed_once():
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine, FSDPEngineWithLMHead

    assert FSDPEngine._build_module.__verl_ext_patched__
    assert FSDPEngineWithLMHead.forward_step.__verl_ext_patched__
    _verl_compat.patch_engine_hooks()  # idempotent
    assert FSDPEngine._build_module.__wrapped__.__name__ == "_build_module"
    assert not getattr(FSDPEngine._build_module.__wrapped__, "__verl_ext_patched__", False)


def test_callbacks_run_at_their_seam_in_order():
    calls = []
    first, second = (lambda *a: calls.append(("first", a))), (lambda *a: calls.append(("second", a)))
    try:
        _verl_compat.add_callback("before_forward", first)
        _verl_compat.add_callback("before_forward", second)
        _verl_compat.add_callback("before_forward", first)  # again: no-op
        _verl_compat.run_callbacks("before_forward", "m", "b")
        assert [name for name, _ in calls if name in ("first", "second")] == ["first", "second"]
    finally:
        _verl_compat._CALLBACKS["before_forward"] = [f for f in _verl_compat._CALLBACKS["before_forward"]
                                                      if f not in (first, second)]
    with pytest.raises(ValueError, match="unknown seam 'after_everything'"):
        _verl_compat.add_callback("after_everything", first)


def test_models_without_the_switch_are_untouched(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.verl_actor import before_forward, prepare_module

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert prepare_module(model) is None
    assert not any("elastic_router" in n for n, _ in model.named_parameters())
    before_forward(model, {})  # no routers: no prompt lengths needed
