"""Train Elastic Attention routers on a Ray cluster with verl's Ray SFT trainer (``verl.trainer.sft_trainer_ray``):
``python -m verl_ext.elastic_attention.train_routers_ray --config-name elastic_router_trainer model.path=...
trainer.nnodes=N trainer.n_gpus_per_node=G [+ray_kwargs.ray_init.address=HEAD:PORT]`` (or ``RAY_ADDRESS``).

The same router engine, objective, data and adapter as the torchrun command (``train_routers``); what differs is
who drives: verl's single controller places one ``ElasticRouterWorker`` per rank through a placement group (so
ranks spread over the cluster's nodes as verl's PPO workers do), and the driver only feeds batches and logs. The
loss function holds the engine, which lives in the worker, so each worker installs it itself at construction.

The adapter is written by rank 0 on its node (like verl's checkpoints, ``trainer.default_local_dir`` should be
storage every node sees on a real cluster).
"""

from __future__ import annotations

import os

import hydra
import ray
from omegaconf import OmegaConf
from verl.single_controller.base.decorator import Dispatch, register
from verl.trainer.sft_trainer_ray import SFTTrainer
from verl.workers.engine_workers import TrainingWorker

from verl_ext.elastic_attention.router_engine import RouterTrainingConfig
from verl_ext.elastic_attention.train_routers import (adapter_path, install_objective, router_settings,
                                                      router_worker_config, write_adapter)


class ElasticRouterWorker(TrainingWorker):
    """verl's TrainingWorker whose engine is the router engine and whose loss is the router objective."""

    def __init__(self, config, elastic: dict):
        super().__init__(config)
        self.loss_fn = install_objective(self.engine, RouterTrainingConfig.from_config(elastic))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_loss_fn(self, loss_fn):
        raise RuntimeError("ElasticRouterWorker trains with the router objective it installed itself; a loss function "
                           "sent from the driver would drop the sparsity penalty.")

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def export_router_adapter(self, path: str) -> dict:
        """Every rank gathers the sharded routers (a collective); rank 0 writes. Returns where each rank ran."""
        from pathlib import Path

        write_adapter(self.engine, Path(path), write=self.rank == 0)
        return {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id()}


class ElasticRouterRayTrainer(SFTTrainer):
    """verl's Ray SFT trainer with ElasticRouterWorker as its training client; everything else is verl's."""

    def _build_engine(self):
        from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

        self.elastic_settings = router_settings(self.config)
        nnodes, per_node = int(self.config.trainer.nnodes), int(self.config.trainer.n_gpus_per_node)
        # One worker group, so each rank's bundle reserves one logical CPU (verl's default of 10 is for several
        # colocated groups, and would not fit a node that declares fewer CPUs).
        self.resource_pool = RayResourcePool(process_on_nodes=[per_node] * nnodes, max_colocate_count=1)
        elastic = OmegaConf.to_container(self.config.elastic, resolve=True)
        worker = RayClassWithInitArgs(ray.remote(ElasticRouterWorker), config=router_worker_config(self),
                                      elastic=elastic)
        self.training_client = RayWorkerGroup(resource_pool=self.resource_pool, ray_cls_with_init=worker,
                                              device_name=self.config.trainer.device)
        self.training_client.reset()

    def fit(self):
        super().fit()
        self.placement = self.training_client.export_router_adapter(
            str(adapter_path(self.config, self.elastic_settings)))
        print(f"router ranks ran on: {self.placement}")


def ray_init_kwargs(config) -> dict:
    """``ray.init`` arguments for this run; on the CPU platform, checked against the cluster it connects to (or the
    logical rank slots declared for the instance it starts), as the CPU platform does for verl's PPO trainer."""
    from omegaconf import open_dict

    from verl_ext.platform.cpu import cpu_platform_selected

    with open_dict(config):
        config.setdefault("ray_kwargs", {}).setdefault("ray_init", {})
    if cpu_platform_selected():
        from verl_ext.platform.cpu_config import prepare_ray_init

        slots = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
        prepare_ray_init(config, slots, cpus=slots + 2)  # one CPU per rank's bundle, the driver's tasks
    return OmegaConf.to_container(config.ray_kwargs.ray_init, resolve=True)


def run(config) -> None:
    from omegaconf import open_dict

    from verl_ext.platform.cpu import cpu_platform_selected, request_cpu_platform_from_config

    with open_dict(config):
        config.setdefault("ray_kwargs", {})  # the Ray runtime environment carries the platform to every worker
    request_cpu_platform_from_config(config)
    if cpu_platform_selected():
        with open_dict(config):
            config.trainer.device = "cpu"
    router_settings(config)  # a bad elastic block fails here, before Ray starts
    if not ray.is_initialized():
        ray.init(**ray_init_kwargs(config))
    ElasticRouterRayTrainer(config=config).fit()


@hydra.main(config_path="../config", config_name="elastic_router_trainer", version_base=None)
def main(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(config)


if __name__ == "__main__":
    main()
