import random

import pytest

from verl_ext.re2.prefixes import PrefixConfig, build_prefix_groups, cut_before_redo, make_prefix, sample_rho


def test_rho_distribution():
    rng = random.Random(0)
    rhos = [sample_rho(PrefixConfig(p_empty=0.3), rng) for _ in range(20000)]
    empty = sum(r == 0 for r in rhos) / len(rhos)
    assert abs(empty - 0.3) < 0.02
    assert all(0 <= r <= 0.8 for r in rhos)
    assert all(r > 0 for r in [sample_rho(PrefixConfig(), rng) for _ in range(1000)])  # paper: never forced empty


def test_prefix_length_and_redo_cut(tokenizer, detector):
    ids = tokenizer.encode("Let me think about it. It's better to redo the question.", add_special_tokens=False)
    body = cut_before_redo(ids, detector)
    assert tokenizer.decode(body).strip() == "Let me think about it."
    assert body == ids[: len(body)]
    assert make_prefix(ids, 0.5, detector) == body[: len(body) // 2]
    assert make_prefix(ids, 0.0, detector) == []
    plain = tokenizer.encode("1 + 2 = 3", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert make_prefix(plain, 1.0, detector, [tokenizer.eos_token_id]) == plain[:-1]


def test_groups_join_at_token_level(tokenizer, detector):
    prompt = [5, 6, 7]
    responses = [tokenizer.encode("a b c d e f g h", add_special_tokens=False)] * 3
    groups = build_prefix_groups("q1", prompt, responses, PrefixConfig(), random.Random(1), detector)
    assert [g.uid for g in groups] == ["q1/p0", "q1/p1", "q1/p2"]
    for g in groups:
        assert g.continuation_prompt_ids == prompt + list(g.prefix_ids)
        assert list(g.prefix_ids) == responses[0][: len(g.prefix_ids)]


def test_bad_config():
    with pytest.raises(ValueError, match="rho_max=1.5"):
        PrefixConfig(rho_max=1.5)
    with pytest.raises(ValueError, match="p_empty=2"):
        PrefixConfig(p_empty=2)
    with pytest.raises(ValueError, match="no full responses"):
        build_prefix_groups("q", [1], [], PrefixConfig(), random.Random(0))
