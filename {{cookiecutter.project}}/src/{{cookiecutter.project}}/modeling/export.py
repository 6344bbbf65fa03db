"""The serving export: a TensorFlow SavedModel holding the SKU lookup, the network and the top-k,
so a caller sends SKU strings and gets SKU strings back (see `export_model`), and its loader.

Importing this module loads neither Keras nor TensorFlow (the loader and the export do, when
called): the server and the deploy step import it before they need a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.protocol import check_k
from . import ModelError
from .params import FIRST_SKU_ID, OOV_ID, PAD_ID, TrainedModel

METADATA_FILE = "metadata.json"


def _weights_only(network: Any) -> Any:
    """A copy of `network` with its weights and no optimizer.

    The SavedModel keeps everything its module tracks: a network compiled for the full softmax
    would carry Adam's two moment tables (twice its weights: 51 MB against 18 MB of
    `model.tar.gz` at 20,000 SKUs), which serving never reads.
    """
    import keras

    from .sampled import CUSTOM_OBJECTS

    # From the config, not keras.models.clone_model: a clone of a compiled model is compiled too.
    copy = keras.Model.from_config(network.get_config(), custom_objects=CUSTOM_OBJECTS)
    copy.set_weights(network.get_weights())
    return copy


def _serving_module(trained: TrainedModel) -> Any:
    """A tf.Module whose `recommend(skus, k)` does lookup, network and top-k inside the graph."""
    import tensorflow as tf

    max_length = trained.params.max_length

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = _weights_only(trained.model)
            self.skus = tf.Variable(trained.vocabulary, dtype=tf.string, trainable=False)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(trained.vocabulary, tf.string),
                    tf.range(FIRST_SKU_ID, len(trained.vocabulary) + FIRST_SKU_ID, dtype=tf.int64),
                ),
                default_value=OOV_ID,
            )

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name="skus"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def recommend(self, skus: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
            is_item = skus != ""
            ids = tf.where(is_item, tf.cast(self.table.lookup(skus), tf.int32), PAD_ID)
            # Move each row's items to the right (stable, so in order), keep the last max_length.
            order = tf.argsort(tf.cast(is_item, tf.int32), axis=1, stable=True)
            ids = tf.gather(ids, order, batch_dims=1)[:, -max_length:]
            ids = tf.pad(ids, [[0, 0], [max_length - tf.shape(ids)[1], 0]])
            probs = self.network(ids, training=False)[:, FIRST_SKU_ID:]
            best = tf.math.top_k(probs, tf.minimum(k, tf.shape(probs)[1]))
            return {"skus": tf.gather(self.skus, best.indices), "scores": best.values}

    return Serving()


def export_model(trained: TrainedModel, out_dir: Path) -> Path:
    """Write the serving SavedModel and `metadata.json` into `out_dir`; return `out_dir`.

    Signature `serving_default(skus: string [batch, width], k: int32 scalar)` -> `skus: string
    [batch, k]`, `scores: float32 [batch, k]` (probabilities, best first). Each row of `skus` is one
    session in time order; '' is padding and may sit anywhere (right-padding is natural); only the
    last `max_length` items count; unknown SKUs are read as OOV; k is capped at the vocabulary size.
    """
    import keras  # loaded already: the caller trained the model with it
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ModelError(
            f"the serving export needs Keras' TensorFlow backend, not {keras.backend.backend()!r}: "
            "export from a process started with KERAS_BACKEND=tensorflow"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"{out_dir} is not empty: export into a new folder or remove it first")
    module = _serving_module(trained)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.recommend})
    metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": asdict(trained.params),
        "vocabulary_size": len(trained.vocabulary),
        "train_seconds": round(trained.train_seconds, 3),
        "samples_per_second": round(trained.samples_per_second, 1),
        "n_train_samples": trained.n_train_samples,
        "epochs_run": len(next(iter(trained.history.values()), [])),
        "keras_backend": trained.backend,  # that trained it: the export runs on TensorFlow
        "signature": "serving_default(skus: string [batch, width], '' = padding; k: int32)",
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out_dir


class ExportedRecommender:
    """A loaded serving export behind the batch `recommend` interface (used by the server)."""

    name = "lstm"

    def __init__(self, model_dir: Path, batch_size: int = 4096) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(model_dir))
        # The signature (a concrete function) is the cheapest to call: ~0.7 ms vs ~0.9 ms for the
        # restored tf.function, which first matches its arguments against the input signature.
        self._serve = self._loaded.signatures["serving_default"]
        self._batch_size = batch_size
        # The SKUs the model knows (the export's lookup keys): the server counts the others.
        self.vocabulary = frozenset(sku.decode() for sku in self._loaded.skus.numpy().tolist())
        metadata_path = Path(model_dir) / METADATA_FILE
        self.metadata: dict[str, Any] = (
            json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
        )

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, probability) per session, best first; '' items are ignored as padding."""
        check_k(k)
        results: list[list[tuple[str, float]]] = []
        for lo in range(0, len(sessions), self._batch_size):
            batch = sessions[lo : lo + self._batch_size]
            width = max(1, max(map(len, batch)))
            padded = np.full((len(batch), width), "", dtype=object)
            for row, session in enumerate(batch):
                padded[row, : len(session)] = session
            out = self._serve(
                skus=self._tf.constant(padded, self._tf.string),
                k=self._tf.constant(k, self._tf.int32),
            )
            skus, scores = out["skus"].numpy(), out["scores"].numpy().tolist()
            results.extend(
                [(sku.decode(), score) for sku, score in zip(row_skus, row_scores, strict=True)]
                for row_skus, row_scores in zip(skus, scores, strict=True)
            )
        return results


def load_recommender(model_dir: Path) -> ExportedRecommender:
    """Load an export (a folder from `export_model` or an unpacked model.tar.gz)."""
    model_dir = Path(model_dir)
    if not (model_dir / "saved_model.pb").is_file():
        raise ModelError(
            f"no SavedModel (saved_model.pb) in {model_dir}: train and export a model first, or "
            "unpack model.tar.gz into this folder"
        )
    return ExportedRecommender(model_dir)
