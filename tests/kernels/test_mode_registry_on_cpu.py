"""The mode registry (``kernels/elastic_attention/modes.py``) is the one place a mode is defined.

A toy mode added through ``modes.registered`` (never by clearing the registry) runs on the naive oracle and on the
CPU back end (through its ``visible`` rule: it has no fast path), forward and every gradient against float64
autograd of the oracle, at odd lengths with GQA; the Triton back end (the interpreter here) refuses it by name,
listing the known modes, because it has no tile rule, while a mode naming an existing tile rule runs there. Unknown
codes are refused on every back end before anything is computed. A source guard keeps mode knowledge in the
registry: no kernel module but ``modes.py`` and ``triton_common.py`` compares against a particular mode.
"""

import ast
import dataclasses
import io
import os
import pathlib
import re
import tokenize

import pytest
import torch

from verl_ext.kernels.elastic_attention import cpu, naive, ops, utils
from verl_ext.kernels.elastic_attention import modes as M
from verl_ext.kernels.elastic_attention.utils import sequences

RTOL = ATOL = 2e-4  # float32 against float64

# A causal local window without a sink: no CPU fast path, no Triton tile rule.
LOCAL = M.Mode("local", 7, ("window",), "causal local window, no sink (a toy mode for the tests)",
               lambda i, j, s: (j <= i) & (i - j < s.window))
BUILT_IN = {"full": 0, "streaming": 1, "streaming_blocks": 2, "block_sparse": 3}


@pytest.fixture
def local():
    with M.registered(LOCAL) as mode:
        yield mode


def _never(*args, **kwargs):
    raise AssertionError("computed before refusing the mode")


def _inputs(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def _grads(fn, inputs, weight):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    return out, torch.autograd.grad((out.to(weight.dtype) * weight).sum(), leaves)


def test_built_in_codes_and_lookups():
    assert {m.name: m.code for m in M.known()} == BUILT_IN  # the codes mode tables hold never change
    for name, code in BUILT_IN.items():
        assert M.get(code) is M.get(name) is M.get(torch.tensor(code))
    for bad, text in ((9, "mode code 9 is unknown"), ("local", "mode 'local' is unknown")):
        for error in (KeyError, ValueError):
            with pytest.raises(error, match=text) as caught:
                M.get(bad)
            assert M.known_text() in str(caught.value)


def test_registered_adds_a_mode_for_its_block_only():
    with M.registered(LOCAL):
        assert M.get("local") is M.get(7) is LOCAL and LOCAL in M.known()
        with pytest.raises(ValueError, match="clashes with the registered 'local'"):
            M.register(dataclasses.replace(LOCAL, name="local2"))
        with pytest.raises(ValueError, match="clashes with the registered 'full'"):
            M.register(dataclasses.replace(LOCAL, code=9, name="full"))
    assert LOCAL not in M.known()
    with pytest.raises(RuntimeError), M.registered(LOCAL):
        raise RuntimeError("the mode is removed on the way out of a failing block too")
    assert {m.name: m.code for m in M.known()} == BUILT_IN
    with pytest.raises(ValueError, match="decode='sideways'"):
        M.register(dataclasses.replace(LOCAL, decode="sideways"))
    assert LOCAL not in M.known()


def _layout(kind, t, hq, hk, d, seed):
    if kind == "varlen":
        q, k, v = _inputs(seed, (2 * t, hq, d), (2 * t, hk, d), (2 * t, hk, d))
        return q, k, v, {"cu_seqlens": torch.tensor([0, t - 17, 2 * t])}
    q, k, v = _inputs(seed, (2, t, hq, d), (2, t, hk, d), (2, t, hk, d))
    return q, k, v, {"lengths": torch.tensor([t, t - 23]), "left_padded": kind == "left_padded"}


@pytest.mark.parametrize("t,hq,hk,kind", [(63, 4, 1, "varlen"), (100, 4, 2, "padded"), (100, 6, 2, "left_padded")])
def test_a_registered_mode_runs_on_cpu_with_every_gradient(local, t, hq, hk, kind):
    """The toy mode beside built-in ones in one table, dense rows from dense_from included: the CPU back end
    (masked attention through ``visible``) against float64 autograd through the naive oracle."""
    d, sink, window = 16, 5, 13
    q, k, v, layout = _layout(kind, t, hq, hk, d, seed=t + hq)
    row = [local.code, M.FULL, M.STREAMING, local.code, M.STREAMING_BLOCKS, local.code][:hq]
    modes = torch.tensor([row, row[::-1]])
    starts, lens = sequences(q, layout.get("cu_seqlens"), layout.get("lengths"), layout.get("left_padded", False))
    dense_from = torch.tensor([int(lens[0]), int(lens[1]) - 20])  # sequence 1's last 20 rows attend densely
    common = dict(sink=sink, window=window, round_block=16, dense_from=dense_from)
    (w,) = _inputs(1, q.shape)
    out, got = _grads(lambda *x: ops.elastic_prefill(*x, modes, backend="reference", **layout, **common), (q, k, v), w)

    def oracle(q, k, v):
        flat = [x.reshape(-1, x.shape[-2], d) for x in (q, k, v)]
        return naive.prefill_reference(*flat, modes, starts, lens, sink, window, 16,
                                       dense_from=dense_from)[0].reshape(q.shape)

    ref, want = _grads(oracle, [x.double() for x in (q, k, v)], w.double())
    torch.testing.assert_close(out.double(), ref, rtol=RTOL, atol=ATOL)
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=RTOL, atol=ATOL, msg=lambda m: f"d{name}: {m}")
    # In float64 the CPU back end is the oracle up to rounding.
    exact = ops.elastic_prefill(*(x.double() for x in (q, k, v)), modes, backend="reference", **layout, **common)
    torch.testing.assert_close(exact, ref.detach(), rtol=1e-10, atol=1e-10)
    # The rule matters: the toy mode is not dense attention under another name.
    flat = [x.double().reshape(-1, x.shape[-2], d) for x in (q, k, v)]
    as_local = naive.prefill_reference(*flat, torch.full_like(modes, local.code), starts, lens, sink, window)[0]
    as_full = naive.prefill_reference(*flat, torch.full_like(modes, M.FULL), starts, lens, sink, window)[0]
    assert (as_local - as_full).abs().max() > 1e-3


