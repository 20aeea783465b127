"""Router-training pieces that need no trainer: settings validation, the dataset's extra tensors and bad rows, the
released-data conversion, the penalty weighting, and the engine's registration under its own model type."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from verl_ext.elastic_attention.router_engine import RouterTrainingConfig
from verl_ext.elastic_attention.sft_data import ElasticRouterSFTDataset, official_row_to_chat
from verl_ext.testing.router_data import write_router_training_data
from verl_ext.testing.tiny_model import build_tiny_model


def test_settings_validate_and_schedule():
    settings = RouterTrainingConfig.from_config({"tasks": ["a", "b"], "targets": [0.7, 1.0],
                                                 "attention": {"sink": 4, "window": 16}})
    assert settings.attention_config().window == 16
    assert settings.tau(0, 100) == pytest.approx(1.5) and settings.tau(100, 100) >= 1.0
    cosine = RouterTrainingConfig(tau_schedule="cosine")
    assert cosine.tau(60, 100) == pytest.approx(1.0) and cosine.tau(0, 100) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="one target per task"):
        RouterTrainingConfig(tasks=("a",), targets=(0.7, 1.0))
    with pytest.raises(ValueError, match="unknown elastic"):
        RouterTrainingConfig.from_config({"tau": 2})
    with pytest.raises(ValueError, match="lm_loss"):
        RouterTrainingConfig(lm_loss="prompt")
    with pytest.raises(ValueError, match="pattern"):
        RouterTrainingConfig(attention={"pattern": "moba"})
    with pytest.warns(DeprecationWarning, match="sparse_mode"):
        assert RouterTrainingConfig(attention={"sparse_mode": "xattention"}).attention_config().pattern == "fa-xa"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tok"))


def _dataset(path, tokenizer_dir, **data):
    from transformers import AutoTokenizer

    config = OmegaConf.create({"max_length": 512, "truncation": "right", "pad_mode": "no_padding",
                               "elastic_tasks": ["sensitive", "robust"], "elastic_lm_loss": "all", **data})
    return ElasticRouterSFTDataset(str(path), AutoTokenizer.from_pretrained(tokenizer_dir), config)


def test_dataset_adds_task_ids_and_prompt_mask(tmp_path, tokenizer_dir):
    path = write_router_training_data(tmp_path / "d.parquet", rows=4)
    sample = _dataset(path, tokenizer_dir)[1]
    n = sample["input_ids"].shape[0]
    assert sample["elastic_task_ids"].tolist() == [1] * n  # row 1 is "robust"
    prompt = int(sample["elastic_prompt_mask"].sum())
    assert 0 < prompt < n and sample["elastic_prompt_mask"][:prompt].all()
    assert sample["loss_mask"].all()  # lm_loss=all: every token
    answer_only = _dataset(path, tokenizer_dir, elastic_lm_loss="answer")[1]
    assert int(answer_only["loss_mask"][:prompt].sum()) == 0 and answer_only["loss_mask"][prompt:].any()


def test_dataset_rejects_unknown_tasks_and_missing_column(tmp_path, tokenizer_dir):
    import pandas as pd

    path = write_router_training_data(tmp_path / "d.parquet", rows=4, tasks=("sensitive", "poetry"))
    with pytest.raises(ValueError, match="row 1: task 'poetry' is not in data.elastic_tasks"):
        _dataset(path, tokenizer_dir)
    frame = pd.read_parquet(path).drop(columns=["task"])
    frame.to_parquet(tmp_path / "no_task.parquet")
    with pytest.raises(ValueError, match="needs a 'task' column"):
        _dataset(tmp_path / "no_task.parquet", tokenizer_dir)


def test_official_rows_convert(tmp_path):
    row = official_row_to_chat("CTX", "Q?", "A", "single_qa", is_prefix=True)
    assert row["messages"][0]["content"] == "Q?\n\nCTX" and row["messages"][1]["content"] == "A"
    assert official_row_to_chat("CTX", "Q?", "A", "single_qa", False)["messages"][0]["content"] == "CTX\n\nQ?"
    assert official_row_to_chat("def f():", "", "pass", "code", False)["messages"][0]["content"].startswith(
        "Please complete the code given below.")
    import pandas as pd

    pd.DataFrame([{"context": "c", "question": "q", "answer": "a", "metadata": {"task": "code", "is_prefix": False}},
                  {"context": "c", "question": "q", "answer": None, "metadata": {"task": "code"}}]
                 ).to_json(tmp_path / "raw.jsonl", orient="records", lines=True)
    run = subprocess.run([sys.executable, "-m", "verl_ext.elastic_attention.sft_data", str(tmp_path / "raw.jsonl"),
                          str(tmp_path / "out.parquet")], capture_output=True, text=True)
    assert run.returncode != 0 and "row 1" in run.stderr and "answer" in run.stderr


def test_penalty_weighting_sums_to_the_per_sample_mean():
    """Summed over micro-batches, penalty * (S / local samples) is the mean over the rank's samples."""
    from verl_ext.elastic_attention.router_objective import SparsityLagrangian

    lag = SparsityLagrangian([0.7, 1.0])
    with torch.no_grad():
        lag.lambda1.fill_(0.5)
        lag.lambda2.fill_(0.25)
    omega = torch.tensor([0.5, 0.9, 0.2, 1.0, 0.6])
    tasks = torch.tensor([0, 1, 0, 1, 1])
    whole, _ = lag(omega, tasks)
    split = sum(lag(omega[s], tasks[s])[0] * (len(omega[s]) / 5) for s in (slice(0, 2), slice(2, 5)))
    torch.testing.assert_close(split, whole)


