"""Next-item examples, metrics against hand-computed values, and the RecList suite on disk."""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from {{ cookiecutter.project }}.evaluation.behaviour import (
    BehaviourConfig,
    behaviour_probes,
    invalid_item_rate,
    overlap_at_k,
)
from {{ cookiecutter.project }}.evaluation.metrics import (
    PREFIX_BUCKETS,
    Examples,
    coverage_at_k,
    f1_at_k,
    hit_rate_at_k,
    item_popularity,
    mrr_at_k,
    next_item_examples,
    popularity_bias,
    popularity_segments,
    prefix_length_buckets,
    session_cut_examples,
    slice_metrics,
    target_ranks,
    target_segments,
)
from {{ cookiecutter.project }}.evaluation.protocol import EvaluationError
from {{ cookiecutter.project }}.evaluation.report import (
    EvaluationReport,
    evaluate,
    evaluate_split,
    load_report,
    log_report,
)
from {{ cookiecutter.project }}.evaluation.suite import SCALAR_TESTS
from {{ cookiecutter.project }}.pipeline.plots import plot_comparison
from {{ cookiecutter.project }}.schema import ALL_PREFIXES, SESSION_CUT, protocol_metrics


class FixedList:
    """A real (if simple) recommender: the same ranked list for every session."""

    def __init__(self, name: str, ranking: Sequence[str]) -> None:
        self.name = name
        self.ranking = list(ranking)

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        top = [(sku, 1.0 / (i + 1)) for i, sku in enumerate(self.ranking[:k])]
        return [list(top) for _ in sessions]


class RotatesByLength(FixedList):
    """Its list turns with the session's length: one more SKU moves the top 2 by one place."""

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        ranking = self.ranking
        return [[(ranking[(len(s) + i) % len(ranking)], 1.0) for i in range(k)] for s in sessions]


class DropsOneSession(FixedList):
    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        return super().recommend(sessions, k)[1:]


# --- examples ----------------------------------------------------------------------------------


def test_examples_are_every_prefix_with_its_next_and_later_items() -> None:
    examples = next_item_examples([["a", "b", "c"], ["d", "e"]], max_examples=10)
    assert examples.prefixes == [["a"], ["a", "b"], ["d"]]
    assert examples.targets == ["b", "c", "e"]
    assert examples.later == [["b", "c"], ["c"], ["e"]]
    assert examples.prefix_lengths.tolist() == [1, 2, 1]
    assert Examples([["a"]], ["b"]).later == [["b"]]  # without later items: the target alone


def test_examples_read_the_skus_column_of_a_split_frame() -> None:
    frame = pd.DataFrame({"session_id": [1, 2], "skus": [["a", "b"], np.array(["c", "d", "e"])]})
    examples = next_item_examples(frame, max_examples=10)
    assert examples.prefixes == [["a"], ["c"], ["c", "d"]]
    assert examples.targets == ["b", "d", "e"]


def test_subsample_is_deterministic_and_made_of_real_examples() -> None:
    sessions = [[f"s{i}-{j}" for j in range(2 + i % 7)] for i in range(300)]
    first = next_item_examples(sessions, max_examples=100, seed=3)
    again = next_item_examples(sessions, max_examples=100, seed=3)
    other = next_item_examples(sessions, max_examples=100, seed=4)
    assert len(first) == 100
    assert first == again
    assert first != other
    by_first_sku = {session[0]: session for session in sessions}
    for prefix, target in zip(first.prefixes, first.targets, strict=True):
        session = by_first_sku[prefix[0]]
        assert session[: len(prefix)] == prefix
        assert session[len(prefix)] == target
    assert len({(tuple(p), t) for p, t in zip(first.prefixes, first.targets, strict=True)}) == 100


def test_session_cuts_are_one_random_cut_per_session() -> None:
    long = [f"s{i}" for i in range(30)]
    sessions = [["a"], ["b", "c"], long, ["d", "e", "f"]]
    cuts = session_cut_examples(sessions, seed=1)
    assert len(cuts) == 3  # a 1-SKU session has no next item to guess
    assert (cuts.prefixes[0], cuts.targets[0], cuts.later[0]) == (["b"], "c", ["c"])
    for prefix, target, later, session in zip(
        cuts.prefixes, cuts.targets, cuts.later, sessions[1:], strict=True
    ):
        cut = len(prefix)
        assert 1 <= cut < len(session)
        assert (prefix, target, later) == (session[:cut], session[cut], session[cut:])
    assert session_cut_examples(sessions, seed=1) == cuts
    # The cut is drawn anywhere in the session, not always before its last SKU.
    lengths = {len(session_cut_examples([long], seed=seed).prefixes[0]) for seed in range(60)}
    assert len(lengths) > 15 and min(lengths) < 10 and max(lengths) <= 29


