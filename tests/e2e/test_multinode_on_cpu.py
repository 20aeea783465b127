"""Past one machine, rehearsed on one: a Ray cluster of two nodes on this machine (``verl_ext.testing.ray_cluster``),
each declaring its CPUs and one logical GPU slot, and the README's main job pointed at it as a user points a run at
a cluster (``trainer.nnodes=2 trainer.n_gpus_per_node=1 +ray_kwargs.ray_init.address=ADDR``).

- The two FSDP ranks land on the two nodes (Ray's actor table says where each ran) and train over gloo across them.
- Losing the second node once step 1 is logged and checkpointed ends the run within ``node_watch.BOUND_S`` with a
  message naming the node and how to resume; ``--resume`` on a fresh cluster continues from that checkpoint (not from
  the start) to the end.
- The MemoryRewardBench judge run on the cluster, its node lost mid-evaluation, resumed: no pair lost or judged twice.
- The two-node run, up to the loss and then resumed, equals bit for bit the same run with both ranks on one node,
  uninterrupted: every figure of every step and both validations (only timings and memory differ). One comparison
  covers both claims (two nodes = one node; a resumed run = an uninterrupted one): steps 0-1 come from the run before
  the loss, step 2 and the final validation from the resumed run. The bound is exact by construction: every sampled
  request carries its own seed (``re2.request_seeds``), so which of the two rollout replicas serves it does not
  matter; a step's batch is the same groups in the same order whatever finished first (the deterministic replay
  buffer, uids drawn in dispatch order); FSDP's gradient all-reduce over two ranks adds two numbers, which is
  order-free; the checkpoint holds the weights, the optimizer and the data loader's position.
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

from verl_ext.cpu_smoke import read_metrics, val_accuracy
from verl_ext.platform.node_watch import BOUND_S
from verl_ext.testing.ray_cluster import LocalCluster
from verl_ext.testing.watched_run import WatchedRun

pytestmark = pytest.mark.slow
STEPS = 2
CPUS_PER_NODE = 16
FINITE = ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "response_length/mean", "re2/redo_rate")
ENV = {"RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


def _main_job(out: Path, cache: Path, *args: str, address: str | None = None, via_env: bool = False) -> WatchedRun:
    """The main job on the cluster at ``address`` (as an override, or ``via_env``: RAY_ADDRESS), or on one node
    with two ranks where verl starts Ray itself."""
    env = dict(os.environ, **ENV)
    env.pop("RAY_ADDRESS", None)
    cluster = ["trainer.n_gpus_per_node=2"]  # one node, two ranks
    if address:
        cluster = ["trainer.nnodes=2", "trainer.n_gpus_per_node=1"]
        if via_env:
            env["RAY_ADDRESS"] = address
        else:
            cluster.append(f"+ray_kwargs.ray_init.address={address}")
    cmd = [sys.executable, "-m", "verl_ext.cpu_smoke", "--out", str(out), "--cache", str(cache), "--steps", str(STEPS),
           *args, "trainer.save_freq=1", *cluster]
    out.mkdir(parents=True, exist_ok=True)
    return WatchedRun(cmd, cwd=out, env=env, log=out / "console.log")


def _summary(run: WatchedRun) -> dict:
    assert run.wait() == 0, run.log()[-6000:]
    return json.loads(run.log().strip().splitlines()[-1])


def _steps(metrics: Path) -> dict[int, dict]:
    return {r["step"]: r["data"] for r in read_metrics(metrics) if "timing_s/step" in r["data"]}


MACHINE = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/")  # wall clock and memory, not the run's figures


def _figures(metrics: Path) -> dict[int, dict]:
    """Every logged figure per step (training and validation), without timings and memory."""
    steps: dict[int, dict] = {}
    for record in read_metrics(metrics):
        figures = {k: v for k, v in record["data"].items() if not k.startswith(MACHINE)}
        steps.setdefault(record["step"], {}).update(figures)
    return steps


@pytest.fixture(scope="module")
def cache(smoke_cache):
    return smoke_cache


def _logged_and_checkpointed(out: Path, step: int) -> bool:
    """Step ``step``'s metrics are in the run's metrics file and its checkpoint (with the HF folder) is written."""
    return any(step in _steps(m) for m in out.rglob("metrics.jsonl")) and any(
        out.rglob(f"global_step_{step}/actor/huggingface/config.json"))


def _workers(placement: dict[str, set[str]]) -> set[str]:
    """Nodes of verl's FSDP ranks: one colocated WorkerDict actor per rank (actor, reference and rollout share it)."""
    return set().union(*(nodes for name, nodes in placement.items() if name.endswith("WorkerDict")))


