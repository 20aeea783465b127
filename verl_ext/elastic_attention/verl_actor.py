"""Elastic Attention in verl's engine-based actor and reference model, selected by configuration alone.

The switch is ``actor_rollout_ref.model.override_config``, which verl applies to the Hugging Face config of every
model it builds from ``actor_rollout_ref.model`` (actor and reference alike): the ``elastic_*`` keys of
``override_keys.py``, read by ``override_keys.settings_from_hf_config``.

After verl builds the module (``_verl_compat`` hooks ``FSDPEngineWithLMHead._build_module``), ``prepare_module``
adds the routers, loads the adapter and freezes them unless trainable. Before each micro-batch's forward the prompt
length of every sequence is handed to the routers (``prompt_lengths``), so the actor routes on the prompt alone,
exactly as the rollout did at prefill, and recomputes the rollout's log-probs.
"""

from __future__ import annotations

from typing import Optional

import torch

from verl_ext.elastic_attention.override_keys import ActorElasticSettings, settings_from_hf_config
from verl_ext.elastic_attention.router_names import is_router
from verl_ext.elastic_attention.state import elastic_layers, set_prompt_lengths


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