def test_session_cuts_sample_sessions_beyond_the_cap() -> None:
    sessions = [[f"s{i}-{j}" for j in range(2 + i % 5)] for i in range(300)]
    first = session_cut_examples(sessions, max_examples=50, seed=3)
    assert len(first) == 50
    assert first == session_cut_examples(sessions, max_examples=50, seed=3)
    assert first != session_cut_examples(sessions, max_examples=50, seed=4)
    owners = [int(prefix[0].split("-")[0][1:]) for prefix in first.prefixes]
    assert owners == sorted(set(owners))  # distinct sessions, in session order
    frame = pd.DataFrame({"skus": [["a"], np.array(["c", "d"])]})  # the time split's frame
    assert session_cut_examples(frame).targets == ["d"]


def test_session_cut_errors_say_what_to_do() -> None:
    with pytest.raises(EvaluationError, match="no test session to cut among 2"):
        session_cut_examples([["a"], []])
    with pytest.raises(EvaluationError, match="max_examples"):
        session_cut_examples([["a", "b"]], max_examples=0)
    with pytest.raises(EvaluationError, match="'skus' column"):
        session_cut_examples(pd.DataFrame({"items": [["a", "b"]]}))


def test_examples_errors_say_what_to_do() -> None:
    with pytest.raises(EvaluationError, match="no next-item examples"):
        next_item_examples([["a"], []], max_examples=10)
    with pytest.raises(EvaluationError, match="'skus' column"):
        next_item_examples(pd.DataFrame({"items": [["a", "b"]]}), max_examples=10)
    with pytest.raises(EvaluationError, match="JSON"):
        next_item_examples(pd.DataFrame({"skus": ['["a", "b"]']}), max_examples=10)
    with pytest.raises(EvaluationError, match="max_examples"):
        next_item_examples([["a", "b"]], max_examples=0)
    with pytest.raises(EvaluationError, match="pair up"):
        Examples(prefixes=[["a"]], targets=[])
    with pytest.raises(EvaluationError, match="start with them"):
        Examples(prefixes=[["a"]], targets=["b"], later=[["c", "b"]])


# --- metrics -----------------------------------------------------------------------------------

RECOMMENDED = [["a", "b", "c"], ["x", "y", "z"], ["c", "a", "b"]]
TARGETS = ["b", "q", "b"]


def test_ranks_hit_rate_and_mrr_by_hand() -> None:
    assert target_ranks(RECOMMENDED, TARGETS, k=3).tolist() == [2, 0, 3]
    assert hit_rate_at_k(RECOMMENDED, TARGETS, k=3) == pytest.approx(2 / 3)
    assert mrr_at_k(RECOMMENDED, TARGETS, k=3) == pytest.approx((1 / 2 + 0 + 1 / 3) / 3)


def test_k_cuts_the_lists() -> None:
    assert target_ranks(RECOMMENDED, TARGETS, k=2).tolist() == [2, 0, 0]
    assert hit_rate_at_k(RECOMMENDED, TARGETS, k=2) == pytest.approx(1 / 3)
    assert mrr_at_k(RECOMMENDED, TARGETS, k=2) == pytest.approx(1 / 6)
    assert hit_rate_at_k(RECOMMENDED, TARGETS, k=1) == 0.0
    assert mrr_at_k([["b"]], ["b"], k=1) == 1.0


def test_metric_input_errors() -> None:
    with pytest.raises(EvaluationError, match="no examples"):
        mrr_at_k([], [], k=20)
    with pytest.raises(EvaluationError, match="pair up"):
        hit_rate_at_k([["a"]], ["a", "b"], k=20)
    with pytest.raises(EvaluationError, match="k must be at least 1"):
        mrr_at_k([["a"]], ["a"], k=0)
    with pytest.raises(EvaluationError, match="coverage"):
        coverage_at_k([], catalogue_size=5, k=20)
    with pytest.raises(EvaluationError, match="catalogue_size"):
        coverage_at_k([["a"]], catalogue_size=0, k=20)
    with pytest.raises(EvaluationError, match="popularity bias"):
        popularity_bias([], pd.Series({"a": 1}), k=20)


def test_mrr_and_f1_follow_the_challenge_definitions_by_hand() -> None:
    """Coveo SIGIR eCom 2021: MRR@k of the next item, F1@k against all later items of the session.

    F1 uses the distinct later items; precision divides the hits by k even for a shorter list.
    """
    recommended = [["a", "b", "c"], ["x", "y"], ["c"]]
    later = [["b", "c", "b", "d"], ["q"], ["c", "e"]]
    # next items b, q, c: ranks 2, miss, 1
    assert mrr_at_k(recommended, [items[0] for items in later], k=3) == pytest.approx(
        (1 / 2 + 0 + 1) / 3
    )
    # 1: hits {b, c} of {b, c, d}: P 2/3, R 2/3, F1 2/3. 2: no hit. 3: hit c: P 1/3, R 1/2, F1 2/5.
    assert f1_at_k(recommended, later, k=3) == pytest.approx((2 / 3 + 0 + 2 / 5) / 3)
    # k = 1: 1: a misses. 3: c hits, P 1, R 1/2, F1 2/3.
    assert f1_at_k(recommended, later, k=1) == pytest.approx((0 + 0 + 2 / 3) / 3)
    # k = 20 on one list: 3 hits of 3 later items, P 3/20, R 1: F1 = 2 * 0.15 / 1.15
    assert f1_at_k([["a", "b", "c"]], [["c", "a", "b"]], k=20) == pytest.approx(0.3 / 1.15)
    with pytest.raises(EvaluationError, match="pair up"):
        f1_at_k(recommended, later[:2], k=3)
    with pytest.raises(EvaluationError, match="no examples"):
        f1_at_k([], [], k=3)


def test_invalid_items_are_padding_tokens_or_skus_unseen_in_training() -> None:
    catalogue = pd.Index(["a", "b", "c"])
    assert invalid_item_rate([["a", ""], ["unseen", "b"]], catalogue, k=2) == pytest.approx(0.5)
    assert invalid_item_rate([["a", ""], ["unseen", "b"]], catalogue, k=1) == pytest.approx(0.5)
    assert invalid_item_rate([["a", "b"], ["c"]], catalogue, k=20) == 0.0
    assert math.isnan(invalid_item_rate([[]], catalogue, k=20))


def test_overlap_is_the_share_of_the_top_k_in_common() -> None:
    first, second = [["a", "b", "c"], ["a"]], [["c", "a", "x"], ["b"]]
    assert overlap_at_k(first, second, k=3).tolist() == pytest.approx([2 / 3, 0.0])
    assert overlap_at_k(first, second, k=1).tolist() == [0.0, 0.0]
    assert overlap_at_k([[]], [[]], k=5).tolist() == [0.0]
    with pytest.raises(EvaluationError, match="pair them up"):
        overlap_at_k(first, second[:1], k=3)


def test_probes_repeat_the_last_sku_or_slip_a_stray_view_before_it() -> None:
    sessions = [[f"s{i}-{j}" for j in range(2 + i % 5)] for i in range(200)]
    examples = next_item_examples(sessions, max_examples=500)
    popularity = item_popularity(sessions)
    probes = behaviour_probes(examples, popularity, BehaviourConfig(sample_size=50, seed=1))
    assert probes == behaviour_probes(examples, popularity, BehaviourConfig(sample_size=50, seed=1))
    assert len(probes.sample) == len(set(probes.sample)) == 50
    for i, repeated, noisy in zip(probes.sample, probes.repeated, probes.noisy, strict=True):
        prefix = examples.prefixes[i]
        assert repeated == [*prefix, prefix[-1]]
        assert len(noisy) == len(prefix) + 1 and noisy[-1] == prefix[-1]
        stray = [sku for sku in noisy if sku not in prefix]
        assert len(stray) <= 1 and set(stray) <= set(popularity.index)
    capped = behaviour_probes(examples, popularity, BehaviourConfig(sample_size=10_000))
    assert len(capped.sample) == len(examples)
    with pytest.raises(EvaluationError, match="sample_size"):
        BehaviourConfig(sample_size=0)


def test_coverage_counts_distinct_items_in_the_top_k() -> None:
    recommended = [["a", "b"], ["b", "c"]]
    assert coverage_at_k(recommended, catalogue_size=8, k=2) == pytest.approx(3 / 8)
    assert coverage_at_k(recommended, catalogue_size=8, k=1) == pytest.approx(2 / 8)


