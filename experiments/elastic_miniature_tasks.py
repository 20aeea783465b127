"""The tasks of ``elastic_miniature.py`` and its presets: one lookup mechanism (find a key, answer its value) at two
distances, so one task needs attention to reach far back and the other does not.

- retrieval ("sparsity-sensitive"): ``INSTR filler x L (k v) x P SEP filler x D (QRY k v) x Q``: every queried pair
  sits more than D tokens back, far outside the streaming heads' sink + window (the L leading filler tokens keep the
  pairs out of the sink too);
- local ("sparsity-robust"): ``INSTR filler x (L + D) SEP (k v) x P (QRY k v) x Q``: the same length, the pairs
  within the last few dozen tokens, which a streaming head (sink + window) sees.

With ``hops`` = H > 1 the lookup is a chain (pointer chasing): P chains of H links, each link one token that joins an
entity of level l to one of level l + 1 (a fused "a -> b" token, so a link is found by content without a
previous-token head); the query names a level-0 entity and the answer is its level-H entity. The H link sets sit in
H separate places more than a window apart (retrieval) or side by side in the last tokens (local). A retrieval answer
needs what H link sets, each beyond every streaming head's reach from the others and from the query, hold: chained
(H far lookups, each needing the last one's result, so H layers) or gathered at once (one far head per set, as a
single head's attention over all sets averages every link into one vector). Either way the circuit needs several
full heads; how many the trained model needs is measured, not assumed (the oracle static check).

``INSTR`` is how a sequence says which task it is. The ``small`` preset (the first miniature) uses one marker token
(RET or LOC). The other presets use an instruction of several tokens, one of three templates per task, written so
that every instruction word occurs in both tasks' templates: no single token names the task, only the combination
does, as in real prompts.
"""

from __future__ import annotations

import dataclasses

import torch

PAD, RET, LOC, SEP, QRY = 0, 1, 2, 3, 4
TASKS = ("retrieval", "local")

# Instruction templates (indices into the instruction words): each of the 8 words occurs in both tasks.
TEMPLATES = {"retrieval": ((0, 1, 2, 3), (4, 1, 5, 3), (0, 6, 2, 7)),
             "local": ((4, 6, 2, 3), (0, 1, 5, 7), (4, 1, 2, 7))}
N_WORDS = 8


