"""The main job on two Ray nodes against one: what the cross-node path costs on the same cores.

    .venv/bin/python benchmarks/multinode_cpu.py [--steps 5] [--out runs/bench_multinode]

Baseline: the README's main job (Re², the tiny default, ``hf`` rollout) with two training ranks on one node, verl
starting Ray itself (``trainer.n_gpus_per_node=2``), measured in the same run. Against it: the same job, seed and
settings on a local Ray cluster of two nodes (``verl_ext.testing.ray_cluster``, one rank slot each), pointed at as a
user points a run at a cluster (``trainer.nnodes=2 trainer.n_gpus_per_node=1 +ray_kwargs.ray_init.address=ADDR``).
Both share this machine's cores, so the ratio isolates the cross-node path (a second raylet and object store,
gloo between ranks placed by different raylets); it is not a network figure. No validation; per layout:

- ``step_s``: the median of verl's ``timing_s/step`` over steps 2.. (step 1 warms up); ``update_s`` likewise for
  ``timing_s/update_actor`` (the step's gloo all-reduces);
- ``rest_s``: the median of the step less its generation (``timing_s/gen``): the weight sync, log-probs and update,
  everything a node layout can change. Generation is the same work in both layouts (every request carries its own
  seed, so both draw the same tokens; ``same_samples``: per step, equal token counts, scores and losses), but how
  two rollout replicas share 2 cores swings its time ~2x from run to run, so ``rest_ratio`` is the stable
  whole-step comparison;
- ``wall_s``: launch to exit, Ray and the workers' start included.

The headline is ``step_ratio`` = two nodes / one node, with ``rest_ratio`` and ``update_ratio``. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from verl_ext import cpu_smoke
from verl_ext.testing.ray_cluster import LocalCluster

CPUS_PER_NODE = 16  # logical CPUs for Ray's scheduling; both layouts run on the same physical cores


def measure(out: Path, layout: str, steps: int, extra: list[str]) -> dict:
    result = cpu_smoke.run(out / layout, steps=steps, quiet=True, validate=False, cache=out / ".cache", extra=extra)
    if result["returncode"] != 0:
        raise SystemExit(f"{layout} run failed; see {result['log']}")
    records = [r["data"] for r in cpu_smoke.read_metrics(result["metrics"]) if "timing_s/step" in r["data"]]
    steady = records[1:]
    return {"layout": layout, "step_s": round(statistics.median(d["timing_s/step"] for d in steady), 3),
            "update_s": round(statistics.median(d.get("timing_s/update_actor", float("nan")) for d in steady), 3),
            "rest_s": round(statistics.median(d["timing_s/step"] - d["timing_s/gen"] for d in steady), 3),
            "gen_s": [round(d["timing_s/gen"], 2) for d in records],
            "tokens": [d.get("re2/generated_tokens") for d in records],
            "samples": [(d.get("re2/generated_tokens"), d.get("critic/score/mean"), d.get("actor/pg_loss"))
                        for d in records],
            "first_step_s": round(records[0]["timing_s/step"], 3), "wall_s": round(result["wall_s"], 1),
            "run_dir": str(result["run_dir"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="runs/bench_multinode")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2: step 1 is warm-up")
    out = Path(args.out).resolve()
    start = time.perf_counter()
    cpu_smoke.prepare_model(out / ".cache")  # built before either clock starts
    one = measure(out, "one_node", args.steps, ["trainer.n_gpus_per_node=2"])
    with LocalCluster(nodes=2, cpus_per_node=CPUS_PER_NODE, gpus_per_node=1) as cluster:
        two = measure(out, "two_nodes", args.steps, ["trainer.nnodes=2", "trainer.n_gpus_per_node=1",
                                                     f"+ray_kwargs.ray_init.address={cluster.address}"])
    for row in (one, two):
        print(f"{row['layout']}: step {row['step_s']:.2f} s (without generation {row['rest_s']:.2f} s, update "
              f"{row['update_s']:.2f} s), generation per step {row['gen_s']} s for {row['tokens']} tokens, first "
              f"step {row['first_step_s']:.2f} s, wall {row['wall_s']:.0f} s", flush=True)
    print(json.dumps({"step_ratio": round(two["step_s"] / one["step_s"], 3),
                      "rest_ratio": round(two["rest_s"] / one["rest_s"], 3),
                      "update_ratio": round(two["update_s"] / one["update_s"], 3),
                      "same_samples": one["samples"] == two["samples"],
                      "step_s": {"one_node": one["step_s"], "two_nodes": two["step_s"]},
                      "rest_s": {"one_node": one["rest_s"], "two_nodes": two["rest_s"]},
                      "wall_s_runs": {"one_node": one["wall_s"], "two_nodes": two["wall_s"]},
                      "steps": args.steps, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