def test_item_popularity_orders_by_count_then_sku() -> None:
    popularity = item_popularity([["c", "a"], ["a", "b", "a"], ["d", "a"]])
    assert popularity.to_dict() == {"a": 4, "b": 1, "c": 1, "d": 1}
    assert list(popularity.index) == ["a", "b", "c", "d"]
    with pytest.raises(EvaluationError, match="no SKUs"):
        item_popularity([[]])


def test_popularity_bias_is_the_mean_percentile_of_recommended_items() -> None:
    # Percentile = share of the catalogue at or below the item's count: a 1, b 3/4, c and d 1/2.
    popularity = pd.Series({"a": 4, "b": 2, "c": 1, "d": 1})
    assert popularity_bias([["a", "b"], ["c", "unseen"]], popularity, k=2) == pytest.approx(
        (1 + 0.75 + 0.5 + 0) / 4
    )
    assert popularity_bias([["a", "b"], ["c", "unseen"]], popularity, k=1) == pytest.approx(
        (1 + 0.5) / 2
    )
    assert math.isnan(popularity_bias([[], []], popularity, k=5))


def test_prefix_length_buckets() -> None:
    labels = prefix_length_buckets(np.array([1, 2, 3, 4, 7, 8, 50]))
    assert labels.tolist() == ["1", "2-3", "2-3", "4-7", "4-7", "8+", "8+"]
    with pytest.raises(EvaluationError, match="start at 1"):
        prefix_length_buckets(np.array([0, 1]))


def test_popularity_segments_split_the_interactions() -> None:
    # 10 interactions: a covers the first half (head), b the next 3/10 (torso), c and d the rest.
    segments = popularity_segments(pd.Series({"a": 5, "b": 3, "c": 1, "d": 1}))
    assert segments.to_dict() == {"a": "head", "b": "torso", "c": "tail", "d": "tail"}
    assert target_segments(["b", "a", "new"], segments).tolist() == ["torso", "head", "tail"]
    with pytest.raises(EvaluationError, match="head_share"):
        popularity_segments(pd.Series({"a": 1}), head_share=0.9, torso_share=0.5)


def test_slice_metrics_by_hand() -> None:
    ranks = np.array([1, 0, 2, 4])
    groups = np.array(["1", "1", "2-3", "8+"], dtype=object)
    assert slice_metrics(ranks, groups, PREFIX_BUCKETS) == {
        "1": {"examples": 2, "hit_rate": 0.5, "mrr": 0.5},
        "2-3": {"examples": 1, "hit_rate": 1.0, "mrr": 0.5},
        "4-7": {"examples": 0, "hit_rate": None, "mrr": None},
        "8+": {"examples": 1, "hit_rate": 1.0, "mrr": 0.25},
    }


# --- RecList suite and report ------------------------------------------------------------------

TRAIN = [["a", "b", "c"], ["a", "b"], ["a", "d"], ["b", "c"]]
TEST = [["a", "b", "c"], ["d", "a"]]
SESSION_CUTS = Examples([["a", "b"], ["d"]], ["c", "a"])  # one cut of each TEST session


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationReport, Path]:
    """One evaluation shared by the report tests (PNG rendering dominates its second)."""
    root = tmp_path_factory.mktemp("evaluate")
    workdir = root / "cwd"
    workdir.mkdir()
    examples = next_item_examples(TEST, max_examples=10)  # a->b, ab->c, d->a
    models = [
        FixedList("good", ["b", "c", "a"]),
        FixedList("poor", ["d", "x"]),
        RotatesByLength("fickle", ["a", "b", "c", "d"]),
    ]
    # Run from an empty folder: nothing may land in the working directory.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        report = evaluate(
            models, examples, TRAIN, k=2, session_cuts=SESSION_CUTS, out_dir=root / "evaluation"
        )
    return report, root


@pytest.fixture
def report(evaluated: tuple[EvaluationReport, Path]) -> EvaluationReport:
    return evaluated[0]


