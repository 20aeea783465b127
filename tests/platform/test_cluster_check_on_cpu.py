"""A CPU run pointed at an existing Ray cluster: an address that does not answer, a cluster with too few rank slots
or CPUs, and start-only arguments are refused before any model loads, naming the fields and the numbers."""

import socket

import pytest

from verl_ext.config_checks import ConfigError
from verl_ext.platform.cluster_check import FIELD, check_capacity, check_cluster, check_reachable, cluster_address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_address_comes_from_the_config_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address({}) == (None, "")
    assert cluster_address({"address": "local"}) == (None, "")
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert cluster_address({}) == ("10.1.2.3:6379", "RAY_ADDRESS")
    assert cluster_address({"address": "h:1"}) == ("h:1", FIELD)


def test_an_address_that_does_not_answer_is_named():
    port = _free_port()
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS='127.0.0.1:{port}' does not answer .*ray start --head "
                                          rf"--port={port}"):
        check_reachable(f"127.0.0.1:{port}", "RAY_ADDRESS")
    with pytest.raises(ConfigError, match="is not host:port"):
        check_reachable("nonsense", FIELD)


NODES = [{"id": "a", "resources": {"CPU": 8, "GPU": 1}}, {"id": "b", "resources": {"CPU": 8, "GPU": 1}}]


def test_enough_slots_and_cpus_pass():
    check_capacity(NODES, "h:1", nnodes=2, per_node=1, cpus=16)


@pytest.mark.parametrize("nnodes,per_node,cpus,message", [
    (3, 1, 8, r"trainer.nnodes=3 x trainer.n_gpus_per_node=1 needs 3 node\(s\) with 1 rank slot\(s\) each; the cluster "
              r"at h:1 has 2 alive node\(s\) with \[1, 1\] slot\(s\) \(2 fit\)\. Join nodes \(ray start --address=h:1"),
    (1, 2, 8, r"needs 1 node\(s\) with 2 rank slot\(s\) each.*\(0 fit\)"),
    (2, 1, 40, r"has 16 logical CPUs; .* reserve 40"),
])
def test_too_small_a_cluster_is_refused_with_the_numbers(nnodes, per_node, cpus, message):
    with pytest.raises(ConfigError, match=message):
        check_capacity(NODES, "h:1", nnodes, per_node, cpus)


def test_start_only_arguments_are_refused_when_connecting():
    with pytest.raises(ConfigError, match=r"ray_kwargs.ray_init.num_gpus=2 starts a Ray instance; connecting to the "
                                          r"cluster at h:1 \(ray_kwargs.ray_init.address\) Ray refuses it"):
        check_cluster({"address": "h:1", "num_gpus": 2}, 2, 1, 8)


def test_the_drivers_logger_and_verl_ext_settings_travel_to_a_clusters_workers(monkeypatch):
    """Workers of an existing cluster inherit their raylet's environment, not the driver's: the file logger's path
    and verl-ext's own settings go in the job's runtime env, without overriding what the config already sets."""
    from omegaconf import OmegaConf

    from verl_ext.platform.cpu_config import _forward_driver_env

    import os

    for name in list(os.environ):  # only what this test sets (CI sets verl-ext variables of its own)
        if name.startswith(("VERL_EXT_", "VERL_FILE_LOGGER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", "/runs/x/metrics.jsonl")
    monkeypatch.setenv("VERL_EXT_GRADE_TIMEOUT_S", "7")
    monkeypatch.setenv("UNRELATED", "1")
    ray_init = OmegaConf.create({"address": "auto", "runtime_env": {"env_vars": {"VERL_EXT_GRADE_TIMEOUT_S": "3"}}})
    changes = _forward_driver_env(ray_init)
    assert dict(ray_init.runtime_env.env_vars) == {"VERL_EXT_GRADE_TIMEOUT_S": "3",
                                                   "VERL_FILE_LOGGER_PATH": "/runs/x/metrics.jsonl"}
    assert len(changes) == 1 and "VERL_FILE_LOGGER_PATH" in changes[0]