@dataclasses.dataclass(frozen=True)
class Size:
    layers: int = 2
    heads: int = 4               # KV heads = query heads: every head routes on its own
    hidden: int = 64
    instruction: bool = False    # False: one marker token (RET / LOC); True: a template of several words
    hops: int = 1                # H: 1 is the key-value lookup, > 1 the chain of fused link tokens
    hop_gap: int = 48            # filler between two link sets (retrieval): > window, so no streaming head links them
    entities: int = 8            # E entities per level (hops > 1); P <= E chains per sequence
    pairs: int = 1               # P key-value pairs (chains) per sequence
    queries: int = 1             # Q queried pairs per sequence (distinct pairs, in a random order)
    lead: int = 16               # L filler tokens before the retrieval pairs: outside the sink
    distance: int = 512          # D filler tokens between the pairs and the queries (retrieval)
    n_keys: int = 64
    n_values: int = 64
    n_filler: int = 256
    short_distance: int = 24     # pretraining starts with the lookup at this distance (both tasks)
    short_steps: int = 1500      # its cap; it ends earlier once both are solved at that distance
    short_batch: int = 32
    pretrain_steps: int = 1500   # then at the tasks' distance; the cap, ends earlier once dense attention solves both
    pretrain_batch: int = 8
    pretrain_lr: float = 2e-3
    solved: float = 0.97         # dense accuracy on both tasks that ends pretraining
    router_steps: int = 300
    router_batch: int = 8
    router_lr: float = 5e-3
    lambda_lr: float = 5e-2
    targets: tuple = (0.7, 1.0)  # retrieval (sensitive), local (robust): the paper's targets
    budgets: tuple = (0.7,)      # retrieval targets the routers are trained at (local stays at targets[1])
    sink: int = 4
    window: int = 32
    pool_budget: int = 16
    eval_sequences: int = 256    # per task (x queries answers each)
    calib_sequences: int = 64    # per task, a separate draw: what the best static mask is chosen on
    eval_every: int = 250

    def __post_init__(self):
        if self.targets[0] not in self.budgets:
            raise ValueError(f"budgets {self.budgets} must include the paper's retrieval target {self.targets[0]}: "
                             "the headline comparison is made there.")
        if not all(0.0 <= b <= 1.0 for b in self.budgets):
            raise ValueError(f"budgets are retrieval Omega_MSR targets in [0, 1]; got {self.budgets}")
        if self.hops > 1:
            if not self.pairs <= self.entities <= self.n_values:
                raise ValueError(f"hops > 1 needs pairs ({self.pairs}) <= entities ({self.entities}) <= n_values "
                                 f"({self.n_values})")
            rest = self.distance - (self.hops - 1) * self.hop_gap - self.hops * self.pairs  # last set to SEP
            if rest < 0:
                raise ValueError(f"distance {self.distance} too short for {self.hops} sets of {self.pairs} links "
                                 f"{self.hop_gap} apart")
            # hop_gap 0 is the pretraining curriculum's short form (sets side by side); otherwise every set must sit
            # beyond a streaming head's window from the next one and from the queries.
            if self.hop_gap and (self.hop_gap <= self.window or rest <= self.window):
                raise ValueError(f"hop_gap {self.hop_gap} and the {rest} tokens after the last set must exceed the "
                                 f"window {self.window}: a streaming head would link them")

    @property
    def kv_heads(self) -> int:
        return self.layers * self.heads


PRESETS = {
    # The first miniature (2 layers x 4 KV heads: Omega_MSR moves in steps of 1/8; one marker token names the task).
    "small": Size(),
    # Round 2: 4 layers x 4 KV heads (steps of 1/16), the task named by a several-token instruction, routers trained
    # at three budgets so routed and static can be compared as curves; the one-needle lookup.
    "heads16": Size(layers=4, instruction=True, budgets=(0.55, 0.7, 0.85)),
    # The same with chains of 3 hops among 4 (retrieval should need several full heads: the oracle check measures
    # whether more than a static mask at the paper's targets' mean Omega_MSR keeps) and of 2 hops.
    "hops3": Size(layers=4, instruction=True, hops=3, pairs=4, budgets=(0.55, 0.7, 0.85)),
    "hops2": Size(layers=4, instruction=True, hops=2, pairs=4, budgets=(0.55, 0.7, 0.85)),
    # CI: the chain code path at tiny sizes and a few steps.
    "quick": Size(layers=2, heads=2, hidden=32, instruction=True, hops=2, hop_gap=20, pairs=2, queries=2, lead=8,
                  distance=64, short_distance=8, short_steps=3, short_batch=4, pretrain_steps=3, pretrain_batch=4,
                  router_steps=4, router_batch=4, eval_sequences=8, calib_sequences=4, window=16, pool_budget=8,
                  eval_every=3, budgets=(0.5, 0.7)),
}


def vocab(size: Size) -> dict:
    """Token id ranges: specials 0-7, keys, values, filler, then the instruction words (the small preset's vocabulary
    is unchanged by them: they come last)."""
    keys = 8
    values = keys + size.n_keys
    filler = values + size.n_values
    words = filler + size.n_filler
    links = words + (N_WORDS if size.instruction else 0)
    entities = links + (size.hops * size.entities ** 2 if size.hops > 1 else 0)
    return {"keys": keys, "values": values, "filler": filler, "words": words, "links": links, "entities": entities,
            "total": entities + (size.entities if size.hops > 1 else 0)}


