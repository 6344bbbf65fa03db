"""The GPU variant's path, run on the CPU: a model trained on Keras' JAX backend (the GPU image's)
reaches the serving export through its `.keras` file and a TensorFlow process, and that export
answers exactly as a TensorFlow-trained one does: same signature, same outputs, and the
recommendations of the model JAX trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import FAST_LSTM, FAST_SASREC

from {{ cookiecutter.project }}.modeling import ModelError
from {{ cookiecutter.project }}.modeling.archive import load_archive
from {{ cookiecutter.project }}.modeling.backend import use_backend
from {{ cookiecutter.project }}.modeling.export import export_model
from {{ cookiecutter.project }}.modeling.handoff import export_in_tensorflow, load_trained
from {{ cookiecutter.project }}.modeling.params import TrainedModel, TrainParams

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", params=[FAST_LSTM, FAST_SASREC], ids=["lstm", "sasrec"])
def jax_params(request: pytest.FixtureRequest) -> TrainParams:
    """One epoch of each architecture: both must reach the same serving contract."""
    return replace(request.param, epochs=1)


@pytest.fixture(scope="module")
def jax_trained(
    jax_params: TrainParams, lstm_sessions: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """OUT_DIR of tests/train_on_jax.py: `jax_params` trained on JAX (TRAIN_BACKEND=jax, as on
    the GPU image), exported and packed."""
    work = tmp_path_factory.mktemp("jax")
    lstm_sessions.iloc[: len(lstm_sessions) * 3 // 4].to_parquet(work / "sessions.parquet")
    (work / "params.json").write_text(json.dumps(asdict(jax_params)))
    (work / "queries.json").write_text(json.dumps(_queries(lstm_sessions)))
    # The setting the GPU image's steps resolve to; KERAS_BACKEND is for the script to set.
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {"TRAIN_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, str(TESTS / "train_on_jax.py"), *(str(work / name) for name in (
            "sessions.parquet", "params.json", "out", "queries.json"))],
        env=env,
        cwd=work,  # no project .env here
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return work / "out"


def _queries(sessions: pd.DataFrame) -> list[list[str]]:
    """Held-out sessions, an unknown SKU, an empty session and one longer than max_length."""
    held_out = sessions["skus"].iloc[len(sessions) * 3 // 4 :].tolist()[:100]
    return [list(s) for s in held_out] + [["unknown-sku"], [], list(held_out[0]) * 5]


def _contract(signature) -> tuple:
    """What a caller sees of a serving signature: input specs and output specs."""
    return signature.structured_input_signature, signature.structured_outputs


def test_a_jax_trained_model_exports_to_the_serving_contract(
    jax_trained: Path, trained_lstm: TrainedModel, lstm_sessions: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "jax").mkdir()
    exported = load_archive((jax_trained / "model.tar.gz").read_bytes(), tmp_path / "jax")
    assert exported.metadata["keras_backend"] == "jax"
    assert exported.metadata["epochs_run"] == 1

    tf_export = tf.saved_model.load(str(export_model(trained_lstm, tmp_path / "tf")))
    jax_export = tf.saved_model.load(str(tmp_path / "jax" / "model"))
    assert _contract(jax_export.signatures["serving_default"]) == _contract(
        tf_export.signatures["serving_default"]
    )
    sessions = tf.constant([["", trained_lstm.vocabulary[0], "no-such-sku"]])
    answers = [
        export.signatures["serving_default"](skus=sessions, k=tf.constant(5))
        for export in (tf_export, jax_export)
    ]
    shapes = [{name: (a.dtype, tuple(a.shape)) for name, a in answer.items()} for answer in answers]
    assert shapes[0] == shapes[1] == {"skus": (tf.string, (1, 5)), "scores": (tf.float32, (1, 5))}

    queries = _queries(lstm_sessions)
    answer = json.loads((jax_trained / "jax_top10.json").read_text())
    assert answer["summary_backend"] == "jax"  # what the train step's card shows
    expected = answer["top10"]
    actual = exported.recommend(queries, 10)
    assert [[s for s, _ in r] for r in actual] == [[s for s, _ in r] for r in expected]
    np.testing.assert_allclose(
        [[p for _, p in r] for r in actual], [[p for _, p in r] for r in expected], rtol=1e-4
    )
    training = json.loads((jax_trained / "trained" / "training.json").read_text())
    vocabulary = set(training["vocabulary"])
    assert exported.vocabulary == vocabulary
    assert all(sku in vocabulary for row in actual for sku, _ in row)


def test_the_saved_model_loads_on_tensorflow_as_jax_saved_it(
    jax_trained: Path, jax_params: TrainParams
) -> None:
    trained = load_trained(jax_trained / "trained")
    assert keras.backend.backend() == "tensorflow" and trained.backend == "jax"
    assert trained.params == jax_params
    assert len(trained.history["loss"]) == 1 and trained.n_train_samples > 0


def test_a_loaded_keras_refuses_another_backend() -> None:
    use_backend("tensorflow")  # the test process's: nothing to do
    with pytest.raises(ModelError, match="cannot switch to 'jax'.*KERAS_BACKEND=jax"):
        use_backend("jax")
    with pytest.raises(ModelError, match="unknown Keras backend 'torch'"):
        use_backend("torch")


def test_a_failed_export_says_where_the_trained_model_is(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"(?s)exit 1.*no model.keras or training.json.*kept in"):
        export_in_tensorflow(tmp_path / "nothing", tmp_path / "export")
    with pytest.raises(ModelError, match="no model.keras or training.json"):
        load_trained(tmp_path / "nothing")
