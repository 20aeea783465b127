import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_ext.rollout.hf_engine import HFGenerationEngine
from verl_ext.rollout.sampling import SamplingParams
from verl_ext.scoring.math_grader import last_boxed
from verl_ext.testing import arithmetic


def test_warm_start_gives_rewards_that_vary_within_groups(warm_model_dir):
    """After the warm start the model knows most sums, boxes its answer only some of the time (RL's first lesson),
    and rarely abandons an attempt with the redo phrase."""
    tok = AutoTokenizer.from_pretrained(warm_model_dir)
    model = AutoModelForCausalLM.from_pretrained(warm_model_dir, dtype=torch.float32).eval()
    engine = HFGenerationEngine(model, tok, [tok.eos_token_id], tok.pad_token_id, seed=0)
    train, _ = arithmetic.build_rows(64, 0)
    prompts = [tok(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False)["input_ids"] for r in train]
    outs = engine.generate(prompts, [SamplingParams(max_new_tokens=32, n=4)] * len(prompts))
    correct = [[last_boxed(tok.decode(g.token_ids)) == r["reward_model"]["ground_truth"] for g in o] for o, r in zip(outs, train)]
    accuracy = sum(map(sum, correct)) / (4 * len(correct))
    mixed = sum(0 < sum(c) < 4 for c in correct) / len(correct)
    texts = [tok.decode(g.token_ids) for o in outs for g in o]
    boxed = sum(last_boxed(t) is not None for t in texts) / len(texts)
    redo = sum("It's better to redo the question." in t for t in texts) / len(texts)
    assert 0.2 < boxed < 0.7  # the taught mixture: boxed some of the time
    assert redo < 0.1  # known but rare
    assert 0.1 < accuracy < 0.6 and accuracy > 0.5 * boxed  # most boxed answers are right
    assert mixed > 0.2
