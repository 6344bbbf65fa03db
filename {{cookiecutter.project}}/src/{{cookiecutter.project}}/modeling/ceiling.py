"""The known ceiling: the Bayes-optimal next-item ranking of the synthetic generator.

The generator keeps its probabilities (`GeneratorModel`), so the best achievable ranking of a
prefix is by the exact posterior P(next | prefix) of `synthetic.next_item_probabilities`. Scored by
the same evaluation as the LSTM, it says how much of the learnable signal a model has found: a model
at 0.9 of the ceiling's MRR@20 is close to the best possible, whatever the raw figure. Real data has
no generator model and so no ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.protocol import EvaluationError, check_k
from ..evaluation.report import EvaluationReport
from ..ingest import synthetic
from ..ingest.synthetic import GeneratorError, GeneratorModel

CEILING_NAME = "ceiling"
LAST_ITEM_NAME = "ceiling_last_item"


class CeilingError(EvaluationError):
    """The ceiling cannot be computed for this input; the message says what to change."""


def next_item_probabilities_batch(
    model: GeneratorModel, sessions: Sequence[Sequence[str]]
) -> np.ndarray:
    """`synthetic.next_item_probabilities_batch`, with a hint when a SKU is not the generator's."""
    try:
        return synthetic.next_item_probabilities_batch(model, sessions)
    except GeneratorError as error:
        raise CeilingError(
            f"{error} The ceiling exists only for sessions drawn from that generator model; "
            "leave it out of the evaluation for real (Coveo) data."
        ) from error


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


class LastItemPosterior(BayesOptimal):
    """The generator's exact ranking given only each session's last item (read as a first item).

    About the best a first-order model such as the Markov baseline can reach: the ceiling's lead
    over it is what reading the whole session can add, so it bounds a session model's lift.
    """

    name = LAST_ITEM_NAME

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        return super().recommend([list(session[-1:]) for session in sessions], k)


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
