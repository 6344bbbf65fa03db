"""The serving export: packed, unpacked and loaded, it answers as the in-memory model does."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST_LSTM

from {{ cookiecutter.project }}.modeling import ModelError
from {{ cookiecutter.project }}.modeling.archive import package_model
from {{ cookiecutter.project }}.modeling.export import export_model, load_recommender
from {{ cookiecutter.project }}.modeling.lstm import LstmRecommender, TrainedModel


def test_export_package_unpack_load_matches_the_in_memory_model(
    trained_lstm: TrainedModel, lstm_held_out: pd.DataFrame, tmp_path: Path
) -> None:
    trained = trained_lstm
    export_dir = export_model(trained, tmp_path / "export")
    tar_path = package_model(export_dir, tmp_path / "model.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "opt_ml_model", filter="data")
    assert {"saved_model.pb", "metadata.json", "variables"} <= names  # at the archive root

    exported = load_recommender(tmp_path / "opt_ml_model")
    assert exported.metadata["vocabulary_size"] == len(trained.vocabulary)
    assert exported.metadata["params"]["max_length"] == FAST_LSTM.max_length
    sessions = lstm_held_out["skus"].tolist()[:200] + [
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


def test_the_export_holds_the_networks_weights_and_no_optimizer(
    trained_lstm: TrainedModel, tmp_path: Path
) -> None:
    import tensorflow as tf

    assert trained_lstm.model.optimizer is not None  # trained with the full softmax: compiled
    export_dir = export_model(trained_lstm, tmp_path / "export")
    stored = dict(tf.train.list_variables(str(export_dir / "variables" / "variables")))
    assert not [name for name in stored if "optimizer" in name]
    network = {name: shape for name, shape in stored.items() if name.startswith("network/")}
    assert sum(int(np.prod(shape)) for shape in network.values()) == sum(
        weight.size for weight in trained_lstm.model.get_weights()
    )


def test_export_and_load_errors(trained_lstm: TrainedModel, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="not empty"):
        export_model(trained_lstm, tmp_path / "busy")
    with pytest.raises(ModelError, match="saved_model.pb"):
        load_recommender(tmp_path / "missing")
    with pytest.raises(ModelError, match="export_model first"):
        package_model(tmp_path / "busy", tmp_path / "model.tar.gz")
