"""The LSTM's hyper-parameters and id layout, importable without Keras (the flow's parameters
default to them; the serving export reads the ids).

Ids: 0 = padding, 1 = out-of-vocabulary (OOV), then the SKUs of the training sessions by
descending frequency (`TrainedModel.vocabulary[i]` has id i + 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ModelError

if TYPE_CHECKING:
    import keras  # the type only: this module imports no Keras

PAD_ID = 0
OOV_ID = 1
FIRST_SKU_ID = 2

# The networks `TrainParams.architecture` names (built by `lstm.build_network`).
ARCHITECTURES = ("lstm", "sasrec")

VALIDATION_DAYS = 3  # newest days of the training period that score each configuration
# A short default grid (the demo trains each one, so none is slower than the defaults): the
# defaults, a faster learning rate (stops sooner) and a narrower net.
# The transformer (`{"architecture": "sasrec"}`) is not in it: at 20k sessions it scored 2.3%
# below the LSTM's MRR@20 at half its samples/s (README, "The transformer option").
DEFAULT_GRID: list[dict[str, Any]] = [
    {},
    {"learning_rate": 0.005},
    {"embedding_dim": 32, "lstm_units": 32},
]
DEFAULT_GRID_JSON = json.dumps(DEFAULT_GRID)
# What one tuning trial may cost (0 = no limit): it trains on the newest TUNE_MAX_SESSIONS
# sessions before the validation days, for at most TUNE_EPOCHS epochs, so that the whole grid
# costs about what the final training does (issue 19: three uncapped trials at 60k sessions and
# 20k SKUs did not finish in 58 minutes).
TUNE_MAX_SESSIONS = 20_000
TUNE_EPOCHS = 6


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters. Defaults train in about a minute on 2 CPU cores at 20k sessions and beat a
    first-order Markov chain by ~10% MRR@20 (bench/bench_quality.py)."""

    architecture: str = "lstm"  # one of ARCHITECTURES: the LSTM or a causal transformer
    embedding_dim: int = 64
    lstm_units: int = 64  # the LSTM's only
    # The transformer's only (modeling/sasrec.py): blocks, heads per block, dropout inside them.
    attention_blocks: int = 2
    attention_heads: int = 2
    attention_dropout: float = 0.2
    max_length: int = 10  # most recent items the model reads (sessions average ~5 products)
    epochs: int = 20
    batch_size: int = 512  # large batches: far more samples/s per core, same accuracy here
    learning_rate: float = 0.002  # 0.005 stopped early, ~1% lower MRR@20
    dropout: float = 0.5  # before the output layer: the softmax over all SKUs overfits first
    validation_fraction: float = 0.1  # newest sessions of the training period
    patience: int = 3  # epochs without a better validation loss before stopping
    seed: int = 42
    min_count: int = 1  # SKUs seen fewer times become OOV
    # Above this many SKUs, train with a sampled softmax (modeling/sampled.py): the full one's
    # cost grows with the catalogue (1,964 samples/s at 20k SKUs vs 18,700 at 2k, 2 cores).
    # Scoring and the export always use the full softmax.
    full_softmax_max_skus: int = 5000
    sampled_negatives: int = 1024  # SKUs drawn per batch as negatives (shared by its rows)
    # Most (prefix -> next item) samples training sees, all epochs together (0 = no limit): fewer
    # epochs on large data, where each epoch holds more steps. Off by default: at 60k sessions and
    # 20k SKUs early stopping ended training at epoch 7 (~1.2M samples), and a budget that binds
    # there would cut a 200k-session training (~670k samples an epoch) to 2 epochs.
    sample_budget: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ModelError(
                f"unknown architecture {self.architecture!r}: choose one of "
                f"{', '.join(map(repr, ARCHITECTURES))}"
            )
        heads = self.attention_heads
        if self.architecture == "sasrec" and (heads < 1 or self.embedding_dim % heads):
            raise ModelError(
                f"embedding_dim {self.embedding_dim} must be a multiple of attention_heads "
                f"{heads} (>= 1): each head of the transformer reads an equal share of it"
            )

    def uses_sampled_softmax(self, n_skus: int) -> bool:
        """Whether a catalogue of `n_skus` trains with the sampled softmax."""
        return n_skus > self.full_softmax_max_skus

    def epoch_limit(self, n_samples: int) -> int:
        """Most epochs over `n_samples` samples an epoch: `epochs`, or fewer when those would see
        more than `sample_budget` samples (always at least one)."""
        if self.sample_budget <= 0 or n_samples <= 0:
            return self.epochs
        return max(1, min(self.epochs, self.sample_budget // n_samples))


@dataclass
class TrainedModel:
    """A trained network and everything needed to use or export it (kept here, beside its
    parameters, so `export` can name the type without importing `lstm`)."""

    model: keras.Model
    vocabulary: list[str]  # SKU of id i + 2 at position i
    params: TrainParams
    history: dict[str, list[float]]  # metric name -> one value per epoch
    samples_per_second: float  # training throughput, first (tracing) epoch excluded if possible
    train_seconds: float
    n_train_samples: int
    n_validation_samples: int
    backend: str = "tensorflow"  # the Keras backend that trained it (modeling.backend)
