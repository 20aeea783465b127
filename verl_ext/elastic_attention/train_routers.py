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
        from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig

        self.elastic_settings = RouterTrainingConfig.from_config(self.config.get("elastic"))
        if list(self.config.data.get("elastic_tasks") or []) != list(self.elastic_settings.tasks):
            raise ValueError(f"data.elastic_tasks {list(self.config.data.get('elastic_tasks') or [])} must equal "
                             f"elastic.tasks {list(self.elastic_settings.tasks)} (same names, same order).")
        config = TrainingWorkerConfig(
            model_type=ENGINE_MODEL_TYPE,
            model_config=self.model_config,
            engine_config=self.engine_config,
            optimizer_config=self.optimizer_config,
            checkpoint_config=self.checkpoint_config,
            profiler_config=self.profiler_config,
        )
        self.training_client = TrainingWorker(config=config)
        self.engine = self.training_client.engine
        if not isinstance(self.engine, ElasticRouterEngine):
            raise RuntimeError(f"the engine registry built {type(self.engine).__name__} for {ENGINE_MODEL_TYPE!r}; "
                               "is the verl_ext plugin loaded (VERL_USE_EXTERNAL_PLUGINS)?")
        # The module is built later (SFTTrainer._init_engine -> TrainingWorker.reset), after the settings are in.
        self.engine.settings = self.elastic_settings
        self.training_client.set_loss_fn(loss_fn=partial(elastic_router_loss, engine=self.engine))

    def fit(self):
        super().fit()
        self.export_adapter()

    def export_adapter(self) -> Path:
        """The trained routers as an adapter file, and the multipliers beside it (lagrangian.json)."""
        import json

        from verl_ext.elastic_attention.adapter import save_router_adapter

        path = Path(self.elastic_settings.adapter_out or
                    Path(self.config.trainer.default_local_dir) / "router_adapter.safetensors")
        tensors = self.engine.router_state_dict()  # every rank gathers (a collective); rank 0 writes
        if self.rank == 0:
            save_router_adapter(self.engine.module, path, router_params=tensors)
            lam = self.engine.lagrangian
            path.with_name("lagrangian.json").write_text(json.dumps({
                "tasks": list(self.elastic_settings.tasks), "targets": list(self.elastic_settings.targets),
                "lambda1": lam.lambda1.detach().cpu().tolist(), "lambda2": lam.lambda2.detach().cpu().tolist()}))
            print(f"router adapter written to {path}")
        return path


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
