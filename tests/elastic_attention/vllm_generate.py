"""Greedy generation with vLLM for the elastic vLLM model tests (run as a script: vLLM's engine must start from a
``__main__`` guard).

    python vllm_generate.py MODEL_DIR OUT_JSON PROMPTS_JSON MAX_TOKENS HF_OVERRIDES_JSON [ENGINE_KWARGS_JSON
                            [SYNC_ADAPTER]]

Writes, per prompt, the greedy token ids and their log-probabilities, and for an elastic model the worker's
routing report (``vllm_models.routing_report``). With SYNC_ADAPTER, the routers are then replaced through
``load_weights`` under the parameter names verl's weight sync sends, and the prompts generated again
(``after_sync``). The engine runs in this process, so the model can be reached without pickling.
"""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _generate(llm, prompts, max_tokens, elastic):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=int(max_tokens), temperature=0.0, logprobs=0, ignore_eos=True)
    result = {"tokens": [], "logprobs": []}
    for output in llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False):
        completion = output.outputs[0]
        result["tokens"].append(list(completion.token_ids))
        result["logprobs"].append([step[token].logprob for token, step in zip(completion.token_ids,
                                                                              completion.logprobs)])
    if elastic:
        from verl_ext.elastic_attention.vllm_models import routing_report

        result["routing"] = llm.apply_model(routing_report)
    return result


def _sync_routers(model, adapter_path):
    """Send an adapter's routers the way verl's weight sync sends actor parameters."""
    from safetensors.torch import load_file

    tensors = load_file(adapter_path)
    names = {name: f"model.layers.{name.split('.', 2)[1]}.self_attn.elastic_router.{name.split('.', 2)[2]}"
             for name in tensors}
    model.load_weights((names[name], tensor) for name, tensor in tensors.items())


def main(model_dir, out_path, prompts_path, max_tokens, overrides, engine_kwargs="{}", sync_adapter=None):
    from vllm import LLM

    prompts = json.loads(open(prompts_path).read())
    overrides = json.loads(overrides) or None
    # A 128-token step budget: prompts that do not fit the first step are prefilled beside decode tokens later.
    kwargs = {"dtype": "float32", "max_model_len": 128, "enforce_eager": True, "enable_prefix_caching": False,
              "enable_chunked_prefill": False, "max_num_batched_tokens": 128, "seed": 0, **json.loads(engine_kwargs)}
    llm = LLM(model=model_dir, hf_overrides=overrides, **kwargs)
    result = _generate(llm, prompts, max_tokens, overrides is not None)
    if sync_adapter:
        llm.apply_model(lambda model: _sync_routers(model, sync_adapter))
        result["after_sync"] = _generate(llm, prompts, max_tokens, True)
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
