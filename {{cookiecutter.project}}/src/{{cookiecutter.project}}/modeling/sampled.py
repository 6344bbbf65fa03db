"""Sampled-softmax training for large catalogues: the SKU output layer, the training model that
scores each target against a few sampled negatives, and an Adam that updates only touched rows.

Why: the full softmax costs a [batch, hidden] x [hidden, n_ids] product, its gradient and an Adam
update over the whole output matrix on every batch; at 20k SKUs it dominated training (1,964
samples/s against 18,700 at 2k SKUs, issue 19). Here each batch scores its targets plus
`negatives` SKUs drawn once for the whole batch, so the cost no longer grows with the catalogue.
Scoring and the serving export keep the full softmax: `SkuLogits` holds the weights both use,
and the trained network (`SampledSoftmaxModel.network`) is the one `export` saves.

Everything here is `keras.ops`, so it trains on any Keras backend.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ..schema import HIT_RATE, K
from .params import FIRST_SKU_ID, TrainParams

# Negatives are drawn with probability proportional to count ** power: popular SKUs are the
# informative negatives (the model must learn when *not* to recommend them), and the power below
# 1 keeps the tail in play (word2vec's and GRU4Rec's choice).
SAMPLING_POWER = 0.75
BLOCKED_LOGIT = -1e9  # what the network adds to padding, OOV and the last item: never chosen


class SkuLogits(keras.layers.Layer):
    """Logits for every id: `session @ kernel.T + bias`, kernel [n_ids, hidden].

    The kernel is stored one row per id (unlike Dense's [hidden, n_ids]) so that training can
    gather the rows of a few ids: the gradient then touches those rows only.
    """

    def __init__(self, n_ids: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_ids = n_ids

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Glorot-uniform over the fan-in + fan-out of the output layer, as Dense would draw.
        self.kernel = self.add_weight(
            shape=(self.n_ids, input_shape[-1]), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.n_ids,), initializer="zeros", name="bias")

    def call(self, session: Any) -> Any:
        return ops.einsum("bh,nh->bn", session, self.kernel) + self.bias

    def target_logits(self, session: Any, targets: Any) -> Any:
        """Each row's logit of its own target: session [batch, hidden], targets [batch]."""
        rows, bias = ops.take(self.kernel, targets, axis=0), ops.take(self.bias, targets, axis=0)
        return ops.sum(session * rows, axis=-1) + bias

    def shared_logits(self, session: Any, ids: Any) -> Any:
        """Every row's logits of the same ids: session [batch, hidden], ids [n] -> [batch, n]."""
        rows, bias = ops.take(self.kernel, ids, axis=0), ops.take(self.bias, ids, axis=0)
        return ops.einsum("bh,nh->bn", session, rows) + bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_ids": self.n_ids}


# The network's layers that are ours, for Keras to rebuild a saved or configured network.
CUSTOM_OBJECTS = {"SkuLogits": SkuLogits}


def sampling_distribution(targets: np.ndarray, n_ids: int) -> np.ndarray:
    """q over ids (sums to 1): count ** SAMPLING_POWER of each SKU among the training targets,
    every SKU at least as likely as one seen once; padding and OOV are never drawn."""
    counts = np.bincount(targets, minlength=n_ids).astype(np.float64)
    weights = np.maximum(counts, 1.0) ** SAMPLING_POWER
    weights[:FIRST_SKU_ID] = 0.0
    return weights / weights.sum()


class NegativeSampler(keras.layers.Layer):
    """Draws `negatives` ids from q (with replacement) by inverting its CDF; one draw per batch,
    shared by every row (one gather and one matrix product instead of one per row)."""

    def __init__(self, q: np.ndarray, negatives: int, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.negatives = negatives
        cdf = np.cumsum(q)
        self._cdf = (cdf / cdf[-1]).astype("float32")
        self._log_q = np.log(np.maximum(q, 1e-30)).astype("float32")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights: its only state is the seed generator's

    def call(self, batch_rows: Any) -> tuple[Any, Any]:
        """(ids [negatives], log q of each); `batch_rows` only ties the draw to the batch."""
        del batch_rows
        uniform = keras.random.uniform((self.negatives,), seed=self.seed_generator)
        ids = ops.searchsorted(ops.convert_to_tensor(self._cdf), uniform, side="right")
        ids = ops.cast(ops.minimum(ids, len(self._cdf) - 1), "int32")
        return ids, ops.take(ops.convert_to_tensor(self._log_q), ids, axis=0)


def sampled_softmax_loss(
    target_logit: Any, negative_logits: Any, negative_log_q: Any, blocked: Any
) -> Any:
    """Per-row cross-entropy with the partition function estimated by importance sampling.

    Z = sum_j exp(s_j) is estimated as exp(s_target) + mean over the n negatives of
    exp(s_j) / q_j (Bengio & Senecal's estimator), counting only negatives other than the row's
    target (accidental hits) and never the ids the network blocks (`blocked`, [batch, n] bool).
    In expectation the estimate equals Z, so the loss tracks the full softmax loss (and the
    validation loss, which is the full one, reads on the same scale) and its gradient is the
    full gradient's estimate (logQ correction).
    """
    n = ops.cast(ops.shape(negative_logits)[1], "float32")
    corrected = negative_logits - negative_log_q[None, :] - ops.log(n)
    corrected = ops.where(blocked, BLOCKED_LOGIT, corrected)
    both = ops.concatenate([target_logit[:, None], corrected], axis=1)
    return ops.logsumexp(both, axis=1) - target_logit


class SampledSoftmaxModel(keras.Model):
    """Trains `network` (the full-softmax model, which scoring and the export use) with the
    sampled loss; evaluates (validation) with the full softmax, so `val_loss` and
    `val_hit_rate@20` mean what they mean for a full-softmax model.

    `network` must have the layers `build_network` names: `dropout` (the session vector the
    output reads) and `logits` (a `SkuLogits`). The training history has `loss` (sampled),
    `val_loss` and `val_hit_rate@20`; no training hit rate, which would need the full softmax.
    """

    def __init__(self, network: keras.Model, q: np.ndarray, negatives: int, seed: int) -> None:
        super().__init__(name="sampled_softmax")
        self.network = network
        # Shares the network's layers (and so its weights) up to the session vector.
        self.encoder = keras.Model(network.inputs, network.get_layer("dropout").output)
        self.sku_logits: SkuLogits = network.get_layer("logits")
        self.sampler = NegativeSampler(q, negatives, seed, name="negative_sampler")
        self.hit_rate = keras.metrics.SparseTopKCategoricalAccuracy(k=K, name=HIT_RATE)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return self.network(inputs, training=False)
        # Sampling happens here, not in compute_loss: on JAX only the forward pass carries the
        # sampler's seed state from one step to the next.
        negatives, log_q = self.sampler(inputs)
        return {
            "items": inputs,
            "session": self.encoder(inputs, training=True),
            "negatives": negatives,
            "log_q": log_q,
        }

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        del x, sample_weight  # training passes neither weights nor anything beyond (x, y)
        y = ops.cast(y, "int32")
        if not isinstance(y_pred, dict):  # evaluation: the full softmax's probabilities
            return ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))
        session, negatives = y_pred["session"], y_pred["negatives"]
        last_item = ops.cast(y_pred["items"][:, -1], "int32")
        blocked = ops.logical_or(
            ops.equal(negatives[None, :], y[:, None]),
            ops.equal(negatives[None, :], last_item[:, None]),
        )
        losses = sampled_softmax_loss(
            self.sku_logits.target_logits(session, y),
            self.sku_logits.shared_logits(session, negatives),
            y_pred["log_q"],
            blocked,
        )
        return ops.mean(losses)

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        training = isinstance(y_pred, dict)
        if not training:
            self.hit_rate.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics if not (training and m is self.hit_rate)}


