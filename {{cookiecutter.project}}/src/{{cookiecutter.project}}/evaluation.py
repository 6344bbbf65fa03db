"""Next-item evaluation: examples, metrics, the RecList suite and the side-by-side report.

The task is the challenge's: given a session prefix, rank the next item (MRR@20, HR@20, and
F1@20 against all later items of the session). Behavioural tests probe what accuracy hides: no
padding or unknown SKUs in the lists, stable lists under harmless changes of the session, and
short sessions served at least as well as by the popularity list; the gate reads them all.
Metrics live here because RecList 2.1.0's own metric modules do not import; RecList runs the suite
and writes one `report.json` (plus charts) per model, and `evaluate` writes a combined
`report.json` beside them. Figures are built on `matplotlib.figure.Figure` (Agg canvas), never
pyplot, so no GUI backend and no global figure registry is involved.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from reclist.logs import RecLogger
from reclist.reclist import CHART_TYPE, RecList, rec_test

from .errors import ProjectError

PREFIX_BUCKETS = ("1", "2-3", "4-7", "8+")
SCALAR_TESTS = (
    "hit_rate",
    "mrr",
    "f1",
    "coverage",
    "popularity_bias",
    "invalid_item_rate",
    "repeat_overlap",
    "noise_overlap",
    "short_prefix_mrr",
)
"""The suite's one-number tests: each is reported as `<name>@<k>` in the report's metrics."""
POPULARITY_SEGMENTS = ("head", "torso", "tail")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")

Sessions = pd.DataFrame | Sequence[Sequence[str]]
"""Sessions as a frame with a `skus` column (the time split) or as plain SKU sequences."""


class EvaluationError(ProjectError, ValueError):
    """Input that cannot be evaluated; the message says what to change."""


class Recommender(Protocol):
    """What every model offers the evaluation (the LSTM in model.py and both baselines)."""

    name: str

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, score) pairs, best first, for each session (SKUs in time order)."""
        ...


def check_k(k: int) -> None:
    """Reject a cut-off that would make every metric meaningless."""
    if k < 1:
        raise EvaluationError(f"k must be at least 1, got {k}")


def as_session_lists(sessions: Sessions) -> Sequence[Sequence[str]]:
    """The SKU sequences of `sessions` (the `skus` column of a frame, or the sequences as given)."""
    if isinstance(sessions, pd.DataFrame):
        if "skus" not in sessions.columns:
            raise EvaluationError(
                f"sessions frame has no 'skus' column (columns: {list(sessions.columns)}); "
                "pass the time split's train/test frames or a list of SKU lists"
            )
        sessions = sessions["skus"].tolist()
    if any(isinstance(session, str) for session in sessions):
        raise EvaluationError(
            "a session is a string, not a list of SKUs; parse JSON array columns "
            "(Snowflake returns arrays as JSON text) before evaluating"
        )
    return sessions


# --- examples ----------------------------------------------------------------------------------


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

    The sample is drawn over example indices, so only the chosen prefixes are materialised even
    when the test split holds millions of sessions; examples keep session order.
    """
    if max_examples < 1:
        raise EvaluationError(f"max_examples must be at least 1, got {max_examples}")
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
    prefixes: list[list[str]] = []
    targets: list[str] = []
    later: list[list[str]] = []
    for owner, length in zip(owners.tolist(), lengths.tolist(), strict=True):
        session = session_list[owner]
        prefixes.append(list(session[:length]))
        targets.append(session[length])
        later.append(list(session[length:]))
    return Examples(prefixes=prefixes, targets=targets, later=later)


# --- metrics -----------------------------------------------------------------------------------


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


def _hit_rate(ranks: np.ndarray) -> float:
    return float(np.mean(ranks > 0))


def _mrr(ranks: np.ndarray) -> float:
    return float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)))


def hit_rate_at_k(recommended: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Share of examples whose target is among the first k recommendations."""
    return _hit_rate(target_ranks(recommended, targets, k))


