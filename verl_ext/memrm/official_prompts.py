"""The official judge system prompts, read from the user's own copy of the official MemoryRewardBench repository.

The official evaluator keeps its two system prompts as string constants of one Python module,
``evaluating/memreward_bench/utils/prompt.py``: ``INPUT_PAIR_SYSTEM_PROMPT`` and
``INPUT_LONGGEN_PAIR_SYSTEM_PROMPT`` (the latter for the Long-form_Generation file). They are read with ``ast``
(never imported or executed) and used verbatim, surrounding newlines included. Their text is not part of verl-ext.

    python -m verl_ext.memrm.convert DATA OUT.parquet --tokenizer JUDGE --official-prompts PATH/TO/MemoryRewardBench
"""

from __future__ import annotations

import ast
from pathlib import Path

from verl_ext.memrm.prompts import PromptSet

PROMPT_MODULE = Path("evaluating/memreward_bench/utils/prompt.py")
CONSTANTS = {"pair": "INPUT_PAIR_SYSTEM_PROMPT", "longform": "INPUT_LONGGEN_PAIR_SYSTEM_PROMPT"}


def load_official_prompts(repo: str | Path) -> PromptSet:
    """The official prompt set from a clone of the official repository (its root, or the prompt module itself)."""
    repo = Path(repo)
    path = repo if repo.is_file() else repo / PROMPT_MODULE
    if not path.is_file():
        raise FileNotFoundError(f"no official prompt module at {path}; pass the root of your clone of the official "
                                f"MemoryRewardBench repository (it holds {PROMPT_MODULE}).")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as err:
        raise ValueError(f"{path} is not Python ({err.msg}, line {err.lineno}).") from err
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in CONSTANTS.values():
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError as err:
                        raise ValueError(f"{path} line {node.lineno}: {target.id} is not a string literal.") from err
    missing = [name for name in CONSTANTS.values() if not isinstance(found.get(name), str)]
    if missing:
        raise ValueError(f"{path} defines no string {missing}; expected the official module with "
                         f"{list(CONSTANTS.values())}.")
    return PromptSet("official", found[CONSTANTS["pair"]], found[CONSTANTS["longform"]], source=str(path))
