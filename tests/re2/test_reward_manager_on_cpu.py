"""The batch-level `re2` reward manager on a real verl DataProto."""

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.workers.reward_manager import get_reward_manager_cls

REDO = "It's better to redo the question."


def _batch(tokenizer, texts, uids, truths):
    prompts = torch.full((len(texts), 4), tokenizer.pad_token_id)
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, encoded))
    responses = torch.full((len(texts), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(texts), 4 + width), dtype=torch.long)
    mask[:, :4] = 1
    for i, ids in enumerate(encoded):
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, 4 : 4 + len(ids)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object),
                     "reward_model": np.array([{"ground_truth": t} for t in truths], dtype=object)},
    )


def test_three_way_reward_on_a_batch(tokenizer):
    manager = get_reward_manager_cls("re2")(tokenizer, num_examine=0)
    texts = ["\\boxed{4}", "hmm " + REDO, "\\boxed{4}", "\\boxed{5}"]
    data = _batch(tokenizer, texts, ["q/p0", "q/p0", "q/p1", "q/p1"], ["4"] * 4)
    out = manager(data, return_dict=True)
    rewards = out["reward_tensor"].sum(-1)
    # redo row: out-of-group {correct, incorrect}: P(c)=1/2, P(r)=0 -> 1/2
    assert rewards.tolist() == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert out["reward_extra_info"]["redo"].tolist() == [0, 1, 0, 0]
    assert out["reward_extra_info"]["acc"].tolist() == [1, 0, 1, 0]


def test_missing_fields_name_the_row(tokenizer):
    manager = get_reward_manager_cls("re2")(tokenizer, num_examine=0)
    with pytest.raises(ValueError, match="row 1: reward_model.ground_truth is missing"):
        manager(_batch(tokenizer, ["\\boxed{1}", "x"], ["q/p0", "q/p0"], ["1", None]))
    with pytest.raises(KeyError, match="row 0: re2 reward needs non_tensor_batch\\['question_uid'\\]"):
        manager(_batch(tokenizer, ["\\boxed{1}"], ["plain"], ["1"]))