def test_engine_is_registered_under_its_own_model_type():
    from verl.workers.engine.base import EngineRegistry

    import verl_ext.plugin  # noqa: F401

    assert "elastic_language_model" in EngineRegistry._engines
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__ == "FSDPEngineWithLMHead"


def test_seed_is_validated():
    assert RouterTrainingConfig(seed=3).seed == 3
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="elastic.seed"):
            RouterTrainingConfig(seed=bad)


def test_gumbel_noise_follows_the_seeded_generator_not_the_global_one(tmp_path):
    """Router training's noise comes from the generator the engine seeds (seed + rank): the same seed gives the
    same training decisions whatever the process drew from torch's global generator before; another seed differs."""
    from transformers import AutoModelForCausalLM

    from verl_ext.elastic_attention.hf import ElasticAttentionConfig, enable_elastic_attention
    from verl_ext.elastic_attention.state import (elastic_decisions, set_noise_generator, set_prompt_lengths,
                                                  set_router_temperature)
    from verl_ext.testing.tiny_model import TinyModelSpec

    model_dir = build_tiny_model(tmp_path / "m", TinyModelSpec(arch="qwen3", hidden=64, heads=4, kv_heads=2, layers=4))
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = enable_elastic_attention(model, ElasticAttentionConfig(sink=2, window=4, pool_budget=4)).train()
    ids = torch.randint(5, 200, (16, 24), generator=torch.Generator().manual_seed(1))
    set_prompt_lengths(model, torch.full((16,), 12))
    set_router_temperature(model, 1.0)

    def decisions(seed: int, global_draws: int) -> torch.Tensor:
        torch.rand(global_draws)  # what else the process drew before
        set_noise_generator(model, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            model(input_ids=ids)
        return elastic_decisions(model).clone()

    first = decisions(7, 0)
    assert torch.equal(first, decisions(7, 1000))
    assert not torch.equal(first, decisions(8, 0))  # 16 x 4 layers x 2 heads coin flips near 50/50
    set_noise_generator(model, None)  # back to torch's global generator
    assert all(layer.self_attn.elastic.generator is None for layer in model.model.layers)
