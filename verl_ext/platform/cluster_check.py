"""A run pointed at an existing Ray cluster (``ray_kwargs.ray_init.address`` or ``RAY_ADDRESS``) on the CPU platform:
checked in the driver before any model loads, so an address that does not answer, or a cluster without the rank
slots the config asks for, fails in seconds naming the fields and the numbers, instead of Ray waiting for ever on a
placement group.

When verl starts Ray itself, the CPU platform declares the logical rank slots and CPUs at ``ray.init``
(``cpu_config``); connecting to a cluster, Ray refuses those arguments: the cluster's nodes declare their own
(``ray start --num-cpus C --num-gpus G``: G logical GPU slots, one per training rank on that node).
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from verl_ext.config_checks import ConfigError

CONNECT_TIMEOUT_S = 5.0
FIELD = "ray_kwargs.ray_init.address"


def cluster_address(ray_init) -> tuple[Optional[str], str]:
    """(the address a run connects to, the field or variable it came from); (None, "") when verl starts Ray."""
    address = (ray_init or {}).get("address")
    if address not in (None, "", "local"):
        return str(address), FIELD
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "local":
        return env, "RAY_ADDRESS"
    return None, ""


def check_reachable(address: str, where: str) -> None:
    """Raise ConfigError unless something accepts a connection at ``address`` (host:port) within the timeout."""
    if address == "auto" or address.startswith("ray://"):
        return  # resolved by Ray itself (the local address file) or a Ray Client server: Ray reports on its own
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{where}={address!r} is not host:port (the head's GCS address, e.g. 10.0.0.1:6379, as "
                          "`ray start --head` prints it).")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConfigError(f"{where}={address!r} does not answer ({err}). Start the head there (ray start --head "
                          f"--port={port}), or point {where} at a running cluster.") from None


def cluster_nodes(address: str) -> list[dict]:
    """The alive nodes of the cluster at ``address`` and their resources (connects, reads, disconnects)."""
    import ray

    was_connected = ray.is_initialized()
    if not was_connected:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return [{"id": n["NodeID"], "ip": n.get("NodeManagerAddress"), "resources": dict(n.get("Resources") or {})}
                for n in ray.nodes() if n.get("Alive")]
    finally:
        if not was_connected:
            ray.shutdown()  # verl connects again with its own runtime environment


def check_capacity(nodes: list[dict], address: str, nnodes: int, per_node: int, cpus: int) -> None:
    """Raise ConfigError unless ``nnodes`` alive nodes offer ``per_node`` rank slots each and the cluster has
    ``cpus`` logical CPUs for verl's workers."""
    slots = [int(n["resources"].get("GPU", 0)) for n in nodes]
    fitting = sum(s >= per_node for s in slots)
    total_cpu = int(sum(n["resources"].get("CPU", 0) for n in nodes))
    join = f"ray start --address={address} --num-cpus=C --num-gpus={per_node}"
    if fitting < nnodes:
        raise ConfigError(
            f"trainer.nnodes={nnodes} x trainer.n_gpus_per_node={per_node} needs {nnodes} node(s) with {per_node} rank "
            f"slot(s) each; the cluster at {address} has {len(nodes)} alive node(s) with {slots} slot(s) ({fitting} "
            f"fit). Join nodes ({join}), or lower trainer.nnodes / trainer.n_gpus_per_node.")
    if total_cpu < cpus:
        raise ConfigError(
            f"the cluster at {address} has {total_cpu} logical CPUs; this run's workers (trainer.nnodes x "
            f"trainer.n_gpus_per_node = {nnodes * per_node} ranks, agent-loop, reward and storage workers) reserve "
            f"{cpus}. Start its nodes with more logical CPUs (ray start --num-cpus; they gate scheduling only) or "
            "lower actor_rollout_ref.rollout.agent.num_workers / reward.num_workers.")


def check_cluster(ray_init, nnodes: int, per_node: int, cpus: int) -> list[str]:
    """Everything above for a config that connects to a cluster; [] (nothing to do) when verl starts Ray. Returns
    what was found, for the driver's log."""
    address, where = cluster_address(ray_init)
    if address is None:
        return []
    for key in ("num_gpus", "num_cpus"):
        if (ray_init or {}).get(key) is not None:
            raise ConfigError(f"ray_kwargs.ray_init.{key}={ray_init[key]} starts a Ray instance; connecting to the "
                              f"cluster at {address} ({where}) Ray refuses it. Drop it: the cluster's nodes declare "
                              "their CPUs and rank slots (ray start --num-cpus --num-gpus).")
    check_reachable(address, where)
    nodes = cluster_nodes(address)
    check_capacity(nodes, address, nnodes, per_node, cpus)
    return [f"connected to the Ray cluster at {address} ({where}): {len(nodes)} alive node(s)"]
