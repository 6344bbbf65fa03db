"""V-SKNN: vector-multiplied session-kNN, the neighbourhood baseline of the session literature.

Definition (Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", User
Modeling and User-Adapted Interaction 28, 2018, section on V-SKNN):

* the current session is a vector over SKUs whose weights decay linearly with age: the SKU at
  position p of a prefix of length L weighs p / L (the most recent weighs 1; a repeated SKU keeps
  its latest weight);
* candidate neighbours are the training sessions sharing a SKU with it, of which the `sample_size`
  most recent are kept;
* similarity = cosine of the weighted prefix vector and the neighbour's binary SKU vector; the `k`
  most similar are the neighbours (ties: the newer session);
* a SKU scores the sum of the similarities of the neighbours containing it; the current (last) SKU
  is excluded like in the Markov baseline.

Everything is sparse algebra over a batch of prefixes (prefix x SKU, SKU x session matrices), so
there is no Python loop over items; only the batch's final prefix x SKU scores are dense, to rank
them with one sort. A prefix without a known SKU has no neighbours: its list is the most popular
SKUs with score 0 (the same fill completes lists shorter than k). Similarities and
scores are rounded to 12 decimals so that ties break the same way whatever the summation order.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..evaluation.metrics import hit_rate_at_k, mrr_at_k, next_item_examples
from ..evaluation.protocol import (
    EvaluationError,
    Sessions,
    as_session_lists,
    check_k,
    not_fitted,
)
from ..evaluation.suite import recommend_in_batches
from ..schema import K
from .params import VALIDATION_DAYS
from .tuning import validation_split

# Neighbourhood sizes and sample sizes tried on the validation days (the paper's grid is similar;
# its defaults are k=100, m=500).
KNN_GRID: list[tuple[int, int]] = [(k, m) for m in (500, 1000) for k in (50, 100, 200)]
_DECIMALS = 12


def _flatten(sessions: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, flat SKUs) of `sessions`."""
    lengths = np.fromiter(map(len, sessions), dtype=np.int64, count=len(sessions))
    flat = np.fromiter(chain.from_iterable(sessions), dtype=object, count=int(lengths.sum()))
    return lengths, flat


def _most_similar(
    rows: np.ndarray, cols: np.ndarray, similarity: np.ndarray, shape: tuple[int, int], n: int
) -> sp.csr_matrix:
    """Each row's `n` most similar sessions (ties: the newer) as a row x session matrix.

    The entries come row by row, oldest session first, at most `sample_size` a row: laid out
    newest first in a dense row x sample table, one stable sort per row ranks them (much cheaper
    than a three-key lexsort over all of them)."""
    starts = np.searchsorted(rows, np.arange(shape[0]))
    counts = np.diff(np.append(starts, rows.size))
    newest_first = counts[rows] - 1 - (np.arange(rows.size) - starts[rows])
    width = max(int(counts.max(initial=0)), 1)
    table = np.full((shape[0], width), -np.inf)
    table[rows, newest_first] = similarity
    columns = np.zeros((shape[0], width), dtype=cols.dtype)
    columns[rows, newest_first] = cols
    best = np.argsort(-table, axis=1, kind="stable")[:, :n]
    values = np.take_along_axis(table, best, axis=1)
    kept = np.isfinite(values)
    best_rows = np.broadcast_to(np.arange(shape[0])[:, None], best.shape)[kept]
    best_cols = np.take_along_axis(columns, best, axis=1)[kept]
    return sp.csr_matrix((values[kept], (best_rows, best_cols)), shape=shape)


