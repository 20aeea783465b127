"""verl loads verl_ext through the `verl.plugins` entry point in every process: driver and Ray workers."""

import json
import os
import subprocess
import sys

EXPECTED = {
    "platforms": ["cpu"],
    "rollout_replicas": ["hf"],
    "rollout_adapters": ["hf/async"],
    "adv_estimators": ["re2", "re2_rebalanced"],
    "trainers": ["verl_ext_sync"],
    "engines": ["elastic_language_model"],
    "rollout_model_hooks": ["elastic_attention"],
}


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert eps.get("verl_ext") == "verl_ext.plugin"


def test_registrations_in_a_fresh_driver_process():
    # Only `import verl`: the plugin must arrive through verl's entry-point loading, not our own import.
    code = (
        "import json, sys, verl; assert 'verl_ext.plugin' in sys.modules, 'plugin not loaded by verl';"
        "from verl_ext.plugin import registered_names; print(json.dumps(registered_names()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == EXPECTED


def test_registrations_inside_a_ray_worker(ray_cluster):
    import ray

    @ray.remote
    def probe():
        import sys

        import verl  # noqa: F401
        from verl.utils.device import get_device_name, get_nccl_backend

        from verl_ext.plugin import registered_names

        return "verl_ext.plugin" in sys.modules, registered_names(), get_device_name(), get_nccl_backend()

    loaded, names, device, backend = ray.get(probe.remote())
    assert loaded and names == EXPECTED
    assert (device, backend) == ("cpu", "gloo")
