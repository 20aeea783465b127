"""Elastic Attention in stock HF models: exactness when forced, routing per input, generate, adapters, metrics."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_ext.elastic_attention.adapter import load_router_adapter, save_router_adapter
from verl_ext.elastic_attention.hf import ElasticAttentionConfig, elastic_decisions, enable_elastic_attention
from verl_ext.elastic_attention.metrics import block_pair_fraction, esr, msr, streaming_pair_fraction
from verl_ext.kernels.elastic_attention import modes
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module", params=["qwen2", "qwen3", "llama"])
def model_dir(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp(request.param), TinyModelSpec(arch=request.param, hidden=64, heads=4,
                                                                                  kv_heads=2))


def _batch(model_dir, lengths=(37, 23)):
    tok = AutoTokenizer.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    ids = torch.full((len(lengths), max(lengths)), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):  # left padding, as generation batches are
        ids[row, -n:] = torch.randint(5, 300, (n,), generator=g)
        mask[row, -n:] = 1
    return ids, mask


def _load(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("force,window", [("full", 4), ("sparse", 10_000)])
def test_forced_modes_equal_the_stock_model(model_dir, force, window):
    ids, mask = _batch(model_dir)
    stock = _load(model_dir)(input_ids=ids, attention_mask=mask).logits
    elastic = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(force=force, sink=2, window=window))
    out = elastic(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(out[valid], stock[valid], rtol=1e-4, atol=1e-4)


def test_sparse_heads_change_the_output_and_routing_is_per_input(model_dir):
    ids, mask = _batch(model_dir)
    stock = _load(model_dir)(input_ids=ids, attention_mask=mask).logits
    sparse = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(force="sparse", sink=2, window=4))
    assert not torch.allclose(sparse(input_ids=ids, attention_mask=mask).logits[:, -1], stock[:, -1], atol=1e-4)
    model = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(sink=2, window=4))
    torch.manual_seed(0)
    for layer in model.model.layers:  # a router with a strong opinion that depends on the keys
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    model(input_ids=ids, attention_mask=mask)
    decisions = elastic_decisions(model)
    assert decisions.shape == (2, len(model.model.layers), 2)
    assert set(decisions.unique().tolist()) <= {0, 1}


def test_static_head_mask_replaces_routing_for_every_input_padded_and_packed(model_dir):
    """set_static_heads: the same heads sparse for every input (the static-mask baseline), on padded batches and
    packed rows alike; all heads full is the stock model."""
    from verl_ext.elastic_attention.state import set_static_heads

    ids, mask = _batch(model_dir)
    model = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(sink=2, window=4))
    static = torch.tensor([[1, 0], [0, 1]])
    set_static_heads(model, static)
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(elastic_decisions(model), static[None].expand(2, -1, -1))
    # packed: the two sequences in one row, positions restarting
    seqs = [ids[r][mask[r].bool()] for r in range(2)]
    packed = model(input_ids=torch.cat(seqs)[None],
                   position_ids=torch.cat([torch.arange(len(x)) for x in seqs])[None]).logits[0]
    assert torch.equal(elastic_decisions(model), static[None].expand(2, -1, -1))
    torch.testing.assert_close(packed, logits[mask.bool()], rtol=1e-4, atol=1e-4)
    all_full = static.new_ones(static.shape)
    set_static_heads(model, all_full)  # every head full: the stock model
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                               _load(model_dir)(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                               rtol=1e-4, atol=1e-4)
    set_static_heads(model, None)
    with pytest.raises(ValueError, match=r"static head mask must be \(layers, kv heads\)"):
        set_static_heads(model, torch.ones(3, 2))


def test_generate_routed_prefill_then_dense_or_sparse_kv_decode(model_dir):
    ids, mask = _batch(model_dir)
    stock = _load(model_dir).generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    model = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(force="full"))
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False), stock)
    wide = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(force="sparse", decode="sparse_kv",
                                                                           window=10_000))
    assert torch.equal(wide.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False), stock)
    narrow = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(force="sparse", decode="sparse_kv",
                                                                             sink=1, window=3))
    assert narrow.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False).shape == stock.shape


def test_router_adapter_round_trip_and_mismatch(model_dir, tmp_path):
    model = enable_elastic_attention(_load(model_dir))
    for p in model.model.layers[0].self_attn.elastic_router.parameters():
        torch.nn.init.normal_(p)
    path = save_router_adapter(model, tmp_path / "routers.safetensors")
    fresh = enable_elastic_attention(_load(model_dir))
    load_router_adapter(fresh, path)
    for a, b in zip(model.model.layers[0].self_attn.elastic_router.parameters(),
                    fresh.model.layers[0].self_attn.elastic_router.parameters()):
        assert torch.equal(a, b)
    other_dir = build_tiny_model(tmp_path / "other", TinyModelSpec(arch="llama", hidden=64, heads=4, kv_heads=4))
    other = enable_elastic_attention(_load(other_dir))
    with pytest.raises(ValueError, match="was made for another model"):
        load_router_adapter(other, path)


def test_official_key_layout_loads(tmp_path, model_dir):
    from safetensors.torch import save_file

    model = enable_elastic_attention(_load(model_dir))
    official = {}
    for i, layer in enumerate(model.model.layers):
        for name, t in layer.self_attn.elastic_router.state_dict().items():
            module, rest = name.split(".", 1)
            prefix = {"task_mlp": "cls_feat_extractor", "router_mlp": "cls_router_head_agnostic"}[module]
            official[f"model.layers.{i}.self_attn.mask_allocator.{prefix}.{rest}"] = torch.full_like(t, float(i))
    official["model.embed_tokens.weight"] = torch.zeros(3)  # backbone keys are ignored
    save_file(official, str(tmp_path / "official.safetensors"))
    load_router_adapter(model, tmp_path / "official.safetensors")
    assert model.model.layers[-1].self_attn.elastic_router.router_mlp[0].bias[0] == len(model.model.layers) - 1


def test_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="supports \\('qwen2', 'qwen3', 'llama'\\); this model is 'gpt2'"):
        enable_elastic_attention(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)))


def test_metrics_hand_computed():
    decisions = torch.tensor([[[1, 0], [0, 0]]])  # 3 of 4 heads sparse
    assert msr(decisions).tolist() == [0.75]
    assert streaming_pair_fraction(4, sink=1, window=1) == pytest.approx((1 + 2 + 2 + 2) / 10)
    codes = torch.tensor([[modes.FULL, modes.STREAMING], [modes.STREAMING, modes.STREAMING]])
    assert esr(codes, 4, sink=1, window=1) == pytest.approx(0.75 * (1 - 0.7))
    assert esr(codes, 4, sink=2, window=10) == 0.0
    # block-rounded streaming counted by the rule: 4 tokens, blocks of 2, 1 sink block, 1 window block -> the last
    # query block sees keys 0..3 (sink block + its own): every causal pair
    assert esr(torch.tensor([[modes.STREAMING_BLOCKS]]), 4, sink=1, window=1, round_block=2) == 0.0
    # XAttention: 5 tokens, blocks of 2 -> tiles (0,0) 3 pairs, (1,0) 4, (1,1) 3, (2,0) 2, (2,1) 2, (2,2) 1 = 15
    mask = torch.ones(3, 3, dtype=torch.bool).tril()
    mask[2, 1] = False
    assert float(block_pair_fraction(mask, 2, 5)) == pytest.approx(13 / 15)
    codes = torch.tensor([[modes.BLOCK_SPARSE, modes.FULL]])
    assert esr(codes, 5, 1, 1, block_masks=[torch.stack([mask, mask])], mask_block=2) == pytest.approx(0.5 * 2 / 15)
    with pytest.raises(ValueError, match="layer 0 has block-sparse heads"):
        esr(codes, 5, 1, 1)


def test_xattention_with_full_threshold_equals_stock(model_dir):
    ids, mask = _batch(model_dir)
    stock = _load(model_dir)(input_ids=ids, attention_mask=mask).logits
    for pattern, force in (("fa-xa", "sparse"), ("xa-ssa", "full")):  # every head on XAttention, keeping all blocks
        config = ElasticAttentionConfig(pattern=pattern, force=force, xattention={"stride": 4, "block": 16,
                                                                                  "threshold": 1.0})
        out = enable_elastic_attention(_load(model_dir), config)(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(out[mask.bool()], stock[mask.bool()], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pattern='blocky' must be one of"):
        ElasticAttentionConfig(pattern="blocky")


def test_report_cli(model_dir, tmp_path):
    import json

    from verl_ext.elastic_attention.report import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Summarise the following text: " + "word " * 40, "task": "summ"},
        {"prompt": [{"role": "user", "content": "Where is the key? " + "noise " * 30}], "task": "qa"},
        {"prompt": "tiny", "task": "qa"},  # shorter than the pooling window and than sink + window
    ]))
    assert main([str(model_dir), str(prompts), "--out", str(tmp_path / "rep"), "--sink", "2", "--window", "8"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["summary"]["qa"]["n"] == 2 and 0 <= report["summary"]["summ"]["msr"] <= 1
    assert (tmp_path / "rep" / "routing_heatmap.png").stat().st_size > 1000
    # XA-SSA: both modes skip pairs (XAttention drops blocks at a high threshold), so Omega_ESR > 0 even if no head
    # is sparse
    assert main([str(model_dir), str(prompts), "--out", str(tmp_path / "xa"), "--sink", "2", "--window", "8",
                 "--pattern", "xa-ssa", "--xattention-block", "16", "--xattention-stride", "4",
                 "--xattention-threshold", "0.3"]) == 0
    xa = json.loads((tmp_path / "xa" / "report.json").read_text())
    assert xa["config"]["pattern"] == "xa-ssa" and xa["config"]["xattention_block"] == 16
    assert xa["summary"]["summ"]["esr"] > 0
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="line 1: needs a non-empty 'prompt'"):
        main([str(model_dir), str(tmp_path / "bad.jsonl")])


def test_deep_copy_routes_on_its_own_keys(model_dir):
    """A deep copy of an elastic model keeps working after the original runs on other input (its key hooks write to
    the copy's layers, not the original's)."""
    import copy

    model = enable_elastic_attention(_load(model_dir), ElasticAttentionConfig(sink=2, window=4))
    twin = copy.deepcopy(model)
    ids, mask = _batch(model_dir)
    expected = twin(input_ids=ids, attention_mask=mask).logits
    model(input_ids=ids[:, :20], attention_mask=mask[:, :20])  # the original sees shorter input in between
    torch.testing.assert_close(twin(input_ids=ids, attention_mask=mask).logits, expected)
    for original, copied in zip(model.model.layers, twin.model.layers):
        assert copied.self_attn.elastic.keys.shape[1] == ids.shape[1]
        assert original.self_attn.elastic.keys.shape[1] == 20
