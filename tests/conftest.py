import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run through the interpreter, chosen before any @triton.jit runs (importing torch
# runs none); with one, they compile.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # verl-ext's CPU platform is never auto-detected: the tests (and their Ray workers) ask for it, as a user does.
    os.environ.setdefault("VERL_PLATFORM", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight tiny Qwen2 with its tokenizer (no warm start)."""
    from verl_ext.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One model cache for every test that runs the CPU main job (the warm start is built once per session).
    ``VERL_EXT_TEST_CACHE`` names a folder shared by several test runs (CI's lanes): models are keyed by their
    recipe and written atomically, so concurrent runs build or reuse the same ones."""
    shared = os.environ.get("VERL_EXT_TEST_CACHE")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return tmp_path_factory.mktemp("smoke_cache")


@pytest.fixture(scope="session")
def warm_model_dir(smoke_cache):
    """The main job's tiny Qwen2 after its supervised warm start on the arithmetic task."""
    from verl_ext.cpu_smoke import prepare_model

    return prepare_model(smoke_cache)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session: starting Ray costs seconds on 2 cores."""
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _stop_runs_left_running():
    """A run a test started and left alive (a failed assertion, a timeout) is stopped with its processes before the
    next test starts, so one failure does not load the machine under the rest."""
    yield
    from verl_ext.testing.watched_run import WatchedRun

    stopped = WatchedRun.stop_all()
    if stopped:
        print(f"\nstopped runs left running by the test: {stopped}")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