@pytest.fixture(scope="module")
def lost_and_resumed(tmp_path_factory, cache):
    """The main job on a fresh 2-node cluster, its second node killed once step 1 is logged and checkpointed, then
    ``--resume`` on a fresh 2-node cluster (the address from RAY_ADDRESS, as a user's shell gives it) to the end."""
    out = tmp_path_factory.mktemp("two_nodes")
    with LocalCluster(nodes=2, cpus_per_node=CPUS_PER_NODE, gpus_per_node=1) as cluster:
        run = _main_job(out, cache, address=cluster.address)
        run.wait_for(lambda: _logged_and_checkpointed(out, 1), what="step 1, logged and checkpointed")
        node_ids = set(cluster.node_ids())  # before the loss: the lost node leaves the list, not the actor table
        lost_at = time.monotonic()
        cluster.kill_node(cluster.worker_nodes[0])
        code = run.wait()
        ended_after = time.monotonic() - lost_at
        lost = {"code": code, "ended_after": ended_after, "placement": cluster.actor_nodes(), "node_ids": node_ids,
                "leftovers": run.leftover_processes(),
                "log": run.log() + "".join(p.read_text() for p in out.rglob("trainer.log"))}
    run_dir = next(out.glob("re2_cpu_smoke/*-s0"))
    with LocalCluster(nodes=2, cpus_per_node=CPUS_PER_NODE, gpus_per_node=1) as fresh:
        run = _main_job(out, cache, "--resume", str(run_dir), address=fresh.address, via_env=True)
        resumed = _summary(run)
        assert run.leftover_processes() == [] and run.leftover_segments() == []
        placement, node_ids = fresh.actor_nodes(), set(fresh.node_ids())
    before = run_dir / "metrics-until-step1.jsonl"  # the run before the loss (cpu_smoke keeps it on --resume)
    return {"lost": lost, "resumed": resumed, "resumed_placement": placement, "resumed_node_ids": node_ids,
            "before": _figures(before), "before_steps": _steps(before)}


@pytest.fixture(scope="module")
def one_node(tmp_path_factory, cache):
    """The same run with both ranks on one node (verl starts Ray itself), uninterrupted."""
    return _summary(_main_job(tmp_path_factory.mktemp("one_node"), cache))


def test_ranks_land_on_both_nodes(lost_and_resumed):
    for placement, node_ids in ((lost_and_resumed["lost"]["placement"], lost_and_resumed["lost"]["node_ids"]),
                                (lost_and_resumed["resumed_placement"], lost_and_resumed["resumed_node_ids"])):
        assert len(node_ids) == 2 and _workers(placement) == node_ids, placement


def test_losing_a_node_ends_the_run_naming_it_and_how_to_resume(lost_and_resumed):
    lost = lost_and_resumed["lost"]
    assert lost["code"] != 0
    assert lost["ended_after"] < BOUND_S, lost["ended_after"]
    assert "was lost during the run" in lost["log"] and "trainer.resume_mode=auto" in lost["log"], lost["log"][-4000:]
    assert lost["leftovers"] == []
    assert sorted(lost_and_resumed["before_steps"]) == [1]  # lost during step 2, after step 1's checkpoint


def test_resume_continues_from_the_checkpoint(lost_and_resumed):
    after = _steps(Path(lost_and_resumed["resumed"]["metrics"]))
    assert sorted(after) == list(range(2, STEPS + 1))  # continued from the step-1 checkpoint, not from the start


def test_every_step_and_both_validations_finish_on_two_nodes(lost_and_resumed):
    resumed = lost_and_resumed["resumed"]
    steps = {**lost_and_resumed["before_steps"], **_steps(Path(resumed["metrics"]))}
    assert sorted(steps) == list(range(1, STEPS + 1))
    for step, data in steps.items():
        for key in FINITE:
            assert key in data and math.isfinite(data[key]), (step, key)
        assert data["actor/grad_norm"] >= 0 and data["re2/num_continuations"] == 32  # 8 questions x 2 x 2
    assert 0 <= val_accuracy(lost_and_resumed["before"][0]) <= 1 and 0 <= resumed["val_acc_end"] <= 1


