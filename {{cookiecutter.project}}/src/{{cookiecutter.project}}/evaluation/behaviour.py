"""Behavioural probes: what accuracy hides. The same perturbed prefixes (a repeated last SKU, a
stray product view) go to every model; the gate decides what the results must reach."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import Examples
from .protocol import EvaluationError, check_k


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behavioural tests probe a model; what the results must reach is the gate's call."""

    sample_size: int = 1_000
    """Test prefixes perturbed per robustness test (the same ones for every model)."""
    short_prefix_max: int = 2
    """Prefixes of 1 to this many SKUs form the short-session slice."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample_size < 1 or self.short_prefix_max < 1:
            raise EvaluationError(
                "sample_size and short_prefix_max must be at least 1, got "
                f"{self.sample_size} and {self.short_prefix_max}"
            )


@dataclass(frozen=True)
class Probes:
    """Perturbed copies of a sample of test prefixes, built once and put to every model."""

    sample: list[int]
    """Indices of the perturbed examples."""
    repeated: list[list[str]]
    """The prefix with its last SKU repeated: an uncollapsed duplicate event."""
    noisy: list[list[str]]
    """The prefix with one stray product view (drawn by popularity) before its last SKU."""


def behaviour_probes(
    examples: Examples, popularity: pd.Series, config: BehaviourConfig | None = None
) -> Probes:
    """The robustness probes for `examples`, deterministic by `config.seed`.

    The stray view goes before the last SKU, never after it: the last SKU is the context the next
    item depends on most, so replacing it should change the list, while a stray view earlier in
    the session should not.
    """
    config = config or BehaviourConfig()
    if len(examples) == 0:
        raise EvaluationError("no examples to probe: build them with next_item_examples()")
    rng = np.random.default_rng(config.seed)
    size = min(config.sample_size, len(examples))
    sample = np.sort(rng.choice(len(examples), size=size, replace=False)).tolist()
    prefixes = [examples.prefixes[i] for i in sample]
    strays = rng.choice(
        popularity.index.to_numpy(dtype=object), size=size, p=popularity / popularity.sum()
    )
    noisy = []
    for prefix, stray in zip(prefixes, strays.tolist(), strict=True):
        position = int(rng.integers(len(prefix)))  # 0 .. len - 1: before the last SKU
        noisy.append([*prefix[:position], stray, *prefix[position:]])
    return Probes(
        sample=sample, repeated=[[*prefix, prefix[-1]] for prefix in prefixes], noisy=noisy
    )


def overlap_at_k(
    first: Sequence[Sequence[str]], second: Sequence[Sequence[str]], k: int
) -> np.ndarray:
    """Per pair of lists, the share of the top k they have in common (1 = same items)."""
    check_k(k)
    if len(first) != len(second):
        raise EvaluationError(f"{len(first)} lists to compare with {len(second)}; pair them up")
    return np.fromiter(
        (
            len(set(a[:k]).intersection(b[:k])) / max(len(a[:k]), len(b[:k]), 1)
            for a, b in zip(first, second, strict=True)
        ),
        dtype=np.float64,
        count=len(first),
    )


def invalid_item_rate(recommended: Sequence[Sequence[str]], catalogue: pd.Index, k: int) -> float:
    """Share of top-k slots holding an empty (padding) token or a SKU never seen in training.

    A model can only have learned SKUs of its training sessions; anything else in a list is a
    padding/OOV id leaking through the vocabulary lookup. NaN when all lists are empty.
    """
    check_k(k)
    slots = [sku for items in recommended for sku in items[:k]]
    if not slots:
        return math.nan
    known = catalogue.get_indexer(slots) >= 0
    valid = known & np.fromiter((bool(sku) for sku in slots), dtype=bool, count=len(slots))
    return float(1.0 - valid.mean())
