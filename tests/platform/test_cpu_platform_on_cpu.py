import os
import subprocess
import sys

import pytest
import torch

from verl_ext.platform.cpu import PlatformCPU


def _platform_in_subprocess(env_overrides: dict, code: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(env_overrides)
    code = code or "import verl; from verl.utils.device import get_device_name; print(get_device_name())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()[-1]


def test_never_chosen_by_auto_detection():
    """A process without a GPU is not a CPU job by itself (a CPU-only Ray head node drives GPU workers): verl's own
    choice stands, exactly as without verl-ext."""
    code = ("import verl, verl.plugin.platform.platform_manager as m; import verl_ext.plugin;"
            "assert m._current_platform is None, 'importing verl resolved the platform';"
            "print(m._detect_platform_name())")
    plain = _platform_in_subprocess({"VERL_USE_EXTERNAL_PLUGINS": "none"}, code.replace("import verl_ext.plugin;", ""))
    assert _platform_in_subprocess({}, code) == plain
    assert PlatformCPU().is_platform_available() is False


def test_selected_by_env():
    assert _platform_in_subprocess({"VERL_PLATFORM": "cpu"}) == "cpu"


def test_env_set_after_import_is_still_honoured():
    """Registration resolves nothing, so VERL_PLATFORM set after ``import verl`` (before first use) decides."""
    code = ("import os, verl; os.environ['VERL_PLATFORM'] = 'cpu';"
            "from verl.utils.device import get_device_name; print(get_device_name())")
    assert _platform_in_subprocess({}, code) == "cpu"


def test_selected_by_the_config_key(monkeypatch):
    """verl_ext.platform: cpu (the CPU configs) selects it in the driver and hands it to the Ray workers."""
    from omegaconf import OmegaConf

    from verl_ext.config_checks import ConfigError
    from verl_ext.platform.cpu import request_cpu_platform_from_config

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    config = OmegaConf.create({"verl_ext": {"platform": "cpu"}, "ray_kwargs": {"ray_init": {}}})
    request_cpu_platform_from_config(config)
    assert os.environ["VERL_PLATFORM"] == "cpu"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    with pytest.raises(ConfigError, match="verl_ext.platform=cpu but VERL_PLATFORM='nvidia'"):
        request_cpu_platform_from_config(config)
    with pytest.raises(ConfigError, match="the only platform verl-ext selects is 'cpu'"):
        request_cpu_platform_from_config(OmegaConf.create({"verl_ext": {"platform": "npu"}}))
    request_cpu_platform_from_config(OmegaConf.create({"trainer": {}}))  # no key: nothing happens


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