def _interpreter():
    if not (utils.HAVE_TRITON and os.environ.get("TRITON_INTERPRET") == "1"):
        pytest.skip("the Triton back end on CPU needs triton and TRITON_INTERPRET=1 (tests/conftest.py sets it)")


@pytest.mark.parametrize("grad", [False, True])
def test_triton_refuses_a_mode_without_a_tile_rule_before_launching(local, monkeypatch, grad):
    _interpreter()
    monkeypatch.setattr(utils, "_alloc", _never)  # every kernel output comes from here
    q, k, v = (x.requires_grad_(grad) for x in _inputs(2, (1, 40, 4, 32), (1, 40, 2, 32), (1, 40, 2, 32)))
    with pytest.raises(ValueError, match=r"mode 'local' \(code 7\) has no Triton tile rule") as caught:
        ops.elastic_prefill(q, k, v, torch.tensor([[M.FULL, local.code, M.STREAMING, M.FULL]]), backend="triton")
    assert M.known_text() in str(caught.value) and "7=local" in M.known_text()


def test_a_mode_naming_an_existing_tile_rule_runs_on_triton():
    _interpreter()
    causal = M.Mode("causal_copy", 8, (), "dense causal attention again", lambda i, j, s: j <= i, tile_rule="causal")
    q, k, v = _inputs(3, (1, 45, 4, 32), (1, 45, 2, 32), (1, 45, 2, 32))
    with M.registered(causal):
        table = torch.tensor([[8, M.STREAMING, 8, M.FULL]])
        out = ops.elastic_prefill(q, k, v, table, sink=3, window=9, backend="triton")
        starts, lens = sequences(q)
        ref = naive.prefill_reference(*(x[0].double() for x in (q, k, v)), table, starts, lens, 3, 9)[0]
        torch.testing.assert_close(out[0].double(), ref, rtol=2e-5, atol=2e-5)
        with M.registered(dataclasses.replace(causal, code=9, name="odd", tile_rule="zigzag")):
            with pytest.raises(ValueError, match="names the tile rule 'zigzag', which triton_common does not define"):
                ops.elastic_prefill(q, k, v, torch.tensor([[9, 9, 9, 9]]), backend="triton")