def test_evaluate_scores_every_model_on_the_same_examples(report: EvaluationReport) -> None:
    good, poor = report.models["good"], report.models["poor"]
    # good's top 2 is [b, c]: hits b at 1 and c at 2, misses a.
    assert good.metrics == {
        "hit_rate@2": pytest.approx(2 / 3),
        "mrr@2": pytest.approx((1 + 1 / 2) / 3),
        # later items {b, c}: F1 1; {c}: P 1/2, R 1, F1 2/3; {a}: 0
        "f1@2": pytest.approx((1 + 2 / 3) / 3),
        "coverage@2": pytest.approx(2 / 4),
        # train counts a 3, b 3, c 2, d 1: percentiles b 1.0, c 0.5
        "popularity_bias@2": pytest.approx(0.75),
        "invalid_item_rate@2": 0.0,
        # a fixed list never changes
        "repeat_overlap@2": 1.0,
        "noise_overlap@2": 1.0,
        # every test prefix has 1 or 2 SKUs: the short slice is all of them
        "short_prefix_mrr@2": pytest.approx((1 + 1 / 2) / 3),
        # one cut per session: ab->c hit at 2, d->a missed
        "session_cut_hit_rate@2": 0.5,
        "session_cut_mrr@2": pytest.approx(0.25),
    }
    assert set(protocol_metrics(2)[SESSION_CUT]) < set(good.metrics)
    assert poor.metrics["mrr@2"] == 0.0
    assert poor.metrics["f1@2"] == 0.0
    assert poor.metrics["popularity_bias@2"] == pytest.approx((0.25 + 0) / 2)
    assert poor.metrics["invalid_item_rate@2"] == pytest.approx(0.5)  # x was never trained on
    # one more SKU turns fickle's list by one place: half of its top 2 stays
    fickle = report.models["fickle"]
    assert fickle.metrics["repeat_overlap@2"] == pytest.approx(0.5)
    assert fickle.metrics["noise_overlap@2"] == pytest.approx(0.5)
    assert report.behaviour == BehaviourConfig()
    assert good.slices["prefix_length"]["1"] == {"examples": 2, "hit_rate": 0.5, "mrr": 0.5}
    assert good.slices["prefix_length"]["2-3"] == {"examples": 1, "hit_rate": 1.0, "mrr": 0.5}
    assert set(good.slices["target_popularity"]) == {"head", "torso", "tail"}
    assert sum(row["examples"] for row in good.slices["target_popularity"].values()) == 3
    assert (report.k, report.n_examples, report.catalogue_size) == (2, 3, 4)
    assert report.n_session_cuts == 2


def test_reclist_writes_its_reports_and_charts_under_out_dir(
    evaluated: tuple[EvaluationReport, Path],
) -> None:
    report, root = evaluated
    out_dir = root / "evaluation"
    for name, result in report.models.items():
        path = result.reclist_report
        assert path.is_file()
        assert path.parent.parent.parent == out_dir / "SessionRecList" / name
        written = json.loads(path.read_text())
        assert written["metadata"]["model_name"] == name
        by_test = {row["name"]: row["result"] for row in written["data"]}
        assert by_test["mrr"] == pytest.approx(result.metrics["mrr@2"])
        assert set(by_test) == {
            *SCALAR_TESTS,
            "sliced_by_prefix_length",
            "sliced_by_target_popularity",
        }
        plots = path.parent.parent / "plots"
        assert {p.name for p in plots.iterdir()} == {
            "sliced_by_prefix_length.png",
            "sliced_by_target_popularity.png",
        }
    assert list((root / "cwd").iterdir()) == []


def test_combined_report_round_trips(report: EvaluationReport, tmp_path: Path) -> None:
    assert report.path.name == "report.json"
    combined = json.loads(report.path.read_text())
    assert set(combined["models"]) == {"good", "poor", "fickle"}
    assert combined["behaviour"] == {"sample_size": 1000, "short_prefix_max": 2, "seed": 0}
    assert combined["models"]["good"]["metrics"]["mrr@2"] == pytest.approx(0.5)
    assert combined["n_session_cuts"] == 2
    assert load_report(report.path) == report
    older = {key: value for key, value in combined.items() if key != "n_session_cuts"}
    assert EvaluationReport.from_dict(older, report.path).n_session_cuts == 0  # still readable
    assert pickle.loads(pickle.dumps(report)) == report
    with pytest.raises(EvaluationError, match="not an evaluation report"):
        EvaluationReport.from_dict({"k": 20}, tmp_path / "broken.json")


def test_plot_comparison_draws_metrics_and_slices(report: EvaluationReport, tmp_path: Path) -> None:
    for source in (report, report.to_dict()):
        figure = plot_comparison(source)
        assert isinstance(figure, Figure)
        overall, by_length = figure.axes
        # three models x HR and MRR under each protocol, coverage
        assert len(overall.patches) == 3 * 5
        assert len(by_length.patches) == 3 * len(PREFIX_BUCKETS)
        figure.savefig(tmp_path / "comparison.png")
        assert (tmp_path / "comparison.png").stat().st_size > 0


