"""verl-ext's registrations into verl: the one module that knows every part (loaded by the ``verl.plugins`` entry
point in every process: driver and Ray workers).

verl 0.9.1 imports this module at the end of ``import verl`` and silently ignores a plugin that raises (it logs at
DEBUG). So importing it does almost nothing: it resolves no platform, imports none of verl's heavy modules and
prints nothing. Each registration waits for the verl module that owns its registry (``_import_hooks``) and runs the
moment verl imports it:

| verl module | what is registered there |
|---|---|
| ``verl.plugin.platform.platform_manager`` | the ``cpu`` platform (chosen only when asked: ``VERL_PLATFORM=cpu`` or ``verl_ext.platform=cpu``) |
| ``verl.utils.device`` | the driver-side config checks and CPU preparation (``auto_set_device`` seam) |
| ``verl.utils.distributed`` | the gloo-only process group on the CPU platform |
| ``verl.workers.rollout.base`` / ``.replica`` | the ``hf`` rollout adapter and replica |
| ``verl.workers.rollout.vllm_rollout.*`` | CPU platform only: a failed or dead vLLM engine ends the run (``platform.vllm_guard``) |
| ``verl.workers.engine.base`` | router training's engine (``elastic_language_model``) |
| ``verl.workers.engine.fsdp.transformer_impl`` | the model-built / pre-forward seams; verl's FSDP engines for the ``cpu`` device |
| ``verl.trainer.ppo.core_algos`` | advantage estimators ``re2``, ``re2_rebalanced`` |
| ``verl.trainer.ppo.v1.trainer_sync`` | the trainer mode ``verl_ext_sync`` and each method's metric contributors |
| ``verl_ext.rollout.model_hooks`` | Elastic Attention's model hook of the ``hf`` rollout |

``registered_names()`` imports those modules and reports what is registered (tests, ``python -m verl_ext.doctor``).
"""

from __future__ import annotations

import logging

from verl_ext import _verl_compat
from verl_ext._import_hooks import when_imported

TRAINER_MODE = "verl_ext_sync"
ADV_ESTIMATORS = ("re2", "re2_rebalanced")


# -- method hooks: thin wrappers, so nothing of a method is imported before it is used -----------------------------

def _elastic_prepare_module(module) -> None:
    from verl_ext.elastic_attention.verl_actor import prepare_module

    prepare_module(module)


def _elastic_before_forward(module, micro_batch) -> None:
    from verl_ext.elastic_attention.verl_actor import before_forward

    before_forward(module, micro_batch)


def _elastic_config_check(config) -> None:
    from verl_ext.elastic_attention.override_keys import check_override_config

    check_override_config(config)


def _re2_config_check(config) -> None:
    from verl_ext.re2.config import check_trainer_config

    check_trainer_config(config)


def _re2_preparation(config) -> None:
    import logging

    from verl_ext.re2.config import match_update_steps

    changes = match_update_steps(config)
    if changes:
        logging.getLogger(__name__).warning("verl_ext: Re², config adjusted: %s", "; ".join(changes))


def _driver_checks(config) -> None:
    from verl_ext.config_checks import check_trainer_config

    check_trainer_config(config)


def _cpu_preparation(config) -> None:
    from verl_ext.platform.cpu_config import prepare_for_cpu

    if prepare_for_cpu(config) is not None:  # the CPU platform: its run cleans up after itself, and a lost node
        from verl_ext.config_checks import get    # ends it with a message instead of a hang
        from verl_ext.platform.node_watch import watch_nodes
        from verl_ext.platform.vllm_guard import cleanup_at_exit

        cleanup_at_exit()
        watch_nodes(get(config, "trainer.default_local_dir"))


def _re2_advantage(*args, **kwargs):
    from verl_ext.re2.advantage import re2_advantage_estimator

    return re2_advantage_estimator(*args, **kwargs)


def _re2_rebalanced_advantage(*args, **kwargs):
    from verl_ext.re2.advantage import re2_rebalanced_advantage_estimator

    return re2_rebalanced_advantage_estimator(*args, **kwargs)


def _load_hf_replica():
    from verl_ext.rollout.hf_replica import HFReplica

    return HFReplica


# -- registrations, each run when its verl module is imported ---------------------------------------------------------

def _on_platform_manager(_module) -> None:
    from verl_ext.platform.cpu import register_cpu_platform

    register_cpu_platform()


def _on_device(_module) -> None:
    from verl_ext.config_checks import register_config_check
    from verl_ext.platform.cpu import request_cpu_platform_from_config

    _verl_compat.patch_config_check()
    register_config_check("re2", _re2_config_check)
    register_config_check("elastic_attention", _elastic_config_check)
    # Before verl's auto_set_device resolves the platform: a config that asks for the CPU platform gets it.
    _verl_compat.add_callback("driver_config_pre", request_cpu_platform_from_config)
    _verl_compat.add_callback("driver_config", _driver_checks)
    _verl_compat.add_callback("driver_config", _re2_preparation)
    _verl_compat.add_callback("driver_config", _cpu_preparation)


def _on_rollout_base(_module) -> None:
    _verl_compat.register_rollout_adapter()


def _on_rollout_replica(module) -> None:
    if _verl_compat.HF_ROLLOUT_NAME not in module.RolloutReplicaRegistry._registry:
        module.RolloutReplicaRegistry.register(_verl_compat.HF_ROLLOUT_NAME, _load_hf_replica)


