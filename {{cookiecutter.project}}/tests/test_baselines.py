"""Baselines on tiny data with exact expected recommendations, and against a plain reference."""

from __future__ import annotations

import random
from collections import Counter

import pandas as pd
import pytest

from {{ cookiecutter.project }}.evaluation.protocol import EvaluationError, NotFittedError
from {{ cookiecutter.project }}.modeling.baselines import MarkovRecommender, MostPopular

# SKU counts: a 4, b 3, c 3, d 1, e 1 (12 in all).
# Transitions: a->b 2, b->c 2, a->c 1, c->d 1, e->a 1.
TRAIN = [["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "c", "d"], ["e", "a"]]


def skus(recommendations: list[tuple[str, float]]) -> list[str]:
    return [sku for sku, _ in recommendations]


def test_most_popular_ranks_by_count_then_sku() -> None:
    model = MostPopular().fit(pd.DataFrame({"skus": TRAIN}))
    first, second = model.recommend([["a"], ["d", "e"]], k=3)
    assert first == [("a", 4 / 12), ("b", 3 / 12), ("c", 3 / 12)]
    assert second == first
    assert skus(model.recommend([["a"]], k=10)[0]) == ["a", "b", "c", "d", "e"]
    assert model.name == "most_popular"


def test_markov_follows_transitions_then_fills_with_popular_items() -> None:
    model = MarkovRecommender().fit(TRAIN)
    [after_a] = model.recommend([["e", "a"]], k=3)
    # (count(a->x) + share(x)) / (count(a->any) + 1); d is the most popular SKU left to fill with.
    assert after_a == [
        ("b", pytest.approx((2 + 3 / 12) / 4)),
        ("c", pytest.approx((1 + 3 / 12) / 4)),
        ("d", pytest.approx((0 + 1 / 12) / 4)),
    ]
    assert model.name == "markov"


def test_markov_excludes_the_current_item_unless_told_not_to() -> None:
    assert skus(MarkovRecommender().fit(TRAIN).recommend([["a"]], k=5)[0]) == ["b", "c", "d", "e"]
    keep = MarkovRecommender(exclude_current=False).fit(TRAIN)
    assert skus(keep.recommend([["a"]], k=5)[0]) == ["b", "c", "a", "d", "e"]


def test_markov_without_transitions_is_popularity() -> None:
    model = MarkovRecommender().fit(TRAIN)
    after_d, unseen, empty = model.recommend([["d"], ["never-seen"], []], k=3)
    assert after_d == [("a", 4 / 12), ("b", 3 / 12), ("c", 3 / 12)]
    assert unseen == after_d
    assert empty == after_d


def test_markov_never_counts_pairs_across_sessions() -> None:
    model = MarkovRecommender().fit([["a", "b"], ["c", "d"]])
    # b ends its session: "c" must not look like b's follower.
    assert model.recommend([["b"]], k=3)[0] == [("a", 0.25), ("c", 0.25), ("d", 0.25)]


def test_markov_breaks_ties_by_popularity() -> None:
    model = MarkovRecommender().fit([["x", "p"], ["x", "q"], ["q", "r"]])
    assert skus(model.recommend([["x"]], k=2)[0]) == ["q", "p"]


def _reference_ranking(sessions: list[list[str]], last: str, k: int) -> list[str]:
    """Markov ranking written the slow, obvious way."""
    popularity = Counter(sku for session in sessions for sku in session)
    followers = Counter(
        session[i + 1]
        for session in sessions
        for i in range(len(session) - 1)
        if session[i] == last
    )
    by_rank = sorted(popularity, key=lambda sku: (-followers[sku], -popularity[sku], sku))
    return [sku for sku in by_rank if sku != last][:k]


def test_markov_matches_a_plain_reference_on_random_sessions() -> None:
    rng = random.Random(7)
    catalogue = [f"sku{i:02d}" for i in range(30)]
    sessions = []
    for _ in range(400):
        session = [rng.choice(catalogue[: rng.randint(3, 30)])]
        while len(session) < rng.randint(2, 8):
            nxt = rng.choice(catalogue)
            if nxt != session[-1]:
                session.append(nxt)
        sessions.append(session)
    model = MarkovRecommender().fit(sessions)
    answers = model.recommend([[sku] for sku in catalogue], k=10)
    for sku, answer in zip(catalogue, answers, strict=True):
        assert skus(answer) == _reference_ranking(sessions, sku, k=10)
        scores = [score for _, score in answer]
        assert scores == sorted(scores, reverse=True)


def test_baselines_need_fit_and_valid_input() -> None:
    for model in (MostPopular(), MarkovRecommender()):
        with pytest.raises(NotFittedError, match="call fit"):
            model.recommend([["a"]], k=5)
        with pytest.raises(EvaluationError, match="no SKUs"):
            model.fit([[]])
        with pytest.raises(EvaluationError, match="k must be at least 1"):
            model.fit(TRAIN).recommend([["a"]], k=0)
