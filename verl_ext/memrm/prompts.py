"""Judge prompts, presentation order and head/tail truncation for MemoryRewardBench.

Protocol (official evaluator): a system prompt (the long-form variant for Long-form_Generation; each task's entry in
``settings`` names its prompt family), a user message holding the question and the two trajectories as "Agent A"
and "Agent B", the verdict first as ``[[A]]``/``[[B]]``.
Order: per task file, ``random.Random(42)`` shuffles the rows, then draws each row's order ``[0, 1]`` or
``[1, 0]`` (Agent A = ``[chosen, rejected][order[0]]``). Dual-order mode presents both orders. Prompts longer than
the cap (131,072 tokens of the judge's own tokenizer) keep their first half and their last half minus 5 tokens.
The default prompt texts (``OUR_PROMPTS``) are this project's wording of the same output format; their instructions
differ from the official ones (the long-form prompt frames a different task from the official constraint audit), so
accuracies are not comparable with published numbers. For parity, ``official_prompts.load_official_prompts`` reads
the official system prompts from the user's own copy of the official repository (the text stays out of this one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Iterable, Sequence

from verl_ext.memrm.schema import TASKS, PairItem, task_entry

SYSTEM_PROMPT = """You will compare the memory-update trajectories of two memory-augmented agents, Agent A and Agent B. \
Both agents read the same long context piece by piece: each starts from an initial memory, updates it step by step, \
and finally answers the user's question from its memory. Decide which agent managed its memory better.

Judge by two criteria.
1. Correctness of every update step: is each update logically sound; does it keep every piece of critical \
information (nothing essential wrongly added, changed or dropped); is it concise (no redundant content); is it \
faithful to the context (no invented facts)?
2. Correctness of the final answer: is it accurate and complete with respect to the context? Either answer may be \
imperfect, and an error made early in the trajectory carries into the answer.

Weigh the strengths and weaknesses of both trajectories, going through them step by step and citing specific \
steps. A small but real advantage is enough to decide.

Output format: your very first characters must be the verdict, exactly [[A]] if Agent A is better or [[B]] if Agent \
B is better. Write your explanation after the verdict."""

LONGFORM_SYSTEM_PROMPT = """You will compare the trajectories of two memory-augmented writing agents, Agent A and \
Agent B. Both agents produce a long text step by step from the same instruction, keeping a plan and the text \
written so far as their memory. Decide which agent followed the instruction better across the whole trajectory.

Judge by two criteria.
1. Strict adherence to constraints: every instruction, numeric limit and format rule in the user question must be \
met; violating a hard constraint is a critical failure. Critical information from the instruction must be kept, \
and nothing may be invented that contradicts it.
2. Step-by-step audit: check each step against the constraints that apply to it; note any step that drops, alters \
or contradicts a required detail.

Think pass/fail: a trajectory that breaks a hard constraint loses to one that keeps every constraint, however well \
written it is. For example, if the instruction requires a section on every fifth floor and one agent skips one of \
those floors, that agent fails this requirement.

