"""A mode added to the kernels' registry (``modes.registered``, removed after its block) runs in the elastic model
with nothing else changed: a config naming it for the sparse heads (``sparse_kernel_mode``) routes a left-padded
batch and a packed row, and every layer's attention equals the naive oracle (``naive.prefill_reference``, float64)
on that layer's decided mode table; a router-training forward through it reaches every router. Unknown mode names are
refused when the config is built, listing the known modes; so is ``decode="sparse_kv"`` for a mode whose decode rule
is dense."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AttentionInterface

from verl_ext.elastic_attention import hf
from verl_ext.elastic_attention.config import ElasticAttentionConfig
from verl_ext.elastic_attention.state import elastic_decisions, set_router_temperature
from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention import naive
from verl_ext.kernels.elastic_attention.utils import sequences
from verl_ext.testing.tiny_model import TinyModelSpec, build_tiny_model

SINK, WINDOW = 2, 5
# A causal local window without a sink, no CPU fast path and no tile rule: the registry's toy mode.
LOCAL = M.Mode("toy_local", 11, ("window",), "causal local window, no sink (a toy mode for the tests)",
               lambda i, j, s: (j <= i) & (i - j < s.window))
LENS = (29, 17)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("toy_mode"), TinyModelSpec(arch="qwen3", hidden=64, heads=4,
                                                                               kv_heads=2))


@pytest.fixture
def local():
    with M.registered(LOCAL) as mode:
        yield mode


@pytest.fixture
def calls(monkeypatch):
    """Every call of the elastic attention function: (module, q, k, v, scaling, decisions, output)."""
    seen = []
    original = hf.elastic_attention_forward

    def recording(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        out = original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        seen.append((query.detach(), key.detach(), value.detach(), scaling, module.elastic.decisions.clone(),
                     out[0].detach()))
        return out

    monkeypatch.setattr(hf, "elastic_attention_forward", recording)
    yield seen
    AttentionInterface.register(hf.ATTN_NAME, original)  # enable_elastic_attention registered the recording one


def _model(model_dir, **config):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = hf.enable_elastic_attention(model, ElasticAttentionConfig(sink=SINK, window=WINDOW, pool_budget=4,
                                                                      backend="reference", **config))
    for layer in model.model.layers:  # routers with an opinion, so both modes occur
        torch.nn.init.normal_(layer.self_attn.elastic_router.router_mlp[-1].weight, std=5.0)
    return model


def _sequences():
    g = torch.Generator().manual_seed(7)
    return [torch.randint(5, 300, (n,), generator=g) for n in LENS]


def _oracle(q, k, v, scaling, decisions, starts, lens):
    """q (N, Hq, D), k / v (N, Hkv, D) float64 -> O (N, Hq, D): each head in the mode its decision names."""
    retrieval = decisions.repeat_interleave(q.shape[1] // k.shape[1], dim=-1).bool()
    table = torch.where(retrieval, M.get("full").code, LOCAL.code)
    return naive.prefill_reference(q, k, v, table, starts, lens, SINK, WINDOW, scale=scaling)[0]


@pytest.mark.parametrize("layout", ["left_padded", "packed"])
def test_a_registered_sparse_mode_runs_in_the_model_as_the_oracle(model_dir, local, calls, layout):
    model = _model(model_dir, sparse_kernel_mode=local.name).eval()
    seqs = _sequences()
    with torch.no_grad():
        if layout == "packed":
            model(input_ids=torch.cat(seqs)[None], position_ids=torch.cat([torch.arange(n) for n in LENS])[None])
        else:
            ids = torch.zeros(len(seqs), max(LENS), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(seqs):
                ids[row, -len(seq):], mask[row, -len(seq):] = seq, 1
            model(input_ids=ids, attention_mask=mask)
    decisions = elastic_decisions(model)
    assert 0 < decisions.float().mean() < 1, "both modes should occur, or this test proves little"
    assert len(calls) == len(model.model.layers)
    for query, key, value, scaling, layer_decisions, out in calls:
        q, k, v = (x.transpose(1, 2).double() for x in (query, key, value))  # (B, T, H, D)
        if layout == "packed":
            q, k, v, out = q[0], k[0], v[0], out[0]
            starts, lens = sequences(q, cu_seqlens=torch.tensor([0, *LENS]).cumsum(0))
        else:
            starts, lens = sequences(q, lengths=torch.tensor(LENS), left_padded=True)
            q, k, v, out = (x.reshape(-1, *x.shape[2:]) for x in (q, k, v, out))
        want = _oracle(q, k, v, scaling, layer_decisions, starts, lens)
        rows = torch.cat([torch.arange(a, a + t) for a, t in zip(starts.tolist(), lens.tolist())])
        torch.testing.assert_close(out[rows].double(), want[rows], rtol=1e-4, atol=1e-4)
        # the toy mode matters: as full attention its heads would give another output
        everything = _oracle(q, k, v, scaling, torch.ones_like(layer_decisions), starts, lens)
        assert (everything[rows] - want[rows]).abs().max() > 1e-3


def test_a_training_forward_through_a_registered_mode_reaches_every_router(model_dir, local):
    model = _model(model_dir, sparse_kernel_mode=local.name).train()
    for name, p in model.named_parameters():
        p.requires_grad_(".elastic_router." in name)
    set_router_temperature(model, 1.0)
    ids = torch.cat(_sequences())[None, :40]
    model(input_ids=ids, labels=ids).loss.backward()
    for layer in model.model.layers:
        grads = [p.grad for p in layer.self_attn.elastic_router.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_unknown_and_unfit_modes_are_refused_at_construction(local):
    with pytest.raises(ValueError, match="sparse_kernel_mode='moba': mode 'moba' is unknown") as caught:
        ElasticAttentionConfig(sparse_kernel_mode="moba")
    assert M.known_text() in str(caught.value) and "toy_local" in str(caught.value)
    with pytest.raises(ValueError, match="unknown"):
        ElasticAttentionConfig.from_options({"sparse_kernel_mode": "moba"})
    with pytest.raises(ValueError, match="decode='sparse_kv'.*decodes densely"):
        ElasticAttentionConfig(sparse_kernel_mode=local.name, decode="sparse_kv")
    config = ElasticAttentionConfig(pattern="xa-ssa", sparse_kernel_mode=local.name)
    assert config.kernel_modes == (M.get("block_sparse"), LOCAL) and config.uses_xattention
    assert ElasticAttentionConfig(pattern="fa-ssa", block_size=4).kernel_modes == (M.get("full"), M.streaming(4))
