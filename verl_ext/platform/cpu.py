"""``PlatformCPU``: verl's device abstraction answered for a machine without an accelerator.

verl 0.9.1 resolves its platform once per process (``verl.plugin.platform.get_platform``): ``VERL_PLATFORM`` wins,
otherwise the first registered platform whose ``is_platform_available`` is true, otherwise ``nvidia``. This class
is registered under ``cpu`` after the built-in platforms, and reports itself available only when none of them is,
so a CPU-only process picks it without configuration and a GPU machine is unaffected.

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
        # Chosen by auto-detection only when no registered accelerator platform claims the host.
        for name in PlatformRegistry.registered_names():
            platform_cls = PlatformRegistry.get(name)
            if platform_cls is None or issubclass(platform_cls, PlatformCPU):
                continue
            try:
                if platform_cls().is_platform_available(use_smi_check=use_smi_check):
                    return False
            except Exception:  # noqa: BLE001 - a broken accelerator probe means "not that accelerator"
                continue
        return True

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
    """True when this process's verl platform is the CPU one."""
    from verl.plugin.platform import get_platform

    return get_platform().device_name == "cpu"


def cpu_requested_by_env() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME
