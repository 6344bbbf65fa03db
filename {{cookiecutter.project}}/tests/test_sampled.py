"""Sampled-softmax training: the output layer, the sampler, the loss, the lazy Adam, and a model
trained this way still scored and exported with the full softmax."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import FAST_LSTM
from keras import ops

from {{ cookiecutter.project }}.evaluation.metrics import mrr_at_k, next_item_examples
from {{ cookiecutter.project }}.evaluation.suite import recommend_in_batches
from {{ cookiecutter.project }}.modeling.baselines import MostPopular
from {{ cookiecutter.project }}.modeling.export import export_model, load_recommender
from {{ cookiecutter.project }}.modeling.lstm import LstmRecommender, train
from {{ cookiecutter.project }}.modeling.params import (
    FIRST_SKU_ID,
    OOV_ID,
    PAD_ID,
    TrainedModel,
    TrainParams,
)
from {{ cookiecutter.project }}.modeling.sampled import (
    LazyAdam,
    NegativeSampler,
    SkuLogits,
    sampled_softmax_loss,
    sampling_distribution,
)
from {{ cookiecutter.project }}.schema import HIT_RATE, K

# FAST_LSTM, but every catalogue above 10 SKUs trains with the sampled softmax.
SAMPLED_LSTM = replace(FAST_LSTM, full_softmax_max_skus=10, sampled_negatives=64)


@pytest.fixture(scope="module")
def sampled_lstm(lstm_sessions: pd.DataFrame) -> TrainedModel:
    return train(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4], SAMPLED_LSTM)


def test_the_threshold_chooses_the_softmax() -> None:
    params = TrainParams(full_softmax_max_skus=5000)
    assert not params.uses_sampled_softmax(5000)
    assert params.uses_sampled_softmax(5001)


def test_gathered_logits_are_the_full_logits() -> None:
    layer = SkuLogits(7)
    session = keras.random.normal((3, 4), seed=1)
    layer.build(session.shape)
    layer.bias.assign(np.arange(7, dtype="float32"))  # a bias that shows up in every logit
    full = ops.convert_to_numpy(layer(session))
    assert full.shape == (3, 7)
    ids = np.array([5, 2, 2], dtype="int32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.shared_logits(session, ids)), full[:, ids], rtol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.target_logits(session, ids)), full[np.arange(3), ids], rtol=1e-5
    )


def test_negatives_follow_the_popularity_and_skip_padding_and_oov() -> None:
    targets = np.array([2] * 900 + [3] * 90 + [4] * 10)
    q = sampling_distribution(targets, n_ids=6)
    assert q.sum() == pytest.approx(1.0)
    assert q[PAD_ID] == q[OOV_ID] == 0.0
    assert q[2] > q[3] > q[4] > 0
    assert q[5] == pytest.approx(q[4] / 10**0.75)  # never seen: drawn as if seen once
    ids, log_q = NegativeSampler(q, negatives=20_000, seed=0)(np.zeros((1, 1)))
    ids, log_q = ops.convert_to_numpy(ids), ops.convert_to_numpy(log_q)
    assert ids.min() >= FIRST_SKU_ID and ids.max() <= 5
    np.testing.assert_allclose(np.bincount(ids, minlength=6) / len(ids), q, atol=0.01)
    np.testing.assert_allclose(log_q, np.log(q[ids]), rtol=1e-5)


def test_the_sampled_loss_estimates_the_full_loss() -> None:
    rng = np.random.default_rng(0)
    n_ids, rows = 40, 64
    logits = rng.normal(0.0, 2.0, (rows, n_ids)).astype("float32")
    logits[:, :FIRST_SKU_ID] = -1e9  # as the network blocks padding and OOV
    targets = rng.integers(FIRST_SKU_ID, n_ids, rows)
    full = -logits[np.arange(rows), targets] + np.log(np.exp(logits).sum(axis=1))
    q = sampling_distribution(rng.integers(FIRST_SKU_ID, n_ids, 500), n_ids)
    estimates = []
    for seed in range(200):
        ids = np.random.default_rng(seed).choice(n_ids, size=256, p=q)
        estimates.append(
            ops.convert_to_numpy(
                sampled_softmax_loss(
                    logits[np.arange(rows), targets],
                    logits[:, ids],
                    np.log(q[ids]).astype("float32"),
                    ids[None, :] == targets[:, None],
                )
            )
        )
    # Jensen's inequality makes the estimate a little low; the mean over draws is within 1%.
    np.testing.assert_allclose(np.mean(estimates, axis=0).mean(), full.mean(), rtol=0.01)


def test_lazy_adam_updates_only_the_gathered_rows_as_adam_would() -> None:
    start = np.arange(12, dtype="float32").reshape(6, 2)
    rows = np.array([4, 1, 4], dtype="int32")  # row 4 twice: its gradients add up

    def train(optimizer: keras.optimizers.Optimizer, dense: bool) -> np.ndarray:
        table = keras.Variable(start)
        optimizer.build([table])
        for _ in range(3):
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf  # the sparse gradient of a gather, as training gets it

                with tf.GradientTape() as tape:
                    loss = ops.sum(ops.square(ops.take(table, rows, axis=0)))
                gradient = tape.gradient(loss, table.value)
                assert hasattr(gradient, "indices")
                # Keras' Adam squares a sparse gradient's values before adding duplicates up:
                # the reference gets the dense sum.
                gradient = tf.convert_to_tensor(gradient) if dense else gradient
            else:
                gradient = np.zeros_like(start)
                np.add.at(gradient, rows, 2 * ops.convert_to_numpy(table)[rows])
            optimizer.apply([gradient], [table])
        return ops.convert_to_numpy(table)

    lazy, adam = train(LazyAdam(0.1), dense=False), train(keras.optimizers.Adam(0.1), dense=True)
    np.testing.assert_allclose(lazy, adam, rtol=1e-5)  # untouched rows' moments stay 0 in both
    np.testing.assert_array_equal(lazy[[0, 2, 3, 5]], start[[0, 2, 3, 5]])
    np.testing.assert_allclose(lazy[[1, 4]], start[[1, 4]] - 0.3, atol=1e-3)  # Adam: ~lr a step


def test_sampled_training_learns_and_reports_full_softmax_validation(
    sampled_lstm: TrainedModel, lstm_sessions: pd.DataFrame, lstm_held_out: pd.DataFrame
) -> None:
    history = sampled_lstm.history
    assert {"loss", "val_loss", f"val_{HIT_RATE}"} <= set(history)
    assert HIT_RATE not in history  # a training hit rate would need the full softmax
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    examples = next_item_examples(lstm_held_out, max_examples=2_000)
    lstm = recommend_in_batches(LstmRecommender(sampled_lstm), examples.prefixes, K)
    popular = MostPopular().fit(lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4])
    baseline = recommend_in_batches(popular, examples.prefixes, K)
    lstm_mrr = mrr_at_k(lstm, examples.targets, K)
    assert lstm_mrr > 2 * mrr_at_k(baseline, examples.targets, K)


def test_a_sampled_model_exports_the_full_softmax(
    sampled_lstm: TrainedModel, lstm_held_out: pd.DataFrame, tmp_path: Path
) -> None:
    n_ids = len(sampled_lstm.vocabulary) + FIRST_SKU_ID
    probs = np.asarray(sampled_lstm.model.predict_on_batch(np.full((2, 8), FIRST_SKU_ID)))
    assert probs.shape == (2, n_ids)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    exported = load_recommender(export_model(sampled_lstm, tmp_path / "export"))
    sessions = lstm_held_out["skus"].tolist()[:100] + [["unknown-sku"], []]
    expected = LstmRecommender(sampled_lstm).recommend(sessions, K)
    actual = exported.recommend(sessions, K)
    assert [[s for s, _ in r] for r in actual] == [[s for s, _ in r] for r in expected]
    assert exported.metadata["params"]["full_softmax_max_skus"] == 10