def _on_cpu_platform(guard):
    """``guard(module)`` when this process's verl platform is the CPU one; verl's code is untouched elsewhere."""
    def registration(module) -> None:
        from verl_ext.platform.cpu import cpu_platform_selected

        if cpu_platform_selected():
            guard(module)

    return registration


def _guard_weight_receiver(module) -> None:
    from verl_ext.platform.vllm_guard import guard_receiver

    guard_receiver(module.BucketedWeightReceiver)


def _guard_weight_sender(module) -> None:
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender

    from verl_ext.platform.vllm_guard import guard_sender

    guard_sender(BucketedWeightSender, module.ServerAdapter)


def _on_engine_base(module) -> None:
    from verl_ext.elastic_attention.engine_names import ENGINE_MODEL_TYPE

    class LazyElasticRouterEngine(module.BaseEngine):
        """Stands in the registry for ``ElasticRouterEngine``, imported on first use (it pulls in transformers'
        attention and the kernels). Constructing it returns the real engine, initialised by its own constructor."""

        def __new__(cls, *args, **kwargs):
            from verl_ext.elastic_attention.router_engine import ElasticRouterEngine

            return ElasticRouterEngine(*args, **kwargs)

    registered = module.EngineRegistry._engines.get(ENGINE_MODEL_TYPE, {})
    for backend in ("fsdp", "fsdp2"):
        for device in ("cuda", "cpu"):
            if device not in registered.get(backend, {}):
                module.EngineRegistry.register(model_type=ENGINE_MODEL_TYPE, backend=backend,
                                               device=device)(LazyElasticRouterEngine)


def _on_fsdp_engine(_module) -> None:
    _verl_compat.patch_engine_hooks()
    _verl_compat.add_callback("module_built", _elastic_prepare_module)
    _verl_compat.add_callback("before_forward", _elastic_before_forward)
    _verl_compat.register_cpu_training_engines()  # keyed by device "cpu": nothing else ever looks them up
    _verl_compat.unpin_cpu_offload()  # CPU platform only: the KL reference model's offload pins no memory


def _on_core_algos(module) -> None:
    for name, fn in zip(ADV_ESTIMATORS, (_re2_advantage, _re2_rebalanced_advantage)):
        if name not in module.ADV_ESTIMATOR_REGISTRY:
            module.register_adv_est(name)(fn)


def _on_trainer_sync(_module) -> None:
    import verl_ext.trainer_mode  # noqa: F401  registers verl_ext_sync
    from verl_ext.metric_contributors import add_metric_contributor

    add_metric_contributor("re2", "verl_ext.re2.trainer_metrics:step_metric_contributor")
    add_metric_contributor("elastic_attention", "verl_ext.elastic_attention.trainer_metrics:rollout_metric_contributor")
    add_metric_contributor("re2_validation", "verl_ext.re2.trainer_metrics:validation_metric_contributor", kind="validation")


def _on_model_hooks(module) -> None:
    from verl_ext.elastic_attention.rollout_hook import HOOK

    module.register_model_hook(HOOK)


REGISTRATIONS = {
    "verl.plugin.platform.platform_manager": _on_platform_manager,
    "verl.utils.device": _on_device,
    "verl.utils.distributed": lambda _module: _verl_compat.patch_process_group_backend(),
    "verl.workers.rollout.base": _on_rollout_base,
    "verl.workers.rollout.replica": _on_rollout_replica,
    "verl.workers.engine.base": _on_engine_base,
    "verl.workers.engine.fsdp.transformer_impl": _on_fsdp_engine,
    "verl.trainer.ppo.core_algos": _on_core_algos,
    "verl.trainer.ppo.v1.trainer_sync": _on_trainer_sync,
    "verl_ext.rollout.model_hooks": _on_model_hooks,
}


# Patches of verl's vLLM rollout, not registries (those modules import vLLM): only when verl imports them.
GUARDS = {
    "verl.workers.rollout.vllm_rollout.bucketed_weight_transfer": _on_cpu_platform(_guard_weight_receiver),
    "verl.workers.rollout.vllm_rollout.vllm_rollout": _on_cpu_platform(_guard_weight_sender),
}


def register_all() -> None:
    for module, registration in (*REGISTRATIONS.items(), *GUARDS.items()):
        when_imported(module, registration)


def registered_names() -> dict[str, list[str]]:
    """What verl-ext has registered in this process, by verl registry (imports the registries' modules)."""
    import importlib

    for module in REGISTRATIONS:
        importlib.import_module(module)
    from verl.plugin.platform import PlatformRegistry
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from verl_ext.platform.cpu import PLATFORM_NAME
    from verl_ext.rollout.model_hooks import model_hooks

    return {
        "platforms": [n for n in PlatformRegistry.registered_names() if n == PLATFORM_NAME],
        "rollout_replicas": [n for n in RolloutReplicaRegistry._registry if n == _verl_compat.HF_ROLLOUT_NAME],
        "rollout_adapters": [f"{n}/{m}" for (n, m) in _ROLLOUT_REGISTRY if n == _verl_compat.HF_ROLLOUT_NAME],
        "adv_estimators": [n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n in ADV_ESTIMATORS],
        "trainers": sorted(n for n in TRAINER_REGISTRY if n == TRAINER_MODE),
        "engines": [n for n in EngineRegistry._engines if n.startswith("elastic_")],
        "rollout_model_hooks": [h.name for h in model_hooks()],
    }


try:
    register_all()
except Exception:
    # verl logs plugin import failures at DEBUG only; make this one visible before it re-raises.
    logging.getLogger(__name__).exception("verl_ext plugin failed to register")
    raise
