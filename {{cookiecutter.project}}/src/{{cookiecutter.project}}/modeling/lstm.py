"""Keras next-item model: vocabulary, training arrays, the LSTM network (or the transformer of
`sasrec`, as `TrainParams.architecture` says), training, batch recommendations, and the flow's
train step (train, export, package).

Ids are laid out in `params` (0 = padding, 1 = OOV, then the SKUs by descending frequency). The
model reads the last `max_length` items of a session, left-padded with 0 and masked, and returns a
softmax over all ids; recommendations never include the padding or OOV ids, nor the session's last
SKU (sequences collapse consecutive repeats, so the next SKU always differs from it).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras imports TensorFlow: quiet start

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from ..evaluation.protocol import check_k
from ..tracking import NullTracker, Tracker
from . import ModelError
from .archive import package_model
from .handoff import export_trained
from .head import next_item_output
from .params import FIRST_SKU_ID, OOV_ID, PAD_ID, TrainedModel, TrainParams
from .sampled import compile_for_training
from .sasrec import build_sasrec

_WINDOW_CHUNK = 1 << 18  # rows per chunk when building windows: bounds temporary memory


# --- training arrays -------------------------------------------------------------------------


def build_vocabulary(sessions: Iterable[Sequence[str]], min_count: int = 1) -> list[str]:
    """SKUs seen at least `min_count` times, most frequent first (ties by SKU, so deterministic)."""
    codes, uniques = pd.factorize(np.asarray(list(chain.from_iterable(sessions)), dtype=object))
    counts = np.bincount(codes, minlength=len(uniques))
    order = np.lexsort((uniques.astype(str), -counts))
    return [str(sku) for sku in uniques[order][counts[order] >= min_count]]


def encode_sessions(
    sessions: Sequence[Sequence[str]], vocabulary: Sequence[str] | pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """All sessions' ids in one flat int32 array, plus offsets (session i is flat[o[i]:o[i+1]])."""
    index = vocabulary if isinstance(vocabulary, pd.Index) else pd.Index(vocabulary)
    lengths = np.fromiter(map(len, sessions), dtype=np.int64, count=len(sessions))
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = index.get_indexer(list(chain.from_iterable(sessions)))
    flat = np.where(positions < 0, OOV_ID, positions + FIRST_SKU_ID).astype(np.int32)
    return flat, offsets


def _windows(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_length: int) -> np.ndarray:
    """Row i: flat[max(starts[i], ends[i] - max_length):ends[i]], left-padded with PAD_ID."""
    out = np.empty((len(ends), max_length), dtype=np.int32)
    steps = np.arange(-max_length, 0)
    for lo in range(0, len(ends), _WINDOW_CHUNK):
        hi = lo + _WINDOW_CHUNK
        idx = ends[lo:hi, None] + steps
        valid = idx >= starts[lo:hi, None]
        out[lo:hi] = np.where(valid, flat[np.where(valid, idx, 0)], PAD_ID)
    return out


