"""Build Re² training / evaluation parquet in verl's RL format from a question file and a prompt template.

    python -m verl_ext.re2.data IN OUT --template recipes/re2/prompts/redo_instruction.txt [--data-source math_dapo]

IN is JSONL or parquet with a question column (``question``, ``problem`` or ``extra_info.question``) and an answer
column (``answer``, ``ground_truth`` or ``reward_model.ground_truth``). The template holds ``{question}``. Rows with
no question or no answer are not dropped silently: the command fails naming the first such row, unless
``--skip-bad-rows`` is given, in which case it reports how many were skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

QUESTION_KEYS = ("question", "problem")
ANSWER_KEYS = ("answer", "ground_truth")


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _field(row: dict, keys: tuple[str, ...], nested: tuple[str, str]) -> Optional[Any]:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    outer, inner = nested
    container = row.get(outer)
    if isinstance(container, dict) and container.get(inner) not in (None, ""):
        return container[inner]
    return None


def load_template(path: str | Path) -> str:
    template = Path(path).read_text()
    if "{question}" not in template:
        raise ValueError(f"template {path} has no {{question}} placeholder.")
    return template


def to_rl_rows(rows: list[dict], template: str, data_source: str, split: str, skip_bad_rows: bool = False):
    """verl RL rows; returns (rows, skipped count)."""
    out, skipped = [], 0
    for index, row in enumerate(rows):
        question = _field(row, QUESTION_KEYS, ("extra_info", "question"))
        answer = _field(row, ANSWER_KEYS, ("reward_model", "ground_truth"))
        if question is None or answer is None:
            missing = "question" if question is None else "answer"
            if skip_bad_rows:
                skipped += 1
                continue
            raise ValueError(f"row {index} has no {missing} (looked for {QUESTION_KEYS if question is None else ANSWER_KEYS}"
                             " and the nested verl fields); fix it or pass --skip-bad-rows.")
        out.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": template.replace("{question}", str(question).strip())}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(answer)},
            "extra_info": {"split": split, "index": index, "question": str(question), "answer": str(answer)},
        })
    return out, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--template", required=True, help="prompt template file with {question}")
    parser.add_argument("--data-source", default="math_dapo")
    parser.add_argument("--split", default="train")
    parser.add_argument("--skip-bad-rows", action="store_true")
    args = parser.parse_args(argv)
    import pandas as pd

    rows, skipped = to_rl_rows(_read(args.input), load_template(args.template), args.data_source, args.split,
                               args.skip_bad_rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.output)
    print(json.dumps({"rows": len(rows), "skipped": skipped, "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
