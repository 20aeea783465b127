"""``Re2Config``: every Re² knob, validated at construction (the ``re2:`` block of a trainer config)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from verl_ext.re2.prefixes import PrefixConfig
from verl_ext.re2.redo import DEFAULT_REDO_PHRASE, official_substring, redo_rule

REDO_RULES = ("anywhere", "strict")  # for training; evaluation also knows "eval" (verl_ext.re2.redo)


@dataclasses.dataclass(frozen=True)
class OverlongConfig:
    """DAPO soft overlong punishment on continuation length; ``scale`` 0.5 is the official Re² halving."""

    enable: bool = False
    buffer_length: int = 2048
    penalty_factor: float = 1.0
    scale: float = 0.5

    def __post_init__(self):
        if self.buffer_length <= 0:
            raise ValueError(f"re2.overlong.buffer_length={self.buffer_length} must be > 0 (paper: 2048).")
        if self.scale < 0 or self.penalty_factor < 0:
            raise ValueError("re2.overlong.scale and re2.overlong.penalty_factor must be >= 0.")


@dataclasses.dataclass(frozen=True)
class Re2Config:
    """Paper defaults: m=8 continuations per prefix, R=5, rho ~ U[0, 0.8], no forced empty prefix.

    ``n`` (prefixes per question) is verl's ``actor_rollout_ref.rollout.n``.
    """

    continuations_per_prefix: int = 8
    max_redo_rounds: int = 5
    redo_phrase: str = DEFAULT_REDO_PHRASE
    redo_rule: str = "anywhere"
    stop_at_redo: bool = True
    rho_min: float = 0.0
    rho_max: float = 0.8
    p_empty: float = 0.0
    filter_degenerate_groups: bool = True
    overlong: OverlongConfig = OverlongConfig()
    seed: int = 0

    def __post_init__(self):
        if self.continuations_per_prefix < 2:
            raise ValueError(
                f"re2.continuations_per_prefix={self.continuations_per_prefix}: GRPO within a prefix group needs "
                ">= 2 continuations (paper: 8)."
            )
        if self.max_redo_rounds < 1:
            raise ValueError(f"re2.max_redo_rounds={self.max_redo_rounds} must be >= 1 (paper: R=5).")
        if self.redo_rule not in REDO_RULES:
            raise ValueError(f"re2.redo_rule={self.redo_rule!r} must be one of {REDO_RULES}.")
        PrefixConfig(self.rho_min, self.rho_max, self.p_empty)  # validates the ranges

    def redo_check(self):
        """``text -> bool`` under this config's phrase and rule."""
        return redo_rule(self.redo_phrase, self.redo_rule)

    @property
    def prefix(self) -> PrefixConfig:
        return PrefixConfig(self.rho_min, self.rho_max, self.p_empty)

    @property
    def stop_string(self) -> str:
        # Without "It'": apostrophe variants still stop (the official trainer matches "s better to redo the question").
        return official_substring(self.redo_phrase)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "Re2Config":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"re2 config has unknown keys {unknown}; known: {sorted(known)}.")
        if "overlong" in values and not isinstance(values["overlong"], OverlongConfig):
            overlong = dict(values["overlong"] or {})
            known_overlong = {f.name for f in dataclasses.fields(OverlongConfig)}
            if set(overlong) - known_overlong:
                raise ValueError(f"re2.overlong has unknown keys {sorted(set(overlong) - known_overlong)}.")
            values["overlong"] = OverlongConfig(**overlong)
        return cls(**values)


def check_trainer_config(config) -> None:
    """Driver-side: the ``re2:`` block of a trainer config builds a valid Re2Config (before Ray starts)."""
    from omegaconf import OmegaConf

    from verl_ext.config_checks import ConfigError, get, nearest

    block = get(config, "re2")
    if block is None:
        return
    values = OmegaConf.to_container(block, resolve=True) if OmegaConf.is_config(block) else dict(block)
    known = [f.name for f in dataclasses.fields(Re2Config)]
    for key in values:
        if key not in known:
            raise ConfigError(f"re2.{key}: unknown Re² key{nearest(key, known)}. Known: {sorted(known)}.")
    try:
        Re2Config.from_mapping(values)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from err
