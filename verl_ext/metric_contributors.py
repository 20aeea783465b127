"""Metric contributors of the ``verl_ext_sync`` trainer mode (``verl_ext.trainer_mode``), registered by the methods
from ``verl_ext.plugin``; kept apart from the trainer so that registering imports nothing of verl.

- ``step`` contributors: ``fn(extra_fields, question_keys) -> dict``, called once per training step (before verl's
  advantage computation) with the rows' ``extra_fields`` read from TransferQueue once for all of them.
- ``validation`` contributors: ``fn(data_sources, sample_uids, reward_extra_infos) -> dict``, added to verl's
  validation metrics.
"""

from __future__ import annotations

import importlib
from typing import Callable

_CONTRIBUTORS: dict[str, dict[str, str | Callable]] = {"step": {}, "validation": {}}


def add_metric_contributor(name: str, target: str | Callable, kind: str = "step") -> None:
    """Register ``target`` (a function, or "module:function" imported on first use) under ``name``."""
    if kind not in _CONTRIBUTORS:
        raise ValueError(f"metric contributor kind {kind!r} must be one of {sorted(_CONTRIBUTORS)}.")
    _CONTRIBUTORS[kind][name] = target


def contributors(kind: str) -> list[Callable]:
    """The ``kind`` contributors, imported on first use."""
    out = []
    for name, target in list(_CONTRIBUTORS[kind].items()):
        if isinstance(target, str):
            module, attr = target.split(":")
            target = _CONTRIBUTORS[kind][name] = getattr(importlib.import_module(module), attr)
        out.append(target)
    return out
