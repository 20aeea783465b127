"""A Ray cluster of several nodes on this machine, for rehearsing multi-node runs without a cluster:

    python -m verl_ext.testing.ray_cluster [--nodes 2] [--cpus-per-node 8] [--gpus-per-node 1] [-- COMMAND ...]

prints the address to point a run at (``+ray_kwargs.ray_init.address=ADDR`` or ``RAY_ADDRESS=ADDR``) and keeps the
cluster up until Ctrl-C; given a COMMAND after ``--``, runs it with ``RAY_ADDRESS`` set to the cluster, then takes
the cluster down and exits with the command's status:

    python -m verl_ext.testing.ray_cluster --nodes 2 -- python -m verl_ext.cpu_smoke trainer.nnodes=2 trainer.n_gpus_per_node=1
 Each node is its own raylet (Ray's ``ray.cluster_utils.Cluster``), declaring its CPU cores
and one logical GPU slot per training rank, as a CPU node of a real cluster would under verl-ext's CPU platform (no
GPU is used: a slot only places a rank). ``LocalCluster`` is the same as a context manager for tests: it removes
the nodes it started, whatever happens inside, and never leaves its address where a plain ``ray.init()`` elsewhere
on the machine would find and join it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECT_STORE_BYTES = 400 * 2**20  # per node; Ray's test default (150 MiB) is tight for verl's TransferQueue units


class LocalCluster:
    """``nodes`` Ray nodes on this machine: the head and ``nodes - 1`` workers, each with ``cpus_per_node`` logical
    CPUs and ``gpus_per_node`` logical GPU slots."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 8, gpus_per_node: int = 1):
        if nodes < 1 or cpus_per_node < 1 or gpus_per_node < 0:
            raise ValueError(f"nodes={nodes}, cpus_per_node={cpus_per_node}, gpus_per_node={gpus_per_node}: need at "
                             "least one node with one CPU.")
        self.nodes, self.cpus_per_node, self.gpus_per_node = nodes, cpus_per_node, gpus_per_node
        self.cluster = None
        self.temp_dir = tempfile.mkdtemp(prefix="verl-ext-ray-")

    def _node_args(self) -> dict:
        return {"num_cpus": self.cpus_per_node, "num_gpus": self.gpus_per_node,
                "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False}

    def start(self) -> "LocalCluster":
        from ray._private.utils import get_ray_address_file
        from ray.cluster_utils import Cluster

        address_file = Path(get_ray_address_file(None))
        previous = address_file.read_text() if address_file.exists() else None
        self.cluster = Cluster(initialize_head=True, head_node_args={**self._node_args(), "temp_dir": self.temp_dir})
        # Ray records the head as "the" local cluster, which a plain ray.init() anywhere on this machine would then
        # join: put back what was there, so only runs given this address use the cluster.
        if previous is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(previous)
        for _ in range(self.nodes - 1):
            self.cluster.add_node(**self._node_args())
        self.cluster.wait_for_nodes()
        return self

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def worker_nodes(self) -> list:
        return sorted(self.cluster.worker_nodes, key=lambda n: n.unique_id)

    def node_ids(self) -> list[str]:
        """Ray node ids (hex, as ``ray.nodes()`` and the actor table give them), the head first."""
        return [self.cluster.head_node.node_id] + [n.node_id for n in self.worker_nodes]

    def actor_nodes(self) -> dict[str, set[str]]:
        """{actor class: node ids it ran on} for every actor the cluster has seen (Ray's GCS actor table), read
        from a separate process so the caller need not connect."""
        code = ("import json, ray; from ray._private import state; ray.init(address=%r, logging_level='ERROR'); "
                "out = {}; [out.setdefault(a['ActorClassName'], set()).add(a['Address']['NodeID']) "
                "for a in state.actors().values() if a.get('Address', {}).get('NodeID')]; "
                "print(json.dumps({k: sorted(v) for k, v in out.items()}))") % self.address
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        if run.returncode != 0:
            raise RuntimeError(f"reading the actor table of {self.address} failed: {run.stderr[-2000:]}")
        return {k: set(v) for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}

    def kill_node(self, node) -> None:
        """Node loss: the node's raylet and everything on it die at once (no graceful drain)."""
        self.cluster.remove_node(node, allow_graceful=False)

    def _processes(self) -> list:
        """Every process of the cluster's nodes (GCS, raylets, their workers) that is alive now."""
        import psutil

        procs = []
        nodes = [self.cluster.head_node, *self.cluster.worker_nodes] if self.cluster.head_node else []
        for node in nodes:
            for infos in getattr(node, "all_processes", {}).values():
                for info in infos:
                    with contextlib.suppress(psutil.Error, AttributeError):
                        proc = psutil.Process(info.process.pid)
                        procs += [proc, *proc.children(recursive=True)]
        return procs

    def shutdown(self) -> None:
        """Take every node down and wait until each of its processes has exited (killed if Ray's own shutdown
        left it: a busy machine can make Ray's graceful path give up)."""
        import psutil

        if self.cluster is None:
            return
        procs = self._processes()
        try:
            self.cluster.shutdown()
        except Exception as err:  # noqa: BLE001 - what Ray did not stop is killed below; say why it was needed
            print(f"verl_ext: Ray's cluster shutdown failed ({type(err).__name__}: {err}); killing its processes",
                  file=sys.stderr)
        self.cluster = None
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=8, help="logical CPUs (Ray scheduling, not cores)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="logical GPU slots: one per training rank")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if "--" in argv and not command:
        parser.error("nothing to run after --")
    with LocalCluster(args.nodes, args.cpus_per_node, args.gpus_per_node) as cluster:
        if command:
            print(f"Ray cluster of {args.nodes} nodes at {cluster.address}; running: {' '.join(command)}", flush=True)
            return subprocess.run(command, env=dict(os.environ, RAY_ADDRESS=cluster.address)).returncode
        print(f"Ray cluster of {args.nodes} nodes ({args.cpus_per_node} CPUs, {args.gpus_per_node} GPU slot(s) each) "
              f"at {cluster.address}. Point a run at it:\n"
              f"  python -m verl_ext.cpu_smoke trainer.nnodes={args.nodes} "
              f"trainer.n_gpus_per_node={args.gpus_per_node} +ray_kwargs.ray_init.address={cluster.address}\n"
              "Ctrl-C stops it.", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            while not stop:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
