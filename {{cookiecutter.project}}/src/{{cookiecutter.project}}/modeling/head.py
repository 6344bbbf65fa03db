"""The output every network shares: dropout on the session vector, a logit per id (`SkuLogits`),
and a softmax that never picks padding, OOV or the session's last SKU.

Sequences collapse consecutive repeats, so the next item is never the last one: its logit, like
padding's and OOV's, gets `BLOCKED_LOGIT`. The layer names `dropout` and `logits` are what
`sampled.SampledSoftmaxModel` reads to train the same weights with a sampled softmax.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .params import OOV_ID, PAD_ID, TrainParams
from .sampled import BLOCKED_LOGIT, SkuLogits


def next_item_output(inputs: Any, session: Any, n_ids: int, params: TrainParams) -> Any:
    """Probabilities over every id [batch, n_ids] from `session` [batch, hidden]; `inputs` is the
    network's [batch, max_length] id window, its last column the session's last item."""
    session = keras.layers.Dropout(params.dropout, seed=params.seed, name="dropout")(session)
    logits = SkuLogits(n_ids, name="logits")(session)
    never = np.zeros(n_ids, dtype="float32")
    never[[PAD_ID, OOV_ID]] = 1.0
    blocked = keras.ops.minimum(keras.ops.one_hot(inputs[:, -1], n_ids) + never, 1.0)
    return keras.layers.Activation("softmax", name="next_item")(logits + BLOCKED_LOGIT * blocked)
