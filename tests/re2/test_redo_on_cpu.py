import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_ext.re2.redo import RedoSpec, classify, is_redo, redo_rule, truncate_after_redo

PHRASE = "It's better to redo the question."
WORDS = st.lists(st.sampled_from(["so", "x", "=", "3", "\\boxed{4}", "wait", "It", "better", "redo", ".", "the"]),
                 max_size=12).map(" ".join)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("variant", ["It's", "It’s", "it`s", "It ʼs", "Its", "It is", "That's"])
def test_what_the_stop_string_fires_on_is_a_redo(variant):
    """Every text the rollout's stop string fires on counts as a redo: the stop string is the marker."""
    text = f"hmm. {variant} better to redo the question"
    assert any(stop in text for stop in RedoSpec(PHRASE).stop_strings)
    assert RedoSpec(PHRASE).is_redo(text)


@pytest.mark.parametrize("text", ["IT'S BETTER TO REDO THE QUESTION", "It's better to  redo the question",
                                  "It's better to redo\nthe question", "it's Better to redo the question"])
def test_what_the_stop_string_misses_is_no_redo(text):
    """A variant the stop string would not stop on is not a redo either (it would run on past the phrase)."""
    assert not any(stop in text for stop in RedoSpec(PHRASE).stop_strings)
    assert not RedoSpec(PHRASE).is_redo(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["x", " ", "\n", "It", "'", "’", "s", " better", " to", " redo", " the", " question",
                                  "s better to redo the question", "S", "IT'S BETTER TO REDO THE QUESTION", "."]),
                max_size=20).map("".join),
       st.sampled_from([(), ("s better to redo the question", "start over")]))
def test_stop_strings_and_detector_agree_on_every_text(text, variants):
    spec = RedoSpec(PHRASE, variants)
    assert spec.is_redo(text) is any(stop in text for stop in spec.stop_strings)


def test_variants_replace_the_default_marker():
    spec = RedoSpec(PHRASE, ("let me start over",))
    assert spec.stop_strings == ["let me start over"] and spec.is_redo("no. let me start over.")
    assert not spec.is_redo("It's better to redo the question.")
    with pytest.raises(ValueError, match="empty marker"):
        RedoSpec(PHRASE, ("  ",))


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


def _official_check_strict_redo(response: str, redo_str: str) -> bool:
    """The released reward manager's check, restated from its definition (the oracle of the strict rule)."""
    import re

    matches = list(re.compile(r"boxed\{.*?\}").finditer(response))
    box_id = matches[-1].start() if matches else None
    return (redo_str in response[-len(response) // 3:]) and (box_id is None or response.rfind(redo_str) - box_id > 40)


OFFICIAL = "s better to redo the question"
X = "x" * 120


@pytest.mark.parametrize("text,expected", [
    (X + " It's better to redo the question.", True),
    (X + " It is better to redo the question.", True),            # "is better" ends with "s better"
    (X + " It’s better to redo the question.", True),             # any apostrophe: the substring starts after it
    (X + " IT'S BETTER TO REDO THE QUESTION.", False),            # case-sensitive
    (X + " It's better to  redo the question.", False),           # a double space breaks the substring
    (X + " it's better to redo\nthe question.", False),           # so does a newline
    ("It's better to redo the question. " + X, False),            # not in the last third
    ("", False), ("ab", False),
    (X + "\\boxed{3} It's better to redo the question.", False),  # starts within 40 characters of the box
    (X + "\\boxed{3}" + "y" * 40 + "It's better to redo the question.", True),   # 41 -> more than 40
    (X + "\\boxed{3}" + "y" * 28 + "It's better to redo the question.", False),  # exactly 40: not more than 40
    (X + "\\boxed{3 It's better to redo the question.", True),    # no closing brace: no box
    (X + "\\boxed{3\n} It's better to redo the question.", True), # the brace on another line: no box
    ("y" * 60 + " It's better to redo the question. \\boxed{3}" + "z" * 30, False),  # box after the phrase
    ("It's better to redo the question." + "y" * 100 + "It's better to redo the question.", True),  # last occurrence
])
def test_strict_rule_is_the_official_check(text, expected):
    assert _official_check_strict_redo(text, OFFICIAL) is expected  # the oracle agrees with the hand label
    assert is_redo(text, PHRASE, "strict") is expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["x", "y ", "\\boxed{4}", "boxed{", "}", "\n", " It's better to redo the question.",
                                  " it is better to redo the question", "IT'S BETTER TO REDO THE QUESTION", "  "]),
                max_size=30).map("".join))
def test_strict_rule_matches_the_official_check_decision_for_decision(text):
    assert is_redo(text, PHRASE, "strict") is _official_check_strict_redo(text, OFFICIAL)


def test_last_third_is_the_official_slice():
    # n = 100: the official slice keeps the last ceil(100 / 3) = 34 characters (indices 66..99), one more than a third.
    assert len(OFFICIAL) == 29
    inside = "x" * 66 + OFFICIAL + "abcde"  # starts at index 66: the first character of the slice
    assert len(inside) == 100 and is_redo(inside, PHRASE, "strict")
    outside = "x" * 65 + OFFICIAL + "abcdef"  # starts at 65: one character before the slice
    assert len(outside) == 100 and not is_redo(outside, PHRASE, "strict")


def test_anywhere_and_eval_rules():
    early = PHRASE + " " + "x" * 200
    assert is_redo(early, PHRASE, "anywhere") and not is_redo(early, PHRASE, "strict")
    assert not is_redo("IT'S BETTER TO REDO THE QUESTION", PHRASE, "anywhere")  # no stop string fires on it
    assert is_redo("so the answer is \\boxed{3}", PHRASE, "eval") is False
    assert is_redo("so the answer is 3" + "." * 100, PHRASE, "eval")  # no boxed in the last 100 characters
    with pytest.raises(ValueError, match="redo rule 'loose' is unknown"):
        is_redo(early, PHRASE, "loose")


def test_classify():
    rule = redo_rule(PHRASE)
    assert classify("so \\boxed{2}", True, rule) == "correct"
    assert classify("so \\boxed{3}", False, rule) == "incorrect"
    assert classify("hmm " + PHRASE, False, rule) == "redo"
    with pytest.raises(ValueError, match="redo phrase '.' is empty"):
        RedoSpec(".")