def prefix_arrays(
    flat: np.ndarray, offsets: np.ndarray, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (prefix -> next item) pair of every session: X [n, max_length] int32, y [n] int32.

    Samples whose target is OOV are dropped: the model can never recommend OOV.
    """
    lengths = np.diff(offsets)
    is_target = np.ones(len(flat), dtype=bool)
    is_target[offsets[:-1][lengths > 0]] = False  # a session's first item has no prefix
    is_target &= flat != OOV_ID
    targets = np.flatnonzero(is_target)
    starts = np.repeat(offsets[:-1], lengths)[targets]
    return _windows(flat, starts, targets, max_length), flat[targets]


def session_windows(
    sessions: Sequence[Sequence[str]], vocabulary: Sequence[str] | pd.Index, max_length: int
) -> np.ndarray:
    """The model input for each whole session (its last `max_length` items, left-padded)."""
    flat, offsets = encode_sessions(sessions, vocabulary)
    return _windows(flat, offsets[:-1], offsets[1:], max_length)


def split_validation(train_df: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, validation): validation holds the newest `fraction` of sessions by first_event_at."""
    n_val = round(len(train_df) * fraction) if fraction > 0 else 0
    if fraction > 0 and len(train_df) > 1:
        n_val = min(max(n_val, 1), len(train_df) - 1)
    ordered = train_df.sort_values("first_event_at", kind="stable")
    return ordered.iloc[: len(ordered) - n_val], ordered.iloc[len(ordered) - n_val :]


# --- network and training --------------------------------------------------------------------


def build_lstm(n_ids: int, params: TrainParams) -> keras.Model:
    """Embedding (masking padding) -> LSTM, joined by the last item's and the mean embedding ->
    the shared next-item softmax (`head.next_item_output`).

    Three views of the session feed the output: the last item (the strongest signal of the next
    one), the LSTM (what the order of the whole session says) and the mean of its items' embeddings
    (what the session is about, whatever the order).
    """
    inputs = keras.Input(shape=(params.max_length,), dtype="int32", name="item_ids")
    embedded = keras.layers.Embedding(
        n_ids, params.embedding_dim, mask_zero=True, name="embedding"
    )(inputs)
    session = keras.layers.LSTM(params.lstm_units, name="lstm")(embedded)
    last_item = embedded[:, -1, :]  # left padding puts the most recent item in the last column
    # Mean over the items present; an empty session (all padding) gets zeros, not 0 / 0.
    present = keras.ops.expand_dims(keras.ops.cast(inputs != PAD_ID, "float32"), -1)
    mean_item = keras.ops.sum(embedded * present, axis=1) / keras.ops.maximum(
        keras.ops.sum(present, axis=1), 1.0
    )
    joined = keras.layers.Concatenate(name="session_views")([session, last_item, mean_item])
    return keras.Model(inputs, next_item_output(inputs, joined, n_ids, params), name="session_lstm")


# One builder per `TrainParams.architecture`: same input window, same output (the export,
# the sampled softmax and serving do not know which one trained).
NETWORKS: dict[str, Callable[[int, TrainParams], keras.Model]] = {
    "lstm": build_lstm,
    "sasrec": build_sasrec,
}


def build_network(n_ids: int, params: TrainParams) -> keras.Model:
    """The network `params.architecture` names, with an output for each of `n_ids` ids."""
    return NETWORKS[params.architecture](n_ids, params)


class _Throughput(keras.callbacks.Callback):
    """Times each epoch's training batches (validation excluded) to report samples/s."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = self._last = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(self._last - self._start)


class _Progress(keras.callbacks.Callback):
    def __init__(self, progress: Callable[[int, dict[str, float]], None]) -> None:
        super().__init__()
        self._progress = progress

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._progress(epoch + 1, {name: float(value) for name, value in (logs or {}).items()})


class EpochPrinter:
    """A `progress` callback for `train`: one line per epoch (its metrics, seconds and an ETA for
    the most epochs left), plain text so CI logs read as well as a terminal."""

    def __init__(
        self,
        label: str,
        epochs: int,
        write: Callable[[str], None] = print,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label, self.epochs, self._write, self._clock = label, epochs, write, clock
        self._started = clock()

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        elapsed = self._clock() - self._started
        eta = elapsed / epoch * (self.epochs - epoch)
        metrics = "  ".join(f"{name} {value:.4f}" for name, value in logs.items())
        self._write(
            f"{self.label} epoch {epoch}/{self.epochs}  {metrics}  "
            f"{elapsed / epoch:.1f} s/epoch  ETA {_duration(eta)} at most"
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def early_stop_text(history: dict[str, list[float]], params: TrainParams, n_samples: int) -> str:
    """Where training over `n_samples` samples an epoch stopped, why, and which epoch's weights
    it kept (early stopping restores the best by validation loss, or training loss without a
    validation set)."""
    monitored = history.get("val_loss") or history.get("loss") or []
    if not monitored:
        return "no epoch ran"
    best = int(np.argmin(monitored)) + 1
    ran = len(monitored)
    limit = params.epoch_limit(n_samples)
    if ran < limit:
        how = (
            f"stopped early at epoch {ran} of {limit} "
            f"({params.patience} epochs without a better loss)"
        )
    elif limit < params.epochs:
        how = (
            f"ran all {ran} epochs that sample_budget={params.sample_budget:,} allows "
            f"({n_samples:,} samples an epoch; epochs={params.epochs})"
        )
    else:
        how = f"ran all {ran} epochs"
    kept = "val_loss" if history.get("val_loss") else "loss"
    return f"{how}, best epoch {best} ({kept} {monitored[best - 1]:.4f}, its weights kept)"


class TrackerCallback(keras.callbacks.Callback):
    """Logs Keras' per-epoch metrics (loss, val_loss, ...) to a tracker, the 1-based epoch as step.

    It lives here, not in `tracking`, so that tracking stays vendor- and framework-neutral."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self.tracker.log_metrics(metrics, step=epoch + 1)


def _check_training_frame(train_df: pd.DataFrame) -> None:
    missing = {"skus", "first_event_at"} - set(train_df.columns)
    if missing:
        raise ModelError(
            f"training sessions lack column(s) {sorted(missing)}; pass the dbt model "
            "`training_sessions` (session_id, skus, session_length, first_event_at)"
        )


def train(
    train_df: pd.DataFrame,
    params: TrainParams | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train on every prefix of every session; validate on the newest sessions; stop early, or
    when `params.sample_budget` is spent (`TrainParams.epoch_limit`).

    Catalogues above `params.full_softmax_max_skus` train with a sampled softmax
    (`sampled.SampledSoftmaxModel`); validation, scoring and the export use the full one either way.

    `progress(epoch, logs)` (epochs count from 1) replaces Keras' one line per epoch when given.
    """
    params = params or TrainParams()
    _check_training_frame(train_df)
    fit_df, val_df = split_validation(train_df, params.validation_fraction)
    fit_sessions = fit_df["skus"].tolist()
    vocabulary = build_vocabulary(fit_sessions, params.min_count)
    index = pd.Index(vocabulary)
    x, y = prefix_arrays(*encode_sessions(fit_sessions, index), params.max_length)
    if len(y) == 0:
        raise ModelError(
            f"no training samples in {len(train_df)} sessions: sessions need >= 2 items with known "
            "SKUs; generate more sessions, lower min_count or check the time split"
        )
    x_val, y_val = prefix_arrays(
        *encode_sessions(val_df["skus"].tolist(), index), params.max_length
    )
    validation = (x_val, y_val) if len(y_val) else None

    keras.utils.set_random_seed(params.seed)
    model = build_network(len(vocabulary) + FIRST_SKU_ID, params)
    fitted = compile_for_training(model, params, y)
    throughput = _Throughput()
    monitor = "val_loss" if validation else "loss"
    all_callbacks = [
        throughput,
        keras.callbacks.EarlyStopping(monitor, patience=params.patience, restore_best_weights=True),
        *callbacks,
    ]
    epochs = params.epoch_limit(len(y))
    if progress is not None:
        all_callbacks.append(_Progress(progress))
    if isinstance(progress, EpochPrinter):
        progress.epochs = min(progress.epochs, epochs)  # its ETA: the epochs the budget allows
    started = time.perf_counter()
    fit = fitted.fit(
        x,
        y,
        batch_size=params.batch_size,
        epochs=epochs,
        validation_data=validation,
        shuffle=True,
        callbacks=all_callbacks,
        verbose=0 if progress is not None else 2,
    )
    train_seconds = time.perf_counter() - started
    timed = throughput.seconds[1:] or throughput.seconds  # epoch 1 includes graph tracing
    return TrainedModel(
        model=model,
        vocabulary=vocabulary,
        params=params,
        history={name: [float(v) for v in values] for name, values in fit.history.items()},
        samples_per_second=len(y) * len(timed) / max(sum(timed), 1e-9),
        train_seconds=train_seconds,
        n_train_samples=len(y),
        n_validation_samples=len(y_val),
        backend=keras.backend.backend(),
    )


# --- batch recommendations -------------------------------------------------------------------


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest scores, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


class LstmRecommender:
    """The in-memory model behind the batch `recommend` interface shared with the baselines."""

    name = "lstm"

    def __init__(self, trained: TrainedModel, batch_size: int = 4096) -> None:
        self._model = trained.model
        self._skus = np.asarray(trained.vocabulary, dtype=object)
        self._index = pd.Index(trained.vocabulary)
        self._max_length = trained.params.max_length
        self._batch_size = batch_size

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, probability) per session, best first; unknown SKUs in a session are OOV."""
        check_k(k)
        windows = session_windows(sessions, self._index, self._max_length)
        results: list[list[tuple[str, float]]] = []
        for lo in range(0, len(windows), self._batch_size):
            probs = np.asarray(self._model.predict_on_batch(windows[lo : lo + self._batch_size]))
            ids, scores = top_k(probs[:, FIRST_SKU_ID:], k)
            skus = self._skus[ids]
            results.extend(
                list(zip(row_skus.tolist(), row_scores.tolist(), strict=True))
                for row_skus, row_scores in zip(skus, scores, strict=True)
            )
        return results


# --- the flow's train step -------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSummary:
    """What the train step keeps: plain data plus the model archive itself (model.tar.gz bytes),
    so later steps (and other machines) need no shared disk."""

    params: dict[str, Any]
    history: dict[str, list[float]]
    samples_per_s: float
    seconds: float
    n_samples: int
    vocab_size: int
    model_archive: bytes
    tracking_location: str | None
    backend: str = "tensorflow"  # the Keras backend that trained it (the export is TensorFlow's)


def train_and_export(
    train_df: pd.DataFrame,
    params: TrainParams,
    out_dir: Path,
    tracker: Tracker | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainingSummary:
    """Train, export for serving (through `handoff`: in a TensorFlow process when training ran on
    another backend) and pack model.tar.gz; log parameters and epochs to `tracker`;
    `progress(epoch, logs)` as in `train`."""
    tracker = tracker or NullTracker()
    tracker.log_parameters(asdict(params))
    trained = train(train_df, params, callbacks=[TrackerCallback(tracker)], progress=progress)
    export_dir = export_trained(trained, Path(out_dir))  # a TensorFlow process exports JAX's
    archive = package_model(export_dir, Path(out_dir) / "model.tar.gz")
    tracker.log_metrics({"samples_per_s": trained.samples_per_second})
    return TrainingSummary(
        params=asdict(params),
        history=trained.history,
        samples_per_s=trained.samples_per_second,
        seconds=trained.train_seconds,
        n_samples=trained.n_train_samples,
        vocab_size=len(trained.vocabulary),
        model_archive=archive.read_bytes(),
        tracking_location=tracker.end(),
        backend=trained.backend,
    )
