"""What the cards and the terminal show: card builders and text as pure functions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

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


def test_the_ingest_card_plots_events_per_day_and_the_event_mix(tmp_path: Path) -> None:
    import pandas as pd

    from {{ cookiecutter.project }}.pipeline.plots import plot_events

    day = 86_400_000
    events = pd.DataFrame(
        {
            "server_timestamp_epoch_ms": [0, 1, day, day + 1, day + 2],
            "event_type": ["pageview", "event_product", "pageview", "pageview", "event_product"],
            "product_action": [None, "detail", None, None, "add"],
        }
    )
    events = events.astype("category")  # as the generator writes them
    events["server_timestamp_epoch_ms"] = events["server_timestamp_epoch_ms"].astype("int64")
    events.iloc[:3].to_parquet(tmp_path / "events-00000.parquet")  # summed file by file
    events.iloc[3:].to_parquet(tmp_path / "events-00001.parquet")
    counts = cards.event_counts(tmp_path)
    assert counts is not None and cards.event_counts(tmp_path / "none") is None
    assert counts[0].to_numpy().tolist() == [[1, 1], [1, 2]]  # event_product, pageview per day
    per_day, mix = plot_events(*counts).axes
    heights = [bar.get_height() for bar in per_day.patches]
    assert sorted(heights) == [1, 1, 1, 2]  # day 1: 1 + 1, day 2: 2 pageviews + 1 product event
    assert [t.get_text() for t in mix.get_yticklabels()] == [
        "event_product add",
        "event_product detail",
        "pageview",
    ]
    assert [round(bar.get_width(), 2) for bar in mix.patches] == [0.2, 0.2, 0.6]


def _split(train_days: int = 6, test_days: int = 2) -> SimpleNamespace:
    import pandas as pd

    def sessions(first_day: int, days: int, prefix: str) -> pd.DataFrame:
        starts = [
            pd.Timestamp("2026-03-01") + pd.Timedelta(days=first_day + d) for d in range(days)
        ]
        starts = [s + pd.Timedelta(hours=h) for s in starts for h in (9, 15)]  # two a day
        return pd.DataFrame(
            {
                "session_id": [f"{prefix}{i}" for i in range(len(starts))],
                "first_event_at": starts,
                "last_event_at": [s + pd.Timedelta(minutes=5) for s in starts],
                "skus": [["a", "b"]] * len(starts),
            }
        )

    train, test = sessions(0, train_days, "r"), sessions(train_days, test_days, "t")
    return SimpleNamespace(train=train, test=test, dropped=0, cutoff=test["first_event_at"].min())


def test_the_dataset_card_draws_the_split_as_a_timeline() -> None:
    days = cards.split_days(_split(), tune_days=2)
    per_part = days.groupby("part")["day"].nunique().to_dict()
    assert per_part == {"train": 4, "validation": 2, "test": 2}
    assert (
        days[days["part"] == "validation"]["day"].min() > days[days["part"] == "train"]["day"].max()
    )
    parts = cards.dataset_card(_split(), tune_days=2)
    assert "newest 2 training days" in parts[0].render()["source"]
    assert parts[-1].render()["type"] == "image"
    # More tuning days than the training period holds: all of it shows as train.
    assert set(cards.split_days(_split(train_days=2), tune_days=5)["part"]) == {"train", "test"}


def test_the_tuning_card_plots_each_configurations_validation_curve() -> None:
    from {{ cookiecutter.project }}.modeling.tuning import Trial, TrialBudget
    from {{ cookiecutter.project }}.pipeline.plots import plot_tuning_curves

    history = {"val_loss": [3.0, 2.5, 2.4], "val_hit_rate@20": [0.3, 0.4, 0.45]}
    short = {"val_loss": [3.1, 2.9], "val_hit_rate@20": [0.2, 0.3]}
    budget = TrialBudget(max_sessions=100, max_epochs=3)
    trials = [
        Trial({}, {}, 0.30, 0.6, 3, 1.0, 100, 50, history, budget, 400),
        Trial({"lstm_units": 8}, {}, 0.20, 0.5, 2, 1.0, 100, 50, short, budget, 400),
    ]
    loss, hit_rate = plot_tuning_curves(trials, trials[0]).axes
    assert [list(line.get_ydata()) for line in loss.lines] == [[3.0, 2.5, 2.4], [3.1, 2.9]]
    assert list(hit_rate.lines[1].get_xdata()) == [1, 2]
    assert all(float(tick).is_integer() for tick in loss.get_xticks())  # epochs: whole numbers
    assert loss.lines[0].get_linewidth() > loss.lines[1].get_linewidth()  # the chosen one
    labels = [line.get_label() for line in loss.lines]
    assert labels == ["defaults (chosen)", "lstm_units=8"]
    parts = _rendered(cards.tuning_card(trials, trials[0]))
    assert "trained on 100 of the 400 older training sessions" in parts[0]["source"]
    assert "the newest 100 sessions, at most 3 epochs" in parts[0]["source"]  # the budget
    images = [p for p in parts if p["type"] == "image"]
    assert len(images) == 2  # the grid's scores and the curves
    untracked = [Trial({}, {}, 0.3, 0.6, 3, 1.0, 100, 50)]  # no history: no curves
    assert len(cards.tuning_card(untracked, untracked[0])) == 3


def test_the_evaluation_card_breaks_metrics_down_by_popularity() -> None:
    report = _report()
    for model in report.models.values():
        model.slices["prefix_length"] = {}
    report.models["lstm"].slices["target_popularity"] = {
        "head": {"examples": 200, "hit_rate": 0.7, "mrr": 0.4},
        "torso": {"examples": 120, "hit_rate": 0.5, "mrr": 0.3},
        "tail": {"examples": 80, "hit_rate": 0.1, "mrr": None},
    }
    table = _rendered(cards.evaluation_card(report))[-1]
    assert table["columns"] == [
        "model",
        "head (200 examples)",
        "torso (120 examples)",
        "tail (80 examples)",
    ]
    assert table["data"][0] == ["lstm", "0.4000 / 0.7000", "0.3000 / 0.5000", "-"]
    assert table["data"][1] == ["markov", "-", "-", "-"]  # no slices: a dash, not an error


def test_the_evaluation_card_puts_both_protocols_side_by_side() -> None:
    report = _report()
    cut = {"session_cut_mrr@20": 0.28, "session_cut_hit_rate@20": 0.6}
    report.models["lstm"].metrics.update(cut)
    for model in report.models.values():
        model.slices["prefix_length"] = {}
    report = EvaluationReport(20, 400, 50, report.models, Path("report.json"), n_session_cuts=90)
    parts = _rendered(cards.evaluation_card(report))
    assert "(400 examples;" in parts[0]["source"] and "(90 sessions," in parts[0]["source"]
    assert "the gate judges this protocol" in parts[0]["source"]
    table = parts[1]
    assert table["columns"] == [
        "model",
        "MRR@20 all_prefixes",
        "HR@20 all_prefixes",
        "MRR@20 session_cut",
        "HR@20 session_cut",
    ]
    assert table["data"] == [
        ["lstm", "0.3123", "0.5000", "0.2800", "0.6000"],
        ["markov", "0.2500", "", "", ""],  # what a model lacks stays blank
    ]


def test_the_end_card_tells_the_runs_story() -> None:
    report = _report()
    report.models["vsknn"] = ModelResult(
        "vsknn", {"mrr@20": 0.27, "hit_rate@20": 0.4}, {}, Path(), 0
    )
    checks = (
        GateCheck("mrr@20", 0.31, 0.05, True, "mrr ok"),
        GateCheck("lift_over_best_baseline", 0.15, 0.2, False, "lift too small"),
    )
    decision = GateDecision("lstm", False, checks)
    deployment = {"deployed": False, "reason": "Not deployed: the model failed the gate."}
    current = SimpleNamespace(flow_name="RecsFlow", run_id="12")
    parts = _rendered(cards.end_card(decision, deployment, report, current))
    assert "Run RecsFlow/12 finished: gate FAILED." in parts[0]["source"]
    assert parts[1]["source"] == "## Gate: failed 1 check(s)"
    assert [row[:2] for row in parts[2]["data"]] == [
        ["lift_over_best_baseline", "FAIL"],
        ["mrr@20", "pass"],
    ]
    deployed = dict(map(tuple, parts[4]["data"]))
    assert deployed["deployed"] == "no" and deployed["endpoint"] == "-"
    assert "`vsknn`" in parts[5]["source"]  # markov's MRR is lower
    assert parts[6]["data"][0] == ["MRR@20 all_prefixes", "0.3123", "0.2700", "+15.7%"]
    assert parts[6]["data"][2] == ["MRR@20 session_cut", "", "", "-"]  # an older report
    assert "make cards RUN=12" in parts[7]["source"] and "make report RUN=12" in parts[7]["source"]


_PAGES = {
    "fine": "<table><tr><th>a</th></tr><tr><td>1</td></tr></table>",
    # A container that clips rather than scrolls: the page is narrow, its table is cut off.
    "clipped": '<div style="width:600px;overflow:hidden"><table style="width:2000px">'
    "<tr><td>1</td></tr></table></div>",
    "wide": "<pre>" + "x" * 3000 + "</pre><table><tr><td>1</td></tr></table>",
    "empty": "<table><tr><th>a</th></tr><tr><td> </td></tr></table>",
}


def test_screenshots_measure_the_width_and_the_tables_of_each_page(tmp_path: Path) -> None:
    from helpers import browser_or_skip

    from {{ cookiecutter.project }}.pipeline import screenshots

    browser_or_skip()
    pages = []
    for name, body in _PAGES.items():
        pages.append(tmp_path / f"{name}.html")
        pages[-1].write_text(f"<!doctype html><html><body>{body}</body></html>")
    shots = {
        s.page.stem: s for s in screenshots.screenshot_pages(pages, tmp_path / "png", 1400, 500)
    }
    assert shots["fine"].width <= 1400 < shots["wide"].width
    assert shots["clipped"].width > 1400
    assert (shots["fine"].tables, shots["fine"].empty_tables) == (1, 0)
    assert (shots["empty"].tables, shots["empty"].empty_tables) == (1, 1)
    assert shots["fine"].png.read_bytes().startswith(b"\x89PNG")


def test_screenshots_without_a_browser_say_how_to_install_one(monkeypatch, tmp_path: Path) -> None:
    from {{ cookiecutter.project }}.pipeline import screenshots

    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    monkeypatch.setattr(screenshots, "MACOS_CHROME", tmp_path / "Google Chrome")  # nor there
    assert screenshots.find_browser() is None
    with pytest.raises(screenshots.ScreenshotError, match="apt-get install chromium"):
        screenshots.screenshot_pages([tmp_path / "a.html"], tmp_path)


def test_the_transform_cards_test_table_names_the_model_each_test_checks() -> None:
    from {{ cookiecutter.project }}.transform.results import DbtNode, DbtRunResult

    nodes = [
        DbtNode("source.p.raw.events", "events", "source", "raw.events"),
        DbtNode("model.p.stg_events", "stg_events", "model", "stg_events", "success", 0.2),
        DbtNode("test.p.nn_sku", "nn_sku", "test", "not_null(sku)", "pass", 0.1, 0),
        DbtNode("test.p.rel", "rel", "test", "relationships(sku)", "fail", 0.1, 3),
    ]
    edges = [
        ("source.p.raw.events", "model.p.stg_events"),
        ("model.p.stg_events", "test.p.nn_sku"),
        ("model.p.stg_events", "test.p.rel"),
        ("source.p.raw.events", "test.p.rel"),
    ]
    result = DbtRunResult("build", "dev", False, 1.0, "out", nodes, edges)
    parts = _rendered(cards.dbt_card(result))
    assert "make docs" in parts[0]["source"]
    table = parts[-1]
    assert table["columns"][0] == "model"
    assert [row[0] for row in table["data"]] == ["stg_events", "stg_events", "events, stg_events"]