Output format: your very first characters must be the verdict, exactly [[A]] if Agent A is better or [[B]] if Agent \
B is better. Write your explanation after the verdict."""

USER_TEMPLATE = (
    "[User Question]\n{question}\n\n"
    "[The Start of Agent A's Trajectory]\n{a}\n[The End of Agent A's Trajectory]\n\n"
    "[The Start of Agent B's Trajectory]\n{b}\n[The End of Agent B's Trajectory]"
)

DEFAULT_CAP = 131072
OFFICIAL_SEED = 42


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """The judge system prompts, one per prompt family (``settings.PROMPT_FAMILIES``): each task's entry names its
    family, ``longform`` for Long-form_Generation, ``pair`` for the other tasks (the official evaluator picks the
    long-form one for the file whose name contains "form"). ``label`` (name and a hash of both texts) is recorded
    with every row and in results.json, so a report says which set produced it."""

    name: str
    pair: str
    longform: str
    source: str = ""

    @property
    def label(self) -> str:
        digest = hashlib.sha256((self.pair + "\0" + self.longform).encode()).hexdigest()[:12]
        return f"{self.name}:{digest}"

    def system(self, task: str) -> str:
        return getattr(self, task_entry(task).prompt)


OUR_PROMPTS = PromptSet("verl-ext", SYSTEM_PROMPT, LONGFORM_SYSTEM_PROMPT)


def judge_messages(item: PairItem, order: Sequence[int], prompts: PromptSet = OUR_PROMPTS) -> list[dict]:
    """[system, user] for ``item`` with Agent A = [chosen, rejected][order[0]]."""
    if sorted(order) != [0, 1]:
        raise ValueError(f"order {order!r} must be [0, 1] or [1, 0].")
    sides = (item.chosen, item.rejected)
    user = USER_TEMPLATE.format(question=item.question, a=sides[order[0]], b=sides[order[1]])
    return [{"role": "system", "content": prompts.system(item.task)}, {"role": "user", "content": user}]


def correct_letter(order: Sequence[int]) -> str:
    """The verdict that picks ``chosen`` under ``order``."""
    return "A" if list(order) == [0, 1] else "B"


@dataclasses.dataclass(frozen=True)
class Presentation:
    item: PairItem
    order: tuple[int, int]
    view: str  # "official" (the seeded order) or "swap" (its mirror)


def order_table(rows_per_task: dict[str, int], seed: int = OFFICIAL_SEED) -> dict[tuple[str, int], tuple[int, int]]:
    """(task, row index) -> order, as the official preprocessing draws it: per task file, one ``Random(seed)``
    shuffles the row indices, then draws each row's order in that shuffled sequence. Needs only the row counts,
    so conversion can stream the rows themselves."""
    table = {}
    for task in TASKS:
        indices = list(range(rows_per_task.get(task, 0)))
        rng = random.Random(seed)
        rng.shuffle(indices)
        for index in indices:
            order = [0, 1]
            rng.shuffle(order)
            table[(task, index)] = (order[0], order[1])
    return table


def official_orders(items: Iterable[PairItem], seed: int = OFFICIAL_SEED) -> list[Presentation]:
    """The official single order for in-memory items, in the official (shuffled) sequence."""
    items = list(items)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.task] = max(counts.get(item.task, 0), item.index + 1)
    table = order_table(counts, seed)
    by_key = {(i.task, i.index): i for i in items}
    return [Presentation(by_key[key], order, "official") for key, order in table.items() if key in by_key]


def presentations(items: Iterable[PairItem], mode: str = "seeded", seed: int = OFFICIAL_SEED) -> list[Presentation]:
    """``seeded``: the official order only; ``dual``: it and its mirror for every pair."""
    official = official_orders(items, seed)
    if mode == "seeded":
        return official
    if mode != "dual":
        raise ValueError(f"order mode {mode!r} must be 'seeded' or 'dual'.")
    swapped = [Presentation(p.item, (p.order[1], p.order[0]), "swap") for p in official]
    return [p for pair in zip(official, swapped) for p in pair]


def truncate_middle(token_ids: Sequence[int], cap: int = DEFAULT_CAP) -> tuple[list[int], bool]:
    """Keep the first cap//2 and the last cap//2 - 5 tokens when ``len >= cap`` (official: 65,536 + 65,531)."""
    if cap < 16:
        raise ValueError(f"truncation cap {cap} is too small to keep a head and a tail.")
    token_ids = list(token_ids)
    if len(token_ids) < cap:
        return token_ids, False
    head, tail = cap // 2, cap // 2 - 5
    return token_ids[:head] + token_ids[-tail:], True


def template_text(tokenizer, messages: list[dict]) -> str:
    """The judge prompt as the judge sees it: its chat template with a generation prompt, thinking disabled."""
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    except TypeError:  # templates without an enable_thinking switch
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
