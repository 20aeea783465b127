import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos

from verl_ext.re2.advantage import compute_re2_advantage, rebalance_redo_advantages, row_uid


def _batch(seed, rows=24, length=7, groups=5):
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(rows, length, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    rewards = torch.zeros(rows, length)
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    rewards[last] = torch.randint(0, 2, (rows,), generator=gen).float() + 0.1 * torch.rand(rows, generator=gen)
    index = np.array([f"q/p{int(i)}" for i in torch.randint(0, groups, (rows,), generator=gen)], dtype=object)
    return rewards, mask, index


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("norm", [True, False])
def test_equals_verls_grpo_without_redo_rows(seed, norm):
    rewards, mask, index = _batch(seed)
    ours, _ = compute_re2_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    ref, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_redo_suffix_does_not_split_the_group():
    rewards, mask, index = _batch(5)
    tagged = np.array([row_uid(u, i % 3 == 0) for i, u in enumerate(index)], dtype=object)
    assert torch.allclose(compute_re2_advantage(rewards, mask, tagged)[0], compute_re2_advantage(rewards, mask, index)[0])


def test_rebalance_hand_computed():
    adv = torch.tensor([2.0, -0.5, 1.0, -1.0, 3.0])
    redo = torch.tensor([True, True, False, True, False])
    out = rebalance_redo_advantages(adv, redo)
    # redo rows: P = 2, N = 1.5, M = sqrt(3) -> positives scaled to sum sqrt(3), negatives to sqrt(3)
    assert out[0] == pytest.approx(3**0.5)
    assert -(out[1] + out[3]) == pytest.approx(3**0.5)
    assert out[1] / out[3] == pytest.approx(0.5)
    assert torch.equal(out[[2, 4]], adv[[2, 4]])
    assert torch.equal(rebalance_redo_advantages(adv, torch.tensor([True, False, False, False, False])), adv)


def test_registered_estimator_and_options():
    rewards, mask, index = _batch(7)
    fn = core_algos.get_adv_estimator_fn("re2")
    tagged = np.array([row_uid(u, i % 2 == 0) for i, u in enumerate(index)], dtype=object)
    plain, _ = fn(rewards, mask, config={"norm_adv_by_std_in_grpo": True}, index=tagged)
    balanced, _ = core_algos.get_adv_estimator_fn("re2_rebalanced")(rewards, mask, config=None, index=tagged)
    assert torch.allclose(plain, compute_re2_advantage(rewards, mask, tagged)[0])
    assert not torch.allclose(plain, balanced)
    with pytest.raises(ValueError, match="needs each row's uid"):
        fn(rewards, mask, config=None, index=None)
