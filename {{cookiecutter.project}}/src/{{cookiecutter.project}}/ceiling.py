"""The known ceiling: the Bayes-optimal next-item ranking of the synthetic generator.

The generator keeps its probabilities (`GeneratorModel`), so the best achievable ranking of a
prefix is by the exact posterior P(next | prefix) of `data.next_item_probabilities`. Scored by the
same evaluation as the LSTM, it says how much of the learnable signal a model has found: a model
at 0.9 of the ceiling's MRR@20 is close to the best possible, whatever the raw figure. Real data has
no generator model and so no ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from .data import GeneratorError, GeneratorModel
from .evaluation import EvaluationError, EvaluationReport, check_k

CEILING_NAME = "ceiling"


class CeilingError(EvaluationError):
    """The ceiling cannot be computed for this input; the message says what to change."""


def next_item_probabilities_batch(
    model: GeneratorModel, sessions: Sequence[Sequence[str]]
) -> np.ndarray:
    """(len(sessions), n_products) exact P(next | prefix) per session, in one vectorised pass.

    The same distribution as `data.next_item_probabilities`, row by row: consecutive repeats are
    collapsed, P(z | prefix) comes from the prior and the known transition likelihoods, and the
    last product gets probability 0 (the chain never repeats it). An empty prefix gets the
    distribution of first products.
    """
    n = len(sessions)
    lengths = np.fromiter(map(len, sessions), dtype=np.int64, count=n)
    try:
        ids = model.product_ids(list(chain.from_iterable(sessions)))
    except GeneratorError as error:
        raise CeilingError(
            f"{error} The ceiling exists only for sessions drawn from that generator model; "
            "leave it out of the evaluation for real (Coveo) data."
        ) from error
    owner = np.repeat(np.arange(n), lengths)
    keep = np.ones(ids.size, dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (owner[1:] != owner[:-1])
    ids, owner = ids[keep], owner[keep]

    w_succ, w_intent, w_jump = model.mixture
    nonempty = lengths > 0
    ends = np.cumsum(np.bincount(owner, minlength=n))
    first = ids[(ends - np.bincount(owner, minlength=n))[nonempty]]
    last = ids[ends[nonempty] - 1]

    def stay_mass(prev: np.ndarray) -> np.ndarray:
        """(len(prev), K) mixture mass on prev itself, which T(. | z, prev) renormalises away."""
        return w_intent * model.intent_items[:, prev].T + w_jump * model.popularity[prev, None]

    # log P(z) + log p(first | z) + sum over transitions of log T(next | z, prev), per session.
    with np.errstate(divide="ignore"):  # SKUs outside an intent rule that intent out
        log_post = np.log(model.intent_prior) + np.log(model.intent_items[:, first].T)
    step = np.flatnonzero(owner[1:] == owner[:-1])
    prev, nxt = ids[step], ids[step + 1]
    successor = (model.successor_probs[prev] * (model.successor_items[prev] == nxt[:, None])).sum(1)
    mixed = (
        w_succ * successor[:, None]
        + w_intent * model.intent_items[:, nxt].T
        + w_jump * model.popularity[nxt, None]
    )
    row_of_session = np.cumsum(nonempty) - 1
    np.add.at(log_post, row_of_session[owner[step]], np.log(mixed) - np.log1p(-stay_mass(prev)))
    posterior = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)

    # P(next) = sum_z P(z | prefix) T(next | z, last), T renormalised to exclude `last`.
    weight = posterior / (1 - stay_mass(last))
    rows = np.arange(len(last))
    successors = np.zeros((len(last), model.n_products))
    np.add.at(successors, (rows[:, None], model.successor_items[last]), model.successor_probs[last])
    found = weight.sum(axis=1, keepdims=True) * (
        w_succ * successors + w_jump * model.popularity
    ) + w_intent * (weight @ model.intent_items)
    found[rows, last] = 0.0

    probs = np.empty((n, model.n_products))
    probs[nonempty] = found
    probs[~nonempty] = model.intent_prior @ model.intent_items
    return probs


def _top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most probable product ids and their probabilities; ties by product id."""
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(probs, part, axis=1)
    order = np.lexsort((part, -scores), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(scores, order, axis=1)


class BayesOptimal:
    """Ranks the whole catalogue by the generator's exact posterior (the `Recommender` interface).

    `max_cells` bounds the (sessions x catalogue) probability matrix built at once: about 8 bytes
    per cell, so the default keeps one chunk near 32 MB whatever the catalogue size.
    """

    name = CEILING_NAME

    def __init__(self, model: GeneratorModel, max_cells: int = 4_000_000) -> None:
        self.model = model
        self._rows_per_chunk = max(1, max_cells // model.n_products)

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, P(next | prefix)) per session, best first."""
        check_k(k)
        skus = self.model.sku_hashes
        out: list[list[tuple[str, float]]] = []
        for lo in range(0, len(sessions), self._rows_per_chunk):
            chunk = sessions[lo : lo + self._rows_per_chunk]
            ids, scores = _top_k(next_item_probabilities_batch(self.model, chunk), k)
            out.extend(
                list(zip(row_skus, row_scores, strict=True))
                for row_skus, row_scores in zip(skus[ids].tolist(), scores.tolist(), strict=True)
            )
        return out


def ceiling_recommender(model: GeneratorModel) -> BayesOptimal:
    """The ceiling for sessions drawn from `model` (the ingest step's `generator_model`)."""
    return BayesOptimal(model)


def ceiling_for(model_path: Path | None, sessions: Sequence[Sequence[str]]) -> BayesOptimal | None:
    """The ceiling when the sessions come from the saved generator model, else None.

    Real data has no generator; a raw log that also holds events of another generator run (other
    seed or catalogue) has SKUs the model does not know: no exact ceiling exists then either.
    """
    if model_path is None or not Path(model_path).is_file():
        return None
    model = GeneratorModel.load(Path(model_path))
    known = set(model.sku_hashes.tolist())
    if not known.issuperset(chain.from_iterable(sessions)):
        return None
    return BayesOptimal(model)


def ceiling_ratio(
    report: EvaluationReport | Mapping[str, Any], candidate: str = "lstm"
) -> dict[str, float | None]:
    """The candidate's MRR@k and HR@k as shares of the ceiling's (1.0 = as good as possible).

    `report` is an `EvaluationReport` or its `to_dict()` form (e.g. a loaded `report.json`); both
    models must be in it. A ratio is None where either metric is missing or the ceiling's is 0.
    """
    data = report.to_dict() if isinstance(report, EvaluationReport) else report
    try:
        k = int(data["k"])
        models = data["models"]
    except (KeyError, TypeError, ValueError) as error:
        raise CeilingError(
            f"not an evaluation report ({error!r}): pass the evaluate step's report"
        ) from error
    missing = [name for name in (candidate, CEILING_NAME) if name not in models]
    if missing:
        raise CeilingError(
            f"model(s) {missing} are not in the report (it has {sorted(models)}); evaluate "
            "ceiling_recommender(generator_model) alongside the candidate"
        )
    ratios: dict[str, float | None] = {}
    for metric in (f"mrr@{k}", f"hit_rate@{k}"):
        mine = models[candidate]["metrics"].get(metric)
        best = models[CEILING_NAME]["metrics"].get(metric)
        ratios[metric] = None if mine is None or not best else mine / best
    return ratios
