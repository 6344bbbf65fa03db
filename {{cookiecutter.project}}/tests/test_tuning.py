"""Hyper-parameter search: grid parsing, the validation period, one real trial, the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.project }}.dataset import split_by_time
from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.modeling.params import DEFAULT_GRID, DEFAULT_GRID_JSON, TrainParams
from {{ cookiecutter.project }}.modeling.tuning import (
    Trial,
    TrialBudget,
    TuningError,
    choose_best,
    params_for,
    parse_grid,
    run_trial,
    trial_rows,
    validation_split,
)
from {{ cookiecutter.project }}.pipeline.plots import plot_trials


def _sessions(n: int = 3_000, days: int = 14, n_products: int = 120) -> pd.DataFrame:
    """Generator chains spread evenly over `days` days, each lasting a few minutes."""
    frame = synthetic.latent_training_frame(
        synthetic.GeneratorConfig(n_sessions=n, n_products=n_products, n_intents=8), seed=3
    )
    start = pd.Timestamp("2026-03-01")
    offsets = np.linspace(0, days * 86_400 - 600, len(frame)).astype("int64")
    frame["first_event_at"] = start + pd.to_timedelta(offsets, "s")
    frame["last_event_at"] = frame["first_event_at"] + pd.Timedelta(minutes=5)
    return frame


def _trial(overrides: dict, mrr: float) -> Trial:
    return Trial(overrides, {}, mrr, 0.5, 1, 1.0, 10, 10)


# --- the grid ----------------------------------------------------------------------------------


def test_default_grid_is_short_valid_and_starts_with_the_defaults() -> None:
    assert parse_grid(DEFAULT_GRID_JSON) == DEFAULT_GRID
    assert 2 <= len(DEFAULT_GRID) <= 4 and DEFAULT_GRID[0] == {}


def test_grid_accepts_json_or_lists_and_builds_params() -> None:
    grid = parse_grid('[{}, {"lstm_units": 16, "learning_rate": 1, "dropout": 0.1}]')
    assert grid == [{}, {"lstm_units": 16, "learning_rate": 1, "dropout": 0.1}]
    assert parse_grid([{"epochs": 2}]) == [{"epochs": 2}]
    params = params_for(TrainParams(), grid[1])
    assert (params.lstm_units, params.dropout) == (16, 0.1)
    assert params.embedding_dim == TrainParams().embedding_dim


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('{"lstm_units": 8}', "non-empty JSON list"),
        ("[3]", "not an object"),
        ('[{"units": 8}]', "unknown parameter 'units'"),
        ('[{"lstm_units": "8"}]', "lstm_units must be int"),
        ('[{"lstm_units": 8.5}]', "lstm_units must be int"),
        ('[{"lstm_units": true}]', "lstm_units must be int"),
        ('[{"learning_rate": "fast"}]', "learning_rate must be float"),
        ('[{}, {"epochs": 2}, {}]', "entry 2 repeats"),
        ('[{"architecture": "gru"}]', "entry 0: unknown architecture 'gru': choose one of"),
        ('[{"architecture": "sasrec", "attention_heads": 5}]', "multiple of attention_heads 5"),
    ],
)
def test_grid_errors_say_what_is_wrong(grid: str, message: str) -> None:
    with pytest.raises(TuningError, match=message):
        parse_grid(grid)


# --- the validation period ---------------------------------------------------------------------


def test_validation_is_the_newest_training_days_and_never_the_test_period() -> None:
    sessions = _sessions()
    split = split_by_time(sessions, test_days=4)
    fit, validation = validation_split(split.train, days=3)
    assert len(fit) and len(validation)
    assert validation["first_event_at"].min() > fit["last_event_at"].max()  # newer than fit
    assert validation["last_event_at"].max() < split.cutoff  # inside the training period
    test_ids = set(split.test["session_id"])
    assert test_ids.isdisjoint(validation["session_id"]) and test_ids.isdisjoint(fit["session_id"])
    assert set(validation["session_id"]) <= set(split.train["session_id"])
    days = validation["first_event_at"].dt.normalize().unique()
    assert len(days) == 3


def test_validation_period_errors_name_the_parameter() -> None:
    split = split_by_time(_sessions(days=6), test_days=2)
    with pytest.raises(TuningError, match="tune_days"):
        validation_split(split.train, days=10)


def test_a_trial_trains_and_scores_on_the_validation_days() -> None:
    train = split_by_time(_sessions(), test_days=4).train
    base = TrainParams(embedding_dim=16, lstm_units=16, max_length=6, epochs=2, batch_size=128)
    epochs: list[int] = []
    budget = TrialBudget(max_sessions=800, max_epochs=1)
    trial = run_trial(
        train,
        base,
        {"lstm_units": 8},
        days=3,
        max_examples=500,
        progress=lambda epoch, logs: epochs.append(epoch),
        budget=budget,
    )
    assert epochs == [1]  # the flow's one line per epoch, within the budget's epochs
    fit, _ = validation_split(train, 3)
    assert trial.params["lstm_units"] == 8 and trial.params["embedding_dim"] == 16
    assert (trial.n_fit_sessions, trial.n_available_sessions) == (800, len(fit))
    assert trial.budget == budget
    assert trial.n_validation_examples == 500  # the validation days are not cut
    assert 0 < trial.mrr <= trial.hit_rate <= 1
    assert trial.epochs == 1 and trial.seconds > 0
    # The per-epoch validation curves the choose step's card draws, one point per epoch.
    assert {"val_loss", "val_hit_rate@20"} <= set(trial.history)
    assert all(len(values) == trial.epochs for values in trial.history.values())
    assert trial.label == "lstm_units=8"


# --- the budget --------------------------------------------------------------------------------


def test_the_budget_keeps_the_newest_sessions_and_caps_epochs() -> None:
    fit, _ = validation_split(split_by_time(_sessions(), test_days=4).train, 3)
    shuffled = fit.sample(frac=1, random_state=0)
    kept = TrialBudget(max_sessions=100, max_epochs=3).sessions(shuffled)
    assert len(kept) == 100
    assert kept["first_event_at"].min() >= fit["first_event_at"].nlargest(100).min()
    assert TrialBudget(max_sessions=0).sessions(shuffled) is shuffled  # 0: every session
    assert TrialBudget(max_sessions=len(fit)).sessions(shuffled) is shuffled
    base = TrainParams(epochs=20)
    assert TrialBudget(max_epochs=3).params(base).epochs == 3
    assert TrialBudget(max_epochs=3).params(TrainParams(epochs=2)).epochs == 2  # entry's own
    assert TrialBudget(max_epochs=0).params(base) == base
    assert TrialBudget(20_000, 6).text == "the newest 20,000 sessions, at most 6 epochs"
    assert TrialBudget(0, 0).text == "all sessions, no epoch limit"


@pytest.mark.parametrize("field", ["max_sessions", "max_epochs"])
def test_a_negative_budget_names_the_flow_parameter(field: str) -> None:
    with pytest.raises(TuningError, match=f"tune_{field.removeprefix('max_')} must be 0"):
        TrialBudget(**{field: -1})


# --- the choice --------------------------------------------------------------------------------


def test_choice_is_the_best_validation_mrr_first_on_ties() -> None:
    trials = [_trial({}, 0.20), _trial({"dropout": 0.5}, 0.25), _trial({"epochs": 3}, 0.25)]
    best = choose_best(trials)
    assert best.overrides == {"dropout": 0.5}
    assert choose_best(list(reversed(trials))).overrides == {"epochs": 3}
    with pytest.raises(TuningError, match="no tuning trials"):
        choose_best([])


def test_card_rows_and_plot_mark_the_winner() -> None:
    trials = [_trial({}, 0.20), _trial({"dropout": 0.5}, 0.25)]
    best = choose_best(trials)
    rows = trial_rows(trials, best)
    assert [row[0] for row in rows] == ["defaults", "dropout=0.5"]
    assert [row[-1] for row in rows] == ["", "best"]
    bars = plot_trials(trials, best).axes[0].patches
    assert [bar.get_width() for bar in bars] == [0.20, 0.25]
    assert bars[0].get_facecolor() != bars[1].get_facecolor()
