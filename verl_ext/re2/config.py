"""``Re2Config``: every Re² knob, validated at construction (the ``re2:`` block of a trainer config)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from verl_ext.re2.prefixes import PrefixConfig
from verl_ext.re2.redo import DEFAULT_REDO_PHRASE, RedoSpec

REDO_RULES = ("anywhere", "strict")  # for training; evaluation also knows "eval" (verl_ext.re2.redo)
UPDATE_STEPS = ("matched", "official")


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
    redo_variants: tuple[str, ...] = ()  # literal markers of the phrase; empty: its official substring (redo.py)
    redo_rule: str = "anywhere"
    update_steps: str = "matched"  # optimizer steps per training step: as GRPO's ("matched") or verl's count
    stop_at_redo: bool = True
    rho_min: float = 0.0
    rho_max: float = 0.8
    p_empty: float = 0.0
    filter_degenerate_groups: bool = True
    overlong: OverlongConfig = OverlongConfig()
    seed: int = 0
    # Every sampled request carries a seed derived from (rollout seed, re2.seed, step, dataset row, call): the draws
    # do not depend on which rollout replica serves a request or when, so a run on one node, on several, and a run
    # resumed from a checkpoint sample the same tokens. Off: the rollout engine seeds (vLLM at scale samples seeded
    # requests one by one, a cost some users will not pay for reproducibility).
    request_seeds: bool = True

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
        if self.update_steps not in UPDATE_STEPS:
            raise ValueError(f"re2.update_steps={self.update_steps!r} must be one of {UPDATE_STEPS} (matched: as "
                             "many optimizer steps per training step as GRPO with the same ppo_mini_batch_size).")
        object.__setattr__(self, "redo_variants", tuple(self.redo_variants or ()))
        self.redo_spec  # validates the phrase and variants
        PrefixConfig(self.rho_min, self.rho_max, self.p_empty)  # validates the ranges

    @property
    def redo_spec(self) -> RedoSpec:
        """The one redo specification every reader uses: stop strings, detector, rewards, evaluation."""
        return RedoSpec(self.redo_phrase, self.redo_variants, self.redo_rule)

    def redo_check(self):
        """``text -> bool`` under this config's phrase, variants and rule."""
        return self.redo_spec.is_redo

    @property
    def prefix(self) -> PrefixConfig:
        return PrefixConfig(self.rho_min, self.rho_max, self.p_empty)

    @property
    def stop_strings(self) -> list[str]:
        """Exactly the texts the detector counts as the phrase: a response stops if and only if it redoes."""
        return self.redo_spec.stop_strings

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


def re2_config_from_file(path: str | Path | None) -> Re2Config:
    """The ``re2`` block of a trainer config file as a Re2Config (the defaults when ``path`` is None): a YAML file,
    or a run folder holding hydra's saved config (``hydra/.hydra/config.yaml`` or ``.hydra/config.yaml``), so the
    evaluation commands score with the phrase, variants and rule the run trained with."""
    if path is None:
        return Re2Config()
    from omegaconf import OmegaConf

    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "hydra" / ".hydra" / "config.yaml", path / ".hydra" / "config.yaml") if p.is_file()]
        if not found:
            raise ValueError(f"{path} holds no hydra config (hydra/.hydra/config.yaml); pass the config file itself.")
        path = found[0]
    config = OmegaConf.load(path)
    block = config.get("re2")
    values = OmegaConf.to_container(block, resolve=True) if block is not None else {}
    try:
        return Re2Config.from_mapping(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


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


ADVANTAGE_ESTIMATORS = ("re2", "re2_rebalanced")


def match_update_steps(config) -> list[str]:
    """Driver-side, after the checks: Re² takes as many optimizer steps per training step as GRPO with the same
    ``actor.ppo_mini_batch_size`` (``re2.update_steps=matched``, the default: the paper claims the same training
    compute). Returns what was changed.

    verl sizes a mini-batch as ``ppo_mini_batch_size x rollout.n`` rows. GRPO has n rows per question, so a step
    takes ``train_batch_size / ppo_mini_batch_size`` optimizer steps; Re² has n x m rows per question (n prefixes,
    m continuations each), so the same setting gives m times as many (fewer after filtering), which the paper recipe
    and the official code run with (``update_steps=official``: about 8 Adam steps per training step against the
    DAPO baseline's 1). Matched multiplies ``ppo_mini_batch_size`` by m, so a mini-batch again holds every row of
    ``ppo_mini_batch_size`` questions; verl refuses a mini-batch larger than ``train_batch_size`` unless batches are
    sized by tokens, so ``use_dynamic_bsz`` is turned on when needed (the loss is the same token mean).
    """
    from omegaconf import OmegaConf, open_dict

    from verl_ext.config_checks import get

    block = get(config, "re2")
    if block is None or get(config, "algorithm.adv_estimator") not in ADVANTAGE_ESTIMATORS:
        return []
    re2 = Re2Config.from_mapping(OmegaConf.to_container(block, resolve=True) if OmegaConf.is_config(block)
                                 else dict(block))
    if re2.update_steps != "matched":
        return []
    actor = config.actor_rollout_ref.actor
    before = int(actor.ppo_mini_batch_size)
    m = re2.continuations_per_prefix
    changes = [f"actor_rollout_ref.actor.ppo_mini_batch_size={before * m} (re2.update_steps=matched: {before} "
               f"questions x {m} continuations per prefix)"]
    with open_dict(config):
        actor.ppo_mini_batch_size = before * m
        if before * m > int(get(config, "data.train_batch_size", before)) and not actor.get("use_dynamic_bsz", False):
            actor.use_dynamic_bsz = True
            changes.append("actor_rollout_ref.actor.use_dynamic_bsz=true (a mini-batch above train_batch_size)")
    return changes


def optimizer_steps_per_training_step(config) -> float:
    """Optimizer steps one training step takes when every question keeps all its rows (verl's count: rows over
    mini-batch rows, times ``ppo_epochs``), for a composed and prepared trainer config."""
    from verl_ext.config_checks import get

    questions = int(get(config, "data.train_batch_size"))
    n = int(get(config, "actor_rollout_ref.rollout.n"))
    m = int(get(config, "re2.continuations_per_prefix", 8)) if get(config, "algorithm.adv_estimator") in \
        ADVANTAGE_ESTIMATORS else 1
    rows, mini_rows = questions * n * m, int(get(config, "actor_rollout_ref.actor.ppo_mini_batch_size")) * n
    epochs = int(get(config, "actor_rollout_ref.actor.ppo_epochs", 1))
    return -(-rows // mini_rows) * epochs
