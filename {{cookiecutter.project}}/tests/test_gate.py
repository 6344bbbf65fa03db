"""The deployment gate: pass, fail, the champion, the behavioural checks, and every way a report
can be incomplete."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import POPULAR, metrics, report

from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.release.gate import (
    CHAMPION_NAME,
    ChampionStatus,
    GateDecision,
    GateError,
    GateThresholds,
    decide,
    decision_from_dict,
    decision_to_dict,
    format_decision,
    gate_exit_code,
    thresholds_from_settings,
)
from {{ cookiecutter.project }}.settings import Settings

FIRST = ChampionStatus("none", "no champion deployed yet")
DEPLOYED = ChampionStatus(
    "deployed",
    "",
    {
        "run_id": "12",
        "model_uri": "/x/model.tar.gz",
        "deployed_at": "2026-11-01",
        "target": "local",
    },
)


HEALTHY = report(lstm=(0.25, 0.55), markov=(0.20, 0.50), most_popular=POPULAR)


def failed(decision: GateDecision) -> dict[str, str]:
    return {check.name: check.reason for check in decision.checks if not check.passed}


def test_healthy_candidate_passes_as_a_first_deployment() -> None:
    decision = decide(HEALTHY, champion=FIRST)
    assert decision.passed, format_decision(decision)
    assert [check.name for check in decision.checks] == [
        "mrr@20",
        "hit_rate@20",
        "lift_over_best_baseline",
        "vs_champion",
        "no_invalid_items",
        "robust_to_repeated_item",
        "robust_to_stray_item",
        "short_sessions_vs_most_popular",
        "coverage_vs_most_popular",
    ]
    lift = decision.checks[2]
    assert lift.value == pytest.approx(0.25)
    assert "'markov'" in lift.reason
    assert "first deployment" in decision.checks[3].reason
    assert gate_exit_code(decision) == 0
    assert format_decision(decision).startswith("Deployment gate PASSED for 'lstm'")


def test_a_candidate_below_the_best_baseline_fails() -> None:
    decision = decide(
        report(lstm=(0.19, 0.55), markov=(0.20, 0.50), most_popular=POPULAR), champion=FIRST
    )
    assert not decision.passed
    assert set(failed(decision)) == {"lift_over_best_baseline"}
    assert gate_exit_code(decision) == 1
    assert "[FAIL] lift_over_best_baseline" in format_decision(decision)
    assert format_decision(decision).startswith("Deployment gate FAILED for 'lstm'")


def test_the_knn_baseline_can_be_the_best_baseline() -> None:
    # The LSTM beats Markov but not V-SKNN: the lift is measured against V-SKNN and fails.
    models = {"markov": (0.20, 0.50), "vsknn": (0.26, 0.58), "most_popular": POPULAR}
    decision = decide(report(lstm=(0.25, 0.55), **models), champion=FIRST)
    assert set(failed(decision)) == {"lift_over_best_baseline"}
    assert "'vsknn'" in failed(decision)["lift_over_best_baseline"]


def test_a_required_lift_must_be_reached() -> None:
    # +2.5% over Markov: short of the default +3%, enough where no lift is required.
    slim_win = report(lstm=(0.205, 0.55), markov=(0.20, 0.50), most_popular=POPULAR)
    default = decide(slim_win, champion=FIRST)
    assert set(failed(default)) == {"lift_over_best_baseline"}
    assert "lift +2.5% < required +3.0%" in failed(default)["lift_over_best_baseline"]
    lenient = GateThresholds(min_lift_over_best_baseline=0.0)
    assert decide(slim_win, lenient, champion=FIRST).passed


def test_an_untrained_candidate_fails_the_default_floors() -> None:
    # Random ranking over 2,000 SKUs: HR@20 ~ 0.01, MRR@20 ~ 0.002.
    untrained = metrics(0.002, 0.01, short_prefix_mrr=0.05)
    popular = metrics(0.001, 0.005, coverage=0.001)
    decision = decide(report(lstm=untrained, most_popular=popular), champion=FIRST)
    assert set(failed(decision)) == {"mrr@20", "hit_rate@20"}


def test_missing_candidate_fails_and_names_the_models() -> None:
    decision = decide(HEALTHY, candidate="gru", champion=FIRST)
    assert not decision.passed
    assert "'gru' is not in the report" in failed(decision)["candidate"]
    assert "markov" in failed(decision)["candidate"]


@pytest.mark.parametrize("broken", [math.nan, None, "0.3", True, math.inf])
def test_nan_or_missing_candidate_metrics_fail(broken: Any) -> None:
    decision = decide(
        report(
            lstm=metrics(broken, 0.5, short_prefix_mrr=0.2), markov=(0.2, 0.5), most_popular=POPULAR
        ),
        champion=DEPLOYED,
    )
    # without its MRR the candidate can be compared with neither baselines nor the champion
    assert set(failed(decision)) == {"mrr@20", "lift_over_best_baseline", "vs_champion"}
    assert "missing or NaN" in failed(decision)["mrr@20"]


def test_metrics_at_another_k_do_not_count() -> None:
    data = {"models": {"lstm": {"metrics": {"mrr@10": 0.5, "hit_rate@10": 0.9}}}}
    decision = decide(data, champion=FIRST)
    assert set(failed(decision)) == {check.name for check in decision.checks} - {"vs_champion"}


def test_a_report_without_behavioural_results_fails_each_behavioural_check() -> None:
    old = {"mrr@20": 0.3, "hit_rate@20": 0.6}  # a report written before the behavioural tests
    models = {"lstm": {"metrics": old}, "most_popular": {"metrics": POPULAR}}
    decision = decide({"models": models}, champion=FIRST)
    assert set(failed(decision)) == {
        "no_invalid_items",
        "robust_to_repeated_item",
        "robust_to_stray_item",
        "short_sessions_vs_most_popular",
        "coverage_vs_most_popular",
    }
    assert all("missing or NaN" in reason for reason in failed(decision).values())


def test_no_baseline_fails() -> None:
    decision = decide(report(lstm=(0.25, 0.55)), champion=FIRST)
    assert "no baseline" in failed(decision)["lift_over_best_baseline"]
    assert "'most_popular' is not in the report" in failed(decision)["coverage_vs_most_popular"]
    named = decide(HEALTHY, baselines=[], champion=FIRST)
    assert not named.passed


def test_a_broken_or_absent_baseline_fails_rather_than_being_skipped() -> None:
    nan_baseline = decide(
        report(lstm=(0.25, 0.55), markov=(math.nan, 0.5), most_popular=POPULAR), champion=FIRST
    )
    assert "['markov']" in failed(nan_baseline)["lift_over_best_baseline"]
    absent = decide(HEALTHY, baselines=["markov", "gru4rec"], champion=FIRST)
    assert "['gru4rec']" in failed(absent)["lift_over_best_baseline"]


def test_named_baselines_limit_the_comparison() -> None:
    decision = decide(
        report(lstm=(0.1, 0.3), markov=(0.2, 0.5), most_popular=metrics(0.05, 0.1, coverage=0.01)),
        baselines=["most_popular"],
        champion=FIRST,
    )
    assert decision.passed, format_decision(decision)
    assert decision.checks[2].value == pytest.approx(1.0)


def test_a_baseline_that_never_hits_is_beaten_by_any_positive_mrr() -> None:
    never = metrics(0.0, 0.0, coverage=0.01, short_prefix_mrr=0.0)
    decision = decide(report(lstm=(0.25, 0.55), most_popular=never), champion=FIRST)
    assert decision.passed, format_decision(decision)
    assert decision.checks[2].value is None


@pytest.mark.parametrize("empty", [{}, {"models": {}}, {"models": []}, []])
def test_an_empty_report_fails(empty: Any) -> None:
    decision = decide(empty, champion=FIRST)
    assert not decision.passed
    assert "no models" in failed(decision)["report"]


def test_accepts_an_evaluation_report(tmp_path: Path) -> None:
    def result(name: str, values: dict[str, Any]) -> ModelResult:
        return ModelResult(name, values, {}, tmp_path / name, 0.1)

    evaluation = EvaluationReport(
        k=20,
        n_examples=100,
        catalogue_size=50,
        models={
            "lstm": result("lstm", metrics(0.3, 0.6)),
            "markov": result("markov", metrics(0.2, 0.5)),
            "most_popular": result("most_popular", POPULAR),
        },
        path=tmp_path / "report.json",
    )
    assert decide(evaluation, champion=FIRST).passed


def test_the_ceiling_is_a_reference_not_a_baseline_to_beat() -> None:
    decision = decide(
        report(lstm=(0.30, 0.60), markov=(0.27, 0.55), most_popular=POPULAR, ceiling=(0.33, 0.7)),
        champion=FIRST,
    )
    assert decision.passed, format_decision(decision)


# --- champion / challenger ---------------------------------------------------------------------


def with_champion(mrr: Any, challenger: float = 0.25) -> dict[str, Any]:
    return report(
        lstm=(challenger, 0.55),
        markov=(0.20, 0.50),
        most_popular=POPULAR,
        **{CHAMPION_NAME: (mrr, 0.56)},
    )


def test_a_challenger_within_the_tolerance_of_the_champion_passes() -> None:
    # 0.25 vs 0.254: -1.6%, inside the default 2%; the champion is no baseline to beat
    decision = decide(with_champion(0.254), champion=DEPLOYED)
    assert decision.passed, format_decision(decision)
    check = decision.checks[3]
    assert check.name == "vs_champion"
    assert check.value == pytest.approx(0.25 / 0.254 - 1)
    assert "champion (run 12) 0.2540" in check.reason
    assert decision.comparison["mrr@20"] == {"challenger": 0.25, "champion": 0.254}
    assert decision.comparison["hit_rate@20"] == {"challenger": 0.55, "champion": 0.56}
    text = format_decision(decision)
    assert "Champion: run 12 deployed 2026-11-01 to local" in text
    assert "mrr@20" in text and "0.2500" in text and "0.2540" in text


def test_the_gate_card_shows_challenger_and_champion_side_by_side() -> None:
    from {{ cookiecutter.project }}.pipeline.cards import gate_card

    rendered = [part.render() for part in gate_card(decide(with_champion(0.27), champion=DEPLOYED))]
    assert "FAILED" in rendered[0]["source"]
    checks = {row[0]: row for row in rendered[1]["data"]}
    assert checks["vs_champion"][3] == "FAIL"
    assert "run 12 deployed 2026-11-01" in rendered[2]["source"]
    side_by_side = {row[0]: row[1:] for row in rendered[3]["data"]}
    assert rendered[3]["columns"] == ["metric", "challenger `lstm`", "champion"]
    assert side_by_side["mrr@20"] == ["0.2500", "0.2700"]


def test_a_degraded_challenger_fails_against_the_champion() -> None:
    decision = decide(with_champion(0.27), champion=DEPLOYED)
    assert set(failed(decision)) == {"vs_champion"}
    assert "lift -7.4% < required -2.0%" in failed(decision)["vs_champion"]
    lenient = decide(
        with_champion(0.27), GateThresholds(max_regression_vs_champion=0.1), champion=DEPLOYED
    )
    assert lenient.passed


def test_an_unreachable_champion_record_blocks_deployment() -> None:
    unreachable = ChampionStatus("unavailable", "AWS refused reading s3://b/models/champion")
    decision = decide(HEALTHY, champion=unreachable)
    assert set(failed(decision)) == {"vs_champion"}
    reason = failed(decision)["vs_champion"]
    assert "champion unavailable" in reason and "s3://b/models/champion" in reason
    assert "does not deploy blind" in reason
    assert "AWS refused" in format_decision(decision)


def test_a_deployed_champion_must_be_rescored_on_the_same_split() -> None:
    decision = decide(HEALTHY, champion=DEPLOYED)
    assert set(failed(decision)) == {"vs_champion"}
    assert "not re-scored on this test split" in failed(decision)["vs_champion"]
    assert decision.comparison["mrr@20"] == {"challenger": 0.25, "champion": None}


def test_a_nan_champion_metric_fails() -> None:
    decision = decide(with_champion(math.nan), champion=DEPLOYED)
    assert "'champion' is missing or NaN" in failed(decision)["vs_champion"]


# --- behavioural checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, check",
    [
        ({"invalid_item_rate": 0.01}, "no_invalid_items"),
        ({"repeat_overlap": 0.5}, "robust_to_repeated_item"),
        ({"noise_overlap": 0.2}, "robust_to_stray_item"),
        ({"short_prefix_mrr": 0.019}, "short_sessions_vs_most_popular"),
        ({"coverage": 0.015}, "coverage_vs_most_popular"),
        ({"repeat_overlap": math.nan}, "robust_to_repeated_item"),
    ],
)
def test_each_behavioural_test_blocks_deployment(bad: dict[str, float], check: str) -> None:
    decision = decide(
        report(lstm=metrics(0.25, 0.55, **bad), markov=(0.2, 0.5), most_popular=POPULAR),
        champion=FIRST,
    )
    assert set(failed(decision)) == {check}
    assert not decision.passed


def test_behavioural_thresholds_are_parameters() -> None:
    shaky = report(
        lstm=metrics(0.25, 0.55, noise_overlap=0.4, coverage=0.015),
        markov=(0.2, 0.5),
        most_popular=POPULAR,
    )
    assert not decide(shaky, champion=FIRST).passed
    relaxed = GateThresholds(min_noise_overlap=0.3, min_coverage_lift_over_most_popular=0.4)
    assert decide(shaky, relaxed, champion=FIRST).passed


# --- decisions on disk, thresholds --------------------------------------------------------------


def test_decision_round_trips_through_json() -> None:
    decisions = (
        decide(HEALTHY, champion=FIRST),
        decide(with_champion(0.254), champion=DEPLOYED),
        decide(report(lstm=(math.nan, 0.5), most_popular=POPULAR), champion=FIRST),
    )
    for decision in decisions:
        text = json.dumps(decision_to_dict(decision), allow_nan=False)
        assert decision_from_dict(json.loads(text)) == decision


def test_a_hand_edited_or_malformed_decision_is_rejected() -> None:
    data = decision_to_dict(decide(report(lstm=(0.01, 0.02), markov=(0.2, 0.5)), champion=FIRST))
    with pytest.raises(GateError, match="re-run the gate"):
        decision_from_dict(data | {"passed": True})
    with pytest.raises(GateError, match="not a gate decision"):
        decision_from_dict({"candidate": "lstm", "passed": False})
    with pytest.raises(GateError, match="not a gate decision"):
        decision_from_dict(data | {"checks": [{"name": "mrr@20"}]})
    with pytest.raises(GateError, match="not a gate decision"):
        decision_from_dict(data | {"champion": {"who": "me"}})


def test_an_empty_check_list_never_passes() -> None:
    with pytest.raises(GateError, match="re-run the gate"):
        decision_from_dict({"candidate": "lstm", "passed": True, "checks": []})


@pytest.mark.parametrize(
    "bad",
    [
        {"min_mrr_at_20": 1.5},
        {"min_hit_rate_at_20": -0.1},
        {"min_lift_over_best_baseline": -2.0},
        {"min_lift_over_best_baseline": math.nan},
        {"max_regression_vs_champion": -0.01},
        {"max_regression_vs_champion": math.nan},
        {"min_repeat_overlap": 1.1},
        {"max_invalid_item_rate": 2.0},
        {"min_coverage_lift_over_most_popular": -3.0},
    ],
)
def test_thresholds_out_of_range_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(GateError, match="must be"):
        GateThresholds(**bad)


def test_thresholds_come_from_gate_settings_with_defaults_for_the_rest() -> None:
    thresholds = thresholds_from_settings(Settings(gate_min_mrr_at_20=0.2))
    assert thresholds.min_mrr_at_20 == 0.2
    assert thresholds.max_regression_vs_champion == GateThresholds().max_regression_vs_champion


def test_the_default_thresholds_are_the_default_settings() -> None:
    assert thresholds_from_settings(Settings(_env_file=None)) == GateThresholds()
