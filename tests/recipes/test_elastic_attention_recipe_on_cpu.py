"""The router-training recipe config composes over verl's sft_trainer_engine with the paper's settings, and every
run script forwards to the shared launcher."""

import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl_ext.elastic_attention.verl_training import RouterTrainingConfig

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "elastic_attention"


def test_router_training_config_is_the_paper_setup():
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        cfg = compose(config_name="router_training", overrides=["model.path=/models/x", "data.train_files=t.parquet"])
    settings = RouterTrainingConfig.from_config(OmegaConf.to_container(cfg.elastic, resolve=True))
    assert dict(zip(settings.tasks, settings.targets)) == {"single_qa": 0.7, "multihop_qa": 0.7,
                                                           "summarization": 1.0, "code": 1.0, "icl": 1.0}
    attention = settings.attention_config()
    assert (attention.sink, attention.window, attention.pool_budget) == (128, 2048, 100)
    assert (cfg.optim.lr, settings.lambda_lr, tuple(cfg.optim.betas), cfg.optim.weight_decay) == (5e-4, 1e-3,
                                                                                                  (0.9, 0.95), 0.1)
    assert (cfg.optim.lr_scheduler_type, cfg.optim.lr_warmup_steps_ratio) == ("cosine", 0.2)
    assert (cfg.data.train_batch_size, cfg.trainer.total_training_steps, cfg.data.max_token_len_per_gpu) == (
        48, 300, 65536)
    assert cfg.engine.strategy == "fsdp2" and cfg.model.use_remove_padding
    assert list(cfg.data.elastic_tasks) == list(settings.tasks)


def test_run_scripts_print_usage_without_arguments():
    for script in ("run_router_training.sh", "run_qwen3_4b.sh", "run_qwen3_8b.sh", "run_llama31_8b.sh"):
        run = subprocess.run(["bash", str(RECIPE / script)], capture_output=True, text=True)
        assert run.returncode == 2 and "MODEL_DIR TRAIN_PARQUET OUT_DIR" in run.stdout, script
