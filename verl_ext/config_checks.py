"""Driver-side checks of a verl trainer config, run before Ray starts, so a config that cannot work fails in
seconds with the field, the valid choices (or the nearest known name) and the fix, instead of after Ray start,
generation and validation, or not at all.

Generic checks (this module): the rollout and the registry names verl resolves late (advantage estimator, reward
manager, v1 trainer mode), the model folder, and every row of local parquet data (a chat prompt with content, a
``reward_model.ground_truth`` for rule-based rewards). Checks that belong to one method register here
(``register_config_check``) from ``verl_ext.plugin``; this module knows no paper.

Called from verl's ``auto_set_device`` hook (``_verl_compat``), with the CPU platform's preparation after it.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Callable, Iterable

from omegaconf import DictConfig

ConfigCheck = Callable[[DictConfig], None]
_CHECKS: dict[str, ConfigCheck] = {}


class ConfigError(ValueError):
    """A trainer config that cannot run; the message names the field and the fix."""


def register_config_check(name: str, check: ConfigCheck) -> None:
    """Run ``check(config)`` with the driver-side checks (idempotent per name); it raises ConfigError."""
    _CHECKS[name] = check


def get(config: DictConfig, dotted: str, default=None):
    """``config.a.b.c`` or ``default`` when any key on the way is missing."""
    node = config
    for key in dotted.split("."):
        if node is None or not hasattr(node, "keys") or key not in node:
            return default
        node = node[key]
    return node


def nearest(name: str, known: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest known name, or ""."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_name(field: str, value, known: Iterable[str], what: str, hint: str = "") -> None:
    known = sorted(str(k) for k in known)
    if value not in known:
        raise ConfigError(f"{field}={value!r} is not a registered {what}{nearest(value, known)}. Known: {known}."
                          + (f" {hint}" if hint else ""))


def check_registry_names(config: DictConfig) -> None:
    """Names verl looks up in its registries only after Ray start, generation or validation."""
    from verl.trainer.ppo import core_algos
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    check_name("actor_rollout_ref.rollout.name", get(config, "actor_rollout_ref.rollout.name"),
               RolloutReplicaRegistry._registry, "rollout",
               "On a machine without a GPU use actor_rollout_ref.rollout.name=hf.")
    check_name("algorithm.adv_estimator", get(config, "algorithm.adv_estimator"), core_algos.ADV_ESTIMATOR_REGISTRY,
               "advantage estimator")
    if get(config, "reward.reward_manager.source", "register") == "register" and get(config, "reward.reward_manager.name"):
        if get(config, "trainer.use_v1", True):  # v1's reward loop has its own registry
            from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
        else:
            from verl.workers.reward_manager.registry import REWARD_MANAGER_REGISTRY as REWARD_MANAGER
        check_name("reward.reward_manager.name", get(config, "reward.reward_manager.name"), REWARD_MANAGER,
                   "reward manager")
    if get(config, "trainer.use_v1", False) and get(config, "trainer.v1.trainer_mode"):
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

        check_name("trainer.v1.trainer_mode", get(config, "trainer.v1.trainer_mode"), TRAINER_REGISTRY,
                   "v1 trainer mode")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_path(config: DictConfig, field: str = "actor_rollout_ref.model.path") -> None:
    path = get(config, field)
    if path is None:
        raise ConfigError(f"{field} is not set. Point it at a Hugging Face checkpoint folder.")
    path = str(path)
    # "org/name" is a hub id that transformers resolves; anything else path-like must exist on this machine.
    if (not _HUB_ID.match(path) or os.environ.get("HF_HUB_OFFLINE") == "1") and not os.path.isdir(
            os.path.expanduser(path)):
        raise ConfigError(
            f"{field}={path!r} is not a folder. Point it at a checkpoint folder (config.json, weights, tokenizer); "
            "for a tiny local model run: python -m verl_ext.testing.tiny_model OUT_DIR"
        )


def _as_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    return [str(f) for f in files]


def _prompt_problem(prompt) -> str | None:
    """Why a chat prompt cannot be used, or None."""
    if prompt is None or len(prompt) == 0:
        return "is empty"
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"message {i} is not a {{'role', 'content'}} dict"
        content = message["content"]
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({message['role']}) has empty content"
    return None


def check_dataset_files(config: DictConfig) -> None:
    """Every local parquet row of data.train_files / data.val_files has a usable chat prompt and, unless a reward
    model scores the responses, a reward_model.ground_truth."""
    import pyarrow.parquet as pq

    prompt_key = get(config, "data.prompt_key", "prompt")
    needs_truth = not get(config, "reward.reward_model.enable", False)
    for field in ("data.train_files", "data.val_files"):
        for path in _as_list(get(config, field)):
            if not path.endswith(".parquet") or not os.path.isfile(path):
                continue  # remote or non-parquet sources are verl's to read
            columns = pq.read_schema(path).names
            if prompt_key not in columns:
                raise ConfigError(
                    f"{field}: {path} has no {prompt_key!r} column (data.prompt_key); its columns are {columns}. "
                    "Each row needs a chat prompt: a list of {'role', 'content'} messages."
                )
            if needs_truth and "reward_model" not in columns:
                raise ConfigError(
                    f"{field}: {path} has no 'reward_model' column; its columns are {columns}. Rule-based rewards "
                    "read each row's reward_model.ground_truth: add {'style': 'rule', 'ground_truth': ...} per row "
                    "(or enable a reward model: reward.reward_model.enable=true)."
                )
            table = pq.read_table(path, columns=[prompt_key] + (["reward_model"] if needs_truth else []))
            for index, prompt in enumerate(table.column(prompt_key).to_pylist()):
                problem = _prompt_problem(prompt)
                if problem:
                    raise ConfigError(
                        f"{field}: row {index} (0-based) of {path}: {prompt_key!r} {problem}. Every row needs a chat "
                        "prompt (a list of {'role', 'content'} messages with non-empty content); fix or drop the row."
                    )
            if needs_truth:
                for index, reward in enumerate(table.column("reward_model").to_pylist()):
                    truth = reward.get("ground_truth") if isinstance(reward, dict) else None
                    if truth is None or str(truth).strip() == "":
                        raise ConfigError(
                            f"{field}: row {index} (0-based) of {path} has no reward_model.ground_truth "
                            f"(reward_model={reward!r}). Rule-based rewards grade against it: add the answer, or "
                            "drop the row."
                        )


def freeze_run_name(config: DictConfig) -> None:
    """Resolve ``trainer.experiment_name`` once, in the driver: a name built with hydra's ``${now:...}`` (the CPU
    configs' default, so reruns never share a folder) cannot be resolved in Ray workers, and every process must
    see the same name."""
    from omegaconf import open_dict

    if "trainer" in config and "experiment_name" in config.trainer:
        with open_dict(config):
            config.trainer.experiment_name = str(config.trainer.experiment_name)


def check_trainer_config(config: DictConfig) -> None:
    """Every driver-side check: the generic ones above, then those registered by the methods."""
    freeze_run_name(config)
    check_registry_names(config)
    check_model_path(config)
    for check in list(_CHECKS.values()):
        check(config)
    check_dataset_files(config)  # last: it reads the data files
