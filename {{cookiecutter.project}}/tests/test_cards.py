"""What the cards and the terminal show: card builders and text as pure functions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.pipeline import cards
from {{ cookiecutter.project }}.release.gate import GateCheck, GateDecision


def _report() -> EvaluationReport:
    models = {
        name: ModelResult(name, {"mrr@20": mrr, "hit_rate@20": 0.5}, {}, Path("r"), 0.1)
        for name, mrr in (("lstm", 0.31234), ("markov", 0.25))
    }
    models["markov"].metrics.pop("hit_rate@20")
    return EvaluationReport(20, 400, 50, models, Path("report.json"))


def test_the_evaluation_prints_as_one_table_with_a_column_per_model() -> None:
    lines = cards.evaluation_text(_report()).splitlines()
    assert lines[0] == "RecList evaluation on 400 test prefixes:"
    assert lines[1].split() == ["lstm", "markov"]
    assert lines[2].split() == ["mrr@20", "0.3123", "0.2500"]
    assert lines[3].split() == ["hit_rate@20", "0.5000", "-"]
    assert len(lines) == 4


def test_the_end_of_a_run_gives_the_verdict_without_repeating_the_checks() -> None:
    check = GateCheck("mrr@20", 0.3, 0.05, True, "the reason")
    current = SimpleNamespace(flow_name="RecsFlow", run_id="12")
    text = cards.run_summary(GateDecision("lstm", True, (check,)), {"reason": "Deployed."}, current)
    assert text.splitlines()[0] == "Run RecsFlow/12 finished: gate PASSED."
    assert "the reason" not in text and "make runs" in text
