"""The LSTM's hyper-parameters, importable without Keras (the flow's parameters default to them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters. Defaults train fast on 2 CPU cores and beat a first-order Markov chain."""

    embedding_dim: int = 64
    lstm_units: int = 64
    max_length: int = 10  # most recent items the model reads (sessions average ~5 products)
    epochs: int = 20
    batch_size: int = 512  # large batches: far more samples/s per core, same accuracy here
    learning_rate: float = 0.005
    dropout: float = 0.3  # before the output layer: the softmax over all SKUs overfits first
    validation_fraction: float = 0.1  # newest sessions of the training period
    patience: int = 2  # epochs without a better validation loss before stopping
    seed: int = 42
    min_count: int = 1  # SKUs seen fewer times become OOV
