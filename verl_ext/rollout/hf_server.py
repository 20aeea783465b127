"""The ``hf`` rollout server: a Ray actor that owns a transformers model and serves verl's token-in/token-out calls.

verl's agent loop sends one request per sample (``generate(prompt_ids, sampling_params, request_id)``) and awaits
a ``TokenOutput``. Requests that arrive together are gathered into one batch for ``HFGenerationEngine`` (a short
collection window, then one batched decode run in a thread so the actor keeps accepting calls). Weights arrive from
the trainer in named chunks (``load_weights`` ... ``finish_weight_update``), the same names the actor's
``state_dict`` has. Control calls (sleep, wake_up, abort, resume, kv-cache) follow verl's server contract.

Reproducible sampling: a request without a seed of its own gets one from what it asks for, not from when it
arrives: the rollout seed, the weights' training step, the prompt, and how many requests for the same prompt came
before it since those weights arrived (``request_seed``). verl sends a group's n samples as n requests for one
prompt, so the group draws the same n sequences whatever the order the requests arrive in and whichever other
requests share their batch; a run, or a run resumed from a checkpoint, samples what an uninterrupted run of the same
seed samples (the engine gives every seeded sequence a generator of its own). That holds per replica: with several
(several ranks), verl's server manager sends each request to the replica with the fewest requests in flight, so
which replica counts a prompt's occurrences, and so the seeds, depends on timing; a request that carries its own
``seed`` in its sampling parameters is reproducible everywhere (an agent loop may seed every request). Each
replica counts from its own base (rollout seed + replica rank, as verl seeds its vLLM replicas): two replicas
serving copies of one prompt draw different sequences, not the same one twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any, Optional

import torch

from verl_ext.rollout.hf_engine import HFGenerationEngine
from verl_ext.rollout.model_hooks import engine_keys, model_hooks
from verl_ext.rollout.sampling import SamplingParams, stable_seed

logger = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.005


def request_seed(base: int, weights_step: Optional[int], prompt_ids: list[int], occurrence: int) -> int:
    """A stable 62-bit seed for the ``occurrence``-th request for ``prompt_ids`` under the weights of
    ``weights_step`` (None before the first sync)."""
    step = -1 if weights_step is None else int(weights_step)
    return stable_seed(int(base), step, int(occurrence), ",".join(map(str, prompt_ids)))


@dataclasses.dataclass
class _Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future


def _select_device() -> torch.device:
    from verl.utils.device import get_device_name

    name = get_device_name()
    if name != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class HFRolloutServer:
    """Ray actor body. ``rollout_config``/``model_config`` are verl's ``RolloutConfig``/``HFModelConfig``."""

    def __init__(self, rollout_config, model_config, replica_rank: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig, RolloutConfig

        # Replicas hand over verl's OmegaConf nodes; the dataclasses resolve local paths and generation config.
        if not isinstance(rollout_config, RolloutConfig):
            rollout_config = omega_conf_to_dataclass(rollout_config, dataclass_type=RolloutConfig)
        if not isinstance(model_config, HFModelConfig):
            model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.config = rollout_config
        self.replica_rank = replica_rank
        hf_kwargs = dict((rollout_config.engine_kwargs or {}).get("hf") or {})
        threads = int(hf_kwargs.pop("num_threads", os.cpu_count() or 1))
        hook_options = {key: hf_kwargs.pop(key) for key in engine_keys() if key in hf_kwargs}
        if hf_kwargs:
            raise ValueError(
                f"actor_rollout_ref.rollout.engine_kwargs.hf has unknown keys {sorted(hf_kwargs)}; "
                f"known: {['num_threads', *engine_keys()]}."
            )
        self.device = _select_device()
        if self.device.type == "cpu":
            # Ray pins actors to one thread; generation is the only work running during a synchronous rollout.
            torch.set_num_threads(max(1, threads))
        path = model_config.local_path or model_config.path
        if not os.path.isdir(path):
            raise FileNotFoundError(f"hf rollout: model folder {path!r} does not exist (actor_rollout_ref.model.path).")
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
            str(rollout_config.dtype), torch.float32
        )
        if self.device.type == "cpu" and dtype == torch.float16:
            dtype = torch.float32  # fp16 matmuls are not supported well on CPU
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=model_config.trust_remote_code, attn_implementation="sdpa"
        ).to(self.device)
        self.model.eval()
        # What the registered methods do to the model (model_hooks): each active hook keeps its state.
        self.hooks = []
        for hook in model_hooks():
            state = hook.prepare(self.model, model_config.hf_config, hook_options.get(hook.engine_key))
            if state is not None:
                self.hooks.append((hook, state))
        eos = self._eos_token_ids(model_config)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        self.seed = int(rollout_config.seed or 0)
        self.engine = HFGenerationEngine(self.model, self.tokenizer, eos, pad, seed=self.seed)
        self._occurrences: dict[tuple[int, ...], int] = {}  # requests per prompt since the weights arrived
        self.max_model_len = int(rollout_config.prompt_length + rollout_config.response_length)
        self.response_length = int(rollout_config.response_length)
        self.ignore_eos = bool(getattr(rollout_config, "ignore_eos", False))
        self.global_steps: Optional[int] = None
        self._pending: list[_Request] = []
        self._batcher: Optional[asyncio.Task] = None
        self._paused = False
        self._reject_while_paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._in_flight = 0
        self._asleep = False
        self._incoming: dict[str, torch.Tensor] = {}

    def _generate_batch(self, prompts, params):
        """Generate, then each active hook's per-row extra fields (same thread, so no other batch interleaves)."""
        results = self.engine.generate(prompts, params)
        extras = [{} for _ in prompts]
        for hook, state in self.hooks:
            if hook.extra_fields is not None:
                for row, fields in zip(extras, hook.extra_fields(self.model, state, len(prompts))):
                    row.update(fields)
        return results, extras

    def _eos_token_ids(self, model_config) -> list[int]:
        ids: list[int] = []
        gen = getattr(model_config, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if source is None:
                continue
            ids.extend(source if isinstance(source, (list, tuple)) else [source])
        return sorted(set(int(i) for i in ids))

    # ---------------------------------------------------------------- generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        **kwargs,
    ):
        from verl.workers.rollout.replica import TokenOutput

        if image_data or video_data or kwargs.get("audio_data"):
            raise ValueError("hf rollout generates from text prompts only; this request carries image/video/audio data.")
        prompt_ids = [int(t) for t in prompt_ids]
        default_max = max(1, min(self.response_length, self.max_model_len - len(prompt_ids)))
        request = dict(sampling_params)
        if self.ignore_eos:
            request.setdefault("ignore_eos", True)  # actor_rollout_ref.rollout.ignore_eos, as vLLM applies it
        params = SamplingParams.from_request(request, default_max)
        if params.n != 1:
            raise ValueError(f"sampling_params n={params.n}: a generate() call returns one sequence; send n requests.")
        if params.seed is None and not params.greedy:  # reproducible sampling: see the module doc
            key = tuple(prompt_ids)
            occurrence = self._occurrences[key] = self._occurrences.get(key, -1) + 1
            base = self.seed + self.replica_rank
            params = dataclasses.replace(params, seed=request_seed(base, self.global_steps, prompt_ids, occurrence))
        if self._paused:
            if self._reject_while_paused:
                return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted", extra_fields=self._extra())
            await self._resumed.wait()
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(request_id, prompt_ids, params, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        outcome = await future
        if outcome is None:
            return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted", extra_fields=self._extra())
        generation, fields = outcome
        extra = {**self._extra(), **fields, "finish_reason": generation.finish_reason}
        return TokenOutput(token_ids=generation.token_ids, log_probs=generation.log_probs, stop_reason="completed",
                           extra_fields=extra)

    def _extra(self) -> dict:
        return {"global_steps": self.global_steps}

    async def _run_batches(self) -> None:
        while self._pending:
            await asyncio.sleep(BATCH_WINDOW_S)  # let concurrent requests join the batch
            if self._paused:
                return
            batch, self._pending = self._pending, []
            self._in_flight += len(batch)
            try:
                results, extras = await asyncio.to_thread(
                    self._generate_batch, [r.prompt_ids for r in batch], [r.params for r in batch]
                )
                for request, result, fields in zip(batch, results, extras):
                    if not request.future.done():
                        request.future.set_result((result[0], fields))
            except Exception as exc:  # noqa: BLE001 - every waiting request receives the failure
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
            finally:
                self._in_flight -= len(batch)

    # ---------------------------------------------------------------- weights
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Stage one chunk of an update; nothing changes until ``finish_weight_update``."""
        for name, tensor in named_tensors:
            self._incoming[name] = tensor
        return len(self._incoming)

    async def finish_weight_update(self, global_steps: Optional[int] = None) -> dict:
        """Apply the staged tensors. Every parameter must arrive (tied ones may be absent); unknown names fail."""
        incoming, self._incoming = self._incoming, {}
        state = self.model.state_dict()
        unexpected = sorted(set(incoming) - set(state))
        if unexpected:
            raise KeyError(f"hf rollout: weight update has names the model lacks: {unexpected[:5]} ...")
        tied = self._tied_names()
        # Parameters a hook owns on the rollout side (e.g. routers the actor does not train) may be absent.
        skips = [hook.skip_in_weight_sync for hook, _ in self.hooks if hook.skip_in_weight_sync is not None]
        missing = sorted(n for n in set(state) - set(incoming) - tied if not any(skip(n) for skip in skips))
        if missing:
            raise KeyError(f"hf rollout: weight update is missing {len(missing)} tensors, e.g. {missing[:5]}")
        with torch.no_grad():
            for name, tensor in incoming.items():
                target = state[name]
                if tuple(target.shape) != tuple(tensor.shape):
                    raise ValueError(f"hf rollout: {name} has shape {tuple(tensor.shape)}, model has {tuple(target.shape)}")
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        if global_steps is not None:
            self.global_steps = global_steps
        self._occurrences.clear()  # new weights: every prompt's requests count from the first again
        return {"updated": len(incoming)}

    def _tied_names(self) -> set[str]:
        # Tied parameters appear under several names in state_dict(); one copy suffices.
        seen: dict[int, str] = {}
        tied = set()
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            key = id(tensor)
            if key in seen:
                tied.add(name)
            else:
                seen[key] = name
        return tied

    async def get_weight(self, name: str) -> torch.Tensor:
        return self.model.state_dict()[name].detach().cpu().clone()

    # ---------------------------------------------------------------- control
    async def wake_up(self, tags: Optional[list[str]] = None):
        if self._asleep and self.device.type == "cuda":
            self.model.to(self.device)
        self._asleep = False

    async def sleep(self):
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()
        self._asleep = True

    async def clear_kv_cache(self):
        # The KV cache lives only for the duration of one batched decode.
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> dict:
        self._paused = True
        self._reject_while_paused = reject_request
        self._resumed.clear()
        aborted = [r.request_id for r in self._pending]
        for request in self._pending:
            if not request.future.done():
                request.future.set_result(None)
        self._pending = []
        return {"aborted_count": len(aborted), "request_ids": aborted}

    async def abort_request(self, request_id: str) -> dict:
        for request in list(self._pending):
            if request.request_id == request_id:
                self._pending.remove(request)
                request.future.set_result(None)
                return {"aborted": True}
        return {"aborted": False}

    async def resume_generation(self):
        self._paused = False
        self._reject_while_paused = False
        self._resumed.set()
        if self._pending and (self._batcher is None or self._batcher.done()):
            self._batcher = asyncio.create_task(self._run_batches())

    async def wait_for_requests_to_drain(self):
        while self._pending or self._in_flight:
            await asyncio.sleep(0.01)

    async def set_global_steps(self, global_steps: int):
        if global_steps != self.global_steps:
            self._occurrences.clear()
        self.global_steps = global_steps

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None

    async def is_asleep(self) -> bool:
        return self._asleep
