"""The RecList suite: one rec_test per metric and behavioural probe, on one model's top-k lists.

Figures are built on `matplotlib.figure.Figure` (Agg canvas), never pyplot, so no GUI backend and
no global figure registry is involved. The charts of the cards are in `pipeline.plots`; the one
here is RecList's own per-test chart hook, and `grouped_bars` is shared with the cards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rich
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from reclist.logs import RecLogger
from reclist.reclist import CHART_TYPE, RecList, rec_test

from ..schema import SESSION_CUT, K
from .behaviour import BehaviourConfig, Probes, behaviour_probes, invalid_item_rate, overlap_at_k
from .metrics import (
    POPULARITY_SEGMENTS,
    PREFIX_BUCKETS,
    Examples,
    coverage_at_k,
    f1_scores,
    hit_rate_from_ranks,
    mrr_from_ranks,
    popularity_bias,
    popularity_segments,
    prefix_length_buckets,
    slice_metrics,
    target_ranks,
    target_segments,
)
from .protocol import EvaluationError, Recommender, check_k

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
    f"{SESSION_CUT}_hit_rate",
    f"{SESSION_CUT}_mrr",
)
"""The suite's one-number tests: each is reported as `<name>@<k>` in the report's metrics
(`hit_rate` and `mrr` score all prefixes, the `session_cut_` ones one cut per session)."""


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def grouped_bars(
    ax: Axes, categories: Sequence[str], series: Mapping[str, Sequence[float | None]]
) -> None:
    """One bar group per category, one bar per series; a None value leaves its slot empty.

    The suite's slice charts and the cards' `pipeline.plots.plot_comparison` both draw with it;
    the cards sit above this layer, so the shared helper lives here."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(categories))
    for i, (label, values) in enumerate(series.items()):
        heights = [math.nan if value is None else value for value in values]
        ax.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(positions, categories)
    ax.legend(fontsize="small")


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


class SessionRecList(RecList):
    """The next-item RecList: one rec_test per metric, on one model's top-k lists.

    The model answers once, in batches, when the suite is built (the test prefixes, the
    one-per-session cuts, then the perturbed probes); each rec_test then scores those lists.
    Calling the suite writes `<out_dir>/SessionRecList/<model>/<epoch ms>/results/report.json`
    and a PNG per sliced test under `plots/`.
    """

    def __init__(
        self,
        model: Recommender,
        examples: Examples,
        popularity: pd.Series,
        *,
        session_cuts: Examples,
        out_dir: Path,
        k: int = K,
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
        self.session_cut_ranks = target_ranks(
            recommend_in_batches(model, session_cuts.prefixes, k, batch_size),
            session_cuts.targets,
            k,
        )
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
        return hit_rate_from_ranks(self.ranks)

    @rec_test(test_type="mrr", display_type=CHART_TYPE.SCALAR)
    def mrr(self) -> float:
        """MRR@k: mean reciprocal rank of the next item (0 outside the top k)"""
        return mrr_from_ranks(self.ranks)

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
        return mrr_from_ranks(short) if short.size else None

    @rec_test(test_type=f"{SESSION_CUT}_hit_rate", display_type=CHART_TYPE.SCALAR)
    def session_cut_hit_rate(self) -> float:
        """HR@k with one random cut per test session (the data challenge's protocol)"""
        return hit_rate_from_ranks(self.session_cut_ranks)

    @rec_test(test_type=f"{SESSION_CUT}_mrr", display_type=CHART_TYPE.SCALAR)
    def session_cut_mrr(self) -> float:
        """MRR@k with one random cut per test session (the data challenge's protocol)"""
        return mrr_from_ranks(self.session_cut_ranks)

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
        grouped_bars(
            ax,
            list(slices),
            {
                f"HR@{self.k}": [row["hit_rate"] for row in slices.values()],
                f"MRR@{self.k}": [row["mrr"] for row in slices.values()],
            },
        )
        ax.set_title(f"{self.model_name}: {test_result['name']}")
        return figure

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """RecList's run with its rich progress bar muted: outside a terminal rich prints it only
        once done; `report.evaluate` prints a line per model instead."""
        console = rich.get_console()
        was_quiet, console.quiet = console.quiet, True
        try:
            super().__call__(*args, **kwargs)
        finally:
            console.quiet = was_quiet

    def _display_rich_table(self, table_name: str, results: list) -> None:
        """Nothing: RecList would print one wide table per model; the flow prints one table with
        every model as a column (pipeline.cards.evaluation_text)."""

    @property
    def results(self) -> dict[str, Any]:
        """test_type -> result of the last run."""
        return {row["name"]: row["result"] for row in self._test_results}

    @property
    def report_path(self) -> Path:
        """The `report.json` RecList wrote in the last run."""
        return Path(self.meta_store_path) / "results" / "report.json"
