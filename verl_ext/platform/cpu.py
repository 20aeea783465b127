"""``PlatformCPU``: verl's device abstraction answered for a machine without an accelerator.

verl 0.9.1 resolves its platform once per process (``verl.plugin.platform.get_platform``): ``VERL_PLATFORM`` wins,
otherwise the first registered platform whose ``is_platform_available`` is true, otherwise ``nvidia``. This class
is registered under ``cpu`` and never claims auto-detection: a process without a GPU is not necessarily a CPU job
(a CPU-only Ray head node driving GPU workers must still behave as a CUDA job, which verl's ``nvidia`` fallback
gives). The CPU platform is chosen only when asked: ``VERL_PLATFORM=cpu``, or the trainer config key
``verl_ext.platform: cpu`` (set by the CPU recipes and ``python -m verl_ext.cpu_smoke``), which the driver turns
into ``VERL_PLATFORM=cpu`` for itself and every Ray worker before verl resolves the platform.

Ray placement: verl builds placement-group bundles as ``{"CPU": k, <ray_resource_name>: 1}`` and checks the
cluster for ``GPU``/``NPU`` resources only, so a CPU rank is a *logical* ``GPU`` slot. ``verl_ext`` declares those
slots at ``ray.init`` (see ``verl_ext._verl_compat``); no CUDA is ever touched through them.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from verl_ext.platform.cpu_device_module import cpu_device_module

PLATFORM_NAME = "cpu"


class PlatformCPU(PlatformBase):
    """CPU back end: gloo collectives, host memory, logical Ray slots."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return cpu_device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never chosen by auto-detection (see the module doc): only by VERL_PLATFORM=cpu or verl_ext.platform=cpu.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # verl passes this straight to ``tensor.to(...)`` / ``device=``; an int would mean an accelerator index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets this for logical GPU slots; on a CPU platform nothing reads it.
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_cpu_platform() -> None:
    """Register ``PlatformCPU`` as ``cpu`` (idempotent)."""
    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def cpu_platform_selected() -> bool:
    """True when this process's verl platform is the CPU one (resolves verl's platform if it is not yet)."""
    from verl.plugin.platform import get_platform

    return get_platform().device_name == "cpu"


CONFIG_KEY = "verl_ext.platform"


def request_cpu_platform_from_config(config) -> None:
    """Driver, before verl resolves the platform: ``verl_ext.platform: cpu`` in the trainer config selects the CPU
    platform here (``VERL_PLATFORM=cpu``) and in every Ray worker (the runtime environment's env_vars)."""
    from omegaconf import open_dict

    from verl_ext.config_checks import ConfigError, get

    wanted = get(config, CONFIG_KEY)
    if wanted is None:
        return
    if str(wanted).lower() != PLATFORM_NAME:
        raise ConfigError(f"{CONFIG_KEY}={wanted!r}: the only platform verl-ext selects is 'cpu'; drop the key to let "
                          "verl choose the accelerator.")
    env = os.environ.get("VERL_PLATFORM", "").strip().lower()
    if env and env != PLATFORM_NAME:
        raise ConfigError(f"{CONFIG_KEY}=cpu but VERL_PLATFORM={env!r}; unset VERL_PLATFORM or drop the key.")
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    import verl.plugin.platform.platform_manager as manager

    if manager._current_platform is not None and manager._current_platform.device_name != PLATFORM_NAME:
        manager.set_platform(PlatformCPU())  # resolved before the config was read (an import that asked early)
    if "ray_kwargs" in config:  # a Ray trainer: workers on other nodes learn it from the runtime environment
        with open_dict(config):
            node = config.ray_kwargs
            for key in ("ray_init", "runtime_env", "env_vars"):
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
            node["VERL_PLATFORM"] = PLATFORM_NAME
