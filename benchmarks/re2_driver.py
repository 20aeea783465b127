"""Re²'s per-step bookkeeping vs plain GRPO's, and math grading throughput, on 2 CPU cores.

    python benchmarks/re2_driver.py [--questions 32 --prefixes 8 --continuations 8 --length 512]

Synthetic step of 32 questions x 8 prefixes x 8 continuations = 2048 continuations of up to 512 tokens, with
redo phrases in some full responses and continuations. Re² driver work (grading excluded): building 256 prefixes
(redo cut + truncation on token ids), redo truncation of 2048 continuations, Eq. 1 rewards, degenerate-group
filter, and the `re2` advantage on (2048, L) tensors. Baseline in the same run: plain GRPO's work on the same
batch (verl's `compute_grpo_outcome_advantage` and a question-level degenerate-group filter). Grading: the math
grader (math-verify in a pool of child processes, 5 s per-item timeout, ``grade_many``) on a plain mix of answer
forms, then on a mix of the same size with 1% pathological answers (half refused by the caps, half ended only by the
timeout). A timed-out item burns its timeout on one core, so the pathological mix is measured against its floor:
grading_vs_floor = wall / (benign / plain-mix rate + timed-out x timeout / 2 cores).
Targets: Re² driver work <= 2 s; plain grading >= 300 answers/s; grading_vs_floor <= 1.25; no item over its
timeout + 1 s. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch

from verl.trainer.ppo import core_algos

from _timing import median_seconds
from verl_ext.re2.advantage import compute_re2_advantage
from verl_ext.re2.filtering import degenerate_groups, keep_mask
from verl_ext.re2.prefixes import PrefixConfig, build_prefix_groups
from verl_ext.re2.redo import RedoDetector, truncate_after_redo
from verl_ext.re2.reward import three_way_rewards
from verl_ext.scoring.math_grader import MathGrader
from verl_ext.testing.tiny_model import train_tokenizer

REDO = " It's better to redo the question. "


def synthetic_step(tokenizer, questions, prefixes, continuations, length, rng):
    words = tokenizer.encode("so we compute 3 + 4 = 7 and then check the result carefully", add_special_tokens=False)
    redo_ids = tokenizer.encode(REDO, add_special_tokens=False)

    def response(redo: bool):
        body = [rng.choice(words) for _ in range(rng.randint(length // 4, length - len(redo_ids) - 4))]
        if redo:
            cut = rng.randint(0, len(body))
            body = body[:cut] + redo_ids + body[cut:]
        return body[:length]

    full = [[response(rng.random() < 0.2) for _ in range(prefixes)] for _ in range(questions)]
    conts = [response(rng.random() < 0.2) for _ in range(questions * prefixes * continuations)]
    outcomes = [rng.choice(["correct", "incorrect", "incorrect"]) for _ in conts]
    return full, conts, outcomes


def re2_driver(tokenizer, detector, full, conts, outcomes, prefixes, continuations, length, rng):
    eos = tokenizer.eos_token_id
    groups = []
    for q, responses in enumerate(full):
        groups += build_prefix_groups(f"q{q}", [1, 2, 3], responses, PrefixConfig(), rng, detector, [eos])
    truncated = [truncate_after_redo(c, detector, eos) for c in conts]
    outcomes = ["redo" if len(t) != len(c) or detector.find(t) else o for t, c, o in zip(truncated, conts, outcomes)]
    group_ids = [g.uid for g in groups for _ in range(continuations)]
    question_ids = [g.question_uid for g in groups for _ in range(continuations)]
    scores = three_way_rewards(outcomes, question_ids, group_ids, 5)
    kept = keep_mask(scores, group_ids)
    rows = int(kept.sum())
    token_rewards, mask = _tensors(scores[kept], [len(t) for t, k in zip(truncated, kept) if k], length + 2)
    index = np.array([g for g, k in zip(group_ids, kept) if k], dtype=object)
    compute_re2_advantage(token_rewards, mask, index)
    return rows


def grpo_driver(scores, group_ids, lengths, length):
    dropped = degenerate_groups(scores, group_ids)
    keep = np.array([g not in dropped for g in group_ids])
    token_rewards, mask = _tensors(scores[keep], [n for n, k in zip(lengths, keep) if k], length)
    index = np.array([g for g, k in zip(group_ids, keep) if k], dtype=object)
    core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index)


def _tensors(scores, lengths, width):
    mask = torch.zeros(len(lengths), width)
    rewards = torch.zeros(len(lengths), width)
    for row, n in enumerate(lengths):
        n = max(1, min(n, width))
        mask[row, :n] = 1
        rewards[row, n - 1] = float(scores[row])
    return rewards, mask


FORMS = [
    lambda v: (f"so \\boxed{{{v}}}", str(v)),                       # plain integer, right
    lambda v: (f"so \\boxed{{{v + 1}}}", str(v)),                   # plain integer, wrong
    lambda v: (f"\\boxed{{\\frac{{{2 * v}}}{{2}}}}", str(v)),       # needs math-verify
    lambda v: (f"\\boxed{{{v}\\%}}", f"{v}\\%"),                    # exact string
    lambda v: ("no answer", str(v)),                               # no \\boxed
]
# Refused by the caps before parsing (verl_ext/scoring/caps.py) ...
CAPPED = [lambda v: f"{v % 7 + 3}^{{{v % 7 + 3}^{{{v % 7 + 3}^{{9}}}}}}", lambda v: f"7^{{99999999{v % 10}}}",
          lambda v: f"{250000 + v}!", lambda v: "{" * 40 + str(v) + "}" * 40, lambda v: "x+" * (600 + v)]
# ... and harmless-looking answers sympy spins on for far longer than any timeout: only the timeout ends them.
TIMED_OUT = [lambda v: f"\\sum_{{n=1}}^{{{300 + v % 50}}} n^{{n}}"]


def plain_mix(count: int, rng) -> list[tuple[str, str]]:
    return [rng.choice(FORMS)(rng.randint(1, 999)) for _ in range(count)]


def grade_timed(grader: MathGrader, items) -> tuple[float, list[str], float]:
    """(wall seconds, statuses, slowest item's seconds) of grading ``items`` concurrently (``grade_many``)."""
    start = time.perf_counter()
    grades = grader.grade_many(items)
    return time.perf_counter() - start, [g.status for g in grades], max(g.seconds for g in grades)


def grading_throughput(count: int, rng, timeout_s: float) -> dict:
    """Plain mix, then the same size of mix with 1% pathological answers (half refused by the caps, half ended by
    the timeout), each through one warm grader; grading_vs_floor = pathological-mix wall time over its floor."""
    grader = MathGrader(timeout_s=timeout_s)
    grader.grade("\\boxed{\\frac{1}{2}}", "0.5")  # start the children before timing
    plain_s, _, _ = grade_timed(grader, plain_mix(count, rng))
    plain_rate = count / plain_s
    items = plain_mix(count, rng)
    n_bad = max(2, count // 100)
    slots = rng.sample(range(count), n_bad)
    for i, slot in enumerate(slots):
        forms = CAPPED if i % 2 == 0 else TIMED_OUT
        items[slot] = (f"so \\boxed{{{forms[(i // 2) % len(forms)](i)}}}", "2")
    mixed_s, statuses, slowest = grade_timed(grader, items)
    timed_out = statuses.count("timeout")
    benign = count - n_bad
    floor = benign / plain_rate + timed_out * timeout_s / 2  # a timed-out item burns its timeout on one of 2 cores
    stats = dict(grader.stats)
    grader.close()
    return {"plain_answers_per_s": plain_rate, "mixed_s": mixed_s, "floor_s": floor, "grading_vs_floor": mixed_s / floor,
            "pathological": n_bad, "refused": statuses.count("refused"), "timed_out": timed_out,
            "slowest_item_s": slowest, "timeout_s": timeout_s, "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--prefixes", type=int, default=8)
    parser.add_argument("--continuations", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--grading-items", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-item grading timeout (s)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = random.Random(0)
    tokenizer = train_tokenizer(512)
    detector = RedoDetector(tokenizer)
    full, conts, outcomes = synthetic_step(tokenizer, args.questions, args.prefixes, args.continuations, args.length, rng)
    group_ids = [f"q{i // (args.prefixes * args.continuations)}" for i in range(len(conts))]
    scores = np.array([1.0 if o == "correct" else 0.0 for o in outcomes])
    re2_s = median_seconds(lambda: re2_driver(tokenizer, detector, full, conts, outcomes, args.prefixes,
                                           args.continuations, args.length, random.Random(1)), args.repeats)
    grpo_s = median_seconds(lambda: grpo_driver(scores, group_ids, [len(c) for c in conts], args.length), args.repeats)
    g = grading_throughput(args.grading_items, rng, args.timeout)
    print(f"{len(conts)} continuations ({args.questions} questions x {args.prefixes} prefixes x {args.continuations})")
    print(f"Re² driver work: {re2_s:.3f} s; plain GRPO driver work: {grpo_s:.3f} s; ratio {re2_s / grpo_s:.1f}x")
    print(f"grading, plain mix: {g['plain_answers_per_s']:.0f} answers/s over {args.grading_items} answers")
    print(f"grading, {g['pathological']} pathological in {args.grading_items} ({g['refused']} refused by the caps, "
          f"{g['timed_out']} timed out at {args.timeout} s): {g['mixed_s']:.1f} s against a floor of {g['floor_s']:.1f} s "
          f"= {g['grading_vs_floor']:.2f}x; slowest item {g['slowest_item_s']:.2f} s; outcomes {g['stats']}")
    print(json.dumps({"re2_driver_s": round(re2_s, 4), "grpo_driver_s": round(grpo_s, 4),
                      "re2_over_grpo": round(re2_s / grpo_s, 2),
                      "grading_answers_per_s": round(g["plain_answers_per_s"], 1),
                      "grading_vs_floor": round(g["grading_vs_floor"], 3), "mixed_grading_s": round(g["mixed_s"], 2),
                      "floor_s": round(g["floor_s"], 2), "slowest_item_s": round(g["slowest_item_s"], 2),
                      "timeout_s": args.timeout, "refused": g["refused"], "timed_out": g["timed_out"],
                      "continuations": len(conts), "max_tokens": args.length,
                      "math_verify_calls": g["stats"].get("calls", 0)}))


if __name__ == "__main__":
    main()
