import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.mark.parametrize("arch,model_type", [("qwen2", "qwen2"), ("qwen3", "qwen3"), ("llama", "llama")])
def test_every_arch_loads_with_auto_classes(tmp_path, arch, model_type):
    out = build_tiny_model(tmp_path / arch, TinyModelSpec(arch=arch))
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == model_type
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>" and tok.eos_token_id != tok.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id and model.generation_config.eos_token_id == tok.eos_token_id
    assert len(tok) <= model.config.vocab_size
    text = tok.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE round trip, specials as single ids
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2
    out_ids = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out_ids.shape[1] > len(ids)


def test_cli(tmp_path):
    out = tmp_path / "cli_model"
    res = subprocess.run([sys.executable, "-m", "verl_ext.testing.tiny_model", str(out), "--arch", "llama", "--hidden", "32",
                          "--heads", "2", "--kv-heads", "1"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert AutoModelForCausalLM.from_pretrained(out).config.hidden_size == 32


def test_bad_spec():
    with pytest.raises(ValueError, match="arch='gpt9' is not supported"):
        TinyModelSpec(arch="gpt9")
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        TinyModelSpec(heads=4, kv_heads=3)
