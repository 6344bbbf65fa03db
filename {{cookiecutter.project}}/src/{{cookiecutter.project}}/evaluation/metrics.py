"""Next-item examples and the metrics scored on them: ranks, HR, MRR, F1, coverage, popularity
bias, and slices by prefix length and by the target's popularity."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from ..schema import MIN_SESSION_LENGTH
from .protocol import EvaluationError, Sessions, as_session_lists, check_k

PREFIX_BUCKETS = ("1", "2-3", "4-7", "8+")
POPULARITY_SEGMENTS = ("head", "torso", "tail")


@dataclass(frozen=True)
class Examples:
    """Next-item examples: `prefixes[i]` (SKUs in time order) is followed by `targets[i]`.

    `later[i]` holds every SKU after the prefix, the target first (the ground truth of F1@k);
    left out, it is each target alone.
    """

    prefixes: list[list[str]]
    targets: list[str]
    later: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if len(self.prefixes) != len(self.targets):
            raise EvaluationError(
                f"{len(self.prefixes)} prefixes but {len(self.targets)} targets; they must pair up"
            )
        if self.later is None:
            object.__setattr__(self, "later", [[target] for target in self.targets])
        elif len(self.later) != len(self.targets) or any(
            not items or items[0] != target
            for items, target in zip(self.later, self.targets, strict=True)
        ):
            raise EvaluationError(
                "later items must pair up with the targets and start with them; "
                "build the examples with next_item_examples()"
            )

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def prefix_lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.prefixes), dtype=np.int64, count=len(self.prefixes))


def next_item_examples(sessions: Sessions, max_examples: int = 50_000, seed: int = 0) -> Examples:
    """Every prefix of every session (lengths 1..n-1) with its next and later items, by `seed`.

    The all-prefixes protocol (`schema.ALL_PREFIXES`): a session of n SKUs gives n-1 examples, so
    long sessions weigh more. The sample is drawn over example indices, so only the chosen
    prefixes are materialised even when the test split holds millions of sessions; examples keep
    session order.
    """
    _check_max_examples(max_examples)
    session_list = as_session_lists(sessions)
    per_session = np.fromiter(
        (max(len(s) - 1, 0) for s in session_list), dtype=np.int64, count=len(session_list)
    )
    total = int(per_session.sum())
    if total == 0:
        raise EvaluationError(
            f"no next-item examples in {len(session_list)} test sessions (each needs 2+ SKUs); "
            "generate more sessions or hold out more days for the test split"
        )
    if total <= max_examples:
        chosen = np.arange(total)
    else:
        chosen = np.sort(
            np.random.default_rng(seed).choice(total, size=max_examples, replace=False)
        )
    ends = np.cumsum(per_session)
    owners = np.searchsorted(ends, chosen, side="right")
    lengths = chosen - (ends[owners] - per_session[owners]) + 1
    return _examples_at(session_list, owners, lengths)


def session_cut_examples(sessions: Sessions, max_examples: int = 50_000, seed: int = 0) -> Examples:
    """One example per session of 2+ SKUs: the session cut at a seeded random point j (uniform in
    1..n-1), the prefix s[:j], its next item s[j] and the later items s[j:].

    The session-cut protocol (`schema.SESSION_CUT`), the Coveo SIGIR eCom 2021 data challenge's:
    its test file kept one of the n-1 possible splits of each test session, since a file holding
    two splits of one session reveals the answer of the shorter one. Every session then weighs
    the same, where all prefixes weigh a session by its length. The cut is random, as there, rather
    than always before the last SKU: the last SKU is special (where the shopper stopped), and a
    fixed cut would score only the longest prefix of each session, where a live session is asked
    for recommendations at every length. Sessions beyond `max_examples` are sampled by `seed`;
    examples keep session order.
    """
    _check_max_examples(max_examples)
    session_list = as_session_lists(sessions)
    lengths = np.fromiter(map(len, session_list), dtype=np.int64, count=len(session_list))
    owners = np.flatnonzero(lengths >= MIN_SESSION_LENGTH)
    if owners.size == 0:
        raise EvaluationError(
            f"no test session to cut among {len(session_list)} (each needs "
            f"{MIN_SESSION_LENGTH}+ SKUs); generate more sessions or hold out more days for the "
            "test split"
        )
    rng = np.random.default_rng(seed)
    if owners.size > max_examples:
        owners = np.sort(rng.choice(owners, size=max_examples, replace=False))
    cuts = rng.integers(1, lengths[owners])  # high is exclusive: j in 1..n-1
    return _examples_at(session_list, owners, cuts)


def _check_max_examples(max_examples: int) -> None:
    if max_examples < 1:
        raise EvaluationError(f"max_examples must be at least 1, got {max_examples}")


def _examples_at(
    session_list: Sequence[Sequence[str]], owners: np.ndarray, lengths: np.ndarray
) -> Examples:
    """The example of session `owners[i]` cut after its first `lengths[i]` SKUs, for each i."""
    prefixes: list[list[str]] = []
    targets: list[str] = []
    later: list[list[str]] = []
    for owner, length in zip(owners.tolist(), lengths.tolist(), strict=True):
        session = session_list[owner]
        prefixes.append(list(session[:length]))
        targets.append(session[length])
        later.append(list(session[length:]))
    return Examples(prefixes=prefixes, targets=targets, later=later)


def target_ranks(
    recommended: Sequence[Sequence[str]], targets: Sequence[str], k: int
) -> np.ndarray:
    """1-based rank of each target within its top-k list, 0 where it is not in the top k."""
    check_k(k)
    if len(recommended) != len(targets):
        raise EvaluationError(
            f"{len(recommended)} recommendation lists for {len(targets)} targets; they must pair up"
        )
    if not targets:
        raise EvaluationError("no examples to score: build them with next_item_examples()")
    ranks = np.zeros(len(targets), dtype=np.int64)
    for i, (items, target) in enumerate(zip(recommended, targets, strict=True)):
        top = list(items[:k])
        if target in top:
            ranks[i] = top.index(target) + 1
    return ranks


def hit_rate_from_ranks(ranks: np.ndarray) -> float:
    """Share of ranks that are hits (rank 0 = not in the top k)."""
    return float(np.mean(ranks > 0))


def mrr_from_ranks(ranks: np.ndarray) -> float:
    """Mean reciprocal rank, counting 0 for a miss (rank 0)."""
    return float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)))


def hit_rate_at_k(recommended: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Share of examples whose target is among the first k recommendations."""
    return hit_rate_from_ranks(target_ranks(recommended, targets, k))