class LazyAdam(keras.optimizers.Adam):
    """Adam that, for a sparse gradient (rows gathered from a table: the SKU output rows and the
    input embedding under TensorFlow), updates the moments and weights of those rows only.

    Dense Adam rewrites every row of a 57k x 192 output matrix each batch (several passes over
    44 MB), which capped sampled training at ~4k samples/s on 2 cores; rows not drawn keep their
    moments until they are, as TensorFlow Addons' LazyAdam did. Dense gradients (JAX, torch, or
    any other weight) take Adam's usual update.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not hasattr(gradient, "indices"):
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        rows, position = ops.unique(gradient.indices, sorted=False, return_inverse=True)
        grad = ops.segment_sum(
            ops.cast(gradient.values, dtype), position, num_segments=ops.shape(rows)[0]
        )
        step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), step)
        alpha = ops.cast(learning_rate, dtype) * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = ops.take(m, rows, axis=0)
        v_rows = ops.take(v, rows, axis=0)
        m_rows = m_rows + (grad - m_rows) * (1 - self.beta_1)
        v_rows = v_rows + (ops.square(grad) - v_rows) * (1 - self.beta_2)
        delta = m_rows * alpha / (ops.sqrt(v_rows) + self.epsilon)
        # The gradient's own type carries (values, rows) to the backend's scatter update.
        sparse = type(gradient)
        shape = gradient.dense_shape
        self.assign(m, sparse(m_rows, rows, shape))
        self.assign(v, sparse(v_rows, rows, shape))
        self.assign_sub(variable, sparse(delta, rows, shape))


def compile_for_training(
    network: keras.Model, params: TrainParams, targets: np.ndarray
) -> keras.Model:
    """The model to `fit` on (prefixes, targets), compiled: `network` itself with the full softmax,
    or a `SampledSoftmaxModel` around it when the catalogue is above
    `params.full_softmax_max_skus`. Either way `network` holds the trained weights."""
    n_ids = network.output_shape[-1]
    if params.uses_sampled_softmax(n_ids - FIRST_SKU_ID):
        q = sampling_distribution(targets, n_ids)
        model = SampledSoftmaxModel(network, q, params.sampled_negatives, params.seed)
        model.compile(optimizer=LazyAdam(params.learning_rate))
        return model
    network.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        # Named as the evaluation names it: history, tracker and card read `hit_rate@20`.
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=K, name=HIT_RATE)],
    )
    return network
