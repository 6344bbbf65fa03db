"""A small causal transformer over the session window, after SASRec (Kang & McAuley, 2018,
"Self-Attentive Sequential Recommendation", ICDM).

What is taken from that definition: item embeddings (scaled by sqrt(d)) plus learnt position
embeddings; `attention_blocks` blocks, each causal multi-head self-attention then a position-wise
feed-forward network of width d, each sub-layer with layer normalisation, dropout and a residual
connection (normalised before the sub-layer, as the authors' code does, and once more after the
last block); padding zeroed after every block and never attended to. The output at the newest
position reads the whole session and predicts the next item.

What differs: the window is the LSTM's (the last `max_length` items, left-padded), and the output
is the head every network shares (`head.next_item_output`: the full softmax with padding, OOV and
the last item blocked) instead of the paper's sampled binary cross-entropy, so the export, the
sampled softmax and the serving contract treat it exactly like the LSTM. Only `keras.layers` and
`keras.ops` (no layer of its own besides the shared head's `SkuLogits`): it trains on any Keras
backend, and the hand-off loads it as it loads the LSTM.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from .head import next_item_output
from .params import PAD_ID, TrainParams


def build_sasrec(n_ids: int, params: TrainParams) -> keras.Model:
    """Item + position embeddings -> causal self-attention blocks -> the newest position's
    vector, joined by the last item's embedding -> the shared next-item softmax."""
    length, width = params.max_length, params.embedding_dim
    rate = params.attention_dropout
    inputs = keras.Input(shape=(length,), dtype="int32", name="item_ids")
    items = keras.layers.Embedding(n_ids, width, name="embedding")(inputs)
    # Column j holds position j for every row: a constant added to the input, so symbolic.
    position_ids = ops.zeros_like(inputs) + np.arange(length, dtype="int32")
    positions = keras.layers.Embedding(length, width, name="position_embedding")(position_ids)
    present = ops.expand_dims(ops.cast(inputs != PAD_ID, "float32"), -1)  # [batch, length, 1]
    # Every query may look at the items present (the causal mask is the layer's own).
    keys_present = ops.repeat(ops.expand_dims(inputs != PAD_ID, 1), length, axis=1)
    x = keras.layers.Dropout(rate, seed=params.seed, name="embedding_dropout")(
        items * math.sqrt(width) + positions
    )
    x = x * present
    for block in range(params.attention_blocks):
        h = keras.layers.LayerNormalization(name=f"attention_norm_{block}")(x)
        h = keras.layers.MultiHeadAttention(
            params.attention_heads,
            width // params.attention_heads,
            dropout=rate,
            seed=params.seed,
            name=f"attention_{block}",
        )(h, h, attention_mask=keys_present, use_causal_mask=True)
        x = x + keras.layers.Dropout(rate, seed=params.seed, name=f"attention_dropout_{block}")(h)
        h = keras.layers.LayerNormalization(name=f"feed_forward_norm_{block}")(x)
        h = keras.layers.Dense(width, activation="relu", name=f"feed_forward_{block}_in")(h)
        h = keras.layers.Dropout(rate, seed=params.seed, name=f"feed_forward_dropout_{block}")(h)
        h = keras.layers.Dense(width, name=f"feed_forward_{block}_out")(h)
        x = (
            x + keras.layers.Dropout(rate, seed=params.seed, name=f"residual_dropout_{block}")(h)
        ) * present
    x = keras.layers.LayerNormalization(name="output_norm")(x)
    # Left padding puts the newest item in the last column.
    joined = keras.layers.Concatenate(name="session_views")([x[:, -1, :], items[:, -1, :]])
    outputs = next_item_output(inputs, joined, n_ids, params)
    return keras.Model(inputs, outputs, name="session_sasrec")
