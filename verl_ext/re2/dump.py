"""Dump a model's generations in the format ``python -m verl_ext.re2.eval`` reads.

    python -m verl_ext.re2.dump MODEL DATA.parquet OUT_DIR [--config RUN_DIR] [--n 8] [--prefix-continuations 4]
        [--max-new-tokens 64] [--temperature 1.0] [--top-p 1.0] [--limit QUESTIONS] [--seed 0]

``DATA.parquet`` is verl RL data (``prompt`` chat messages, ``reward_model.ground_truth``), e.g. the validation file
of a run. Writes, with transformers on this machine (CPU or one GPU):

- ``OUT_DIR/samples.jsonl``: ``--n`` sampled answers per question, one line each (``input``, ``output``, ``gts``):
  what ``eval avg`` and ``eval tts`` read;
- ``OUT_DIR/prefix.jsonl``: for every one of those answers, its prefixes at 0.1 .. 0.8 of its tokens (cut before its
  redo phrase, as training cuts them) continued ``--prefix-continuations`` times, each line with
  ``prefix_fraction`` and ``prefix_source_correct`` (whether the answer the prefix was cut from is correct; a redo
  answer is not): what ``eval prefix`` reads. ``--prefix-continuations 0`` skips it.

Generation stops at Re²'s redo phrase (as in training), so a redo sample ends right after it. The phrase, its
variants and the rule are the run's (``--config``: the run folder or its trainer config; the defaults without).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _rows(path: Path, limit: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()
    rows = []
    for index, row in enumerate(table[:limit] if limit else table):
        truth = (row.get("reward_model") or {}).get("ground_truth")
        if not row.get("prompt") or truth is None:
            raise ValueError(f"{path} row {index} (0-based): needs a chat 'prompt' and reward_model.ground_truth.")
        rows.append({"messages": list(row["prompt"]), "truth": str(truth)})
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def dump(model_dir: str | Path, data: str | Path, out: str | Path, n: int = 8, prefix_continuations: int = 4,
         max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0, limit: int | None = None,
         seed: int = 0, config: str | Path | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_ext.re2.config import re2_config_from_file
    from verl_ext.re2.prefixes import cut_before_redo
    from verl_ext.re2.redo import RedoDetector
    from verl_ext.rollout.hf_engine import HFGenerationEngine
    from verl_ext.rollout.sampling import SamplingParams
    from verl_ext.scoring.math_grader import MathGrader

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    engine = HFGenerationEngine(model, tokenizer, [tokenizer.eos_token_id], tokenizer.pad_token_id, seed=seed)
    spec = re2_config_from_file(config).redo_spec
    stop = tuple(spec.stop_strings)
    detector = RedoDetector(tokenizer, spec)
    rows = _rows(Path(data), limit)
    prompts = [tokenizer(tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"] for r in rows]
    texts = [tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False) for r in rows]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, stop=stop)
    grader = MathGrader()
    written = {"samples": 0, "prefix": 0}
    try:
        with torch.no_grad():
            answers = engine.generate(prompts, [params] * len(prompts))
        with open(out / "samples.jsonl", "w") as f:
            for row, text, gens in zip(rows, texts, answers):
                for g in gens:
                    f.write(json.dumps({"input": text, "output": tokenizer.decode(g.token_ids, skip_special_tokens=True),
                                        "gts": row["truth"]}) + "\n")
                    written["samples"] += 1
        if prefix_continuations > 0:
            cont = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  n=prefix_continuations, stop=stop)
            with open(out / "prefix.jsonl", "w") as f:
                for row, text, prompt, gens in zip(rows, texts, prompts, answers):
                    outputs = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in gens]
                    correct = [grade.correct and not spec.is_redo(o) for grade, o in
                               zip(grader.grade_many([(o, row["truth"]) for o in outputs]), outputs)]
                    requests, meta = [], []
                    for g, ok in zip(gens, correct):
                        body = cut_before_redo(g.token_ids, detector)
                        for fraction in FRACTIONS:
                            cut = int(len(body) * fraction)
                            requests.append(prompt + body[:cut])
                            meta.append((fraction, ok, body[:cut]))
                    with torch.no_grad():
                        continued = engine.generate(requests, [cont] * len(requests))
                    for (fraction, ok, head), conts in zip(meta, continued):
                        for c in conts:
                            f.write(json.dumps({"input": text, "gts": row["truth"], "prefix_fraction": fraction,
                                                "prefix_source_correct": ok,
                                                "output": tokenizer.decode(head + c.token_ids,
                                                                           skip_special_tokens=True)}) + "\n")
                            written["prefix"] += 1
    finally:
        grader.close()
    return {"questions": len(rows), **written, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_ext.re2.dump", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=8, help="sampled answers per question")
    parser.add_argument("--prefix-continuations", type=int, default=4, help="continuations per prefix (0: none)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None, help="only the first QUESTIONS rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None,
                        help="the run folder (or its trainer config): the redo phrase, variants and rule it trained with")
    args = parser.parse_args(argv)
    print(json.dumps(dump(args.model, args.data, args.out, args.n, args.prefix_continuations, args.max_new_tokens,
                          args.temperature, args.top_p, args.limit, args.seed, args.config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
