"""The vLLM entry point of Elastic Attention (``vllm.general_plugins``), and how a user selects an elastic model.

With vLLM installed, ``register`` adds ``ElasticQwen2ForCausalLM``, ``ElasticQwen3ForCausalLM`` and
``ElasticLlamaForCausalLM`` to vLLM's model registry by name (lazily: ``vllm_models.py`` imports vLLM only when vLLM
loads the class); without it, it does nothing.

- ``ARCHITECTURES`` / ``elastic_architecture``: the architecture name an elastic variant registers under;
- ``hf_overrides``: the vLLM ``hf_overrides`` that select it and carry the settings, for
  ``actor_rollout_ref.rollout.engine_kwargs.vllm``.

The model classes import nothing from here: their vLLM-free helpers are ``vllm_routing.py``, the settings they read
back ``override_keys.py``.
"""

from __future__ import annotations

import logging
from typing import Optional

from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.vllm_routing import CHUNKED_PREFILL_POLICIES

ARCHITECTURES = {"Qwen2ForCausalLM": "ElasticQwen2ForCausalLM", "Qwen3ForCausalLM": "ElasticQwen3ForCausalLM",
                 "LlamaForCausalLM": "ElasticLlamaForCausalLM"}
logger = logging.getLogger(__name__)


def elastic_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Elastic Attention has vLLM variants of {sorted(ARCHITECTURES)}; this checkpoint is "
                         f"{architecture!r}.")
    return ARCHITECTURES[architecture]


def hf_overrides(hf_config, adapter: Optional[str] = None, chunked_prefill: str = "disable", **attention) -> dict:
    """vLLM ``hf_overrides`` selecting the elastic variant of ``hf_config``'s architecture, carrying the settings in
    the same flat ``elastic_*`` keys the actor reads (``override_keys.settings_from_hf_config``)."""
    config = ElasticAttentionConfig.from_options(attention, "hf_overrides")  # validate now, not inside the engine
    if chunked_prefill not in CHUNKED_PREFILL_POLICIES:
        raise ValueError(f"chunked_prefill={chunked_prefill!r}; known: {CHUNKED_PREFILL_POLICIES}.")
    archs = list(getattr(hf_config, "architectures", None) or [])
    if len(archs) != 1:
        raise ValueError(f"expected one architecture in the model config, found {archs}.")
    overrides = {"architectures": [elastic_architecture(archs[0])], "elastic_attention": True,
                 **{f"elastic_{k}": v for k, v in config.flat_options().items()}}
    if chunked_prefill != "disable":
        overrides["elastic_chunked_prefill"] = chunked_prefill
    if adapter:
        overrides["elastic_adapter"] = str(adapter)
    return overrides


def register() -> None:
    """``vllm.general_plugins`` entry point: registers the elastic architectures with vLLM's model registry (by
    name, so nothing vLLM-specific is imported until vLLM builds one); a no-op without vLLM."""
    try:
        from vllm import ModelRegistry
    except ImportError:
        logger.debug("verl_ext Elastic Attention vLLM plugin: vLLM is not installed; nothing to register.")
        return
    for elastic in ARCHITECTURES.values():
        if elastic not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(elastic, f"verl_ext.elastic_attention.vllm_models:{elastic}")
