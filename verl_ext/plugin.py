"""verl-ext's registrations into verl, loaded by verl in every process through the ``verl.plugins`` entry point.

verl 0.9.1 imports this module at the end of ``import verl`` in the driver and in every Ray worker, and silently
ignores a plugin that raises (it logs at DEBUG). So this module does only cheap, import-safe registrations, and
``registered_names()`` lets tests and users check that they happened.
"""

from __future__ import annotations

import logging

from verl.workers.rollout.replica import RolloutReplicaRegistry

from verl_ext import _verl_compat
from verl_ext.platform.cpu import PLATFORM_NAME, cpu_platform_selected, register_cpu_platform


def _load_hf_replica():
    from verl_ext.rollout.hf_replica import HFReplica

    return HFReplica


def register_re2() -> None:
    from verl.trainer.ppo import core_algos

    from verl_ext.re2.advantage import re2_advantage_estimator, re2_rebalanced_advantage_estimator

    for name, fn in (("re2", re2_advantage_estimator), ("re2_rebalanced", re2_rebalanced_advantage_estimator)):
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is not fn:
            core_algos.register_adv_est(name)(fn)
    import verl_ext.re2.reward_manager  # noqa: F401  registers reward.reward_manager.name=re2
    import verl_ext.re2.trainer  # noqa: F401  registers trainer.v1.trainer_mode=re2_sync


def _lazy_elastic_router_engine():
    from verl.workers.engine.base import BaseEngine

    class LazyElasticRouterEngine(BaseEngine):
        """Stands in the registry for ``ElasticRouterEngine``, imported on first use: the engine pulls in
        transformers' attention and the kernels, too heavy for every process that loads the plugin. Constructing
        it returns the real engine (fully initialised by its own constructor)."""

        def __new__(cls, *args, **kwargs):
            from verl_ext.elastic_attention.verl_training import ElasticRouterEngine

            return ElasticRouterEngine(*args, **kwargs)

    return LazyElasticRouterEngine


def register_elastic_attention() -> None:
    """Router training's engine, under its own model type (verl's language_model engines stay as they are)."""
    from verl.workers.engine.base import EngineRegistry

    from verl_ext.elastic_attention.engine_names import ENGINE_MODEL_TYPE

    import verl_ext.elastic_attention.trainer  # noqa: F401  registers trainer modes elastic_sync, re2_elastic_sync

    registered = EngineRegistry._engines.get(ENGINE_MODEL_TYPE, {})
    lazy = _lazy_elastic_router_engine()
    for backend in ("fsdp", "fsdp2"):
        for device in ("cuda", "cpu"):
            if device not in registered.get(backend, {}):
                EngineRegistry.register(model_type=ENGINE_MODEL_TYPE, backend=backend, device=device)(lazy)


def _elastic_prepare_module(module) -> None:
    from verl_ext.elastic_attention.verl_actor import prepare_module

    prepare_module(module)


def _elastic_before_forward(module, micro_batch) -> None:
    from verl_ext.elastic_attention.verl_actor import before_forward

    before_forward(module, micro_batch)


def _elastic_config_check(config) -> None:
    from verl_ext.elastic_attention.verl_actor import check_override_config

    check_override_config(config)


def _re2_config_check(config) -> None:
    from verl_ext.re2.config import check_trainer_config

    check_trainer_config(config)


def _driver_checks(config) -> None:
    from verl_ext.config_checks import check_trainer_config

    check_trainer_config(config)


def _cpu_preparation(config) -> None:
    from verl_ext.platform.cpu_config import prepare_for_cpu

    prepare_for_cpu(config)


def register_hooks() -> None:
    """What runs at verl's seams (``_verl_compat``) and in the driver-side checks, method by method."""
    from verl_ext.config_checks import register_config_check

    register_config_check("re2", _re2_config_check)
    register_config_check("elastic_attention", _elastic_config_check)
    _verl_compat.add_callback("driver_config", _driver_checks)
    _verl_compat.add_callback("driver_config", _cpu_preparation)
    _verl_compat.add_callback("module_built", _elastic_prepare_module)
    _verl_compat.add_callback("before_forward", _elastic_before_forward)


def register_all() -> None:
    register_cpu_platform()
    # Patches first: they must be in place before anything imports the verl modules that bind patched names.
    _verl_compat.install()
    register_hooks()
    register_re2()
    register_elastic_attention()
    RolloutReplicaRegistry.register(_verl_compat.HF_ROLLOUT_NAME, _load_hf_replica)
    if cpu_platform_selected():
        _verl_compat.register_cpu_training_engines()


def registered_names() -> dict[str, list[str]]:
    """What verl-ext has registered in this process, by verl registry."""
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.reward_manager.registry import REWARD_MANAGER_REGISTRY
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    names = {
        "platforms": [n for n in PlatformRegistry.registered_names() if n == PLATFORM_NAME],
        "current_platform": [get_platform().device_name],
        "rollout_replicas": [n for n in RolloutReplicaRegistry._registry if n == _verl_compat.HF_ROLLOUT_NAME],
        "rollout_adapters": [f"{n}/{m}" for (n, m) in _ROLLOUT_REGISTRY if n == _verl_compat.HF_ROLLOUT_NAME],
        "adv_estimators": [n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n.startswith("re2")],
        "trainers": sorted(n for n in TRAINER_REGISTRY if n in ("re2_sync", "elastic_sync", "re2_elastic_sync")),
        "reward_managers": [n for n in REWARD_MANAGER_REGISTRY if n == "re2"],
        "engines": [n for n in EngineRegistry._engines if n.startswith("elastic_")],
    }
    return names


try:
    register_all()
except Exception:
    # verl logs plugin import failures at DEBUG only; make this one visible before it re-raises.
    logging.getLogger(__name__).exception("verl_ext plugin failed to register")
    raise
