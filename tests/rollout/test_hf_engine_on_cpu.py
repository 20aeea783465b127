import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_ext.rollout.hf_engine import HFGenerationEngine
from verl_ext.rollout.sampling import SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return HFGenerationEngine(model, tok, [tok.eos_token_id], tok.pad_token_id, seed=0)


def _prompts(engine, texts):
    tok = engine.tokenizer
    return [tok(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False),
                add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_matches_transformers_generate(engine):
    prompts = _prompts(engine, ["Compute 3 + 4.", "Compute 12 - 7, then add 100 to the result please."])
    params = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    outs = engine.generate(prompts, [params, params])
    for prompt, out in zip(prompts, outs):
        ref = engine.model.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=engine.pad_token_id
        )[0, len(prompt):].tolist()
        assert out[0].token_ids == ref  # left padding in a mixed-length batch changes nothing
        assert out[0].finish_reason == "length"


def test_logprobs_equal_a_teacher_forced_forward(engine):
    prompt = _prompts(engine, ["Compute 5 + 2."])[0]
    out = engine.generate([prompt], [SamplingParams(max_new_tokens=10, temperature=0.8, logprobs=True, ignore_eos=True)])[0][0]
    ids = torch.tensor([prompt + out.token_ids])
    logits = engine.model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.8
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)


def test_n_samples_and_mixed_settings_in_one_batch(engine):
    prompts = _prompts(engine, ["Compute 1 + 1.", "Compute 2 + 2."])
    outs = engine.generate(
        prompts, [SamplingParams(max_new_tokens=5, n=3, ignore_eos=True), SamplingParams(max_new_tokens=2, temperature=0)]
    )
    assert [len(o) for o in outs] == [3, 1]
    assert all(len(g.token_ids) == 5 for g in outs[0]) and len(outs[1][0].token_ids) == 2
    assert outs[0][0].log_probs is None


def test_stop_string_and_stop_token(warm_model_dir):
    tok = AutoTokenizer.from_pretrained(warm_model_dir)
    model = AutoModelForCausalLM.from_pretrained(warm_model_dir, dtype=torch.float32).eval()
    engine = HFGenerationEngine(model, tok, [tok.eos_token_id], tok.pad_token_id)
    prompt = _prompts(engine, ["Compute 3 + 4. Put the final answer in \\boxed{}."])[0]
    free = engine.generate([prompt], [SamplingParams(max_new_tokens=24, temperature=0)])[0][0]
    assert "3 + 4 = " in tok.decode(free.token_ids)  # what the warm start taught
    out = engine.generate([prompt], [SamplingParams(max_new_tokens=24, temperature=0, stop=("4 =",))])[0][0]
    assert out.finish_reason == "stop" and out.stop_str == "4 ="
    assert "4 =" in tok.decode(out.token_ids)
    assert "4 =" not in tok.decode(out.token_ids[:-1])
    assert out.token_ids == free.token_ids[: len(out.token_ids)]
    third = free.token_ids[2]
    by_id = engine.generate([prompt], [SamplingParams(max_new_tokens=24, temperature=0, stop_token_ids=(third,))])[0][0]
    assert by_id.token_ids == free.token_ids[: free.token_ids.index(third) + 1] and by_id.finish_reason == "stop"


def test_eos_ends_a_row(engine):
    prompt = _prompts(engine, ["Compute 4 + 4."])[0]
    free = engine.generate([prompt], [SamplingParams(max_new_tokens=6, temperature=0, ignore_eos=True)])[0][0]
    eng = HFGenerationEngine(engine.model, engine.tokenizer, [free.token_ids[1]], engine.pad_token_id)
    out = eng.generate([prompt], [SamplingParams(max_new_tokens=6, temperature=0)])[0][0]
    assert out.token_ids == free.token_ids[: free.token_ids.index(free.token_ids[1]) + 1]
    assert out.finish_reason == "eos"


def test_bad_input(engine):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        engine.generate([[]], [SamplingParams(max_new_tokens=2)])
    with pytest.raises(ValueError, match="1 prompts but 2 sampling settings"):
        engine.generate([[1]], [SamplingParams(max_new_tokens=2)] * 2)


def test_a_seeded_request_draws_the_same_alone_or_in_any_batch(engine):
    """Each seeded sequence has a generator of its own: its tokens do not depend on the batch it shares."""
    target, *others = _prompts(engine, ["Compute 3 + 4.", "Compute 12 - 7 and then some more words.", "Hi"])
    seeded = SamplingParams(max_new_tokens=12, n=2, seed=1234, ignore_eos=True)
    alone = engine.generate([target], [seeded])[0]
    crowded = engine.generate([*others, target], [SamplingParams(max_new_tokens=7, ignore_eos=True),
                                                  SamplingParams(max_new_tokens=3, temperature=0.5), seeded])[-1]
    reordered = engine.generate([target, *others], [seeded, SamplingParams(max_new_tokens=12, seed=99),
                                                    SamplingParams(max_new_tokens=12, seed=7)])[0]
    assert [g.token_ids for g in alone] == [g.token_ids for g in crowded] == [g.token_ids for g in reordered]
    assert alone[0].token_ids != alone[1].token_ids  # the request's n sequences draw apart
    other = engine.generate([target], [SamplingParams(max_new_tokens=12, n=2, seed=1235, ignore_eos=True)])[0]
    assert [g.token_ids for g in other] != [g.token_ids for g in alone]
