"""Every main-job run gets its own folder, and a run never resumes or overwrites another's: the run folder is new
even within the same second, verl's checkpoints and metrics go under it, and a metrics file already there is
refused before verl starts (``--resume RUN_DIR`` is the only way into an old folder)."""

import sys
from pathlib import Path

import pytest

from verl_ext.cpu_smoke import new_run_dir, run_trainer, trainer_command


def test_two_runs_in_the_same_second_get_two_folders(tmp_path):
    first, second = new_run_dir(tmp_path, "re2_cpu_smoke", 0), new_run_dir(tmp_path, "re2_cpu_smoke", 0)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == tmp_path / "re2_cpu_smoke"


def test_checkpoints_and_generations_live_in_the_run_folder(tmp_path):
    run = new_run_dir(tmp_path, "cpu_smoke", 3)
    cmd = trainer_command(Path("model"), Path("train.parquet"), Path("val.parquet"), run, 2, "cpu_smoke", 3)
    assert f"trainer.default_local_dir={run / 'checkpoints'}" in cmd  # a new folder: nothing for verl to resume
    assert f"trainer.validation_data_dir={run / 'generations'}" in cmd


def test_an_old_runs_metrics_are_refused_before_verl_starts(tmp_path):
    run = new_run_dir(tmp_path, "cpu_smoke", 0)
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"step": 1, "data": {"timing_s/step": 1.0}}\n')
    launched = tmp_path / "launched"
    cmd = [sys.executable, "-c", f"open({str(launched)!r}, 'w').write('x')"]
    with pytest.raises(RuntimeError, match="never writes into an old run's folder"):
        run_trainer(run, cmd, steps=2)
    assert not launched.exists() and metrics.read_text().count("\n") == 1
