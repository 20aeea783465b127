"""The local multi-node Ray cluster (``verl_ext.testing.ray_cluster``): its nodes are real raylets that declare what a
CPU node of a real cluster would, a run pointed at it sees them all, and nothing of it outlives it, even when the
code inside fails."""

import json
import os
import subprocess
import sys

import psutil
import pytest

from verl_ext.testing.ray_cluster import LocalCluster

pytestmark = pytest.mark.slow
ENV = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONWARNINGS="ignore")


def _ray_children(temp_dir: str) -> set[int]:
    """The cluster's own processes: those whose command line names its temporary folder (GCS, raylets, monitors),
    and their descendants (the agents). Not any other Ray this test process started (a session's local Ray)."""
    own = [p for p in psutil.Process().children(recursive=True) if temp_dir in " ".join(p.cmdline())]
    return {q.pid for p in own for q in [p, *p.children(recursive=True)]}


def test_nodes_declare_cpus_and_slots_and_go_away_when_the_body_fails():
    with pytest.raises(RuntimeError, match="inside"):
        with LocalCluster(nodes=2, cpus_per_node=3, gpus_per_node=1) as cluster:
            started = _ray_children(cluster.temp_dir)
            code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
                    "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))") % cluster.address
            run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
            assert run.returncode == 0, run.stderr[-2000:]
            nodes = json.loads(run.stdout.strip().splitlines()[-1])
            assert sorted(nodes) == sorted(cluster.node_ids()) and len(nodes) == 2  # the ids Ray's tables use
            assert all(n["CPU"] == 3 and n["GPU"] == 1 for n in nodes.values()), nodes
            assert len(started) >= 3  # a GCS and two raylets
            raise RuntimeError("inside")
    leftover = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftover == []


def test_the_cli_runs_a_command_against_the_cluster_and_returns_its_status():
    count_nodes = "import ray; ray.init(logging_level='ERROR'); print('nodes', len(ray.nodes()))"
    run = subprocess.run([sys.executable, "-m", "verl_ext.testing.ray_cluster", "--nodes", "2", "--cpus-per-node", "2",
                          "--", sys.executable, "-c", count_nodes], capture_output=True, text=True, env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "nodes 2" in run.stdout
    failing = subprocess.run([sys.executable, "-m", "verl_ext.testing.ray_cluster", "--nodes", "1", "--",
                              sys.executable, "-c", "raise SystemExit(3)"], capture_output=True, text=True, env=ENV)
    assert failing.returncode == 3
