import pytest

from verl_ext.memrm.loaders import load_items
from verl_ext.memrm.parsing import parse_lenient, parse_strict
from verl_ext.memrm.prompts import (
    LONGFORM_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    correct_letter,
    judge_messages,
    presentations,
    truncate_middle,
)
from verl_ext.memrm.synthetic import write_benchmark


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return load_items(write_benchmark(tmp_path_factory.mktemp("memrm"), per_cell=2))


def test_seeded_order_is_reproducible_and_balanced(items):
    first = [(p.item.pair_id, p.order) for p in presentations(items)]
    assert first == [(p.item.pair_id, p.order) for p in presentations(list(reversed(items)))]
    share_a = sum(p.order == (0, 1) for p in presentations(items)) / len(items)
    assert 0.3 < share_a < 0.7
    dual = presentations(items, "dual")
    assert len(dual) == 2 * len(items)
    assert all(a.item is b.item and a.order == b.order[::-1] and b.view == "swap" for a, b in zip(dual[::2], dual[1::2]))


def test_messages_put_chosen_where_the_order_says(items):
    item = next(i for i in items if i.task == "Long-form_Generation")
    messages = judge_messages(item, (1, 0))
    assert messages[0]["content"] == LONGFORM_SYSTEM_PROMPT
    user = messages[1]["content"]
    assert user.index(item.rejected) < user.index(item.chosen)  # Agent A is the rejected side
    assert correct_letter((1, 0)) == "B" and correct_letter((0, 1)) == "A"
    other = next(i for i in items if i.task != "Long-form_Generation")
    assert judge_messages(other, (0, 1))[0]["content"] == SYSTEM_PROMPT
    assert "[[A]]" in SYSTEM_PROMPT and "verdict" in SYSTEM_PROMPT


def test_truncation_keeps_head_and_tail():
    ids = list(range(300))
    kept, cut = truncate_middle(ids, cap=100)
    assert cut and kept == list(range(50)) + list(range(255, 300)) and len(kept) == 95
    assert truncate_middle(ids[:99], cap=100) == (ids[:99], False)


@pytest.mark.parametrize("output,strict,lenient", [
    ("[[A]] because ...", "A", "A"),
    ("[[B]]\nAgent B keeps the fact", "B", "B"),
    ("After comparing both, [[B]]", None, "B"),          # preamble: official rule scores it 0
    ("<think>A looks good [[A]]</think>\n[[B]]", None, "B"),
    ("<think>never closed [[A]]", None, None),
    ("no verdict at all", None, None),
    ("[[A]] first, but later [[B]]", "A", "B"),
    (None, None, None),
])
def test_verdict_parsing(output, strict, lenient):
    assert parse_strict(output) == strict and parse_lenient(output) == lenient


def test_fit_messages_cuts_the_middle_of_the_trajectories(tiny_model_dir):
    from transformers import AutoTokenizer

    from verl_ext.memrm.convert import fit_messages
    from verl_ext.memrm.prompts import template_text as _template_text

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    user = "BEGIN " + " ".join(f"step {k} keeps the key." for k in range(400)) + " END"
    messages = [{"role": "system", "content": "Judge."}, {"role": "user", "content": user}]
    fitted, tokens, cut = fit_messages(tok, messages, cap=600)
    real = len(tok(_template_text(tok, fitted), add_special_tokens=False)["input_ids"])
    assert cut and real < 600 and abs(real - tokens) <= 8
    assert fitted[1]["content"].startswith("BEGIN") and fitted[1]["content"].endswith("END")
    assert fitted[0] == messages[0]
    assert fit_messages(tok, messages, cap=100000) == (messages, len(tok(_template_text(tok, messages),
                                                                          add_special_tokens=False)["input_ids"]), False)
    with pytest.raises(ValueError, match="leaves no room for the trajectories"):
        fit_messages(tok, [{"role": "system", "content": "x " * 400}, {"role": "user", "content": user}], cap=300)
