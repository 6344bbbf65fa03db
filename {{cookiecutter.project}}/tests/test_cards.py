"""What the cards and the terminal show: card builders and text as pure functions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from {{ cookiecutter.project }}.evaluation.report import EvaluationReport, ModelResult
from {{ cookiecutter.project }}.modeling.knn import KnnTrial
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


def _rendered(components: list) -> list[dict]:
    return [component.render() for component in components]


def test_the_start_card_is_an_overview_then_every_setting_collapsed() -> None:
    from {{ cookiecutter.project }}.settings import Settings

    settings = cards.public_settings(Settings(n_sessions=5000, serving_port=9090))
    parameters = {"source": "synthetic", "n_sessions": 5000, "n_products": 300, "days": 14}
    current = SimpleNamespace(flow_name="RecsFlow", run_id="12")
    parts = _rendered(cards.config_card(settings, current, parameters))
    assert "synthetic events (5,000 sessions, 300 products, 14 days)" in parts[0]["source"]
    assert ["n_sessions", "5000"] in parts[2]["data"]
    changed = {row[0]: row[1:] for row in parts[4]["data"]}
    assert changed["serving_port"] == ["9090", "8080"]  # no thousands separator in a port
    assert "n_products" not in changed  # at its default: only in the collapsed block
    assert parts[-1]["type"] == "jsonViewer" and parts[-1]["collapsible"]
    assert '"n_products"' in parts[-1]["json_string"]


def test_the_deploy_card_wraps_the_request_and_tabulates_the_answer() -> None:
    sku = "a" * 64
    deployment = {
        "reason": "Deployed.",
        "url": "http://127.0.0.1:8080",
        "smoke_latency_ms": 3.2,
        "smoke_payload": {"sessions": [[sku] * 40], "k": 2},
        "smoke_answer": {
            "recommendations": [[{"sku": sku, "score": 0.5}, {"sku": "b", "score": 0.25}]]
        },
    }
    parts = _rendered(cards.deploy_card(deployment))
    request = next(p["source"] for p in parts if p.get("source", "").startswith("## Smoke request"))
    assert max(map(len, request.splitlines())) <= 100
    table = parts[-1]
    assert table["columns"] == ["rank", "SKU", "score"]
    assert table["data"] == [["1", "aaaaaaaaaa…", "0.5000"], ["2", "b", "0.2500"]]


def test_the_knn_card_shows_the_chosen_neighbourhood_and_every_trial() -> None:
    trials = [KnnTrial(50, 500, 0.20, 0.5, 1.0), KnnTrial(100, 500, 0.25, 0.6, 1.5)]
    parts = _rendered(cards.knn_card(trials))
    assert "**k=100, m=500**" in parts[0]["source"]
    assert [row[-1] for row in parts[1]["data"]] == ["", "chosen"]
    assert "not tuned" in _rendered(cards.knn_card([]))[0]["source"]


def test_gate_values_use_the_unit_of_their_check() -> None:
    lift = GateCheck("coverage_lift_over_most_popular", 75.0, 0.1, True, "+7500.0%")
    floor = GateCheck("mrr@20", 0.31234, 0.05, True, "ok")
    assert cards.gate_numbers(lift) == ("+7500.0%", "+10.0%")
    assert cards.gate_numbers(floor) == ("0.3123", "0.0500")


def test_split_timestamps_are_shown_to_the_second() -> None:
    import pandas as pd

    split = SimpleNamespace(
        train=pd.DataFrame({"first_event_at": [pd.Timestamp("2026-01-01 10:00:00.123456")]}),
        test=pd.DataFrame({"last_event_at": [pd.Timestamp("2026-01-09 11:00:00.5")]}),
        dropped=0,
        cutoff=pd.Timestamp("2026-01-08 00:00:00.000001"),
    )
    rows = dict(map(tuple, _rendered(cards.dataset_card(split))[1]["data"]))
    assert rows["cutoff"] == "2026-01-08 00:00:00"
    assert rows["train from"] == "2026-01-01 10:00:00"


def test_the_tuning_chart_zooms_on_the_scores() -> None:
    from {{ cookiecutter.project }}.modeling.tuning import Trial
    from {{ cookiecutter.project }}.pipeline.plots import plot_trials

    trials = [Trial({}, {}, mrr, 0.6, 3, 1.0, 100, 50) for mrr in (0.2932, 0.2972)]
    low, high = plot_trials(trials, trials[1]).axes[0].get_xlim()
    assert 0.2 < low < 0.2932 and 0.2972 < high < 0.31


def test_the_evaluation_legend_sits_outside_the_bars() -> None:
    from {{ cookiecutter.project }}.pipeline.plots import plot_comparison

    report = _report()
    for model in report.models.values():
        model.slices["prefix_length"] = {"8+": {"mrr": 0.4}}
    figure = plot_comparison(report)
    assert all(axes.get_legend() is None for axes in figure.axes)
    assert len(figure.legends) == 1


def test_the_runs_chart_marks_each_gate_decision() -> None:
    from matplotlib.colors import to_hex

    from {{ cookiecutter.project }}.pipeline.plots import plot_runs

    points = [
        {
            "run": r,
            "gate": g,
            "lstm_mrr": 0.3,
            "lstm_hr": 0.6,
            "baseline_mrr": m,
            "baseline_hr": 0.5,
        }
        for r, g, m in (("1", "PASSED", 0.25), ("2", "FAILED", None), ("3", None, 0.26))
    ]
    figure = plot_runs(points)
    mrr = figure.axes[0]
    colours = [to_hex(c) for c in mrr.collections[0].get_facecolors()]
    assert colours == [to_hex("tab:green"), to_hex("tab:red"), to_hex("lightgray")]
    assert [t.get_text() for t in mrr.get_xticklabels()] == ["1", "2", "3"]


def test_the_index_page_links_each_card_and_embeds_the_chart() -> None:
    page = cards.index_html("12", ["gate.html", "train.html"], b"png", "run  gate\n12  PASSED")
    assert '<a href="gate.html">' in page and '<a href="train.html">' in page
    assert "data:image/png;base64,cG5n" in page and "12  PASSED" in page
    assert "No finished run" in cards.index_html("12", [], None, "")
