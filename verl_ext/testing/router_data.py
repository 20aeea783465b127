"""A small router-training set for CPU runs: chat rows in two task classes with prompts long enough (30-60 words)
that the streaming window of the CPU smoke config leaves sparse heads something to skip.

    python -m verl_ext.testing.router_data OUT.parquet [--rows 32 --seed 0]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

WORDS = "alpha beta gamma delta river stone cloud maple orbit lemon copper violet quartz meadow harbor falcon".split()


def write_router_training_data(path: str | Path, rows: int = 32, seed: int = 0,
                               tasks: tuple[str, str] = ("sensitive", "robust")) -> Path:
    """Parquet with ``messages`` (user prompt, assistant answer) and ``task``; half the rows per task."""
    import pandas as pd

    rng = random.Random(seed)
    records = []
    for i in range(rows):
        task = tasks[i % 2]
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60)))
        if task == tasks[0]:  # retrieval-like: the answer is a word from early in the context
            key = context.split()[rng.randint(0, 5)]
            prompt, answer = f"{context}\nWhich word came first after the start? ", key
        else:  # continuation-like: the answer continues the context's end
            prompt, answer = f"Continue: {context}", " ".join(context.split()[-4:])
        records.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                        "task": task})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_router_training_data(args.out, rows=args.rows, seed=args.seed))


if __name__ == "__main__":
    main()
