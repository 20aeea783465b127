"""The ``elastic_*`` keys of a Hugging Face config: how verl's ``actor_rollout_ref.model.override_config`` (actor,
reference and ``hf`` rollout) and vLLM's ``hf_overrides`` (``vllm_plugin.hf_overrides``) switch Elastic Attention on
and carry its settings, read back here by every side (``verl_actor``, ``rollout_hook``, ``vllm_models``), and the
driver's checks of them. Flat keys, because verl and vLLM set each one as an attribute of the HF config:

    elastic_attention: true            # turn it on
    elastic_adapter: /path/routers.safetensors   # trained routers (this project's or the official layout)
    elastic_trainable: false           # true: the routers train with the policy (straight-through, no noise)
    elastic_chunked_prefill: disable   # the vLLM rollout only (vllm_routing.check_chunked_prefill)
    elastic_<option>: ...              # any ElasticAttentionConfig option in its flat form, e.g. elastic_pattern,
                                       # elastic_sink, elastic_window, elastic_decode, elastic_xattention_threshold

A leaf of the model code: it imports the config alone, so the driver checks without transformers or vLLM.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from verl_ext.elastic_attention.config import LEGACY_OPTIONS, ElasticAttentionConfig

SWITCH = "elastic_attention"
PREFIX = "elastic_"
# elastic_chunked_prefill is read by the vLLM rollout only (vllm_routing.check_chunked_prefill).
RESERVED = {SWITCH, "elastic_adapter", "elastic_trainable", "elastic_chunked_prefill"}


@dataclasses.dataclass(frozen=True)
class ActorElasticSettings:
    """What an HF config's ``elastic_*`` keys carry (the actor's, and the vLLM model's read the same way)."""

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
        check_rollout_matches_actor(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err
    if settings is not None and get(config, "actor_rollout_ref.rollout.name") == "vllm":
        import logging

        logging.getLogger(__name__).warning(
            "elastic attention with the vLLM rollout: elastic/rollout_msr is not logged (vLLM outputs carry no "
            "per-response routing; its workers keep totals: verl_ext.elastic_attention.vllm_models.routing_report).")


def check_rollout_matches_actor(config) -> None:
    """With ``rollout.name=vllm``, the elastic settings vLLM receives (``rollout.engine_kwargs.vllm.hf_overrides``)
    must be the actor's (``model.override_config``): the actor recomputes the rollout's log-probs, and a rollout
    routed differently (or not at all) would make every update off-policy without a sign. ``config`` is the
    trainer's ``actor_rollout_ref``-holding config (OmegaConf or dicts)."""
    from types import SimpleNamespace

    arr = config["actor_rollout_ref"]
    if arr["rollout"]["name"] != "vllm":
        return
    actor = settings_from_hf_config(SimpleNamespace(**dict(arr["model"].get("override_config") or {})))
    vllm_kwargs = (arr["rollout"].get("engine_kwargs") or {}).get("vllm") or {}
    overrides = dict(vllm_kwargs.get("hf_overrides") or {})
    where = "actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides"
    rollout = settings_from_hf_config(SimpleNamespace(**overrides), source=where)
    if actor is None and rollout is None:
        return
    if actor is None or rollout is None:
        on, off = ("the actor", "the vLLM rollout") if rollout is None else ("the vLLM rollout", "the actor")
        raise ValueError(f"elastic attention is on for {on} but off for {off}; set elastic_attention (and the "
                         f"architecture) in {where} as recipes/elastic_attention/config/grpo_elastic_vllm.yaml does, "
                         "or turn it off in actor_rollout_ref.model.override_config.")
    differ = {f"elastic_{f.name}": (getattr(actor.attention, f.name), getattr(rollout.attention, f.name))
              for f in dataclasses.fields(actor.attention)
              # the backend only picks which implementation computes the same attention
              if getattr(actor.attention, f.name) != getattr(rollout.attention, f.name) and f.name != "backend"}
    if actor.adapter != rollout.adapter:
        differ["elastic_adapter"] = (actor.adapter, rollout.adapter)
    if differ:
        raise ValueError("the vLLM rollout's elastic settings differ from the actor's, so the actor would not "
                         "recompute the rollout's log-probs: " + ", ".join(
                             f"{k} actor={a!r} rollout={r!r}" for k, (a, r) in differ.items()) +
                         f". Set the same values in {where} (or interpolate them from override_config).")
