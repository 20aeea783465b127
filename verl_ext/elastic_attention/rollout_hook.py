"""Elastic Attention as a model hook of the ``hf`` rollout (``verl_ext.rollout.model_hooks``; registered by
``verl_ext.plugin``): the rollout server loads the model, this hook adds the routers, and each response reports
its prefill's Omega_MSR in ``extra_fields["elastic_msr"]``.

Two ways to switch it on, one at a time: ``actor_rollout_ref.model.override_config.elastic_attention`` (actor,
reference and rollout alike; the usual one) or ``actor_rollout_ref.rollout.engine_kwargs.hf.elastic`` (rollout
only: ElasticAttentionConfig options and an optional ``adapter``).
"""

from __future__ import annotations

from typing import Optional

from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.router_names import is_router
from verl_ext.rollout.model_hooks import ModelHook

ENGINE_KEY = "elastic"
SOURCE = "actor_rollout_ref.rollout.engine_kwargs.hf.elastic"


def prepare(model, hf_config, options: Optional[dict]) -> Optional[ElasticAttentionConfig]:
    """Add the routers when either switch is on; None (hook inactive) otherwise."""
    from verl_ext.elastic_attention.override_keys import settings_from_hf_config

    from_model = settings_from_hf_config(hf_config)
    if options is not None and from_model is not None:
        raise ValueError("Elastic Attention is configured twice: actor_rollout_ref.model.override_config."
                         f"elastic_attention and {SOURCE}; keep one.")
    if options is None and from_model is None:
        return None
    if options is not None:
        options = dict(options)
        adapter = options.pop("adapter", None)
        config = ElasticAttentionConfig.from_options(options, SOURCE)
    else:
        config, adapter = from_model.attention, from_model.adapter
    from verl_ext.elastic_attention.hf import enable_elastic_attention

    enable_elastic_attention(model, config)
    if adapter:
        from verl_ext.elastic_attention.adapter import load_router_adapter

        load_router_adapter(model, adapter)
    return config


def extra_fields(model, config: ElasticAttentionConfig, rows: int) -> list[dict]:
    """Each row's Omega_MSR from the batch's prefill decisions (B, L, H_kv)."""
    from verl_ext.elastic_attention.metrics import msr
    from verl_ext.elastic_attention.state import elastic_decisions

    values = msr(elastic_decisions(model)).tolist()
    if len(values) != rows:
        raise RuntimeError(f"elastic rollout hook: {len(values)} routed rows for a batch of {rows}.")
    return [{"elastic_msr": v} for v in values]


HOOK = ModelHook(name="elastic_attention", prepare=prepare, engine_key=ENGINE_KEY, extra_fields=extra_fields,
                 # the routers live on the rollout side unless the actor trains them and sends them
                 skip_in_weight_sync=is_router)
