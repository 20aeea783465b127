"""Hydra config deltas over verl's ``ppo_trainer`` shipped with the package (found via ``config_dir()``)."""

from pathlib import Path


def config_dir() -> str:
    return str(Path(__file__).resolve().parent)
