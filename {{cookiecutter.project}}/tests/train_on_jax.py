"""Train and export as the GPU image's train step does, on Keras' JAX backend (CPU here).

    TRAIN_BACKEND=jax python tests/train_on_jax.py SESSIONS.parquet PARAMS.json OUT_DIR QUERIES.json

The backend is chosen as the flow's training steps choose it (`compute.select_training_backend`,
before Keras loads); `lstm.train_and_export` then trains, hands the `.keras` file to a TensorFlow
process for the serving export and packs OUT_DIR/model.tar.gz. The saved model, loaded back on JAX,
writes its own top-10 for each session of QUERIES.json (a JSON list of SKU lists) into
OUT_DIR/jax_top10.json, with the backend the step's summary names, for test_handoff to hold the
export's answers against. A process of its own: Keras cannot switch backends once loaded, and the
test process runs it on TensorFlow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from {{ cookiecutter.project }}.modeling.params import TrainParams
from {{ cookiecutter.project }}.pipeline import compute
from {{ cookiecutter.project }}.settings import get_settings


def main(sessions_path: str, params_path: str, out: str, queries_path: str) -> None:
    backend = compute.select_training_backend(get_settings())
    assert backend == "jax", f"start this script with TRAIN_BACKEND=jax, not {backend}"
    import keras

    from {{ cookiecutter.project }}.modeling.handoff import load_trained
    from {{ cookiecutter.project }}.modeling.lstm import LstmRecommender, train_and_export

    assert keras.backend.backend() == "jax"
    params = TrainParams(**json.loads(Path(params_path).read_text()))
    summary = train_and_export(pd.read_parquet(sessions_path), params, Path(out))
    trained = load_trained(Path(out) / "trained")
    queries = json.loads(Path(queries_path).read_text())
    top10 = LstmRecommender(trained).recommend(queries, 10)
    answer = {"summary_backend": summary.backend, "top10": top10}
    (Path(out) / "jax_top10.json").write_text(json.dumps(answer))


if __name__ == "__main__":
    main(*sys.argv[1:])
