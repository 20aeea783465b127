import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from verl_ext.re2.reward import overlong_penalty, redo_reward, three_way_rewards


def test_eq1_hand_computed():
    # P(c)=0.5, P(r)=0.25, R=5: 0.5 * (1 - 0.25^5) / 0.75
    assert redo_reward(0.5, 0.25, 5) == pytest.approx(0.5 * (1 - 0.25**5) / 0.75)
    assert redo_reward(0.5, 0.25, 1) == pytest.approx(0.5)
    assert redo_reward(0.0, 0.5, 5) == 0.0
    assert redo_reward(0.0, 1.0, 5) == -1.0
    with pytest.raises(ValueError, match="not frequencies of one distribution"):
        redo_reward(0.3, 1.0, 5)


def test_three_way_uses_only_out_of_group_rows():
    # question q: group a = [redo, correct], group b = [correct, incorrect], group c = [redo, redo]
    outcomes = ["redo", "correct", "correct", "incorrect", "redo", "redo"]
    groups = ["a", "a", "b", "b", "c", "c"]
    rewards = three_way_rewards(outcomes, ["q"] * 6, groups, max_rounds=5)
    # row 0 (group a): outside = b + c = {correct 1, incorrect 1, redo 2} -> P(c)=1/4, P(r)=1/2
    assert rewards[0] == pytest.approx(0.25 * (1 - 0.5**5) / 0.5)
    # rows 4, 5 (group c): outside = a + b = {redo 1, correct 2, incorrect 1} -> P(c)=1/2, P(r)=1/4
    assert rewards[4] == rewards[5] == pytest.approx(0.5 * (1 - 0.25**5) / 0.75)
    assert list(rewards[[1, 2, 3]]) == [1.0, 1.0, 0.0]


def test_degenerate_cases_give_minus_one():
    rewards = three_way_rewards(["redo", "redo", "redo", "redo"], ["q"] * 4, ["a", "a", "b", "b"])
    assert list(rewards) == [-1.0] * 4
    # A lone prefix group has no out-of-group continuation.
    assert three_way_rewards(["redo", "correct"], ["q", "q"], ["a", "a"])[0] == -1.0
    # Other questions never count.
    assert three_way_rewards(["redo", "correct"], ["q1", "q2"], ["a", "b"])[0] == -1.0


def test_bad_input():
    with pytest.raises(ValueError, match="unknown outcome"):
        three_way_rewards(["maybe"], ["q"], ["a"])
    with pytest.raises(ValueError, match="one entry per continuation"):
        three_way_rewards(["redo"], ["q", "q"], ["a"])
    with pytest.raises(ValueError, match="max_rounds R=0"):
        redo_reward(0.5, 0.1, 0)


probs = st.tuples(st.floats(0, 1), st.floats(0, 0.999)).filter(lambda t: t[0] + t[1] <= 1)


@given(probs, st.integers(1, 50))
def test_bounds(pr, rounds):
    p_c, p_r = pr
    r = redo_reward(p_c, p_r, rounds)
    assert 0 <= r <= 1 + 1e-12
    assert r <= p_c / (1 - p_r) + 1e-12  # the infinite-restart value bounds every finite R


@given(probs, st.floats(0, 1), st.integers(1, 20))
def test_monotone_in_p_correct(pr, shift, rounds):
    p_c, p_r = pr
    higher = min(p_c + shift * (1 - p_r - p_c), 1 - p_r)
    assert redo_reward(higher, p_r, rounds) >= redo_reward(p_c, p_r, rounds) - 1e-12


@given(probs)
def test_limit_as_r_grows(pr):
    p_c, p_r = pr
    assert math.isclose(redo_reward(p_c, p_r, 100000), p_c / (1 - p_r), rel_tol=1e-6, abs_tol=1e-9)


def test_overlong_penalty_hand_computed():
    pen = overlong_penalty([100, 2048, 3072, 4096], max_response_length=4096, buffer_length=2048, penalty_factor=1.0)
    assert np.allclose(pen, [0.0, 0.0, -0.25, -0.5])  # official: halved
    assert np.allclose(overlong_penalty([4096], 4096, 2048, 1.0, scale=1.0), [-1.0])  # DAPO
