"""V-SKNN on toy data with known answers, against a slow plain reference, and its tuning."""

from __future__ import annotations

import math
import random
from collections import Counter

import pandas as pd
import pytest

from {{ cookiecutter.project }}.evaluation.protocol import EvaluationError, NotFittedError
from {{ cookiecutter.project }}.modeling.knn import KNN_GRID, VSKNN, best_trial, tune_vsknn


def skus(recommendations: list[tuple[str, float]]) -> list[str]:
    return [sku for sku, _ in recommendations]


def test_the_neighbours_next_item_wins() -> None:
    # Only the first session shares "a" and "b" with the prefix: its "c" beats the popular "z".
    train = [["a", "b", "c"], ["z", "y"], ["z", "x"], ["z", "w"], ["q", "b"]]
    ranked = VSKNN(k=1, sample_size=10).fit(train).recommend([["a", "b"]], k=3)[0]
    assert skus(ranked)[:2] == ["a", "c"]  # the current SKU "b" is excluded, "a" is not
    assert ranked[0][1] > 0 and ranked[2][1] == 0.0  # the third slot is a popular fill


def test_recent_positions_weigh_more() -> None:
    # "x" ends a session holding the prefix's older SKU, "y" one holding its newest: "y" wins.
    train = [["a", "x"], ["b", "y"]]
    scores = dict(VSKNN(k=2, sample_size=10).fit(train).recommend([["a", "b"]], k=4)[0])
    assert scores["y"] > scores["x"] > 0


def test_only_the_most_recent_sessions_are_sampled() -> None:
    # Later sessions are newer: with a sample of 1, only the newest session holding "a" counts.
    train = [["a", "old"], ["a", "new"]]
    ranked = VSKNN(k=5, sample_size=1).fit(train).recommend([["a"]], k=1)[0]
    assert skus(ranked) == ["new"]


def test_empty_and_unknown_prefixes_get_the_most_popular_skus() -> None:
    train = [["a", "b"], ["a", "c"], ["a", "b"]]
    model = VSKNN().fit(train)
    for prefix in ([], ["never-seen"]):
        assert model.recommend([prefix], k=3)[0] == [("a", 0.0), ("b", 0.0), ("c", 0.0)]


def _reference(train: list[list[str]], prefix: list[str], k: int, m: int) -> dict[str, float]:
    """V-SKNN scores written out with plain loops, straight from the definition."""
    weights = {sku: (p + 1) / len(prefix) for p, sku in enumerate(prefix)}  # latest wins
    sets = [set(session) for session in train]
    sharing = [i for i, s in enumerate(sets) if weights.keys() & s][::-1][:m]  # newest first
    norm = math.sqrt(sum(w * w for sku, w in weights.items() if any(sku in s for s in sets)))
    sims = {
        i: round(sum(weights.get(sku, 0.0) for sku in sets[i]) / norm / math.sqrt(len(sets[i])), 12)
        for i in sharing
    }
    neighbours = sorted(sims, key=lambda i: (-sims[i], -i))[:k]
    scores: Counter[str] = Counter()
    for i in neighbours:
        for sku in sets[i]:
            scores[sku] += sims[i]
    scores.pop(prefix[-1], None)
    return {sku: round(score, 12) for sku, score in scores.items() if score > 0}


# Each SKU is in ~35 of the sessions: a sample of 5 keeps only its newest postings.
@pytest.mark.parametrize("sample_size", [40, 5])
def test_matches_a_plain_reference_on_random_sessions(sample_size: int) -> None:
    rng = random.Random(7)
    catalogue = [f"p{i}" for i in range(30)]

    def session() -> list[str]:
        return [rng.choice(catalogue) for _ in range(rng.randint(1, 6))]

    train = [session() for _ in range(300)]
    prefixes = [session() for _ in range(60)]
    model = VSKNN(k=7, sample_size=sample_size, cells=16 * 30).fit(train)  # several batches
    for prefix, ranked in zip(prefixes, model.recommend(prefixes, k=10), strict=True):
        expected = _reference(train, prefix, k=7, m=sample_size)
        best = sorted(expected.values(), reverse=True)[:10]
        assert [score for _, score in ranked[: len(best)]] == pytest.approx(best)
        for sku, score in ranked[: len(best)]:
            assert expected[sku] == pytest.approx(score)


def test_vsknn_needs_fit_and_valid_input() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        VSKNN().recommend([["a"]], k=5)
    with pytest.raises(EvaluationError, match="no SKUs"):
        VSKNN().fit([[]])
    with pytest.raises(EvaluationError, match="k must be at least 1"):
        VSKNN().fit([["a", "b"]]).recommend([["a"]], k=0)
    with pytest.raises(EvaluationError, match="at least 1"):
        VSKNN(k=0)


def _dated(sessions: list[list[str]], days: int) -> pd.DataFrame:
    """Sessions spread evenly over `days` days, with the columns the time split reads."""
    start = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        [i * days * 24 / len(sessions) for i in range(len(sessions))], "h"
    )
    return pd.DataFrame({"skus": sessions, "first_event_at": start, "last_event_at": start})


def test_tuning_scores_every_grid_entry_on_the_validation_days() -> None:
    rng = random.Random(3)
    train = _dated([[f"p{rng.randrange(40)}" for _ in range(4)] for _ in range(600)], days=10)
    grid = [(1, 5), (20, 100)]
    model = tune_vsknn(train, days=3, grid=grid)
    assert [(t.k, t.sample_size) for t in model.tuning] == grid
    best = best_trial(model.tuning)
    assert (model.k, model.sample_size) == (best.k, best.sample_size)
    assert all(0.0 <= t.mrr <= t.hit_rate <= 1.0 for t in model.tuning)


def test_tuning_without_event_times_keeps_the_papers_defaults() -> None:
    model = tune_vsknn([["a", "b"], ["b", "c"]])
    assert (model.k, model.sample_size, model.tuning) == (100, 500, [])
    assert (100, 500) in KNN_GRID
