"""No setting written twice: a (key, value) pair set in two of verl-ext's config files (verl_ext/config and
recipes/*/config) belongs in one shared base both compose, unless it is listed below with the reason a shared file
would not do. A file that sets a key to the value its own defaults already give it is a repeat too.

Composition keeps every config's meaning; ``hydra`` keys are per primary config (hydra reads them from it alone).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*(ROOT / "verl_ext" / "config").glob("*.yaml"), *(ROOT / "recipes").glob("*/config/*.yaml")])

# (key, value) -> why two files each set it. Each reason names the files' different roles.
JUSTIFIED = {
    ("actor_rollout_ref.rollout.name", "vllm"):
        "each paper's GPU recipe picks verl's engine on its own (Re², the judge) beside the elastic vLLM rollout base",
    ("actor_rollout_ref.rollout.name", "hf"):
        "the CPU platform's engine (cpu_base) and the GPU recipe that runs the elastic HF model (grpo_elastic)",
    ("actor_rollout_ref.rollout.n", "4"):
        "answers per question in the main GRPO job, prefixes per question in the Re² miniature",
    ("actor_rollout_ref.rollout.n", "8"): "Re²'s prefixes per question and elastic GRPO's answers per question",
    ("actor_rollout_ref.rollout.calculate_log_probs", "False"):
        "Re² (redo truncation leaves a token with no rollout log-prob) and the judge (trains nothing), each over cpu_base",
    ("actor_rollout_ref.rollout.val_kwargs.do_sample", "True"):
        "each paper's validation sampling: Re²'s recipe, the judge base and the CPU base (verl's default is greedy)",
    ("algorithm.adv_estimator", "grpo"):
        "the CPU base, elastic GRPO and the DAPO baseline each choose it over verl's gae",
    ("algorithm.filter_groups.enable", "True"): "Re²'s degenerate-group refill and DAPO's dynamic sampling",
    ("data.apply_chat_template_kwargs.enable_thinking", "False"): "router training data and the judge's prompts",
    ("data.train_batch_size", "8"): "the PPO CPU base and the SFT router smoke (different trainers)",
    ("trainer.logger", "['console', 'file']"):
        "the run folders of the CPU base, elastic GRPO, the judge and router training (verl's default is wandb)",
    ("trainer.project_name", "elastic_attention"): "elastic GRPO (ppo_trainer) and router training (sft_trainer)",
    ("trainer.v1.trainer_mode", "verl_ext_sync"): "Re²'s validation base and elastic GRPO's base",
    ("trainer.val_before_train", "True"):
        "the judge (validation only) and the Re² CPU run each undo cpu_base's off for their validation metrics",
    ("verl_ext.platform", "cpu"): "the PPO CPU base and the SFT router smoke (different trainers)",
}


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            if key == "defaults" and not prefix:
                continue
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, str(node)


def _pairs(path: Path) -> dict[str, str]:
    data = yaml.safe_load(path.read_text()) or {}
    return {key: value for key, value in _leaves(data) if not key.startswith("hydra.")}


def test_no_pair_is_set_in_two_files_without_a_reason():
    where: dict[tuple[str, str], list[str]] = {}
    for path in FILES:
        for pair in _pairs(path).items():
            where.setdefault(pair, []).append(str(path.relative_to(ROOT)))
    repeats = {pair: files for pair, files in where.items() if len(files) > 1 and pair not in JUSTIFIED}
    assert not repeats, "set in two files; move it to a base both compose, or justify it here:\n" + "\n".join(
        f"  {key}={value}: {files}" for (key, value), files in sorted(repeats.items()))


def test_every_justified_pair_is_still_repeated():
    where: dict[tuple[str, str], int] = {}
    for path in FILES:
        for pair in _pairs(path).items():
            where[pair] = where.get(pair, 0) + 1
    stale = [pair for pair in JUSTIFIED if where.get(pair, 0) < 2]
    assert not stale, f"no longer repeated, drop from JUSTIFIED: {stale}"


def _without_own_body(path: Path, tmp: Path) -> Path | None:
    """A copy of ``path`` holding only its defaults list and hydra block: what the file's own keys override."""
    data = yaml.safe_load(path.read_text()) or {}
    if "defaults" not in data:
        return None
    bare = {key: data[key] for key in ("hydra", "defaults") if key in data}
    target = tmp / path.name
    target.write_text(yaml.safe_dump(bare))
    return target


def test_no_file_repeats_what_its_defaults_already_give(tmp_path):
    """Each primary config with a defaults list (a recipe or a CPU run), composed without its own keys: none of its
    keys may already hold the value the file writes."""
    redundant = []
    for path in FILES:
        data = yaml.safe_load(path.read_text()) or {}
        if "hydra" not in data or "defaults" not in data:  # a primary config (its own search path)
            continue
        folder = tmp_path / path.parent.parent.name
        folder.mkdir(exist_ok=True)
        for sibling in path.parent.glob("*.yaml"):  # the defaults may name the file's neighbours
            if not (folder / sibling.name).exists():
                (folder / sibling.name).write_text(sibling.read_text())
        _without_own_body(path, folder)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            composed = compose(config_name=path.stem)
        (folder / path.name).write_text(path.read_text())  # restore for the next primary of this folder
        for key, value in _pairs(path).items():
            if key.startswith("verl_ext.") or "${" in value:
                continue
            inherited = OmegaConf.select(composed, key, default="<unset>", throw_on_missing=False)
            if isinstance(inherited, (list, tuple)) or OmegaConf.is_list(inherited):
                inherited = str(list(OmegaConf.to_container(inherited)) if OmegaConf.is_list(inherited)
                                else list(inherited))
            if str(inherited) == value:
                redundant.append(f"{path.relative_to(ROOT)}: {key}={value}")
    assert not redundant, "already the value the file's defaults give it:\n  " + "\n  ".join(redundant)