def test_unknown_codes_are_refused_on_every_back_end_before_computing(monkeypatch):
    """Code 7 (the toy mode, not registered here) in the last sequence: every back end refuses it, listing the
    known modes, before computing the first sequence."""
    q, k, v = _inputs(4, (2, 40, 2, 32), (2, 40, 1, 32), (2, 40, 1, 32))
    table = torch.tensor([[M.FULL, M.STREAMING], [M.FULL, 7]])
    starts, lens = sequences(q)
    flat = [utils.packed(x) for x in (q, k, v)]
    monkeypatch.setattr(naive, "_attend", _never)
    monkeypatch.setattr(cpu, "_fast_path", _never)
    monkeypatch.setattr(utils, "_alloc", _never)
    backends = {"naive": naive.prefill_reference, "cpu": cpu.prefill}
    if utils.HAVE_TRITON and os.environ.get("TRITON_INTERPRET") == "1":
        from verl_ext.kernels.elastic_attention import triton_prefill

        backends["triton"] = triton_prefill.prefill
    for name, prefill in backends.items():
        with pytest.raises(ValueError, match="mode code 7 is unknown; known modes: 0=full") as caught:
            prefill(*flat, table, starts, lens, 4, 8)
        assert M.known_text() in str(caught.value), name
    for backend in ("reference", "triton") if "triton" in backends else ("reference",):
        with pytest.raises(ValueError, match="codes outside the registry: mode code 7 is unknown"):
            ops.elastic_prefill(q, k, v, table, backend=backend)
    with pytest.raises(ValueError, match="mode code 7 is unknown"):
        M.visible(7, torch.arange(3)[:, None], torch.arange(3)[None, :])


# A comparison against a particular mode: its constant (``== M.STREAMING``, ``in (FULL, ...)``) or its name.
_CONSTANTS = "FULL|STREAMING|STREAMING_BLOCKS|BLOCK_SPARSE"
_NAMES = "|".join(BUILT_IN)
_COMPARES = re.compile(
    rf"(==|!=|\bin\b|\bis\b)\s*[(\[{{]?\s*(\w+\s*\.\s*)?({_CONSTANTS})\b|\b({_CONSTANTS})\s*(==|!=)"
    rf"|(==|!=|\bin\b)\s*[(\[{{]?\s*'({_NAMES})'|'({_NAMES})'\s*(==|!=)")
_ALLOWED = {"modes.py", "triton_common.py"}  # the registry, and the tile rules the registry names


def _code(path: pathlib.Path) -> str:
    """The file's tokens, comments dropped and string literals blanked unless they spell a mode's name (docstrings
    and messages may mention modes)."""
    words = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.COMMENT:
            continue
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                value = None
            words.append(repr(value) if isinstance(value, str) and value in BUILT_IN else "''")
        else:
            words.append(tok.string)
    return " ".join(words)


def test_guard_catches_what_it_looks_for(tmp_path):
    for line in ("if code == M.STREAMING:", "streaming = mode in (M.STREAMING, M.STREAMING_BLOCKS)",
                 "has = (modes == BLOCK_SPARSE).any()", "if FULL != code:", "if mode.name == 'full':",
                 "dense = x.name in {'streaming', 'full'}", "tl.where(mode == STREAMING_BLOCKS, a, b)"):
        (tmp_path / "probe.py").write_text(line + "\n")
        assert _COMPARES.search(_code(tmp_path / "probe.py")), line
    (tmp_path / "probe.py").write_text('M.get(M.FULL)\nx = "code == M.STREAMING"  # == FULL\n')
    assert not _COMPARES.search(_code(tmp_path / "probe.py"))


def test_no_kernel_module_outside_the_registry_compares_against_a_mode():
    root = pathlib.Path(M.__file__).resolve().parents[1]  # kernels/
    files = [p for p in sorted(root.rglob("*.py")) if p.name not in _ALLOWED]
    assert any(p.name == "ops.py" for p in files)
    offending = [f"{p.relative_to(root)}: {m.group(0)}" for p in files for m in _COMPARES.finditer(_code(p))]
    assert not offending, ("mode knowledge belongs in the registry (modes.py; tile rules in triton_common.py): "
                           f"read a Mode attribute instead of comparing codes: {offending}")