def mrr_at_k(recommended: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Mean reciprocal rank of the target, counting 0 when it is not in the top k."""
    return mrr_from_ranks(target_ranks(recommended, targets, k))


def f1_scores(
    recommended: Sequence[Sequence[str]], later: Sequence[Sequence[str]], k: int
) -> np.ndarray:
    """Per example, F1 of the top-k list against the distinct later items of the session.

    The Coveo challenge's definition: precision divides the hits by k (also when a list is
    shorter), recall by the number of distinct later items; F1 is 0 without a hit.
    """
    check_k(k)
    if len(recommended) != len(later):
        raise EvaluationError(
            f"{len(recommended)} recommendation lists for {len(later)} sets of later items; "
            "they must pair up"
        )
    if not later:
        raise EvaluationError("no examples to score: build them with next_item_examples()")
    scores = np.zeros(len(later), dtype=np.float64)
    for i, (items, truth) in enumerate(zip(recommended, later, strict=True)):
        distinct = set(truth)
        hits = len(distinct.intersection(items[:k]))
        if hits:
            precision, recall = hits / k, hits / len(distinct)
            scores[i] = 2 * precision * recall / (precision + recall)
    return scores


def f1_at_k(recommended: Sequence[Sequence[str]], later: Sequence[Sequence[str]], k: int) -> float:
    """Mean F1@k over all later items of each session (the challenge's subsequent-items task)."""
    return float(f1_scores(recommended, later, k).mean())


def coverage_at_k(recommended: Sequence[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Distinct items recommended in any top-k list, as a share of the catalogue."""
    check_k(k)
    if catalogue_size < 1:
        raise EvaluationError(f"catalogue_size must be at least 1, got {catalogue_size}")
    if not recommended:
        raise EvaluationError("no recommendation lists to measure coverage on")
    distinct: set[str] = set()
    for items in recommended:
        distinct.update(items[:k])
    return len(distinct) / catalogue_size


def item_popularity(train_sessions: Sessions) -> pd.Series:
    """How often each SKU occurs in the training sessions, most popular first (ties by SKU)."""
    items = np.fromiter(chain.from_iterable(as_session_lists(train_sessions)), dtype=object)
    if items.size == 0:
        raise EvaluationError("training sessions hold no SKUs; check the time split")
    # factorize + bincount is several times faster than value_counts on millions of strings.
    codes, skus = pd.factorize(items, sort=True)
    counts = pd.Series(np.bincount(codes), index=skus, name="count")
    return counts.sort_values(ascending=False, kind="stable")


def popularity_percentiles(popularity: pd.Series) -> pd.Series:
    """Per SKU, the share of the training catalogue at or below its count (top item = 1.0)."""
    return popularity.rank(method="max", pct=True)


def popularity_bias(recommended: Sequence[Sequence[str]], popularity: pd.Series, k: int) -> float:
    """Mean training-popularity percentile of all recommended top-k items.

    1.0 means every slot holds the most popular item, about 0.5 means recommendations follow the
    catalogue without favouring the head; items unseen in training count as 0. NaN when the lists
    are all empty.
    """
    check_k(k)
    if not recommended:
        raise EvaluationError("no recommendation lists to measure popularity bias on")
    percentile = popularity_percentiles(popularity).to_dict().get
    slots = np.fromiter(
        (percentile(sku, 0.0) for sku in chain.from_iterable(items[:k] for items in recommended)),
        dtype=np.float64,
    )
    return float(slots.mean()) if slots.size else math.nan


def prefix_length_buckets(lengths: np.ndarray) -> np.ndarray:
    """The PREFIX_BUCKETS label of each prefix length (1, 2-3, 4-7, 8+)."""
    lengths = np.asarray(lengths)
    if lengths.size and lengths.min() < 1:
        raise EvaluationError("prefix lengths start at 1; an empty prefix has no next item")
    return np.asarray(PREFIX_BUCKETS, dtype=object)[np.digitize(lengths, [2, 4, 8])]


def popularity_segments(
    popularity: pd.Series, head_share: float = 0.5, torso_share: float = 0.8
) -> pd.Series:
    """Head / torso / tail label per SKU by its place in the training interactions.

    Walking SKUs from most to least popular, an SKU is `head` while the interactions before it are
    under `head_share` of all, `torso` while under `torso_share`, then `tail`: so the head is the
    few SKUs behind half of all interactions and the tail the long list behind the last fifth.
    """
    if not 0 < head_share <= torso_share <= 1:
        raise EvaluationError(
            f"need 0 < head_share <= torso_share <= 1, got {head_share} and {torso_share}"
        )
    counts = popularity.sort_values(ascending=False, kind="stable")
    share_before = (counts.cumsum() - counts) / counts.sum()
    labels = np.where(
        share_before < head_share, "head", np.where(share_before < torso_share, "torso", "tail")
    )
    return pd.Series(labels, index=counts.index, name="segment")


def target_segments(targets: Sequence[str], segments: pd.Series) -> np.ndarray:
    """The popularity segment of each target; SKUs never seen in training are `tail`."""
    return segments.reindex(list(targets)).fillna("tail").to_numpy(dtype=object)


def slice_metrics(
    ranks: np.ndarray, groups: np.ndarray, labels: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Examples, HR and MRR per group label; metrics are None for a label with no examples."""
    sliced: dict[str, dict[str, Any]] = {}
    for label in labels:
        in_group = ranks[groups == label]
        sliced[label] = {
            "examples": int(in_group.size),
            "hit_rate": hit_rate_from_ranks(in_group) if in_group.size else None,
            "mrr": mrr_from_ranks(in_group) if in_group.size else None,
        }
    return sliced
