import os
import subprocess
import sys

import pytest
import torch

from verl_ext.platform.cpu import PlatformCPU


def _platform_in_subprocess(env_overrides: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(env_overrides)
    code = "import verl; from verl.utils.device import get_device_name; print(get_device_name())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto-detection picks the accelerator when there is one")
def test_auto_detected_without_an_accelerator():
    assert _platform_in_subprocess({}) == "cpu"


def test_selected_by_env():
    assert _platform_in_subprocess({"VERL_PLATFORM": "cpu"}) == "cpu"


def test_device_helpers():
    from verl.utils import device

    assert device.get_device_name() == "cpu"
    assert device.get_nccl_backend() == "gloo"
    assert device.get_device_id() == "cpu"
    assert torch.zeros(2).to(device.get_device_id()).device.type == "cpu"


def test_device_module_answers_what_verl_calls():
    module = PlatformCPU().device_module
    # Every get_torch_device().X verl 0.9.1 calls on its CPU-reachable paths.
    for name in (
        "empty_cache", "synchronize", "is_available", "current_stream", "set_device", "mem_get_info", "stream",
        "Stream", "set_rng_state", "get_rng_state", "set_per_process_memory_fraction", "ipc_collect",
        "device_count", "memory_reserved", "memory_allocated", "max_memory_reserved", "max_memory_allocated",
        "get_device_name", "Event", "manual_seed", "manual_seed_all",
    ):
        assert hasattr(module, name), name
    free, total = module.mem_get_info()
    assert 0 < free <= total
    current = module.memory_allocated()
    assert module.max_memory_allocated() >= current > 0
    state = module.get_rng_state()
    a = torch.rand(3)
    module.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_ray_slots_are_logical_gpus():
    platform = PlatformCPU()
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(0.5) == {"num_gpus": 0.5}
    assert platform.is_ipc_supported() is False and platform.cudart() is None
