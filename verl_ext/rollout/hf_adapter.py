"""``HFServerAdapter``: the in-worker side of the ``hf`` rollout (verl's ``BaseRollout`` for ``(hf, async)``).

verl builds one inside every hybrid trainer rank. ``update_weights`` receives the trainer's per-tensor parameter
generator; every rank must drain it (each item may be a collective over the FSDP shards), and rank 0 of each replica
ships the tensors to its server in chunks of ``checkpoint_engine.update_weights_bucket_megabytes``.
"""

from __future__ import annotations

import os
from typing import Generator, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from verl_ext.rollout.hf_replica import server_actor_name


class HFServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        # One process per hf replica (HFReplica enforces it), so every rank is rank 0 of its own replica.
        self.replica_rank = rank if replica_rank == -1 else replica_rank
        self._server = None
        bucket_mb = getattr(getattr(self.config, "checkpoint_engine", None), "update_weights_bucket_megabytes", 512)
        self.bucket_bytes = int(bucket_mb) << 20

    @property
    def server(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        await self.server.wake_up.remote(tags=tags)

    async def release(self):
        await self.server.sleep.remote()

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        peft_config=None,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise ValueError(f"hf rollout takes full named tensors; got wire_format={wire_format!r}.")
        if peft_config is not None:
            raise NotImplementedError(
                "hf rollout loads merged weights only: set actor_rollout_ref.model.lora.merge=True for LoRA training."
            )
        chunk: list[tuple[str, torch.Tensor]] = []
        chunk_bytes = 0
        for name, tensor in weights:
            if hasattr(tensor, "full_tensor"):
                tensor = tensor.full_tensor()
            tensor = tensor.detach().to("cpu", copy=True)
            chunk.append((name, tensor))
            chunk_bytes += tensor.numel() * tensor.element_size()
            if chunk_bytes >= self.bucket_bytes:
                await self.server.load_weights.remote(chunk)
                chunk, chunk_bytes = [], 0
        if chunk:
            await self.server.load_weights.remote(chunk)
        await self.server.finish_weight_update.remote(global_steps)
