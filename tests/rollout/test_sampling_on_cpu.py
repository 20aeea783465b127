import math

import pytest
import torch

from verl_ext.rollout.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    filter_top_k_top_p,
    sample_next_tokens,
    stable_seed,
)


def _reference_filter(row: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """Slow, obvious: keep the k best, then the smallest prefix of them whose mass reaches p."""
    order = sorted(range(len(row)), key=lambda i: -float(row[i]))
    if k > 0:
        order = order[:k]
    probs = torch.softmax(row, dim=-1)
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += float(probs[i])
        if mass >= p:
            break
    out = torch.full_like(row, -math.inf)
    out[kept] = row[kept]
    return out


@pytest.mark.parametrize("k,p", [(-1, 1.0), (3, 1.0), (-1, 0.5), (5, 0.9), (1, 0.3), (50, 0.999)])
def test_top_k_top_p_matches_reference(k, p):
    torch.manual_seed(k * 7 + int(p * 10))
    logits = torch.randn(4, 37)
    got = filter_top_k_top_p(logits, torch.full((4,), k), torch.full((4,), p))
    for row in range(4):
        assert torch.equal(torch.isinf(got[row]), torch.isinf(_reference_filter(logits[row], k, p))), (k, p)
        kept = ~torch.isinf(got[row])
        assert torch.equal(got[row][kept], logits[row][kept])


def test_per_row_settings_and_greedy_rows():
    torch.manual_seed(0)
    logits = torch.randn(3, 11)
    temperature = torch.tensor([0.0, 1.0, 0.7])
    tokens, logprobs = sample_next_tokens(logits, temperature, torch.tensor([-1, 1, -1]), torch.tensor([1.0, 1.0, 1.0]))
    assert tokens[0] == logits[0].argmax() and tokens[1] == logits[1].argmax()  # greedy, and top-1
    expected = torch.log_softmax(logits[2] / 0.7, -1)[tokens[2]]
    assert torch.allclose(logprobs[2], expected)


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    tokens, _ = sample_next_tokens(logits, torch.ones(20000), torch.full((20000,), -1), torch.ones(20000), gen)
    freq = torch.bincount(tokens, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015)


def test_repetition_penalty_hand_computed():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0]]))


def test_from_request_maps_the_agent_loop_dict():
    sp = SamplingParams.from_request(
        {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}, default_max_tokens=7
    )
    assert sp.greedy and sp.max_new_tokens == 7 and sp.logprobs and sp.top_k == -1
    sp = SamplingParams.from_request({"max_tokens": 3, "stop": "END", "n": 2, "top_k": 0}, default_max_tokens=7)
    assert (sp.max_new_tokens, sp.stop, sp.n, sp.top_k) == (3, ("END",), 2, -1)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"best_of": 2}, r"does not support sampling parameter\(s\) \['best_of'\]"),
        ({"temperature": -1}, "temperature=-1.0 must be >= 0"),
        ({"top_p": 0}, r"top_p=0.0 must be in \(0, 1\]"),
        ({"max_tokens": 0}, "max_new_tokens=0 must be >= 1"),
        ({"max_tokens": 2, "max_new_tokens": 3}, "disagree"),
        ({"n": 0}, "n=0 must be >= 1"),
    ],
)
def test_bad_requests_name_the_field(params, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams.from_request(params, default_max_tokens=4)


def test_per_row_generators_draw_each_row_on_its_own():
    from verl_ext.rollout.sampling import sample_next_tokens

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    ones, k, p = torch.ones(3), torch.full((3,), -1), torch.ones(3)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]  # noqa: E731
    tokens, _ = sample_next_tokens(logits, ones, k, p, gens())
    alone, _ = sample_next_tokens(logits[1:2], ones[:1], k[:1], p[:1], gens()[1:2])
    assert tokens[1] == alone[0]  # row 1's draw is the same without rows 0 and 2
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        sample_next_tokens(logits, ones, k, p, gens()[:2])


def test_stable_seed_is_the_same_in_every_process_and_tells_parts_apart():
    import subprocess
    import sys

    parts = (0, 3, "rollout", 17, 2)
    here = stable_seed(*parts)
    code = f"from verl_ext.rollout.sampling import stable_seed; print(stable_seed(*{parts!r}))"
    there = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert here == there and 0 <= here < 2**62
    others = {stable_seed(0, 3, "rollout", 17, c) for c in range(200)} | {stable_seed(0, 3, "validate", 17, 2),
                                                                           stable_seed(1, 3, "rollout", 17, 2)}
    assert len(others) == 202
