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
    from elastic_miniature_static import (frequency_mask, greedy_order, mask_of, static_at,  # noqa: E402
                                          static_full_heads)
    from elastic_miniature_tasks import (PRESETS, QRY, RET, LOC, SEP, TASKS, TEMPLATES, Size,  # noqa: E402
                                         sample, task_sets, vocab)
finally:
    sys.path.remove(str(ROOT / "experiments"))


def _pair_lookup(ids, a, size, task, v):
    """The key-value layout: the queried pair occurs once before its query, far back (retrieval) or near."""
    key, value = ids[a - 1], ids[a]
    assert v["keys"] <= key < v["values"] <= value < v["filler"]
    where = [i for i in range(a - 2) if ids[i] == key and ids[i + 1] == value]
    assert len(where) == 1
    return [where[0]]


def _chain_lookup(ids, a, size, task, v):
    """The chain layout, resolved the slow obvious way: follow the queried entity's links level by level; the answer
    is the chain's end. Returns the positions of the links used."""
    e = size.entities
    entity, used = ids[a - 1] - v["entities"], []
    assert 0 <= entity < e
    for level in range(size.hops):
        hits = [i for i, t in enumerate(ids[:a]) if v["links"] + (level * e + entity) * e <= t
                < v["links"] + (level * e + entity + 1) * e]
        assert len(hits) == 1  # exactly one link leaves each entity of a chain
        used.append(hits[0])
        entity = (ids[hits[0]] - v["links"]) % e
    assert ids[a] == v["values"] + entity
    return used


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_layouts(preset):
    size = PRESETS[preset]
    v = vocab(size)
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(20):
        for task in TASKS:
            ids, answers = sample(task, size, g)
            lengths.add(len(ids))
            assert all(0 <= t < v["total"] for t in ids)
            assert len(answers) == size.queries
            for a in answers:
                assert ids[a - 2] == QRY
                used = (_chain_lookup if size.hops > 1 else _pair_lookup)(ids, a, size, task, v)
                hops = sorted(used) + [a]
                if task == "retrieval":  # every step beyond the sink and the window of a streaming head
                    assert hops[0] >= size.sink
                    assert all(later - earlier > size.window for earlier, later in zip(hops, hops[1:]))
                else:
                    assert a - hops[0] <= size.window
            sep = ids.index(SEP)
            links = 2 * size.pairs if size.hops == 1 else size.hops * size.pairs
            assert (sep == len(ids) - 3 * size.queries - links - 1) == (task == "local")
    assert len(lengths) == 1  # both tasks, every draw: one length


def test_chains_refuse_layouts_a_streaming_head_could_shortcut():
    with pytest.raises(ValueError, match="window"):
        Size(hops=2, pairs=2, hop_gap=20, window=32)
    with pytest.raises(ValueError, match="too short"):
        Size(hops=3, pairs=4, distance=64)
    with pytest.raises(ValueError, match="entities"):
        Size(hops=2, pairs=9, entities=8)


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
    """--preset small keeps the first miniature's vocabulary and layout, so its figures reproduce."""
    size = PRESETS["small"]
    assert (size.layers, size.heads, size.kv_heads, size.budgets) == (2, 4, 8, (0.7,))
    assert vocab(size)["total"] == 8 + 64 + 64 + 256
    sets = task_sets(size, 4, 1000)
    assert bool((sets["retrieval"][0][:, 0] == RET).all()) and bool((sets["local"][0][:, 0] == LOC).all())
    assert PRESETS["heads16"].kv_heads == PRESETS["hops3"].kv_heads == 16  # Omega_MSR in steps of 1/16


def test_size_refuses_budgets_without_the_paper_target():
    with pytest.raises(ValueError, match="paper's retrieval target"):
        Size(budgets=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Size(budgets=(0.7, 1.5))


def _additive(needed: dict):
    """Accuracy as a weighted count of the needed heads that are full."""
    return lambda mask: sum(w for h, w in needed.items() if mask.flatten()[h])


@pytest.mark.parametrize("needed", [{5: 1.0}, {2: 0.5, 5: 0.5}, {0: 0.25, 3: 0.35, 6: 0.4}, {}])
def test_greedy_matches_exhaustive_search(needed):
    """On accuracies that add up over heads, greedy's k-head mask is the best of all k-head masks (exhaustive search,
    2 x 4 heads), and the heads it needs are exactly the needed ones."""
    shape = (2, 4)
    accuracy = _additive(needed)
    target = sum(needed.values()) - 1e-9
    greedy = greedy_order(accuracy, shape, target)
    assert sorted(greedy["order"]) == list(range(8)) and len(greedy["acc"]) == 9
    assert greedy["needed"] == len(needed)
    assert set(greedy["order"][:len(needed)]) == set(needed)
    for k in range(9):
        best = max(accuracy(mask_of(list(c), k, shape)) for c in itertools.combinations(range(8), k))
        assert greedy["acc"][k] == pytest.approx(best)
        assert greedy["acc"][k] == pytest.approx(accuracy(mask_of(greedy["order"], k, shape)))


def test_greedy_needs_more_than_all_when_the_target_is_out_of_reach():
    greedy = greedy_order(lambda mask: 0.5, (1, 3), target=0.9)
    assert greedy["needed"] == 4 and greedy["acc"] == [0.5] * 4


def test_static_masks_and_budgets():
    rates = torch.tensor([[0.9, 0.1, 0.5, 0.5], [0.0, 1.0, 0.2, 0.5]])
    assert frequency_mask(rates, 3).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]  # ties by position
    assert mask_of([7, 0], 1, (2, 4)).tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]
    assert [static_full_heads(m, 16) for m in (0.85, 0.0, 1.0, 0.5)] == [2, 16, 0, 8]
    with pytest.raises(ValueError):
        static_full_heads(1.2, 16)
    curve = [{"k": k, "msr": 1 - k / 4, "acc_mean": float(k == 4 or k / 8)} for k in range(5)]
    assert static_at(curve, 0.75)["acc_mean"] == pytest.approx(0.125)
    assert static_at(curve, 0.625)["acc_mean"] == pytest.approx(0.1875)  # halfway between 1 and 2 heads
    with pytest.raises(ValueError, match="outside"):
        static_at(curve[1:], 1.0)
