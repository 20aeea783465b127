"""The ``torch.<device>`` namespace verl expects, for the CPU.

verl calls ``get_torch_device().X`` for CUDA-style memory, RNG and stream helpers (``memory_reserved``,
``mem_get_info``, ``get_rng_state``, ``ipc_collect`` ...). ``torch.cpu`` has only a few of them, so this module
forwards what ``torch.cpu`` has and answers the rest with their CPU meaning: host memory figures for the memory
queries, the global CPU generator for RNG state, no-ops for caches and devices that do not exist.
"""

from __future__ import annotations

import resource
from types import ModuleType

import psutil
import torch


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux and is refreshed lazily; never report a peak below the current size.
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, _rss_bytes())


def _mem_get_info(device=None) -> tuple[int, int]:
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def _noop(*args, **kwargs) -> None:
    return None


def _build() -> ModuleType:
    module = ModuleType("verl_ext.platform.cpu_device_module.torch_cpu")
    for name in ("Event", "Stream", "StreamContext", "current_stream", "stream", "synchronize", "is_available"):
        setattr(module, name, getattr(torch.cpu, name))
    module.device_count = lambda: 1
    module.current_device = lambda: "cpu"
    module.set_device = _noop
    module.get_device_name = lambda device=None: "cpu"
    module.is_initialized = lambda: True
    module.empty_cache = _noop
    module.ipc_collect = _noop
    module.reset_peak_memory_stats = _noop
    module.set_per_process_memory_fraction = _noop
    module.memory_allocated = lambda device=None: _rss_bytes()
    module.memory_reserved = lambda device=None: _rss_bytes()
    module.max_memory_allocated = lambda device=None: _peak_rss_bytes()
    module.max_memory_reserved = lambda device=None: _peak_rss_bytes()
    module.mem_get_info = _mem_get_info
    module.get_rng_state = lambda device=None: torch.get_rng_state()
    module.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.amp = torch.cpu.amp
    return module


cpu_device_module = _build()
