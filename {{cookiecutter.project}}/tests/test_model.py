"""LSTM model: training arrays, training, batch recommendations and the serving export."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.project }}.baselines import MostPopular
from {{ cookiecutter.project }}.evaluation import (
    mrr_at_k,
    next_item_examples,
    recommend_in_batches,
)
from {{ cookiecutter.project }}.ingest import synthetic
from {{ cookiecutter.project }}.model import (
    OOV_ID,
    PAD_ID,
    LstmRecommender,
    ModelError,
    TrainedModel,
    TrainParams,
    build_vocabulary,
    encode_sessions,
    export_model,
    load_recommender,
    package_model,
    prefix_arrays,
    session_windows,
    split_validation,
    train,
)

FAST = TrainParams(embedding_dim=32, lstm_units=32, max_length=8, epochs=6, batch_size=128)


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    return synthetic.latent_training_frame(
        synthetic.GeneratorConfig(n_sessions=4_000, n_products=150, n_intents=10), seed=7
    )


@pytest.fixture(scope="module")
def progress_log() -> list[tuple[int, dict[str, float]]]:
    return []


@pytest.fixture(scope="module")
def trained(
    sessions: pd.DataFrame, progress_log: list[tuple[int, dict[str, float]]]
) -> TrainedModel:
    fit_part = sessions.iloc[: len(sessions) * 3 // 4]
    return train(fit_part, FAST, progress=lambda epoch, logs: progress_log.append((epoch, logs)))


@pytest.fixture(scope="module")
def held_out(sessions: pd.DataFrame) -> pd.DataFrame:
    return sessions.iloc[len(sessions) * 3 // 4 :]


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
    trained: TrainedModel, progress_log: list[tuple[int, dict[str, float]]]
) -> None:
    epochs = len(trained.history["loss"])
    assert 1 <= epochs <= FAST.epochs
    assert [epoch for epoch, _ in progress_log] == list(range(1, epochs + 1))
    assert progress_log[-1][1]["val_loss"] == pytest.approx(trained.history["val_loss"][-1])
    assert len(trained.history["val_loss"]) == epochs
    assert trained.history["loss"][-1] < trained.history["loss"][0]
    assert trained.samples_per_second > 0 and trained.train_seconds > 0
    assert trained.n_train_samples > 0 and trained.n_validation_samples > 0


def test_lstm_learns_order(
    trained: TrainedModel, sessions: pd.DataFrame, held_out: pd.DataFrame
) -> None:
    examples = next_item_examples(held_out, max_examples=2_000)
    lstm = recommend_in_batches(LstmRecommender(trained), examples.prefixes, 20)
    popular = MostPopular().fit(sessions.iloc[: len(sessions) * 3 // 4])
    baseline = recommend_in_batches(popular, examples.prefixes, 20)
    lstm_mrr, popular_mrr = (
        mrr_at_k(lstm, examples.targets, 20),
        mrr_at_k(baseline, examples.targets, 20),
    )
    assert lstm_mrr > 2 * popular_mrr, (lstm_mrr, popular_mrr)


def test_recommend_returns_ranked_known_skus_only(trained: TrainedModel) -> None:
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
    with pytest.raises(ModelError, match="k must be"):
        LstmRecommender(trained).recommend(sessions, 0)


def test_the_sessions_last_sku_is_never_recommended(trained: TrainedModel) -> None:
    """Sequences collapse consecutive repeats, so the next SKU always differs from the last."""
    sessions = [[sku] for sku in trained.vocabulary[:30]] + [trained.vocabulary[5:9]]
    results = LstmRecommender(trained).recommend(sessions, 20)
    for session, ranked in zip(sessions, results, strict=True):
        assert session[-1] not in [sku for sku, _ in ranked]
    everything = LstmRecommender(trained).recommend([trained.vocabulary[:1]], 10_000)[0]
    assert dict(everything)[trained.vocabulary[0]] < 1e-6  # ranked last, with no probability


# --- export ----------------------------------------------------------------------------------


def test_export_package_unpack_load_matches_the_in_memory_model(
    trained: TrainedModel, held_out: pd.DataFrame, tmp_path: Path
) -> None:
    export_dir = export_model(trained, tmp_path / "export")
    tar_path = package_model(export_dir, tmp_path / "model.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "opt_ml_model", filter="data")
    assert {"saved_model.pb", "metadata.json", "variables"} <= names  # at the archive root

    exported = load_recommender(tmp_path / "opt_ml_model")
    assert exported.metadata["vocabulary_size"] == len(trained.vocabulary)
    assert exported.metadata["params"]["max_length"] == FAST.max_length
    sessions = held_out["skus"].tolist()[:200] + [
        ["unknown-sku"],
        [],
        trained.vocabulary[:1] * 3 + trained.vocabulary[:20],  # longer than max_length
    ]
    expected = LstmRecommender(trained).recommend(sessions, 10)
    actual = exported.recommend(sessions, 10)
    assert [[s for s, _ in r] for r in actual] == [[s for s, _ in r] for r in expected]
    np.testing.assert_allclose(
        [[p for _, p in r] for r in actual], [[p for _, p in r] for r in expected], rtol=1e-4
    )
    # '' is padding wherever it sits; k is capped at the vocabulary size.
    session = trained.vocabulary[:3]
    assert exported.recommend([["", *session, "", ""]], 5) == exported.recommend([session], 5)
    assert len(exported.recommend([session], 10_000)[0]) == len(trained.vocabulary)


def test_export_and_load_errors(trained: TrainedModel, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="not empty"):
        export_model(trained, tmp_path / "busy")
    with pytest.raises(ModelError, match="saved_model.pb"):
        load_recommender(tmp_path / "missing")
    with pytest.raises(ModelError, match="export_model first"):
        package_model(tmp_path / "busy", tmp_path / "model.tar.gz")
