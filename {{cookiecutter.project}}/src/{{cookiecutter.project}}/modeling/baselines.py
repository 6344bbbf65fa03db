"""Baselines the LSTM must beat: global popularity, first-order transitions and V-SKNN.

Popularity and transitions fit in a few vectorised passes over the flattened training SKUs, so
they stay cheap at 10^6 sessions (V-SKNN, in `knn`, is sparse algebra too); all follow the
`Recommender` protocol of the evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import pandas as pd

from ..evaluation.metrics import item_popularity
from ..evaluation.protocol import (
    EvaluationError,
    Sessions,
    as_session_lists,
    check_k,
    not_fitted,
)
from .knn import VSKNN, tune_vsknn
from .params import VALIDATION_DAYS


class MostPopular:
    """The k SKUs seen most often in training, the same list for every session."""

    name = "most_popular"

    def __init__(self) -> None:
        self._ranking: list[tuple[str, float]] | None = None

    def fit(self, train_sessions: Sessions) -> MostPopular:
        """Count SKUs; scores are their share of all training interactions."""
        popularity = item_popularity(train_sessions)
        shares = popularity / popularity.sum()
        self._ranking = list(zip(shares.index.tolist(), shares.tolist(), strict=True))
        return self

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        check_k(k)
        if self._ranking is None:
            raise not_fitted("MostPopular")
        top = self._ranking[:k]
        return [list(top) for _ in sessions]


class MarkovRecommender:
    """Next SKUs ranked by how often they followed the session's last SKU in training.

    Scores are transition probabilities smoothed toward popularity with a prior of one interaction:
    `(count(last -> sku) + share(sku)) / (count(last -> any) + 1)`. With that prior every observed
    transition outranks every unobserved one, ties go to the more popular SKU, unseen SKUs score
    their popularity share, and the k slots are always filled.
    """

    name = "markov"

    def __init__(self, exclude_current: bool = True) -> None:
        self.exclude_current = exclude_current
        self._skus: list[str] = []
        self._codes: dict[str, int] = {}
        # The answer depends only on (last SKU, k): computed once, reused across batches.
        self._answers: dict[tuple[str | None, int], list[tuple[str, float]]] = {}

    def fit(self, train_sessions: Sessions) -> MarkovRecommender:
        """Count SKUs and (previous SKU, next SKU) pairs inside sessions."""
        sessions = as_session_lists(train_sessions)
        lengths = np.fromiter(map(len, sessions), dtype=np.int64, count=len(sessions))
        flat = np.fromiter(chain.from_iterable(sessions), dtype=object, count=int(lengths.sum()))
        if flat.size == 0:
            raise EvaluationError("training sessions hold no SKUs; check the time split")
        # sort=True makes codes follow SKU order, so code order is the deterministic tie-break.
        codes, skus = pd.factorize(flat, sort=True)
        n = len(skus)
        counts = np.bincount(codes, minlength=n)

        # A position starts a pair unless it is the last SKU of its session.
        starts_pair = np.ones(flat.size, dtype=bool)
        starts_pair[np.cumsum(lengths[lengths > 0]) - 1] = False
        prev, nxt = codes[:-1][starts_pair[:-1]], codes[1:][starts_pair[:-1]]
        keys, pair_counts = np.unique(prev.astype(np.int64) * n + nxt, return_counts=True)
        rows, cols = keys // n, keys % n
        # Rows by previous SKU; inside a row: count desc, popularity desc, SKU asc.
        order = np.lexsort((cols, -counts[cols], -pair_counts, rows))
        self._next = cols[order]
        self._next_count = pair_counts[order]
        self._row_start = np.searchsorted(rows[order], np.arange(n + 1))
        self._row_total = np.bincount(rows, weights=pair_counts, minlength=n)
        self._popular = np.lexsort((np.arange(n), -counts))
        self._share = counts / counts.sum()
        self._skus = skus.tolist()
        self._codes = {sku: code for code, sku in enumerate(self._skus)}
        self._answers = {}
        return self

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        check_k(k)
        if not self._skus:
            raise not_fitted("MarkovRecommender")
        out = []
        for session in sessions:
            key = (session[-1] if len(session) else None, k)
            if key not in self._answers:
                self._answers[key] = self._after(*key)
            out.append(list(self._answers[key]))
        return out

    def _after(self, last: str | None, k: int) -> list[tuple[str, float]]:
        """Top k after `last`: its transitions, then popular SKUs to fill the list."""
        code = self._codes.get(last, -1)  # -1: unseen SKU (or empty session), popularity only
        followers: dict[int, int] = {}
        total = 0.0
        if code >= 0:
            start = self._row_start[code]
            # k + 1 followers suffice even when the current SKU is among them and excluded.
            stop = min(self._row_start[code + 1], start + k + 1)
            nexts, counts = self._next[start:stop].tolist(), self._next_count[start:stop].tolist()
            followers = dict(zip(nexts, counts, strict=True))
            total = float(self._row_total[code])
        excluded = {code} if self.exclude_current and code >= 0 else set()
        chosen = [c for c in followers if c not in excluded][:k]
        if len(chosen) < k:
            taken = excluded.union(chosen)
            fill = (c for c in self._popular[: k + len(taken)].tolist() if c not in taken)
            chosen.extend(list(fill)[: k - len(chosen)])
        return [
            (self._skus[c], (followers.get(c, 0) + float(self._share[c])) / (total + 1.0))
            for c in chosen
        ]


def fit_baselines(
    train_sessions: Sessions, validation_days: int = VALIDATION_DAYS
) -> list[MostPopular | MarkovRecommender | VSKNN]:
    """Every baseline, fitted on the same training sessions as the model; V-SKNN's k and sample
    size are tuned on the training split's newest `validation_days` days (`knn.tune_vsknn`)."""
    return [
        MostPopular().fit(train_sessions),
        MarkovRecommender().fit(train_sessions),
        tune_vsknn(train_sessions, days=validation_days),
    ]
