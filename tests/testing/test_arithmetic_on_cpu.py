import pandas as pd
import pytest

from verl_ext.testing import arithmetic


def test_rows_follow_verls_rl_schema_and_splits_are_disjoint(tmp_path):
    train_path, val_path = arithmetic.write_parquet(tmp_path, num_train=30, num_val=10)
    train, val = pd.read_parquet(train_path), pd.read_parquet(val_path)
    assert set(train.columns) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    row = train.iloc[0]
    assert row.prompt[0]["role"] == "user" and "\\boxed{}" in row.prompt[0]["content"]
    assert row.reward_model["ground_truth"] == row.extra_info["answer"]
    assert not set(train.prompt.map(lambda p: p[0]["content"])) & set(val.prompt.map(lambda p: p[0]["content"]))
    assert (len(train), len(val)) == (30, 10)


def test_answers_hand_checked():
    assert arithmetic.make_problem(3, "-", 5) == ("Compute 3 - 5. Put the final answer in \\boxed{}.", "-2")
    assert arithmetic.reference_response(6, "*", 7) == "6 * 7 = 42. The answer is \\boxed{42}."
    with pytest.raises(ValueError, match="exceeds the 200 distinct problems"):
        arithmetic.build_rows(150, 60)