def mrr_at_k(recommended: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Mean reciprocal rank of the target, counting 0 when it is not in the top k."""
    return _mrr(target_ranks(recommended, targets, k))


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
            "hit_rate": _hit_rate(in_group) if in_group.size else None,
            "mrr": _mrr(in_group) if in_group.size else None,
        }
    return sliced


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


# --- behavioural tests -------------------------------------------------------------------------


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behavioural tests probe a model; what the results must reach is the gate's call."""

    sample_size: int = 1_000
    """Test prefixes perturbed per robustness test (the same ones for every model)."""
    short_prefix_max: int = 2
    """Prefixes of 1 to this many SKUs form the short-session slice."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample_size < 1 or self.short_prefix_max < 1:
            raise EvaluationError(
                "sample_size and short_prefix_max must be at least 1, got "
                f"{self.sample_size} and {self.short_prefix_max}"
            )


@dataclass(frozen=True)
class Probes:
    """Perturbed copies of a sample of test prefixes, built once and put to every model."""

    sample: list[int]
    """Indices of the perturbed examples."""
    repeated: list[list[str]]
    """The prefix with its last SKU repeated: an uncollapsed duplicate event."""
    noisy: list[list[str]]
    """The prefix with one stray product view (drawn by popularity) before its last SKU."""


def behaviour_probes(
    examples: Examples, popularity: pd.Series, config: BehaviourConfig | None = None
) -> Probes:
    """The robustness probes for `examples`, deterministic by `config.seed`.

    The stray view goes before the last SKU, never after it: the last SKU is the context the next
    item depends on most, so replacing it should change the list, while a stray view earlier in
    the session should not.
    """
    config = config or BehaviourConfig()
    if len(examples) == 0:
        raise EvaluationError("no examples to probe: build them with next_item_examples()")
    rng = np.random.default_rng(config.seed)
    size = min(config.sample_size, len(examples))
    sample = np.sort(rng.choice(len(examples), size=size, replace=False)).tolist()
    prefixes = [examples.prefixes[i] for i in sample]
    strays = rng.choice(
        popularity.index.to_numpy(dtype=object), size=size, p=popularity / popularity.sum()
    )
    noisy = []
    for prefix, stray in zip(prefixes, strays.tolist(), strict=True):
        position = int(rng.integers(len(prefix)))  # 0 .. len - 1: before the last SKU
        noisy.append([*prefix[:position], stray, *prefix[position:]])
    return Probes(
        sample=sample, repeated=[[*prefix, prefix[-1]] for prefix in prefixes], noisy=noisy
    )


def overlap_at_k(
    first: Sequence[Sequence[str]], second: Sequence[Sequence[str]], k: int
) -> np.ndarray:
    """Per pair of lists, the share of the top k they have in common (1 = same items)."""
    check_k(k)
    if len(first) != len(second):
        raise EvaluationError(f"{len(first)} lists to compare with {len(second)}; pair them up")
    return np.fromiter(
        (
            len(set(a[:k]).intersection(b[:k])) / max(len(a[:k]), len(b[:k]), 1)
            for a, b in zip(first, second, strict=True)
        ),
        dtype=np.float64,
        count=len(first),
    )


def invalid_item_rate(recommended: Sequence[Sequence[str]], catalogue: pd.Index, k: int) -> float:
    """Share of top-k slots holding an empty (padding) token or a SKU never seen in training.

    A model can only have learned SKUs of its training sessions; anything else in a list is a
    padding/OOV id leaking through the vocabulary lookup. NaN when all lists are empty.
    """
    check_k(k)
    slots = [sku for items in recommended for sku in items[:k]]
    if not slots:
        return math.nan
    known = catalogue.get_indexer(slots) >= 0
    valid = known & np.fromiter((bool(sku) for sku in slots), dtype=bool, count=len(slots))
    return float(1.0 - valid.mean())


# --- RecList suite -----------------------------------------------------------------------------


def recommend_in_batches(
    model: Recommender, prefixes: Sequence[Sequence[str]], k: int, batch_size: int = 4096
) -> list[list[str]]:
    """The model's top-k SKUs (scores dropped) for every prefix, asked `batch_size` at a time."""
    check_k(k)
    recommended: list[list[str]] = []
    for start in range(0, len(prefixes), batch_size):
        batch = prefixes[start : start + batch_size]
        answer = model.recommend(batch, k)
        if len(answer) != len(batch):
            raise EvaluationError(
                f"model {model.name!r} returned {len(answer)} lists for {len(batch)} sessions; "
                "recommend() must answer every session, in order"
            )
        recommended.extend([sku for sku, _ in pairs[:k]] for pairs in answer)
    return recommended


class _TableOnlyLogger(RecLogger):
    """Logs nothing per test: the suite's closing table already shows every result."""

    def write(self, label: str, value: Any) -> None:
        pass

    def save_plot(self, name: str, fig: Figure, *args: Any, **kwargs: Any) -> None:
        pass


def _slice_summary(slices: dict[str, dict[str, Any]]) -> str:
    """A slice test on one console line: `bucket: MRR (examples) | ...`."""
    parts = []
    for label, row in slices.items():
        mrr = "-" if row["mrr"] is None else f"{row['mrr']:.3f}"
        parts.append(f"{label}: {mrr} ({row['examples']})")
    return " | ".join(parts)


class SessionRecList(RecList):
    """The next-item RecList: one rec_test per metric, on one model's top-k lists.

    The model answers once, in batches, when the suite is built (the test prefixes, then the
    perturbed probes); each rec_test then scores those lists. Calling the suite writes
    `<out_dir>/SessionRecList/<model>/<epoch ms>/results/report.json` and a PNG per sliced test
    under `plots/`.
    """

    def __init__(
        self,
        model: Recommender,
        examples: Examples,
        popularity: pd.Series,
        *,
        out_dir: Path,
        k: int = 20,
        batch_size: int = 4096,
        behaviour: BehaviourConfig | None = None,
        probes: Probes | None = None,
    ) -> None:
        super().__init__(model_name=model.name)
        # RecList reads its folder from the class (cwd-relative `.reclist`); keep runs in out_dir.
        self.META_DATA_FOLDER = str(out_dir)
        self.logger_service = _TableOnlyLogger()
        self.k = k
        started = time.perf_counter()
        self.recommended = recommend_in_batches(model, examples.prefixes, k, batch_size)
        self.recommend_seconds = time.perf_counter() - started
        self.ranks = target_ranks(self.recommended, examples.targets, k)
        self.f1_scores = f1_scores(self.recommended, examples.later, k)
        self.popularity = popularity
        self.prefix_buckets = prefix_length_buckets(examples.prefix_lengths)
        self.target_segments = target_segments(examples.targets, popularity_segments(popularity))
        self.behaviour = behaviour or BehaviourConfig()
        self.is_short = examples.prefix_lengths <= self.behaviour.short_prefix_max
        probes = probes or behaviour_probes(examples, popularity, self.behaviour)
        unchanged = [self.recommended[i] for i in probes.sample]
        self.repeat_overlaps = overlap_at_k(
            unchanged, recommend_in_batches(model, probes.repeated, k, batch_size), k
        )
        self.noise_overlaps = overlap_at_k(
            unchanged, recommend_in_batches(model, probes.noisy, k, batch_size), k
        )

    @rec_test(test_type="hit_rate", display_type=CHART_TYPE.SCALAR)
    def hit_rate(self) -> float:
        """HR@k: share of examples whose next item is in the top k"""
        return _hit_rate(self.ranks)

    @rec_test(test_type="mrr", display_type=CHART_TYPE.SCALAR)
    def mrr(self) -> float:
        """MRR@k: mean reciprocal rank of the next item (0 outside the top k)"""
        return _mrr(self.ranks)

    @rec_test(test_type="f1", display_type=CHART_TYPE.SCALAR)
    def f1(self) -> float:
        """F1@k: top k vs all later items of the session (the challenge's subsequent-items task)"""
        return float(self.f1_scores.mean())

    @rec_test(test_type="coverage", display_type=CHART_TYPE.SCALAR)
    def coverage(self) -> float:
        """Coverage@k: distinct recommended SKUs / SKUs seen in training"""
        return coverage_at_k(self.recommended, len(self.popularity), self.k)

    @rec_test(test_type="popularity_bias", display_type=CHART_TYPE.SCALAR)
    def popularity_bias(self) -> float | None:
        """Mean training-popularity percentile of recommended SKUs (1 = only the top SKU)"""
        return _none_if_nan(popularity_bias(self.recommended, self.popularity, self.k))

    @rec_test(test_type="invalid_item_rate", display_type=CHART_TYPE.SCALAR)
    def invalid_item_rate(self) -> float | None:
        """Share of top-k slots with a padding/empty token or a SKU unseen in training (want 0)"""
        return _none_if_nan(invalid_item_rate(self.recommended, self.popularity.index, self.k))

    @rec_test(test_type="repeat_overlap", display_type=CHART_TYPE.SCALAR)
    def repeat_overlap(self) -> float:
        """Mean share of the top k kept when the last SKU is repeated (a duplicate event)"""
        return float(self.repeat_overlaps.mean())

    @rec_test(test_type="noise_overlap", display_type=CHART_TYPE.SCALAR)
    def noise_overlap(self) -> float:
        """Mean share of the top k kept when a stray product view precedes the last SKU"""
        return float(self.noise_overlaps.mean())

    @rec_test(test_type="short_prefix_mrr", display_type=CHART_TYPE.SCALAR)
    def short_prefix_mrr(self) -> float | None:
        """MRR@k on short sessions (prefixes of 1 to short_prefix_max SKUs)"""
        short = self.ranks[self.is_short]
        return _mrr(short) if short.size else None

    @rec_test(test_type="sliced_by_prefix_length", display_type=CHART_TYPE.BARS)
    def sliced_by_prefix_length(self) -> dict[str, dict[str, Any]]:
        """HR@k and MRR@k by prefix length (1, 2-3, 4-7, 8+)"""
        return slice_metrics(self.ranks, self.prefix_buckets, PREFIX_BUCKETS)

    @rec_test(test_type="sliced_by_target_popularity", display_type=CHART_TYPE.BARS)
    def sliced_by_target_popularity(self) -> dict[str, dict[str, Any]]:
        """HR@k and MRR@k by the next item's training popularity (head, torso, tail)"""
        return slice_metrics(self.ranks, self.target_segments, POPULARITY_SEGMENTS)

    def _bar_chart(self, test_result: dict) -> Figure:
        """Slice chart: HR and MRR side by side per bucket (RecList's own plots flat dicts only)."""
        slices: dict[str, dict[str, Any]] = test_result["result"]
        figure = Figure(figsize=(6, 3.5), layout="constrained")
        ax = figure.subplots()
        _grouped_bars(
            ax,
            list(slices),
            {
                f"HR@{self.k}": [row["hit_rate"] for row in slices.values()],
                f"MRR@{self.k}": [row["mrr"] for row in slices.values()],
            },
        )
        ax.set_title(f"{self.model_name}: {test_result['name']}")
        return figure

    def _display_rich_table(self, table_name: str, results: list) -> None:
        """RecList's console table, titled with the model, each slice test on one line."""
        condensed = [
            row | {"result": _slice_summary(row["result"])}
            if isinstance(row["result"], dict)
            else row
            for row in results
        ]
        super()._display_rich_table(f"{table_name}: {self.model_name}", condensed)

    @property
    def results(self) -> dict[str, Any]:
        """test_type -> result of the last run."""
        return {row["name"]: row["result"] for row in self._test_results}

    @property
    def report_path(self) -> Path:
        """The `report.json` RecList wrote in the last run."""
        return Path(self.meta_store_path) / "results" / "report.json"


# --- report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    """One model's metrics (keys like `mrr@20`), slices and its RecList report."""

    name: str
    metrics: dict[str, float | None]
    slices: dict[str, dict[str, dict[str, Any]]]
    reclist_report: Path
    recommend_seconds: float


@dataclass(frozen=True)
class EvaluationReport:
    """All models on the same examples; plain data, picklable as a Metaflow artifact."""

    k: int
    n_examples: int
    catalogue_size: int
    models: dict[str, ModelResult]
    path: Path
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `report.json` (NaN becomes null)."""
        return {
            "k": self.k,
            "n_examples": self.n_examples,
            "catalogue_size": self.catalogue_size,
            "behaviour": asdict(self.behaviour),
            "models": {
                name: {
                    "metrics": result.metrics,
                    "slices": result.slices,
                    "reclist_report": str(result.reclist_report),
                    "recommend_seconds": result.recommend_seconds,
                }
                for name, result in self.models.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path) -> EvaluationReport:
        """Read back the dict `to_dict` wrote (`path`: where it was read from)."""
        try:
            models = {
                name: ModelResult(
                    name=name,
                    metrics=dict(row["metrics"]),
                    slices=dict(row["slices"]),
                    reclist_report=Path(row["reclist_report"]),
                    recommend_seconds=float(row["recommend_seconds"]),
                )
                for name, row in data["models"].items()
            }
            return cls(
                k=int(data["k"]),
                n_examples=int(data["n_examples"]),
                catalogue_size=int(data["catalogue_size"]),
                models=models,
                path=Path(path),
                behaviour=BehaviourConfig(**data.get("behaviour", {})),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise EvaluationError(
                f"{path} is not an evaluation report ({error!r}); re-run the evaluate step"
            ) from error


def load_report(path: Path) -> EvaluationReport:
    """The combined report that `evaluate` wrote."""
    return EvaluationReport.from_dict(json.loads(Path(path).read_text()), path)


def _check_models(models: Sequence[Recommender]) -> None:
    if not models:
        raise EvaluationError("no models to evaluate; pass the LSTM and the baselines")
    names = [model.name for model in models]
    for name in names:
        if not _MODEL_NAME.fullmatch(name):
            raise EvaluationError(
                f"model name {name!r} is not usable as a folder name; use letters, digits, _ . -"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EvaluationError(f"model names must be unique, repeated: {duplicates}")


def evaluate(
    models: Sequence[Recommender],
    examples: Examples,
    train_sessions: Sessions,
    k: int = 20,
    *,
    out_dir: Path,
    batch_size: int = 4096,
    behaviour: BehaviourConfig | None = None,
) -> EvaluationReport:
    """Run the RecList suite for each model on the same examples; write `out_dir/report.json`.

    `train_sessions` define popularity (bias, head/torso/tail, stray views) and the catalogue
    (coverage, invalid items); every model gets the same perturbed probes.
    """
    check_k(k)
    _check_models(models)
    if len(examples) == 0:
        raise EvaluationError("no examples to evaluate on: build them with next_item_examples()")
    popularity = item_popularity(train_sessions)
    behaviour = behaviour or BehaviourConfig()
    probes = behaviour_probes(examples, popularity, behaviour)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, ModelResult] = {}
    for model in models:
        suite = SessionRecList(
            model,
            examples,
            popularity,
            out_dir=out_dir,
            k=k,
            batch_size=batch_size,
            behaviour=behaviour,
            probes=probes,
        )
        suite()
        found = suite.results
        results[model.name] = ModelResult(
            name=model.name,
            metrics={f"{metric}@{k}": found[metric] for metric in SCALAR_TESTS},
            slices={
                "prefix_length": found["sliced_by_prefix_length"],
                "target_popularity": found["sliced_by_target_popularity"],
            },
            reclist_report=suite.report_path,
            recommend_seconds=suite.recommend_seconds,
        )
    report = EvaluationReport(
        k=k,
        n_examples=len(examples),
        catalogue_size=len(popularity),
        models=results,
        path=out_dir / "report.json",
        behaviour=behaviour,
    )
    report.path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    return report


# --- charts ------------------------------------------------------------------------------------


def _grouped_bars(
    ax: Axes, categories: Sequence[str], series: Mapping[str, Sequence[float | None]]
) -> None:
    """One bar group per category, one bar per series; a None value leaves its slot empty."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(categories))
    for i, (label, values) in enumerate(series.items()):
        heights = [math.nan if value is None else value for value in values]
        ax.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(positions, categories)
    ax.legend(fontsize="small")


def plot_comparison(report: EvaluationReport | Mapping[str, Any]) -> Figure:
    """HR, MRR and coverage per model, and MRR by prefix length per model, side by side."""
    if not isinstance(report, EvaluationReport):
        report = EvaluationReport.from_dict(report, Path("report.json"))
    k = report.k
    names = list(report.models)
    figure = Figure(figsize=(11, 4), layout="constrained")
    overall, by_length = figure.subplots(1, 2)
    metrics = [f"hit_rate@{k}", f"mrr@{k}", f"coverage@{k}"]
    _grouped_bars(
        overall,
        [f"HR@{k}", f"MRR@{k}", f"Coverage@{k}"],
        {name: [report.models[name].metrics.get(m) for m in metrics] for name in names},
    )
    overall.set_title(f"Next-item metrics on {report.n_examples:,} examples")
    _grouped_bars(
        by_length,
        list(PREFIX_BUCKETS),
        {
            name: [
                report.models[name].slices["prefix_length"].get(bucket, {}).get("mrr")
                for bucket in PREFIX_BUCKETS
            ]
            for name in names
        },
    )
    by_length.set_title(f"MRR@{k} by prefix length")
    by_length.set_xlabel("SKUs seen in the session so far")
    return figure


def evaluate_split(
    models: Sequence[Recommender],
    split: Any,
    max_examples: int,
    seed: int,
    out_dir: Path,
    behaviour: BehaviourConfig | None = None,
) -> EvaluationReport:
    """Every model on the same next-item examples drawn from the split's test sessions."""
    examples = next_item_examples(split.test, max_examples=max_examples, seed=seed)
    behaviour = behaviour or BehaviourConfig(seed=seed)
    return evaluate(models, examples, split.train, out_dir=out_dir, behaviour=behaviour)


def log_report(tracker: Any, report: EvaluationReport) -> str | None:
    """Send every model's metrics (as `<model>/<metric>`) and the comparison chart to a tracker."""
    tracker.log_metrics(
        {
            f"{name}/{metric}": value
            for name, result in report.models.items()
            for metric, value in result.metrics.items()
            if value is not None
        }
    )
    tracker.log_figure("model_comparison", plot_comparison(report))
    return tracker.end()
