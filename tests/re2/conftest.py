import pytest
from transformers import AutoTokenizer


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def detector(tokenizer):
    from verl_ext.re2.redo import RedoDetector

    return RedoDetector(tokenizer)
