"""One redo specification, read by everything that decides a redo: change ``re2.redo_phrase`` in the trainer config
and the rollout's stop strings, the detector that cuts responses, the training reward, the validation reward (through
verl's own loader of the configured reward function) and the evaluation command all follow it."""

import asyncio
import json
import random

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl_ext.config import config_dir
from verl_ext.re2.config import Re2Config
from verl_ext.re2.question_rollout import rollout_question
from verl_ext.re2.redo import RedoDetector
from verl_ext.scoring.math_grader import MathGrader

NEW = "We should start over."
OLD = "It's better to redo the question."


def _config(tmp_path, *overrides):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(config_name="re2_cpu_smoke", overrides=[f"actor_rollout_ref.model.path={model}", *overrides])


def test_a_new_phrase_reaches_all_five_readers(tmp_path, tokenizer):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from verl_ext.re2.agent_loop import re2_config_from
    from verl_ext.re2.eval import main as eval_main

    config = _config(tmp_path, f"re2.redo_phrase='{NEW}'")
    re2 = re2_config_from(config)  # what the Re² agent-loop worker builds from the trainer config
    # 1. the rollout's stop strings
    assert re2.stop_strings == ["We should start over"]
    # 2. the detector that cuts a response after the phrase
    detector = RedoDetector(tokenizer, re2.redo_spec)
    ids = tokenizer.encode(f"2 + 2 = 5. {NEW} Then 4", add_special_tokens=False)
    cut = detector.truncate(ids, tokenizer.eos_token_id)
    assert tokenizer.decode(cut, skip_special_tokens=True) == f"2 + 2 = 5. {NEW}"
    assert detector.find(tokenizer.encode(f"x. {OLD}", add_special_tokens=False)) is None

    # 3. the training reward: a continuation saying the new phrase is a redo, the old phrase is not
    calls = []

    async def generate(prompt_ids, max_tokens):  # 2 full responses, then every continuation says the new phrase
        calls.append(prompt_ids)
        text = "so 2 + 2 = 5" if len(calls) <= 2 else f"5? {NEW}"
        return tokenizer.encode(text, add_special_tokens=False), None, {}

    grader = MathGrader(timeout_s=5)
    try:
        result = asyncio.run(rollout_question("q", tokenizer.encode("Compute 2+2.", add_special_tokens=False), "4", 2,
                                              Re2Config.from_mapping(OmegaConf.to_container(config.re2)), generate,
                                              grader.grade, detector, tokenizer.eos_token_id, 32, random.Random(0)))
    finally:
        grader.close()
    assert {c.outcome for c in result.continuations} == {"redo"}
    # 4. the validation reward, loaded by verl with the config's reward_kwargs
    score = get_custom_reward_fn(config)
    assert score("src", f"2 + 2 = 5. {NEW}", "4")["redo"] == 1.0
    assert score("src", f"2 + 2 = 5. {OLD}", "4")["redo"] == 0.0
    # 5. the evaluation command, pointed at the run's config
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(config))
    lines = [{"input": "q", "output": f"x. {NEW}", "gts": "4"}, {"input": "q", "output": f"x. {OLD}", "gts": "4"}]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert eval_main(["avg", str(tmp_path / "gen.jsonl"), "--config", str(tmp_path / "config.yaml"), "--redo-rule",
                      "anywhere", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "avg.json").read_text())["redo_rate"] == 0.5


def test_the_defaults_everywhere_without_a_phrase(tmp_path):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = _config(tmp_path)
    assert get_custom_reward_fn(config)("src", f"x. {OLD}", "4")["redo"] == 1.0
