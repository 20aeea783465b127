"""A small MemoryRewardBench in the official Hugging Face schema, for CI and smoke runs.

    python -m verl_ext.memrm.synthetic OUT_DIR [--per-cell 1] [--seed 0]

Writes one file per registered task (``Long-context_Reasoning.jsonl``, ``Multi-turn_Dialogue_Understanding.jsonl``,
``Long-form_Generation.jsonl``) with ``per_cell`` pairs for every setting x length (10 x 5 cells with the built-in
settings), using each setting's released label forms (e.g. ``task="parallel-self_correct"``,
``subtask="longgenbench_short_sequantial"``), so loading exercises the label normalisation. Contexts are short
synthetic texts whose size grows with the bucket; ``chosen`` keeps the key fact, ``rejected`` drops or corrupts it.
Which side is longer alternates from pair to pair (the other side gets extra distractor steps), so no judge can
score above chance by length alone: pick-longer and pick-shorter are 0.5 each.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from verl_ext.memrm.registry import REGISTRY, LiveMapping
from verl_ext.memrm.schema import LENGTHS, SETTINGS, TASKS

# Released label forms per setting, (task, subtask), from each setting's entry (verl_ext/memrm/settings.py).
RAW_LABELS = LiveMapping(lambda: REGISTRY.index.released)
_NAMES = ["Ada", "Bo", "Cyd", "Dee", "Eli", "Fay"]
_PLACES = ["kitchen", "garden", "office", "hallway", "garage", "attic"]


def _pair(setting: str, length: str, rng: random.Random, chosen_longer: bool) -> dict:
    scale = 2 ** LENGTHS.index(length)
    who, where = rng.choice(_NAMES), rng.choice(_PLACES)
    filler = " ".join(f"{rng.choice(_NAMES)} walked past the {rng.choice(_PLACES)}." for _ in range(3 * scale))
    question = f"[Context]\n{filler} {who} left the key in the {where}. {filler}\n\n[Question]Where is the key?"
    steps = [f"Step {k}: memory: {who} was seen." for k in range(1, 2 + scale)]
    wrong = rng.choice([p for p in _PLACES if p != where])
    good = steps + [f"Step {len(steps) + 1}: memory: the key is in the {where}."]
    bad = steps + [f"Step {len(steps) + 1}: memory: (dropped)."]
    # Two distractor steps on the side that must be longer (more than the fact's few characters).
    padded = good if chosen_longer else bad
    padded += [f"Step {len(padded) + k}: memory: {rng.choice(_NAMES)} walked past the {rng.choice(_PLACES)}."
               for k in (1, 2)]
    chosen = "\n".join(good + [f"Answer: \\boxed{{{where}}}"])
    rejected = "\n".join(bad + [f"Answer: \\boxed{{{wrong}}}"])
    task, subtask = RAW_LABELS[setting]
    return {"task": task, "chosen": chosen, "rejected": rejected, "subtask": subtask, "ctx_length": length,
            "question": question}


def write_benchmark(out_dir: str | Path, per_cell: int = 1, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for task in TASKS:
        cells = [(setting, length) for setting in SETTINGS[task] for length in LENGTHS for _ in range(per_cell)]
        rows = [_pair(setting, length, rng, chosen_longer=i % 2 == 0) for i, (setting, length) in enumerate(cells)]
        with open(out / f"{task}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--per-cell", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_benchmark(args.out_dir, args.per_cell, args.seed))


if __name__ == "__main__":
    main()