def test_two_nodes_lost_and_resumed_train_bit_for_bit_as_one_node_uninterrupted(lost_and_resumed, one_node):
    """Steps 0 (the validation before training) and 1 from the run before the loss, step 2 and the final validation
    from the resumed run (which also validates its checkpoint first, at step 1: not part of the comparison)."""
    resumed = _figures(Path(lost_and_resumed["resumed"]["metrics"]))
    apart = {**lost_and_resumed["before"], **{step: figures for step, figures in resumed.items() if step >= 2}}
    together = _figures(Path(one_node["metrics"]))
    assert sorted(apart) == sorted(together) == [0, *range(1, STEPS + 1)]
    for step in together:  # one step at a time, so a failure names the step (and so which claim broke)
        assert apart[step] == together[step], (step, {k: (apart[step].get(k), v) for k, v in together[step].items()
                                                      if apart[step].get(k) != v})
    assert apart[STEPS]["critic/score/mean"] > 0 and apart[STEPS]["re2/generated_tokens"] > 0  # figures, not blanks
    assert lost_and_resumed["resumed"]["val_acc_end"] == one_node["val_acc_end"]


def test_memrm_judge_on_two_nodes_survives_losing_one(tmp_path, tiny_model_dir):
    """The MemoryRewardBench judge (val_only) on the 2-node cluster, its ranks on both nodes, its second node lost once
    some pairs are judged, then resumed on a fresh cluster: every pair judged exactly once, each output the same text
    as the same judge's run with both ranks on one node (every request seeded from its row and prompt:
    ``verl_ext.seeded_agent_loop``)."""
    import shutil

    from verl_ext.memrm.convert import main as convert_main
    from verl_ext.memrm.demo import CAP, validation_command
    from verl_ext.memrm.records import HOLD_ENV, RecordStore
    from verl_ext.memrm.synthetic import write_benchmark

    bench = write_benchmark(tmp_path / "bench", per_cell=1)
    judge = tmp_path / "judge"
    shutil.copytree(tiny_model_dir, judge)
    convert = [str(bench), "--tokenizer", str(judge), "--cap", str(CAP), "--model", "tiny-judge"]
    assert convert_main([convert[0], str(tmp_path / "all.parquet"), *convert[1:]]) == 0
    # an untaught judge: what is checked is which pairs were judged, not the verdicts
    records = tmp_path / "records.jsonl"

    def judge_on(cluster, parquet, records_name="records.jsonl", **more_env):
        extra = ["data.val_batch_size=10"]  # records land batch by batch
        if cluster is None:  # one node, two ranks, verl starts Ray
            extra += ["trainer.n_gpus_per_node=2"]
        else:
            extra += ["trainer.nnodes=2", "trainer.n_gpus_per_node=1", f"+ray_kwargs.ray_init.address={cluster.address}"]
        cmd, env = validation_command(tmp_path, judge, parquet, extra, records=records_name)
        return WatchedRun(cmd, cwd=tmp_path, env=dict(env, **ENV, **more_env), log=tmp_path / "trainer.log")

    with LocalCluster(nodes=2, cpus_per_node=CPUS_PER_NODE, gpus_per_node=1) as cluster:
        first = judge_on(cluster, tmp_path / "all.parquet", **{HOLD_ENV: "10"})  # mid-evaluation by construction
        first.wait_for(lambda: records.exists() and len(records.read_text().splitlines()) >= 10, what="10 pairs")
        placement = cluster.actor_nodes()
        workers = set().union(*(nodes for name, nodes in placement.items() if name.endswith("WorkerDict")))
        assert workers == set(cluster.node_ids()) and len(workers) == 2, placement
        cluster.kill_node(cluster.worker_nodes[0])
        assert first.wait() != 0
    assert first.leftover_processes() == []
    done = len(RecordStore(records).load())
    assert 10 <= done < 50
    assert convert_main([convert[0], str(tmp_path / "rest.parquet"), *convert[1:], "--records", str(records)]) == 0
    with LocalCluster(nodes=2, cpus_per_node=CPUS_PER_NODE, gpus_per_node=1) as cluster:
        second = judge_on(cluster, tmp_path / "rest.parquet")
        assert second.wait() == 0, second.log()[-6000:]
    judged = RecordStore(records).load()
    assert len(judged) == 50 and len({r["pair_id"] for r in judged.values()}) == 50  # none lost, none twice
    alone = judge_on(None, tmp_path / "all.parquet", records_name="records_one_node.jsonl")
    assert alone.wait() == 0, alone.log()[-6000:]
    one_node = RecordStore(tmp_path / "records_one_node.jsonl").load()
    assert {key: r["output"] for key, r in judged.items()} == {key: r["output"] for key, r in one_node.items()}
    assert len({r["output"] for r in one_node.values()}) > 1  # sampled texts, not one repeated answer
