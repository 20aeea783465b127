"""The Elastic Attention miniature's task generators and static-mask construction: the layouts the experiment's
premise rests on (retrieval pairs out of a streaming head's reach, local pairs inside it, the task named by several
tokens and by no single one), and greedy static masks against an exhaustive search."""

import itertools
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))  # the experiment's own folder, as running it as a script does
try:
    from elastic_miniature_static import (frequency_mask, mask_of, search, static_at,  # noqa: E402
                                          static_full_heads, upper_hull)
    from elastic_miniature_tasks import (PRESETS, QRY, RET, LOC, TASKS, TEMPLATES, Size, batch,  # noqa: E402
                                         sample, vocab)
finally:
    sys.path.remove(str(ROOT / "experiments"))


def _pair_lookup(ids, a, size, v):
    """The key-value layout: the queried pair occurs once before its query."""
    key, value = ids[a - 1], ids[a]
    assert v["keys"] <= key < v["values"] <= value < v["filler"]
    where = [i for i in range(a - 2) if ids[i] == key and ids[i + 1] == value]
    assert len(where) == 1
    return [where[0]]


def _chain_lookup(ids, a, size, v):
    """The chain layout, resolved the slow obvious way: follow the queried entity's links level by level; the answer
    is the chain's end. Returns the positions of the links used."""
    e = size.entities
    entity, used = ids[a - 1] - v["entities"], []
    assert 0 <= entity < e
    for level in range(size.hops):
        hits = [i for i, t in enumerate(ids[:a]) if v["links"] + (level * e + entity) * e <= t
                < v["links"] + (level * e + entity + 1) * e]
        assert len(hits) == 1  # exactly one link leaves each entity of a chain (decoys use other entities)
        used.append(hits[0])
        entity = (ids[hits[0]] - v["links"]) % e
    assert ids[a] == v["values"] + entity
    return used


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_layouts(preset):
    """Retrieval's lookups lie beyond what streaming heads relay (layers x window) from each other and from the
    query; local's within one window; both tasks have one length and (round 2) the same layout of token kinds."""
    size = PRESETS[preset]
    v = vocab(size)
    reach = size.layers * size.window if size.decoys else size.window
    g = torch.Generator().manual_seed(0)
    lengths, kinds = set(), {}
    for _ in range(20):
        for task in TASKS:
            ids, answers = sample(task, size, g)
            lengths.add(len(ids))
            kinds.setdefault(task, set()).add(tuple(_kind(t, v) for t in ids[len(ids) - 40:]))
            assert all(0 <= t < v["total"] for t in ids)
            assert len(answers) == size.queries
            for a in answers:
                assert ids[a - 2] == QRY
                used = (_chain_lookup if size.hops > 1 else _pair_lookup)(ids, a, size, v)
                steps = sorted(used) + [a]
                if task == "retrieval":
                    assert steps[0] >= size.sink
                    assert all(later - earlier > reach for earlier, later in zip(steps, steps[1:]))
                else:
                    assert a - steps[0] <= size.window
    assert len(lengths) == 1  # both tasks, every draw: one length
    if size.decoys:  # the tails look alike: a router cannot read the task from the layout of the last tokens
        assert kinds["retrieval"] == kinds["local"]


def _kind(t, v):
    for name in ("entities", "links", "words", "filler", "values", "keys"):
        if t >= v[name]:
            return name
    return t


def test_decoys_use_other_lookups():
    """The decoy block shares no key (or entity) with the queried one, so it never answers a query."""
    size = PRESETS["hops3"]
    g = torch.Generator().manual_seed(3)
    for task in TASKS:
        ids, answers = sample(task, size, g)
        links = [t for t in ids if vocab(size)["links"] <= t < vocab(size)["entities"]]
        assert len(links) == 2 * size.hops * size.pairs
        assert _chain_lookup(ids, answers[0], size, vocab(size))


def test_chains_refuse_layouts_streaming_heads_could_relay():
    with pytest.raises(ValueError, match="relay"):
        Size(layers=4, decoys=True, hops=2, pairs=4, hop_gap=100)  # 100 <= 4 x 32
    with pytest.raises(ValueError, match="too short"):
        Size(decoys=True, hops=3, pairs=4, hop_gap=136, distance=200)
    with pytest.raises(ValueError, match="entities"):
        Size(decoys=True, hops=2, pairs=5, entities=8, hop_gap=136)
    with pytest.raises(ValueError, match="fit one streaming window"):
        Size(decoys=True, pairs=16)
    with pytest.raises(ValueError, match="decoys=True"):
        Size(hops=2, pairs=2, hop_gap=136)