def instruction(task: str, size: Size, g: torch.Generator) -> list[int]:
    """The tokens that name ``task``: the marker (small preset) or one of the task's templates."""
    if not size.instruction:
        return [RET if task == "retrieval" else LOC]
    template = TEMPLATES[task][int(torch.randint(0, len(TEMPLATES[task]), (1,), generator=g))]
    return [vocab(size)["words"] + w for w in template]


def sample_chains(task: str, size: Size, g: torch.Generator) -> tuple[list[int], list[int]]:
    """One pointer-chasing sequence (hops > 1) and the positions of its answers.

    retrieval: ``INSTR filler x L set_H gap set_(H-1) gap ... set_1 SEP filler (QRY q answer) x Q``
    local:     ``INSTR filler x (L + rest + gaps) SEP set_H ... set_1 (QRY q answer) x Q``
    where set_l holds the P links from level l - 1 to level l (shuffled) and the answer to q is the end of its chain.
    """
    v, e, p, h = vocab(size), size.entities, size.pairs, size.hops
    levels = [torch.randperm(e, generator=g)[:p].tolist() for _ in range(h + 1)]  # chain i: levels[l][i]
    sets = []
    for level in range(1, h + 1):
        order = torch.randperm(p, generator=g).tolist()
        sets.append([v["links"] + ((level - 1) * e + levels[level - 1][i]) * e + levels[level][i] for i in order])
    filler = (torch.randint(0, size.n_filler, (size.lead + size.distance - h * p,), generator=g)
              + v["filler"]).tolist()
    head = instruction(task, size, g)
    if task == "retrieval":
        body, cursor = [*head, *filler[:size.lead]], size.lead
        for i, links in enumerate(reversed(sets)):
            body += links
            if i < h - 1:
                body += filler[cursor:cursor + size.hop_gap]
                cursor += size.hop_gap
        body += [SEP, *filler[cursor:]]
    else:
        body = [*head, *filler, SEP, *(t for links in reversed(sets) for t in links)]
    ids, answers = list(body), []
    for i in torch.randperm(p, generator=g)[:size.queries].tolist():
        ids += [QRY, v["entities"] + levels[0][i], v["values"] + levels[h][i]]
        answers.append(len(ids) - 1)
    return ids, answers


def sample(task: str, size: Size, g: torch.Generator) -> tuple[list[int], list[int]]:
    """One sequence of ``task`` and the positions of its queried values."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    if size.hops > 1:
        return sample_chains(task, size, g)
    v = vocab(size)
    keys = (torch.randperm(size.n_keys, generator=g)[:size.pairs] + v["keys"]).tolist()
    values = (torch.randint(0, size.n_values, (size.pairs,), generator=g) + v["values"]).tolist()
    pairs = [t for kv in zip(keys, values) for t in kv]
    filler = (torch.randint(0, size.n_filler, (size.lead + size.distance,), generator=g) + v["filler"]).tolist()
    head = instruction(task, size, g)
    body = ([*head, *filler[:size.lead], *pairs, SEP, *filler[size.lead:]] if task == "retrieval"
            else [*head, *filler, SEP, *pairs])
    ids, answers = list(body), []
    for i in torch.randperm(size.pairs, generator=g)[:size.queries].tolist():
        ids += [QRY, keys[i], values[i]]
        answers.append(len(ids) - 1)
    return ids, answers


def batch(task_ids: list[int], size: Size, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and (B, Q) answer positions, tasks as given (0 retrieval, 1 local)."""
    rows = [sample(TASKS[t], size, g) for t in task_ids]
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def task_sets(size: Size, n: int, seed: int) -> dict:
    """{task: (ids, answers)} of ``n`` sequences per task from their own generator (held-out or calibration)."""
    g = torch.Generator().manual_seed(seed)
    return {t: batch([i] * n, size, g) for i, t in enumerate(TASKS)}
