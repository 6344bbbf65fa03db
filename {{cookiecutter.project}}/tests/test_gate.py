"""The deployment gate: pass, fail, and every way a report can be incomplete."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.project }}.evaluation import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.gate import (
    GateDecision,
    GateError,
    GateThresholds,
    decide,
    decision_from_dict,
    decision_to_dict,
    format_decision,
    gate_exit_code,
)


def report(**models: tuple[Any, Any]) -> dict[str, Any]:
    """A report in JSON form: model name -> (mrr@20, hit_rate@20)."""
    return {
        "k": 20,
        "models": {
            name: {"metrics": {"mrr@20": mrr, "hit_rate@20": hit_rate}}
            for name, (mrr, hit_rate) in models.items()
        },
    }


HEALTHY = report(lstm=(0.25, 0.55), markov=(0.20, 0.50), most_popular=(0.02, 0.05))


def failed(decision: GateDecision) -> dict[str, str]:
    return {check.name: check.reason for check in decision.checks if not check.passed}


def test_healthy_candidate_passes() -> None:
    decision = decide(HEALTHY)
    assert decision.passed
    assert [check.name for check in decision.checks] == [
        "mrr@20",
        "hit_rate@20",
        "lift_over_best_baseline",
    ]
    lift = decision.checks[2]
    assert lift.value == pytest.approx(0.25)
    assert "'markov'" in lift.reason
    assert gate_exit_code(decision) == 0
    assert format_decision(decision).startswith("Deployment gate PASSED for 'lstm'")


def test_a_candidate_below_the_best_baseline_fails() -> None:
    decision = decide(report(lstm=(0.19, 0.55), markov=(0.20, 0.50), most_popular=(0.02, 0.05)))
    assert not decision.passed
    assert set(failed(decision)) == {"lift_over_best_baseline"}
    assert gate_exit_code(decision) == 1
    assert "[FAIL] lift_over_best_baseline" in format_decision(decision)
    assert format_decision(decision).startswith("Deployment gate FAILED for 'lstm'")


def test_a_required_lift_must_be_reached() -> None:
    slim_win = report(lstm=(0.205, 0.55), markov=(0.20, 0.50))
    assert decide(slim_win).passed
    strict = decide(slim_win, GateThresholds(min_lift_over_best_baseline=0.05))
    assert set(failed(strict)) == {"lift_over_best_baseline"}
    assert "lift +2.5% < required +5.0%" in failed(strict)["lift_over_best_baseline"]


def test_an_untrained_candidate_fails_the_default_floors() -> None:
    # Random ranking over 2,000 SKUs: HR@20 ~ 0.01, MRR@20 ~ 0.002.
    decision = decide(report(lstm=(0.002, 0.01), most_popular=(0.001, 0.005)))
    assert set(failed(decision)) == {"mrr@20", "hit_rate@20"}


def test_missing_candidate_fails_and_names_the_models() -> None:
    decision = decide(HEALTHY, candidate="gru")
    assert not decision.passed
    assert "'gru' is not in the report" in failed(decision)["candidate"]
    assert "markov" in failed(decision)["candidate"]


@pytest.mark.parametrize("broken", [math.nan, None, "0.3", True, math.inf])
def test_nan_or_missing_candidate_metrics_fail(broken: Any) -> None:
    decision = decide(report(lstm=(broken, 0.5), markov=(0.2, 0.5)))
    assert set(failed(decision)) == {"mrr@20", "lift_over_best_baseline"}
    assert "missing or NaN" in failed(decision)["mrr@20"]


def test_metrics_at_another_k_do_not_count() -> None:
    data = {"models": {"lstm": {"metrics": {"mrr@10": 0.5, "hit_rate@10": 0.9}}}}
    assert set(failed(decide(data))) == {"mrr@20", "hit_rate@20", "lift_over_best_baseline"}


def test_no_baseline_fails() -> None:
    decision = decide(report(lstm=(0.25, 0.55)))
    assert "no baseline" in failed(decision)["lift_over_best_baseline"]
    named = decide(HEALTHY, baselines=[])
    assert not named.passed


def test_a_broken_or_absent_baseline_fails_rather_than_being_skipped() -> None:
    nan_baseline = decide(report(lstm=(0.25, 0.55), markov=(math.nan, 0.5), pop=(0.01, 0.02)))
    assert "['markov']" in failed(nan_baseline)["lift_over_best_baseline"]
    absent = decide(HEALTHY, baselines=["markov", "gru4rec"])
    assert "['gru4rec']" in failed(absent)["lift_over_best_baseline"]


def test_named_baselines_limit_the_comparison() -> None:
    decision = decide(
        report(lstm=(0.1, 0.3), markov=(0.2, 0.5), pop=(0.05, 0.1)), baselines=["pop"]
    )
    assert decision.passed
    assert decision.checks[2].value == pytest.approx(1.0)


def test_a_baseline_that_never_hits_is_beaten_by_any_positive_mrr() -> None:
    decision = decide(report(lstm=(0.25, 0.55), pop=(0.0, 0.0)))
    assert decision.passed
    assert decision.checks[2].value is None


@pytest.mark.parametrize("empty", [{}, {"models": {}}, {"models": []}, []])
def test_an_empty_report_fails(empty: Any) -> None:
    decision = decide(empty)
    assert not decision.passed
    assert "no models" in failed(decision)["report"]


def test_accepts_an_evaluation_report(tmp_path: Path) -> None:
    def result(name: str, mrr: float, hit_rate: float) -> ModelResult:
        metrics = {"mrr@20": mrr, "hit_rate@20": hit_rate}
        return ModelResult(name, metrics, {}, tmp_path / name, 0.1)

    evaluation = EvaluationReport(
        k=20,
        n_examples=100,
        catalogue_size=50,
        models={"lstm": result("lstm", 0.3, 0.6), "markov": result("markov", 0.2, 0.5)},
        path=tmp_path / "report.json",
    )
    assert decide(evaluation).passed


def test_decision_round_trips_through_json() -> None:
    for decision in (decide(HEALTHY), decide(report(lstm=(math.nan, 0.5), pop=(0.0, 0.0)))):
        text = json.dumps(decision_to_dict(decision), allow_nan=False)
        assert decision_from_dict(json.loads(text)) == decision


def test_a_hand_edited_or_malformed_decision_is_rejected() -> None:
    data = decision_to_dict(decide(report(lstm=(0.01, 0.02), markov=(0.2, 0.5))))
    with pytest.raises(GateError, match="re-run the gate"):
        decision_from_dict(data | {"passed": True})
    with pytest.raises(GateError, match="not a gate decision"):
        decision_from_dict({"candidate": "lstm", "passed": False})
    with pytest.raises(GateError, match="not a gate decision"):
        decision_from_dict(data | {"checks": [{"name": "mrr@20"}]})


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
    ],
)
def test_thresholds_out_of_range_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(GateError, match="must be"):
        GateThresholds(**bad)


def test_the_ceiling_is_a_reference_not_a_baseline_to_beat() -> None:
    decision = decide(report(lstm=(0.30, 0.60), markov=(0.27, 0.55), ceiling=(0.33, 0.70)))
    assert decision.passed, format_decision(decision)
