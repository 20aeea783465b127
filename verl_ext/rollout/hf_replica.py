"""``HFReplica``: verl's ``RolloutReplica`` for the ``hf`` rollout (one server actor per replica).

Selected with ``actor_rollout_ref.rollout.name=hf``. The server holds its own copy of the weights (loaded from the
checkpoint folder, then replaced by the trainer after every step through ``HFServerAdapter.update_weights``), so it
works in verl's hybrid mode (the default), and in colocated/standalone mode for a frozen model such as a judge.
"""

from __future__ import annotations

import ray
from verl.plugin.platform import get_platform
from verl.utils.device import get_resource_name
from verl.workers.rollout.replica import RolloutReplica

from verl_ext.rollout.hf_server import HFRolloutServer

SERVER_NAME_PREFIX = "verl_ext_hf_server_"


def server_actor_name(replica_rank: int, kind: str = "", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server; the in-worker adapter finds its server by this name."""
    return f"{SERVER_NAME_PREFIX}{kind}{replica_rank}{name_suffix}"


class HFReplica(RolloutReplica):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.world_size != 1:
            raise ValueError(
                "hf rollout runs one process per replica: set actor_rollout_ref.rollout.tensor_model_parallel_size=1, "
                f"data_parallel_size=1 and pipeline_model_parallel_size=1 (got world size {self.world_size})."
            )

    async def launch_servers(self):
        kind = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
        options: dict = {"name": server_actor_name(self.replica_rank, kind, self.name_suffix)}
        options["max_concurrency"] = self.max_concurrency
        options["num_cpus"] = 1
        if get_platform().device_name != "cpu" and self.workers:
            # Share the trainer rank's accelerator, as verl's vLLM server does.
            node_id, device = await self.workers[0].__ray_call__.remote(
                lambda w: (
                    ray.get_runtime_context().get_node_id(),
                    ray.get_runtime_context().get_accelerator_ids()[get_resource_name()][0],
                )
            )
            env = {var: "1" for var in get_platform().ray_noset_envvars()}
            env[get_platform().visible_devices_envvar()] = str(device)
            options["runtime_env"] = {"env_vars": env}
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(HFRolloutServer).options(**options).remote(self.config, self.model_config, self.replica_rank)
        await server.is_asleep.remote()  # surfaces a failed model load here, not at the first request
        self.servers = [server]
        self._server_handle = server
        # The router keys servers by address; no HTTP endpoint exists, the handle is called directly.
        self._server_address = f"ray://{options['name']}"

    async def sleep(self):
        await self.servers[0].wait_for_requests_to_drain.remote()
        await self.servers[0].sleep.remote()
