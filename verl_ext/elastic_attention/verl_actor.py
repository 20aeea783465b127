"""Elastic Attention in verl's engine-based actor and reference model, selected by configuration alone.

The switch is ``actor_rollout_ref.model.override_config``, which verl applies to the Hugging Face config of every
model it builds from ``actor_rollout_ref.model`` (actor and reference alike). Flat keys, because verl sets override
values as attributes of the HF config:

    elastic_attention: true            # turn it on
    elastic_adapter: /path/routers.safetensors   # trained routers (this project's or the official layout)
    elastic_trainable: false           # true: the routers train with the policy (straight-through, no noise)
    elastic_<option>: ...              # any ElasticAttentionConfig option in its flat form, e.g. elastic_pattern,
                                       # elastic_sink, elastic_window, elastic_decode, elastic_xattention_threshold

After verl builds the module (``_verl_compat`` hooks ``FSDPEngineWithLMHead._build_module``), ``prepare_module``
adds the routers, loads the adapter and freezes them unless trainable. Before each micro-batch's forward the prompt
length of every sequence is handed to the routers (``prompt_lengths``), so the actor routes on the prompt alone,
exactly as the rollout did at prefill, and recomputes the rollout's log-probs.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from verl_ext.elastic_attention.config import LEGACY_OPTIONS, ElasticAttentionConfig
from verl_ext.elastic_attention.router_names import is_router
from verl_ext.elastic_attention.state import elastic_layers, set_prompt_lengths

SWITCH = "elastic_attention"
PREFIX = "elastic_"
# elastic_chunked_prefill is read by the vLLM rollout only (vllm_plugin.check_chunked_prefill).
RESERVED = {SWITCH, "elastic_adapter", "elastic_trainable", "elastic_chunked_prefill"}


@dataclasses.dataclass(frozen=True)
class ActorElasticSettings:
    attention: ElasticAttentionConfig
    adapter: Optional[str] = None
    trainable: bool = False


def settings_from_hf_config(hf_config, source: str = "actor_rollout_ref.model.override_config"
                            ) -> Optional[ActorElasticSettings]:
    """The elastic settings carried by an HF config (None when ``elastic_attention`` is not set true); ``source``
    names where the keys were set, for error messages."""
    if not getattr(hf_config, SWITCH, False):
        return None
    known = set(ElasticAttentionConfig.flat_keys()) | set(LEGACY_OPTIONS)
    options = {}
    for key, value in vars(hf_config).items():
        if not key.startswith(PREFIX) or key in RESERVED:
            continue
        name = key[len(PREFIX):]
        if name not in known:
            raise ValueError(f"{source}.{key}: unknown Elastic Attention option; known: "
                             f"{[PREFIX + f for f in ElasticAttentionConfig.flat_keys()]} and {sorted(RESERVED)}.")
        options[name] = value
    attention = ElasticAttentionConfig.from_options(options, source)
    trainable = bool(getattr(hf_config, "elastic_trainable", False))
    if trainable and attention.decode == "dense":
        raise ValueError(f"{source}.elastic_trainable=true needs elastic_decode=sparse_kv: with the paper's "
                         "dense decode the response tokens of sparse heads attend densely, which the training pair "
                         "(one mode per head for every token) does not reproduce.")
    return ActorElasticSettings(attention, getattr(hf_config, "elastic_adapter", None), trainable)


def known_override_keys() -> list[str]:
    return sorted({PREFIX + f for f in (*ElasticAttentionConfig.flat_keys(), *LEGACY_OPTIONS)} | RESERVED)


def check_override_config(config) -> None:
    """Driver-side: every ``elastic*`` key of ``actor_rollout_ref.model.override_config`` is a known one (a typo of
    the switch would otherwise run without Elastic Attention), and with the switch on the settings are valid."""
    from types import SimpleNamespace

    from verl_ext.config_checks import ConfigError, get, nearest

    source = "actor_rollout_ref.model.override_config"
    override = get(config, source) or {}
    known = known_override_keys()
    for key in override.keys():
        if str(key).startswith("elastic") and key not in known or (key not in known and nearest(key, [SWITCH])):
            raise ConfigError(f"{source}.{key}: unknown Elastic Attention key{nearest(key, known)}. Known: {known}.")
    try:
        settings = settings_from_hf_config(SimpleNamespace(**{str(k): v for k, v in override.items()}), source)
        from verl_ext.elastic_attention.vllm_plugin import check_rollout_matches_actor

        check_rollout_matches_actor(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err
    if settings is not None and get(config, "actor_rollout_ref.rollout.name") == "vllm":
        import logging

        logging.getLogger(__name__).warning(
            "elastic attention with the vLLM rollout: elastic/rollout_msr is not logged (vLLM outputs carry no "
            "per-response routing; its workers keep totals: verl_ext.elastic_attention.vllm_models.routing_report).")


def prepare_module(module) -> Optional[ActorElasticSettings]:
    """Add routers to a freshly built verl actor / reference module when its config asks for them."""
    settings = settings_from_hf_config(module.config)
    if settings is None:
        return None
    from verl_ext.elastic_attention.hf import enable_elastic_attention  # transformers: only when switched on

    enable_elastic_attention(module, settings.attention)
    if settings.adapter and next(module.parameters()).device.type != "meta":
        # (ranks that build on the meta device receive the routers with the rest of rank 0's weights)
        from verl_ext.elastic_attention.adapter import load_router_adapter

        load_router_adapter(module, settings.adapter)
    for name, param in module.named_parameters():
        if is_router(name):
            param.requires_grad_(settings.trainable)
    for attn in elastic_layers(module):
        # Trainable routers: hard argmax decisions in the forward (as at rollout), straight-through gradient.
        attn.elastic.tau = 1.0 if settings.trainable else None
        attn.elastic.noise = False
    module.elastic_actor_settings = settings
    return settings


def prompt_lengths(micro_batch) -> torch.Tensor:
    """(B,) prompt tokens per sequence of a verl micro-batch: sequence length minus response length."""
    input_ids = micro_batch["input_ids"]
    seq_lens = input_ids.offsets().diff() if input_ids.is_nested else micro_batch["attention_mask"].sum(-1)
    if "response_mask" not in micro_batch.keys():
        raise ValueError("elastic attention in the actor needs response_mask in the batch to find each prompt.")
    response = micro_batch["response_mask"]
    resp_lens = response.offsets().diff() if response.is_nested else (response.shape[-1] - _trailing_pad(response))
    return (seq_lens.cpu() - resp_lens.cpu()).long()


def _trailing_pad(response_mask: torch.Tensor) -> torch.Tensor:
    """Padding after each response (right-padded response block)."""
    valid = response_mask.bool()
    last = torch.where(valid.any(-1), valid.shape[-1] - 1 - valid.flip(-1).int().argmax(-1), torch.zeros_like(
        valid[:, 0], dtype=torch.long) - 1)
    return valid.shape[-1] - 1 - last


def before_forward(module, micro_batch) -> None:
    """Hand the routers this micro-batch's prompt lengths (no-op for models without Elastic Attention)."""
    if getattr(module, "elastic_actor_settings", None) is None:
        return
    set_prompt_lengths(module, prompt_lengths(micro_batch))
