"""The causal-transformer option (`architecture="sasrec"`): chosen by a parameter, trained like
the LSTM (full or sampled softmax), scored, exported and handed off through the same contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST_SASREC

from {{ cookiecutter.project }}.evaluation.metrics import mrr_at_k, next_item_examples
from {{ cookiecutter.project }}.evaluation.suite import recommend_in_batches
from {{ cookiecutter.project }}.modeling import ModelError
from {{ cookiecutter.project }}.modeling.baselines import MostPopular
from {{ cookiecutter.project }}.modeling.export import export_model, load_recommender
from {{ cookiecutter.project }}.modeling.handoff import load_trained, save_trained
from {{ cookiecutter.project }}.modeling.lstm import NETWORKS, LstmRecommender, build_network, train
from {{ cookiecutter.project }}.modeling.params import (
    ARCHITECTURES,
    FIRST_SKU_ID,
    PAD_ID,
    TrainedModel,
    TrainParams,
)
from {{ cookiecutter.project }}.modeling.sampled import SampledSoftmaxModel, compile_for_training
from {{ cookiecutter.project }}.schema import K


@pytest.fixture(scope="module")
def trained_sasrec(lstm_sessions: pd.DataFrame) -> TrainedModel:
    return train(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4], FAST_SASREC)


def test_every_architecture_has_a_network_and_others_are_refused() -> None:
    assert set(NETWORKS) == set(ARCHITECTURES)
    with pytest.raises(ModelError, match="unknown architecture 'gru': choose one of 'lstm'"):
        TrainParams(architecture="gru")
    with pytest.raises(ModelError, match="multiple of attention_heads 3"):
        TrainParams(architecture="sasrec", attention_heads=3)
    TrainParams(attention_heads=3)  # the LSTM has no heads to share the embedding


def test_the_window_before_an_item_is_all_the_transformer_reads() -> None:
    """Causal and padding-blind: the newest position's output, so the prediction, depends on the
    items present only (more padding changes nothing), and each item's position matters."""
    network = build_network(20, replace(FAST_SASREC, max_length=6))
    window = np.array([[PAD_ID, PAD_ID, PAD_ID, 5, 7, 9]], dtype="int32")
    probs = np.asarray(network.predict_on_batch(window))
    assert probs.shape == (1, 20)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    assert probs[0, [PAD_ID, 1, 9]].max() < 1e-6  # padding, OOV and the last item: blocked
    reordered = np.asarray(network.predict_on_batch(np.array([[0, 0, 0, 7, 5, 9]])))
    assert not np.allclose(probs, reordered)  # position embeddings: order is read
    # Padding is never attended to: what stands in front of the session makes no difference.
    other_padding_embedding = network.get_layer("embedding")
    weights = other_padding_embedding.get_weights()
    weights[0][PAD_ID] += 3.0
    other_padding_embedding.set_weights(weights)
    np.testing.assert_allclose(network.predict_on_batch(window), probs, rtol=1e-5, atol=1e-7)


def test_sasrec_learns_and_beats_popularity(
    trained_sasrec: TrainedModel, lstm_sessions: pd.DataFrame, lstm_held_out: pd.DataFrame
) -> None:
    history = trained_sasrec.history
    assert history["val_loss"][-1] < history["val_loss"][0]
    examples = next_item_examples(lstm_held_out, max_examples=2_000)
    sasrec = recommend_in_batches(LstmRecommender(trained_sasrec), examples.prefixes, K)
    popular = MostPopular().fit(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4])
    baseline = recommend_in_batches(popular, examples.prefixes, K)
    assert mrr_at_k(sasrec, examples.targets, K) > 2 * mrr_at_k(baseline, examples.targets, K)


def test_the_export_answers_as_the_keras_sasrec(
    trained_sasrec: TrainedModel, lstm_held_out: pd.DataFrame, tmp_path: Path
) -> None:
    exported = load_recommender(export_model(trained_sasrec, tmp_path / "export"))
    assert exported.metadata["params"]["architecture"] == "sasrec"
    sessions = lstm_held_out["skus"].tolist()[:200] + [
        ["unknown-sku"],
        [],
        trained_sasrec.vocabulary[:20],  # longer than max_length
    ]
    expected = LstmRecommender(trained_sasrec).recommend(sessions, 10)
    actual = exported.recommend(sessions, 10)
    assert [[s for s, _ in r] for r in actual] == [[s for s, _ in r] for r in expected]
    np.testing.assert_allclose(
        [[p for _, p in r] for r in actual], [[p for _, p in r] for r in expected], rtol=1e-4
    )


def test_the_saved_sasrec_loads_back_with_the_same_answers(
    trained_sasrec: TrainedModel, lstm_held_out: pd.DataFrame, tmp_path: Path
) -> None:
    """The `.keras` file of the hand-off (what a JAX-trained model reaches the export through)."""
    loaded = load_trained(save_trained(trained_sasrec, tmp_path / "trained"))
    assert loaded.params == FAST_SASREC
    sessions = lstm_held_out["skus"].tolist()[:50]
    np.testing.assert_allclose(
        [[p for _, p in r] for r in LstmRecommender(loaded).recommend(sessions, 5)],
        [[p for _, p in r] for r in LstmRecommender(trained_sasrec).recommend(sessions, 5)],
        rtol=1e-5,
    )


def test_a_large_catalogue_trains_the_sasrec_with_the_sampled_softmax(
    lstm_sessions: pd.DataFrame,
) -> None:
    params = replace(FAST_SASREC, full_softmax_max_skus=10, sampled_negatives=64, epochs=1)
    network = build_network(40, params)
    assert isinstance(compile_for_training(network, params, np.arange(2, 40)), SampledSoftmaxModel)
    trained = train(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4], params)
    probs = np.asarray(trained.model.predict_on_batch(np.full((2, 8), FIRST_SKU_ID)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    assert {"loss", "val_loss"} <= set(trained.history)