class VSKNN:
    """Vector-multiplied session-kNN (see the module docstring for the definition)."""

    name = "vsknn"

    def __init__(self, k: int = 100, sample_size: int = 500, cells: int = 4_000_000) -> None:
        if k < 1 or sample_size < 1:
            raise EvaluationError(f"k and sample_size must be at least 1, got {k}, {sample_size}")
        self.k, self.sample_size = k, sample_size
        self.cells = cells  # prefixes x SKUs scored densely at once (32 MB of float64)
        self._skus: np.ndarray | None = None
        self.tuning: list[KnnTrial] = []  # the validation trials that chose k and sample_size

    def fit(self, train_sessions: Sessions) -> VSKNN:
        """Index the training sessions; a frame's sessions are ordered by `first_event_at`."""
        if isinstance(train_sessions, pd.DataFrame) and "first_event_at" in train_sessions:
            train_sessions = train_sessions.sort_values("first_event_at", kind="stable")
        lengths, flat = _flatten(as_session_lists(train_sessions))
        if flat.size == 0:
            raise EvaluationError("training sessions hold no SKUs; check the time split")
        codes, skus = pd.factorize(flat, sort=True)
        # Codes in popularity order (count desc, SKU asc): code order is the tie-break.
        counts = np.bincount(codes, minlength=len(skus))
        by_popularity = np.lexsort((np.arange(len(skus)), -counts))
        rank = np.empty_like(by_popularity)
        rank[by_popularity] = np.arange(len(skus))
        codes, skus = rank[codes], np.asarray(skus, dtype=object)[by_popularity]
        rows = np.repeat(np.arange(lengths.size), lengths)
        # Session x SKU, binary; a session's index is its recency (larger = newer).
        sessions = sp.csr_matrix(
            (np.ones(codes.size), (rows, codes)), shape=(lengths.size, len(skus))
        )
        sessions.data[:] = 1.0  # duplicates were summed
        sizes = np.diff(sessions.indptr)
        self._inverse_norm = np.where(sizes > 0, 1 / np.sqrt(np.maximum(sizes, 1)), 0.0)
        self._sessions = sessions
        self._by_sku = sessions.T.tocsr()  # SKU x session
        self._by_sku.sort_indices()  # oldest first in each row: `_recent_postings` keeps the ends
        self._recent_by_sku: dict[int, sp.csr_matrix] = {}  # sample_size -> truncated postings
        self._index = pd.Index(skus)
        self._skus = skus
        return self

    def with_params(self, k: int, sample_size: int) -> VSKNN:
        """The same fitted index with another neighbourhood and sample size (for tuning)."""
        other = copy.copy(self)
        other.k, other.sample_size = k, sample_size
        return other

    def _recent_postings(self) -> sp.csr_matrix:
        """SKU x session with only each SKU's `sample_size` newest sessions.

        The `sample_size` newest sessions sharing a SKU with a prefix are each among the newest
        `sample_size` of one of its SKUs, and every posting at least as new as the oldest of them
        is kept too: the product with this matrix gives those sessions their exact dot products
        while leaving out most of the popular SKUs' long history (7,000 candidates a prefix fall to
        a third at 200,000 sessions)."""
        recent = self._recent_by_sku.get(self.sample_size)
        if recent is None:
            indptr = self._by_sku.indptr
            lengths = np.diff(indptr)
            rows = np.repeat(np.arange(lengths.size), lengths)
            keep = np.arange(self._by_sku.nnz) >= indptr[rows + 1] - self.sample_size
            recent = sp.csr_matrix(
                (self._by_sku.data[keep], (rows[keep], self._by_sku.indices[keep])),
                shape=self._by_sku.shape,
            )
            self._recent_by_sku[self.sample_size] = recent
        return recent

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        check_k(k)
        if self._skus is None:
            raise not_fitted("VSKNN")
        out: list[list[tuple[str, float]]] = []
        batch = max(1, self.cells // len(self._skus))
        for start in range(0, len(sessions), batch):
            out.extend(self._batch(sessions[start : start + batch], k))
        return out

    def _prefix_matrix(self, sessions: Sequence[Sequence[str]]) -> tuple[sp.csr_matrix, np.ndarray]:
        """(prefix x SKU matrix of linear-decay weights, last SKU code or -1 per prefix)."""
        lengths, flat = _flatten(sessions)
        codes = self._index.get_indexer(flat) if flat.size else np.empty(0, dtype=np.int64)
        rows = np.repeat(np.arange(lengths.size), lengths)
        ends = np.cumsum(lengths)
        position = np.arange(flat.size) - (ends - lengths)[rows] + 1
        weight = position / lengths[rows]
        last = np.full(lengths.size, -1)
        last[lengths > 0] = codes[ends[lengths > 0] - 1]
        known = codes >= 0
        rows, codes, weight = rows[known], codes[known], weight[known]
        # A repeated SKU keeps its latest (largest) weight: the last occurrence of each pair.
        keys = rows * len(self._skus) + codes
        _, last_seen = np.unique(keys[::-1], return_index=True)
        pick = keys.size - 1 - last_seen
        shape = (lengths.size, len(self._skus))
        return sp.csr_matrix((weight[pick], (rows[pick], codes[pick])), shape=shape), last

    def _batch(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        query, last = self._prefix_matrix(sessions)
        # Dot products with every session sharing a SKU; keep the sample_size most recent.
        overlap = (query @ self._recent_postings()).tocsr()
        overlap.sort_indices()  # sessions oldest first: the newest sample_size end each row
        rows = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        sample = np.arange(overlap.nnz) >= overlap.indptr[rows + 1] - self.sample_size
        rows, cols, dots = rows[sample], overlap.indices[sample], overlap.data[sample]
        query_norm = np.sqrt(np.asarray(query.multiply(query).sum(axis=1)).ravel())
        similarity = np.round(
            dots * self._inverse_norm[cols] / np.where(query_norm > 0, query_norm, 1)[rows],
            _DECIMALS,
        )
        neighbours = _most_similar(rows, cols, similarity, overlap.shape, self.k)
        # Dense scores (the batch is sized for it): SKU codes are in popularity order, so a stable
        # sort breaks ties by popularity and SKUs no neighbour holds (score 0) are the popular fill.
        scores = np.round((neighbours @ self._sessions).toarray(), _DECIMALS)
        current = np.flatnonzero(last >= 0)
        scores[current, last[current]] = -1.0  # the current SKU is excluded (ranked last)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        values = np.maximum(np.take_along_axis(scores, top, axis=1), 0.0).tolist()
        names = self._skus[top].tolist()
        return [list(zip(n, v, strict=True)) for n, v in zip(names, values, strict=True)]


@dataclass(frozen=True)
class KnnTrial:
    """One (k, sample_size) scored on the validation days."""

    k: int
    sample_size: int
    mrr: float
    hit_rate: float
    seconds: float


def best_trial(trials: Sequence[KnnTrial]) -> KnnTrial:
    """The trial with the best validation MRR@K; the earlier grid entry wins a tie."""
    return max(trials, key=lambda trial: trial.mrr)


def tune_vsknn(
    train: Sessions,
    days: int = VALIDATION_DAYS,
    grid: Sequence[tuple[int, int]] = KNN_GRID,
    max_examples: int = 10_000,
    seed: int = 0,
) -> VSKNN:
    """V-SKNN with the (k, sample_size) of `grid` that scores the best validation MRR@K, fitted
    on all of `train`; validation = the newest `days` days, cut like the LSTM's tuning.

    Sessions without event times (plain SKU lists) cannot be cut by day: the paper's defaults
    (k=100, sample_size=500) are used and `tuning` stays empty.
    """
    if not (isinstance(train, pd.DataFrame) and "last_event_at" in train):
        return VSKNN().fit(train)
    fit_df, val_df = validation_split(train, days)
    examples = next_item_examples(val_df, max_examples=max_examples, seed=seed)
    fitted = VSKNN().fit(fit_df)
    trials = []
    for k, sample_size in grid:
        started = time.perf_counter()
        recommended = recommend_in_batches(fitted.with_params(k, sample_size), examples.prefixes, K)
        trials.append(
            KnnTrial(
                k=k,
                sample_size=sample_size,
                mrr=mrr_at_k(recommended, examples.targets, K),
                hit_rate=hit_rate_at_k(recommended, examples.targets, K),
                seconds=time.perf_counter() - started,
            )
        )
    best = best_trial(trials)
    model = VSKNN(best.k, best.sample_size).fit(train)
    model.tuning = trials
    return model
