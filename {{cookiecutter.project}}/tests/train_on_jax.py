"""Train and export as the GPU image's train step does, on Keras' JAX backend (CPU here).

    KERAS_BACKEND=jax python tests/train_on_jax.py SESSIONS.parquet PARAMS.json OUT_DIR QUERIES.json

`lstm.train_and_export` trains, hands the `.keras` file to a TensorFlow process for the serving
export and packs OUT_DIR/model.tar.gz. The saved model, loaded back on JAX, then writes its own
top-10 for each session of QUERIES.json (a JSON list of SKU lists) into OUT_DIR/jax_top10.json,
for test_handoff to hold the export's answers against. A separate process: Keras cannot switch
backends once loaded, and the test process runs it on TensorFlow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import pandas as pd

from {{ cookiecutter.project }}.modeling.handoff import load_trained
from {{ cookiecutter.project }}.modeling.lstm import LstmRecommender, train_and_export
from {{ cookiecutter.project }}.modeling.params import TrainParams


def main(sessions_path: str, params_path: str, out: str, queries_path: str) -> None:
    assert keras.backend.backend() == "jax", "start this script with KERAS_BACKEND=jax"
    params = TrainParams(**json.loads(Path(params_path).read_text()))
    train_and_export(pd.read_parquet(sessions_path), params, Path(out))
    trained = load_trained(Path(out) / "trained")
    queries = json.loads(Path(queries_path).read_text())
    top10 = LstmRecommender(trained).recommend(queries, 10)
    (Path(out) / "jax_top10.json").write_text(json.dumps(top10))


if __name__ == "__main__":
    main(*sys.argv[1:])
