"""Check a verl trainer config against the machine it will run on, and fill in what CPU runs need.

Runs in the driver before ``ray.init`` (called from verl's ``auto_set_device`` hook, see ``_verl_compat``), so a
config that cannot work fails in seconds with the field and the fix, instead of hanging on a Ray placement group
or failing inside a worker minutes later.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re

from omegaconf import DictConfig, open_dict

logger = logging.getLogger(__name__)

GPU_ONLY_ROLLOUTS = ("vllm", "sglang", "trtllm")
GPU_ONLY_STRATEGIES = ("megatron",)


class ConfigError(ValueError):
    """A trainer config that cannot run here; the message names the field and the fix."""


def _get(config: DictConfig, dotted: str, default=None):
    node = config
    for key in dotted.split("."):
        if node is None or key not in node:
            return default
        node = node[key]
    return node


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_local(path: str) -> bool:
    # "org/name" is a hub id that transformers resolves; anything else path-like must exist on this machine.
    return not _HUB_ID.match(path)


def check_model_path(config: DictConfig, field: str = "actor_rollout_ref.model.path") -> None:
    path = _get(config, field)
    if path is None:
        raise ConfigError(f"{field} is not set. Point it at a Hugging Face checkpoint folder.")
    path = str(path)
    if (_looks_local(path) or os.environ.get("HF_HUB_OFFLINE") == "1") and not os.path.isdir(os.path.expanduser(path)):
        raise ConfigError(
            f"{field}={path!r} is not a folder. Point it at a checkpoint folder (config.json, weights, tokenizer); "
            "for a tiny local model run: python -m verl_ext.testing.tiny_model OUT_DIR"
        )


def check_rollout_name(config: DictConfig) -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    name = _get(config, "actor_rollout_ref.rollout.name")
    known = sorted(RolloutReplicaRegistry._registry)
    if name not in known:
        raise ConfigError(
            f"actor_rollout_ref.rollout.name={name!r} is not a registered rollout. Known: {known}. "
            "On a machine without a GPU use actor_rollout_ref.rollout.name=hf."
        )


def _as_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    return [str(f) for f in files]


def check_dataset_files(config: DictConfig) -> None:
    """Every local parquet in data.train_files / data.val_files has a non-empty prompt in every row."""
    import pyarrow.parquet as pq

    prompt_key = _get(config, "data.prompt_key", "prompt")
    for field in ("data.train_files", "data.val_files"):
        for path in _as_list(_get(config, field)):
            if not path.endswith(".parquet") or not os.path.isfile(path):
                continue  # remote or non-parquet sources are verl's to read
            columns = pq.read_schema(path).names
            if prompt_key not in columns:
                raise ConfigError(
                    f"{field}: {path} has no {prompt_key!r} column (data.prompt_key); its columns are {columns}. "
                    "Each row needs a chat prompt: a list of {'role', 'content'} messages."
                )
            prompts = pq.read_table(path, columns=[prompt_key]).column(prompt_key).to_pylist()
            for index, prompt in enumerate(prompts):
                if prompt is None or len(prompt) == 0:
                    raise ConfigError(
                        f"{field}: row {index} of {path} has an empty {prompt_key!r}. Every row needs a chat prompt "
                        "(a list of {'role', 'content'} messages); fix or drop the row."
                    )


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


def prepare_cpu_config(config: DictConfig) -> list[str]:
    """Validate ``config`` for the CPU platform and fill CPU defaults in place; returns what was changed.

    Raises ConfigError for anything that needs an accelerator. Fills, when unset: ``trainer.device=cpu``, the Ray
    logical rank slots (``ray_kwargs.ray_init.num_gpus``) and logical CPUs, and ``sdpa`` attention when flash-attn
    is not installed.
    """
    changes: list[str] = []
    rollout = _get(config, "actor_rollout_ref.rollout.name")
    if rollout in GPU_ONLY_ROLLOUTS:
        raise ConfigError(
            f"actor_rollout_ref.rollout.name={rollout!r} needs a GPU and this machine has none (verl platform 'cpu'). "
            "Set actor_rollout_ref.rollout.name=hf to generate with transformers on the CPU."
        )
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
        ray_init = config.setdefault("ray_kwargs", {}).setdefault("ray_init", {})
        declared = ray_init.get("num_gpus")
        if declared is None:
            ray_init["num_gpus"] = slots
            changes.append(f"ray_kwargs.ray_init.num_gpus={slots} (logical rank slots, no GPU is used)")
        elif declared < slots:
            raise ConfigError(
                f"ray_kwargs.ray_init.num_gpus={declared} declares fewer rank slots than trainer.n_gpus_per_node * "
                f"trainer.nnodes = {slots} asks for; Ray would wait forever. Drop the override or set it to {slots}."
            )
        cpus = _required_logical_cpus(config, slots)
        if ray_init.get("num_cpus") is None or ray_init["num_cpus"] < cpus:
            ray_init["num_cpus"] = cpus
            changes.append(f"ray_kwargs.ray_init.num_cpus={cpus} (logical, for Ray scheduling only)")
    return changes


def check_trainer_config(config: DictConfig, on_cpu: bool) -> list[str]:
    """All driver-side checks; on the CPU platform also the CPU preparation."""
    check_rollout_name(config)
    check_model_path(config)
    check_dataset_files(config)
    if on_cpu:
        changes = prepare_cpu_config(config)
        if changes:
            logger.warning("verl_ext: CPU platform, config adjusted: %s", "; ".join(changes))
        return changes
    return []