def test_instruction_names_the_task_only_as_a_whole():
    """Every instruction word occurs in both tasks' templates: no single token tells the tasks apart."""
    words = {t: {w for template in TEMPLATES[t] for w in template} for t in TASKS}
    assert words["retrieval"] == words["local"]
    assert not set(TEMPLATES["retrieval"]) & set(TEMPLATES["local"])
    size = PRESETS["heads16"]
    g = torch.Generator().manual_seed(1)
    for task in TASKS:
        ids, _ = sample(task, size, g)
        assert tuple(t - vocab(size)["words"] for t in ids[:4]) in TEMPLATES[task]
        assert RET not in ids and LOC not in ids


def test_small_preset_is_the_first_miniature():
    """--preset small draws what the first miniature drew (its figures reproduce): vocabulary, layout, and the
    held-out sequences of seed 0 token for token (a fingerprint of the first miniature's generator)."""
    size = PRESETS["small"]
    assert (size.layers, size.heads, size.kv_heads, size.budgets) == (2, 4, 8, (0.7,))
    assert not (size.decoys or size.instruction or size.route_on_prompt or size.calibrated)
    assert vocab(size)["total"] == 8 + 64 + 64 + 256
    ids, answers = batch([0, 1, 0, 1], size, torch.Generator().manual_seed(1000))
    w = torch.arange(ids.shape[1])
    assert [int((row * w).sum()) for row in ids] == [38626426, 36203189, 36722176, 37248241]
    assert answers.tolist() == [[534]] * 4
    assert bool((ids[::2, 0] == RET).all()) and bool((ids[1::2, 0] == LOC).all())
    assert PRESETS["heads16"].kv_heads == PRESETS["hops3"].kv_heads == 16  # Omega_MSR in steps of 1/16


def test_size_refuses_budgets_without_the_paper_target():
    with pytest.raises(ValueError, match="paper's retrieval target"):
        Size(budgets=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Size(budgets=(0.7, 1.5))


def _exhaustive(accuracy, shape, k):
    n = shape[0] * shape[1]
    return max(accuracy(mask_of(list(c), shape)) for c in itertools.combinations(range(n), k))


@pytest.mark.parametrize("case", ["one", "two_additive", "three_weighted", "none", "only_together",
                                  "together_or_alone"])
def test_search_matches_exhaustive_search(case):
    """On accuracies that add up over heads, or that need heads only together (a chain: no single head helps), the
    searched k-head mask is the best of all k-head masks (exhaustive, 2 x 4 heads), and the heads it needs are the
    fewest that reach the all-full accuracy."""
    shape = (2, 4)
    together = {1, 4, 6}
    accuracy, needed = {
        "one": (lambda m: float(m.flatten()[5]), 1),
        "two_additive": (lambda m: 0.5 * float(m.flatten()[2]) + 0.5 * float(m.flatten()[5]), 2),
        "three_weighted": (lambda m: 0.25 * float(m.flatten()[0]) + 0.35 * float(m.flatten()[3])
                           + 0.4 * float(m.flatten()[6]), 3),
        "none": (lambda m: 0.5, 0),
        "only_together": (lambda m: float(all(m.flatten()[h] for h in together)), 3),
        "together_or_alone": (lambda m: max(float(all(m.flatten()[h] for h in together)),
                                            0.3 * float(m.flatten()[7])), 3),
    }[case]
    found = search(accuracy, shape, tolerance=0.0)
    assert found["needed"] == needed and len(found["acc"]) == 9
    for k in range(9):
        assert len(found["heads"][k]) == k
        assert found["acc"][k] == pytest.approx(accuracy(mask_of(found["heads"][k], shape)))
        assert found["acc"][k] == pytest.approx(_exhaustive(accuracy, shape, k)), k


def test_static_masks_and_budgets():
    rates = torch.tensor([[0.9, 0.1, 0.5, 0.5], [0.0, 1.0, 0.2, 0.5]])
    assert frequency_mask(rates, 3).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]  # ties by position
    assert mask_of([7, 0], (2, 4)).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert [static_full_heads(m, 16) for m in (0.85, 0.0, 1.0, 0.5)] == pytest.approx([2.4, 16, 0, 8])
    with pytest.raises(ValueError):
        static_full_heads(1.2, 16)


def test_static_curve_is_the_upper_hull():
    """Between whole head counts the static point is the best per-input mix of two masks: the upper concave hull."""
    points = [(0.0, 1.0), (0.25, 1.0), (0.5, 0.2), (0.75, 0.6), (1.0, 0.0)]  # (msr, acc), 4 heads
    assert upper_hull(points) == [(0.0, 1.0), (0.25, 1.0), (0.75, 0.6), (1.0, 0.0)]
    curve = [{"msr": x, "acc": y} for x, y in points]
    assert static_at(curve, 0.5, "acc") == pytest.approx(0.8)  # the mix of 1 and 3 full heads beats 2 heads
    assert static_at(curve, 0.125, "acc") == pytest.approx(1.0)
    assert static_at(curve, 0.875, "acc") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="outside"):
        static_at(curve[1:], 0.0, "acc")
