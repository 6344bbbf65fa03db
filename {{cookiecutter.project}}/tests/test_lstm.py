"""LSTM model: training arrays, training, batch recommendations and the tracker callback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import FAST_LSTM

from {{ cookiecutter.project }}.evaluation.metrics import mrr_at_k, next_item_examples
from {{ cookiecutter.project }}.evaluation.protocol import EvaluationError
from {{ cookiecutter.project }}.evaluation.suite import recommend_in_batches
from {{ cookiecutter.project }}.modeling import ModelError
from {{ cookiecutter.project }}.modeling.baselines import MostPopular
from {{ cookiecutter.project }}.modeling.lstm import (
    EpochPrinter,
    LstmRecommender,
    TrackerCallback,
    TrainedModel,
    build_vocabulary,
    early_stop_text,
    encode_sessions,
    prefix_arrays,
    session_windows,
    split_validation,
    train,
)
from {{ cookiecutter.project }}.modeling.params import OOV_ID, PAD_ID, TrainParams
from {{ cookiecutter.project }}.pipeline.plots import plot_history
from {{ cookiecutter.project }}.schema import HIT_RATE, K
from {{ cookiecutter.project }}.tracking import NullTracker

# --- training arrays -------------------------------------------------------------------------


def test_vocabulary_is_by_frequency_then_sku_and_honours_min_count() -> None:
    sessions = [["c", "a", "b"], ["a", "b"], ["a", "d"]]
    assert build_vocabulary(sessions) == ["a", "b", "c", "d"]
    assert build_vocabulary(sessions, min_count=2) == ["a", "b"]


def test_prefix_arrays_left_pad_truncate_and_drop_oov_targets() -> None:
    vocabulary = ["b", "a", "c"]  # ids b=2, a=3, c=4; anything else is OOV
    sessions = [["a", "b", "c"], ["b", "zz"], ["x"], ["zz", "a", "c", "b"]]
    flat, offsets = encode_sessions(sessions, vocabulary)
    assert flat.tolist() == [3, 2, 4, 2, OOV_ID, OOV_ID, OOV_ID, 3, 4, 2]
    assert offsets.tolist() == [0, 3, 5, 6, 10]

    x, y = prefix_arrays(flat, offsets, max_length=3)
    assert x.dtype == np.int32 and x.shape == (5, 3)
    assert x.tolist() == [
        [PAD_ID, PAD_ID, 3],  # a -> b
        [PAD_ID, 3, 2],  # a b -> c
        # b -> zz is dropped: an OOV target can never be recommended
        [PAD_ID, PAD_ID, OOV_ID],  # zz -> a: an unknown item in the input stays OOV
        [PAD_ID, OOV_ID, 3],
        [OOV_ID, 3, 4],
    ]
    assert y.tolist() == [2, 4, 3, 4, 2]

    x2, _ = prefix_arrays(flat, offsets, max_length=2)  # keeps the most recent items
    assert x2[-1].tolist() == [3, 4]


def test_session_windows_use_whole_sessions_and_pad_empty_ones() -> None:
    windows = session_windows([["a", "b", "c"], [], ["q"]], ["a", "b", "c"], max_length=2)
    assert windows.tolist() == [[3, 4], [PAD_ID, PAD_ID], [PAD_ID, OOV_ID]]


def test_validation_is_the_newest_sessions() -> None:
    frame = pd.DataFrame(
        {"skus": [["a", "b"]] * 10, "first_event_at": pd.date_range("2026-01-01", periods=10)}
    ).sample(frac=1, random_state=0)
    fit, validation = split_validation(frame, 0.2)
    assert len(fit) == 8 and len(validation) == 2
    assert validation["first_event_at"].min() > fit["first_event_at"].max()


def test_train_rejects_unusable_data() -> None:
    with pytest.raises(ModelError, match="first_event_at"):
        train(pd.DataFrame({"skus": [["a", "b"]]}))
    single_items = pd.DataFrame(
        {"skus": [["a"], ["b"]], "first_event_at": pd.date_range("2026-01-01", periods=2)}
    )
    with pytest.raises(ModelError, match="no training samples"):
        train(single_items, TrainParams(validation_fraction=0))


# --- training and recommendations ------------------------------------------------------------


def test_training_reports_history_and_throughput(
    trained_lstm: TrainedModel, lstm_progress_log: list[tuple[int, dict[str, float]]]
) -> None:
    trained, progress_log = trained_lstm, lstm_progress_log
    epochs = len(trained.history["loss"])
    assert 1 <= epochs <= FAST_LSTM.epochs
    assert [epoch for epoch, _ in progress_log] == list(range(1, epochs + 1))
    assert progress_log[-1][1]["val_loss"] == pytest.approx(trained.history["val_loss"][-1])
    assert len(trained.history["val_loss"]) == epochs
    assert trained.history["loss"][-1] < trained.history["loss"][0]
    assert trained.samples_per_second > 0 and trained.train_seconds > 0
    assert trained.n_train_samples > 0 and trained.n_validation_samples > 0


def test_the_history_names_hr_as_the_evaluation_and_feeds_the_chart(
    trained_lstm: TrainedModel,
) -> None:
    assert {"loss", "val_loss", HIT_RATE, f"val_{HIT_RATE}"} <= set(trained_lstm.history)
    _, hit_rate = plot_history(trained_lstm.history).axes
    assert len(hit_rate.lines) == 2  # training and validation


def test_lstm_learns_order(
    trained_lstm: TrainedModel, lstm_sessions: pd.DataFrame, lstm_held_out: pd.DataFrame
) -> None:
    examples = next_item_examples(lstm_held_out, max_examples=2_000)
    lstm = recommend_in_batches(LstmRecommender(trained_lstm), examples.prefixes, K)
    popular = MostPopular().fit(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4])
    baseline = recommend_in_batches(popular, examples.prefixes, K)
    lstm_mrr, popular_mrr = (
        mrr_at_k(lstm, examples.targets, K),
        mrr_at_k(baseline, examples.targets, K),
    )
    assert lstm_mrr > 2 * popular_mrr, (lstm_mrr, popular_mrr)


def test_recommend_returns_ranked_known_skus_only(trained_lstm: TrainedModel) -> None:
    trained = trained_lstm
    known = set(trained.vocabulary)
    sessions = [trained.vocabulary[:3], ["unknown-sku"], [], trained.vocabulary[:1] * 30]
    k = len(trained.vocabulary) + 10  # more than can be recommended
    results = LstmRecommender(trained, batch_size=3).recommend(sessions, k)
    assert len(results) == len(sessions)
    for ranked in results:
        skus = [sku for sku, _ in ranked]
        scores = [score for _, score in ranked]
        assert len(skus) == len(known) and set(skus) == known  # never padding or OOV
        assert scores == sorted(scores, reverse=True)
    with pytest.raises(EvaluationError, match="k must be"):
        LstmRecommender(trained).recommend(sessions, 0)


def test_the_sessions_last_sku_is_never_recommended(trained_lstm: TrainedModel) -> None:
    """Sequences collapse consecutive repeats, so the next SKU always differs from the last."""
    trained = trained_lstm
    sessions = [[sku] for sku in trained.vocabulary[:30]] + [trained.vocabulary[5:9]]
    results = LstmRecommender(trained).recommend(sessions, K)
    for session, ranked in zip(sessions, results, strict=True):
        assert session[-1] not in [sku for sku, _ in ranked]
    everything = LstmRecommender(trained).recommend([trained.vocabulary[:1]], 10_000)[0]
    assert dict(everything)[trained.vocabulary[0]] < 1e-6  # ranked last, with no probability


# --- tracker callback ------------------------------------------------------------------------


class RecordingTracker:
    """A Tracker that keeps the metrics it was given."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, float], int | None]] = []

    def log_parameters(self, parameters: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((dict(metrics), step))

    def log_figure(self, name: str, figure: Any) -> None:
        pass

    def end(self) -> str | None:
        return None


def test_callback_logs_every_epoch() -> None:
    tracker = RecordingTracker()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    model.fit(
        x,
        x[:, :1],
        epochs=3,
        validation_split=0.25,
        verbose=0,
        callbacks=[TrackerCallback(tracker)],
    )
    assert [step for _, step in tracker.metrics] == [1, 2, 3]
    assert all({"loss", "val_loss"} <= set(metrics) for metrics, _ in tracker.metrics)
    assert NullTracker().end() is None


def test_epoch_lines_carry_metrics_and_an_eta() -> None:
    lines: list[str] = []
    now = iter([100.0, 110.0, 120.0])  # start, then 10 s per epoch
    printer = EpochPrinter("tune {'lstm_units': 32}", 20, lines.append, lambda: next(now))
    printer(1, {"loss": 5.1234567})
    printer(2, {"loss": 4.5})
    assert lines[0] == (
        "tune {'lstm_units': 32} epoch 1/20  loss 5.1235  10.0 s/epoch  ETA 3.2 min at most"
    )
    assert lines[1].endswith("ETA 3.0 min at most")


def test_the_early_stop_line_names_the_last_and_the_best_epoch_and_why() -> None:
    params = TrainParams(epochs=20, patience=2, sample_budget=0)
    history = {"loss": [3.0, 2.0, 1.5, 1.4], "val_loss": [3.1, 2.2, 2.3, 2.4]}
    assert early_stop_text(history, params, 1_000) == (
        "stopped early at epoch 4 of 20 (2 epochs without a better loss), best epoch 2 "
        "(val_loss 2.2000, its weights kept)"
    )
    params = TrainParams(epochs=2)
    text = early_stop_text({"loss": [2.0, 1.0]}, params, 1_000)
    assert text.startswith("ran all 2 epochs, best epoch 2")
    budgeted = TrainParams(epochs=20, sample_budget=4_500)
    assert early_stop_text(history, budgeted, 1_000).startswith(
        "ran all 4 epochs that sample_budget=4,500 allows (1,000 samples an epoch; epochs=20)"
    )


@pytest.mark.parametrize(
    ("epochs", "budget", "samples", "limit"),
    [
        (20, 1_500_000, 55_000, 20),  # small data: the budget never binds
        (20, 1_500_000, 169_765, 8),  # 60k sessions: fewer, longer epochs
        (20, 1_500_000, 2_000_000, 1),  # one epoch above the budget still runs
        (20, 0, 10_000_000, 20),  # 0 (the default): no budget
        (5, 100, 0, 5),
    ],
)
def test_the_sample_budget_limits_epochs(
    epochs: int, budget: int, samples: int, limit: int
) -> None:
    assert TrainParams(epochs=epochs, sample_budget=budget).epoch_limit(samples) == limit


def test_training_stops_when_the_sample_budget_is_spent(lstm_sessions: pd.DataFrame) -> None:
    params = replace(FAST_LSTM, epochs=5, patience=5, sample_budget=1)
    lines: list[str] = []
    printer = EpochPrinter("train", params.epochs, lines.append)
    trained = train(lstm_sessions.iloc[:600], params, progress=printer)
    assert len(trained.history["loss"]) == 1
    assert [line.split("  ")[0] for line in lines] == ["train epoch 1/1"]  # the ETA's epochs
    assert "that sample_budget=1 allows" in early_stop_text(
        trained.history, params, trained.n_train_samples
    )
