"""Greedy generation with vLLM with and without a stop string (run as a script: vLLM's engine starts from a
``__main__`` guard). The stop string is the text of tokens 6..8 of the unstopped answer.

    python vllm_stop_strings.py MODEL_DIR OUT_JSON
"""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main(model_dir, out_path):
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = tok("Compute 3 + 4. Put the final answer in \\boxed{}.")["input_ids"]
    llm = LLM(model=model_dir, dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
    greedy = dict(max_tokens=24, temperature=0.0, ignore_eos=True)
    full = list(llm.generate([{"prompt_token_ids": prompt}], SamplingParams(**greedy), use_tqdm=False)[0]
                .outputs[0].token_ids)
    stop = tok.decode(full[:9])[len(tok.decode(full[:6])):]
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(**greedy, stop=[stop]), use_tqdm=False)[0]
    with open(out_path, "w") as f:
        json.dump({"full": full, "stop": stop, "stopped": list(out.outputs[0].token_ids),
                   "stopped_text": out.outputs[0].text, "finish_reason": out.outputs[0].finish_reason}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
