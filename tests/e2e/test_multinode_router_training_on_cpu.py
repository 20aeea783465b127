"""Elastic Attention router training on a Ray cluster of two nodes on this machine: verl's Ray SFT trainer with the
router worker (``verl_ext.elastic_attention.train_routers_ray``), one rank per node, FSDP2 over gloo across them.

- Ray's actor table says the two router workers ran on the two nodes.
- Every step's figures and the trained routers equal, bit for bit, those of the same run with both ranks on one
  node (verl starts Ray itself). The bound is exact by construction: the ranks see the same batches and draw the
  same initial routers and per-rank Gumbel noise (``elastic.seed``, seed + rank) wherever they run, and a two-rank
  all-reduce adds two numbers, which floating point does the same in either order.
- The routers learned (moved, multipliers rose), so the equality is not two idle runs agreeing.
- A cluster with fewer rank slots than ``trainer.nnodes x trainer.n_gpus_per_node`` is refused before Ray places a
  worker or a model loads, naming the fields and the numbers (no time is asserted: a busy machine only slows the
  imports; measured 10-20 s on 2 cores).
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verl_ext.testing.ray_cluster import LocalCluster
from verl_ext.testing.router_data import write_router_training_data
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model
from verl_ext.testing.watched_run import WatchedRun

pytestmark = pytest.mark.slow
ENV = {"RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
COMPARED = ("elastic/", "train/loss", "train/grad_norm")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("router_inputs")
    model = build_tiny_model(root / "model", TinyModelSpec(arch="qwen3", hidden=64, heads=4, kv_heads=2))
    return model, write_router_training_data(root / "train.parquet", rows=32)


def _train(out: Path, inputs, *cluster: str, address: str | None = None) -> WatchedRun:
    model, data = inputs
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **ENV, VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"))
    env.pop("RAY_ADDRESS", None)
    if address:
        cluster = (*cluster, f"+ray_kwargs.ray_init.address={address}")
    cmd = [sys.executable, "-m", "verl_ext.elastic_attention.train_routers_ray", "--config-name",
           "elastic_router_cpu_smoke", f"model.path={model}", f"data.train_files={data}",
           f"trainer.default_local_dir={out / 'ckpt'}", *cluster]
    return WatchedRun(cmd, cwd=out, env=env, log=out / "console.log")


def _finished(run: WatchedRun, out: Path) -> tuple[list[dict], dict]:
    assert run.wait() == 0, run.log()[-6000:]
    assert run.leftover_processes() == []
    steps = [json.loads(line)["data"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return steps, load_file(str(out / "ckpt" / "router_adapter.safetensors"))


@pytest.fixture(scope="module")
def one_node(tmp_path_factory, inputs):
    out = tmp_path_factory.mktemp("one_node")
    return _finished(_train(out, inputs, "trainer.n_gpus_per_node=2"), out)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, inputs):
    """The run on a 2-node cluster; (steps, adapter, actor placement, node ids, the too-small-cluster attempt)."""
    out = tmp_path_factory.mktemp("two_nodes")
    with LocalCluster(nodes=2, cpus_per_node=4, gpus_per_node=1) as cluster:
        steps, adapter = _finished(_train(out, inputs, "trainer.nnodes=2", "trainer.n_gpus_per_node=1",
                                          address=cluster.address), out)
        placement, node_ids = cluster.actor_nodes(), set(cluster.node_ids())
        refused = _train(out / "three", inputs, "trainer.nnodes=3", "trainer.n_gpus_per_node=1",
                         address=cluster.address)
        refused_result = (refused.wait(), refused.log())
    return steps, adapter, placement, node_ids, refused_result


def test_router_ranks_land_on_both_nodes(two_nodes):
    _, _, placement, node_ids, _ = two_nodes
    workers = set().union(*(nodes for name, nodes in placement.items() if name.endswith("ElasticRouterWorker")))
    assert len(node_ids) == 2 and workers == node_ids, placement


def test_two_nodes_train_exactly_as_one(one_node, two_nodes):
    (steps_one, adapter_one), (steps_two, adapter_two) = one_node, two_nodes[:2]
    assert len(steps_one) == len(steps_two) == 6
    for step, (a, b) in enumerate(zip(steps_one, steps_two), 1):
        compared = {k: v for k, v in a.items() if k.startswith(COMPARED)}
        assert len(compared) > 10
        assert compared == {k: b.get(k) for k in compared}, step
    assert sorted(adapter_one) == sorted(adapter_two)
    assert all(torch.equal(adapter_one[k], adapter_two[k]) for k in adapter_one)


def _mean(value) -> float:
    flat = torch.tensor(value, dtype=torch.float64).flatten() if isinstance(value, list) else torch.tensor([value])
    return float(flat.mean())


def test_the_routers_learned_on_two_nodes(two_nodes):
    steps = two_nodes[0]
    assert _mean(steps[0]["elastic/router_update_norm"]) == 0.0 and _mean(steps[-1]["elastic/router_update_norm"]) > 0.1
    for task in ("sensitive", "robust"):
        assert _mean(steps[-1][f"elastic/lambda1/{task}"]) > _mean(steps[0][f"elastic/lambda1/{task}"])


def test_too_few_slots_refused_before_any_model_loads(two_nodes):
    code, log = two_nodes[4]
    assert code != 0
    assert "trainer.nnodes=3 x trainer.n_gpus_per_node=1" in log and "2 alive node(s)" in log, log[-3000:]
    assert "Loading weights" not in log and "ElasticRouterWorker" not in log  # no worker placed, no model loaded