def test_the_evaluation_card_lists_every_metric_per_model(report: EvaluationReport) -> None:
    from {{ cookiecutter.project }}.pipeline.cards import evaluation_card

    table = evaluation_card(report)[3].render()
    assert table["columns"] == ["metric", "good", "poor", "fickle"]
    assert [row[0] for row in table["data"]] == [f"{name}@2" for name in SCALAR_TESTS]
    rows = {row[0]: row[1:] for row in table["data"]}
    assert rows["invalid_item_rate@2"] == ["0.0000", "0.5000", "0.0000"]


def test_evaluate_rejects_bad_models(tmp_path: Path) -> None:
    examples = next_item_examples(TEST, max_examples=10)

    def run(*models: FixedList) -> None:
        evaluate(models, examples, TRAIN, k=2, session_cuts=SESSION_CUTS, out_dir=tmp_path)

    with pytest.raises(EvaluationError, match="no models"):
        run()
    with pytest.raises(EvaluationError, match="unique"):
        run(FixedList("same", ["a"]), FixedList("same", ["b"]))
    with pytest.raises(EvaluationError, match="folder name"):
        run(FixedList("../escape", ["a"]))
    with pytest.raises(EvaluationError, match="returned 2 lists for 3 sessions"):
        run(DropsOneSession("short", ["a"]))
    with pytest.raises(EvaluationError, match="no examples"):
        evaluate(
            [FixedList("x", ["a"])],
            Examples([], []),
            TRAIN,
            session_cuts=SESSION_CUTS,
            out_dir=tmp_path,
        )
    with pytest.raises(EvaluationError, match="no session cuts"):
        no_cuts = Examples([], [])
        evaluate([FixedList("x", ["a"])], examples, TRAIN, session_cuts=no_cuts, out_dir=tmp_path)


def test_evaluate_split_probes_with_the_split_seed(tmp_path: Path) -> None:
    split = SimpleNamespace(
        train=pd.DataFrame({"skus": TRAIN}), test=pd.DataFrame({"skus": [*TEST, ["c", "d", "a"]]})
    )
    models = [FixedList("good", ["b", "c", "a"])]
    report = evaluate_split(models, split, max_examples=10, seed=7, out_dir=tmp_path)
    assert report.behaviour == BehaviourConfig(seed=7)
    assert (report.n_examples, report.n_session_cuts) == (5, 3)  # every prefix; one per session
    assert report.models["good"].metrics["f1@20"] > 0


def test_evaluate_says_a_line_per_model_and_mutes_reclists_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = next_item_examples(TEST, max_examples=10)
    models = [FixedList("good", ["b", "c", "a"]), FixedList("poor", ["d", "x"])]
    evaluate(models, examples, TRAIN, k=2, session_cuts=SESSION_CUTS, out_dir=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # no "Running RecTests" bar
    scored = (
        r"evaluate \[1/2\] good: 3 examples scored in \d+\.\d s "
        r"\(MRR@2 0\.\d{4}; 2 session cuts: 0\.2500\)"
    )
    assert re.fullmatch(scored, lines[0])
    assert lines[1].startswith("evaluate [2/2] poor: ")


class RecordingTracker:
    """Keeps what it is sent (a tracker that the report can log to without a vendor SDK)."""

    def __init__(self) -> None:
        self.parameters: dict[str, object] = {}
        self.metrics: dict[str, float] = {}
        self.figures: list[str] = []

    def log_parameters(self, parameters: dict[str, object]) -> None:
        self.parameters.update(parameters)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_figure(self, name: str, figure: Figure) -> None:
        self.figures.append(name)

    def end(self) -> str | None:
        return "recorded"


def test_the_tracker_gets_both_protocols_under_distinct_names(report: EvaluationReport) -> None:
    tracker = RecordingTracker()
    assert log_report(tracker, report, Figure()) == "recorded"
    assert tracker.parameters == {f"{ALL_PREFIXES}_examples": 3, f"{SESSION_CUT}_examples": 2}
    for protocol, (mrr, hit_rate) in protocol_metrics(2).items():
        assert tracker.metrics[f"good/{hit_rate}"] == report.models["good"].metrics[hit_rate]
        assert f"poor/{mrr}" in tracker.metrics, protocol
    assert tracker.metrics["good/mrr@2"] != tracker.metrics["good/session_cut_mrr@2"]
    assert tracker.figures == ["model_comparison"]
