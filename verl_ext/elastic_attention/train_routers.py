"""Train Elastic Attention routers with verl's SFT trainer:
``python -m verl_ext.elastic_attention.train_routers --config-name elastic_router_trainer model.path=... ...``
(or under ``torchrun --nproc_per_node=N`` for several GPUs). The config is a hydra delta over verl's
``sft_trainer_engine`` (see ``verl_ext/config/elastic_router_trainer.yaml``); at the end the trained routers are
written as a safetensors adapter (``elastic.adapter_out``, default ``<trainer.default_local_dir>/router_adapter.safetensors``).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from verl.trainer.sft_trainer import SFTTrainer

from verl_ext.elastic_attention.router_engine import (ENGINE_MODEL_TYPE, ElasticRouterEngine, RouterTrainingConfig,
                                                      elastic_router_loss)


class ElasticRouterTrainer(SFTTrainer):
    """verl's SFT trainer with the router engine and the Lagrangian loss; everything else is verl's."""

    def _build_engine(self):
        from verl.workers.engine_workers import TrainingWorker

        self.elastic_settings = router_settings(self.config)
        self.training_client = TrainingWorker(config=router_worker_config(self))
        self.engine = self.training_client.engine
        self.training_client.set_loss_fn(loss_fn=install_objective(self.engine, self.elastic_settings))

    def fit(self):
        super().fit()
        self.export_adapter()

    def export_adapter(self) -> Path:
        """The trained routers as an adapter file, and the multipliers beside it (lagrangian.json)."""
        path = adapter_path(self.config, self.elastic_settings)
        write_adapter(self.engine, path, write=self.rank == 0)
        return path


def router_settings(config) -> RouterTrainingConfig:
    """The validated ``elastic`` block; the dataset's task names must be the same list."""
    settings = RouterTrainingConfig.from_config(config.get("elastic"))
    if list(config.data.get("elastic_tasks") or []) != list(settings.tasks):
        raise ValueError(f"data.elastic_tasks {list(config.data.get('elastic_tasks') or [])} must equal "
                         f"elastic.tasks {list(settings.tasks)} (same names, same order).")
    return settings


def router_worker_config(trainer):
    """verl's TrainingWorkerConfig for the router engine, from an SFT trainer's parsed config blocks."""
    from verl.workers.engine_workers import TrainingWorkerConfig

    return TrainingWorkerConfig(model_type=ENGINE_MODEL_TYPE, model_config=trainer.model_config,
                                engine_config=trainer.engine_config, optimizer_config=trainer.optimizer_config,
                                checkpoint_config=trainer.checkpoint_config, profiler_config=trainer.profiler_config)


def install_objective(engine, settings: RouterTrainingConfig):
    """Give the engine its settings and return the loss function the worker trains with. Called where the engine
    lives (this process under torchrun, each Ray worker), between building the engine and initialising it: the
    module is built at initialisation (TrainingWorker.reset), after the settings are in."""
    if not isinstance(engine, ElasticRouterEngine):
        raise RuntimeError(f"the engine registry built {type(engine).__name__} for {ENGINE_MODEL_TYPE!r}; is the "
                           "verl_ext plugin loaded (VERL_USE_EXTERNAL_PLUGINS)?")
    engine.settings = settings
    return partial(elastic_router_loss, engine=engine)


def adapter_path(config, settings: RouterTrainingConfig) -> Path:
    return Path(settings.adapter_out or Path(config.trainer.default_local_dir) / "router_adapter.safetensors")


def write_adapter(engine: ElasticRouterEngine, path: Path, write: bool) -> None:
    """The trained routers as an adapter file, and the multipliers beside it (lagrangian.json). Every rank calls it
    (gathering the sharded routers is a collective); the one with ``write`` writes."""
    import json

    from verl_ext.elastic_attention.adapter import save_router_adapter

    tensors = engine.router_state_dict()
    if not write:
        return
    settings, lam = engine.settings, engine.lagrangian
    save_router_adapter(engine.module, path, router_params=tensors)
    path.with_name("lagrangian.json").write_text(json.dumps({
        "tasks": list(settings.tasks), "targets": list(settings.targets),
        "lambda1": lam.lambda1.detach().cpu().tolist(), "lambda2": lam.lambda2.detach().cpu().tolist()}))
    print(f"router adapter written to {path}")


def _init_process_group() -> None:
    """One process without torchrun works too; on CPU the group is plain gloo (verl's helper asks for
    "cpu:gloo,cpu:gloo", which torch rejects)."""
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                         ("MASTER_PORT", str(29500 + os.getpid() % 1000))):
        os.environ.setdefault(key, default)
    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        dist.init_process_group(backend="gloo")


def run(config) -> None:
    from omegaconf import open_dict

    from verl_ext.platform.cpu import request_cpu_platform_from_config

    request_cpu_platform_from_config(config)  # verl_ext.platform: cpu (the CPU configs) selects the CPU platform
    _init_process_group()
    with open_dict(config):
        config.trainer.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        ElasticRouterTrainer(config=config).fit()
    finally:
        dist.destroy_process_group()


@hydra.main(config_path="../config", config_name="elastic_router_trainer", version_base=None)
def main(config):
    run(config)


if __name__ == "__main__":
    main()
