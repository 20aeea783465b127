import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_ext.re2.redo import classify, is_redo, phrase_pattern, truncate_after_redo

PHRASE = "It's better to redo the question."
WORDS = st.lists(st.sampled_from(["so", "x", "=", "3", "\\boxed{4}", "wait", "It", "better", "redo", ".", "the"]),
                 max_size=12).map(" ".join)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("variant", ["It's", "It’s", "it`s", "IT'S", "It ʼs"])
def test_apostrophe_and_case_variants(variant):
    assert phrase_pattern(PHRASE).search(f"hmm. {variant} better to  redo\nthe question")


def test_truncates_right_after_the_phrase(tokenizer, detector):
    eos = tokenizer.eos_token_id
    ids = enc(tokenizer, "1 + 1 = 3? It's better to redo the question. Let me start over: 2")
    out = truncate_after_redo(ids, detector, eos)
    assert tokenizer.decode(out, skip_special_tokens=True) == "1 + 1 = 3? It's better to redo the question."
    assert out[-1] == eos
    # Tokens before the phrase are kept exactly as sampled.
    match = detector.find(ids)
    assert out[: match.token_end - 1] == ids[: match.token_end - 1]


def test_phrase_without_period_gets_one(tokenizer, detector):
    out = truncate_after_redo(enc(tokenizer, "hard. It's better to redo the question"), detector, tokenizer.eos_token_id)
    assert tokenizer.decode(out, skip_special_tokens=True) == "hard. It's better to redo the question."


def test_no_phrase_is_unchanged(tokenizer, detector):
    ids = enc(tokenizer, "1 + 1 = 2. The answer is \\boxed{2}.")
    assert truncate_after_redo(ids, detector, tokenizer.eos_token_id) == ids
    assert truncate_after_redo([], detector, tokenizer.eos_token_id) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=WORDS, after=WORDS, with_phrase=st.booleans(), variant=st.sampled_from(["It's", "It’s", "it's"]))
def test_truncation_properties(tokenizer, detector, before, after, with_phrase, variant):
    eos = tokenizer.eos_token_id
    text = f"{before} {variant} better to redo the question. {after}" if with_phrase else f"{before} {after}"
    ids = enc(tokenizer, text.strip())
    out = truncate_after_redo(ids, detector, eos)
    assert truncate_after_redo(out, detector, eos) == out  # idempotent
    if detector.find(ids) is None:
        assert out == ids
    else:
        decoded = tokenizer.decode(out, skip_special_tokens=True)
        assert detector.find_text(decoded).end() == len(decoded) - 1 and decoded.endswith(".")  # ends at the phrase
        assert len(out) <= len(ids) + 2  # never grows by more than "." + EOS
        assert out[-1] == eos


def test_phrase_at_start(tokenizer, detector):
    out = truncate_after_redo(enc(tokenizer, "It's better to redo the question. blah"), detector, tokenizer.eos_token_id)
    assert tokenizer.decode(out, skip_special_tokens=True) == "It's better to redo the question."


def test_strict_rule_hand_cases():
    pattern = phrase_pattern(PHRASE)
    early = PHRASE + " " + "x" * 200
    assert is_redo(early, pattern, "anywhere") and not is_redo(early, pattern, "strict")
    late = "x" * 200 + " " + PHRASE
    assert is_redo(late, pattern, "strict")
    near_box = "x" * 200 + "\\boxed{3} " + PHRASE
    assert not is_redo(near_box, pattern, "strict")  # within 40 chars after the last boxed{
    far_box = "x" * 100 + "\\boxed{3} " + "y" * 60 + PHRASE
    assert is_redo(far_box, pattern, "strict")
    with pytest.raises(ValueError, match="redo rule 'loose' is unknown"):
        is_redo(late, pattern, "loose")


def test_classify():
    pattern = phrase_pattern(PHRASE)
    assert classify("so \\boxed{2}", True, pattern) == "correct"
    assert classify("so \\boxed{3}", False, pattern) == "incorrect"
    assert classify("hmm " + PHRASE, False, pattern) == "redo"
    with pytest.raises(ValueError, match="redo phrase '.' is empty"):
        phrase_pattern(".")
