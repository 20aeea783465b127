"""Model hooks of the ``hf`` rollout: what a method may do to the model the rollout server loads, without the
server knowing the method (registered from ``verl_ext.plugin``).

A hook has up to three parts:

- ``prepare(model, hf_config, options) -> state or None``: transform the model after it is loaded. ``options`` is
  ``actor_rollout_ref.rollout.engine_kwargs.hf.<engine_key>`` (None when absent); ``hf_config`` carries the actor's
  ``override_config``. ``None`` means the hook is inactive for this model.
- ``extra_fields(model, state, rows) -> list[dict]``: per generated batch, one dict per row, merged into each
  response's ``extra_fields``.
- ``skip_in_weight_sync(name) -> bool``: parameters the rollout owns that the trainer's weight sync need not carry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class ModelHook:
    name: str
    prepare: Callable[[Any, Any, Optional[dict]], Any]
    engine_key: Optional[str] = None
    extra_fields: Optional[Callable[[Any, Any, int], list[dict]]] = None
    skip_in_weight_sync: Optional[Callable[[str], bool]] = None


_HOOKS: dict[str, ModelHook] = {}


def register_model_hook(hook: ModelHook) -> None:
    """Register (or replace, by name) a hook."""
    _HOOKS[hook.name] = hook


def model_hooks() -> list[ModelHook]:
    return list(_HOOKS.values())


def engine_keys() -> list[str]:
    return sorted(h.engine_key for h in _HOOKS.values() if h.engine_key)
