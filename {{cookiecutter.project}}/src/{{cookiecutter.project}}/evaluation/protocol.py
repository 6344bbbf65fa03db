"""What every model offers the evaluation, and the checks of its inputs.

The LSTM (modeling.lstm and modeling.export), the baselines, the ceiling and the champion all
follow `Recommender`; `Sessions` is how sessions come in (the time split's frames or SKU lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from ..errors import ProjectError

Sessions = pd.DataFrame | Sequence[Sequence[str]]
"""Sessions as a frame with a `skus` column (the time split) or as plain SKU sequences."""


class EvaluationError(ProjectError, ValueError):
    """Input that cannot be evaluated; the message says what to change."""


class Recommender(Protocol):
    """What every model offers the evaluation (the LSTM, the baselines, the ceiling)."""

    name: str

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, score) pairs, best first, for each session (SKUs in time order)."""
        ...


class NotFittedError(ProjectError, RuntimeError):
    """`recommend` was called before `fit` (a baseline or V-SKNN)."""


def not_fitted(model: str) -> NotFittedError:
    return NotFittedError(f"{model} is not fitted: call fit(train_sessions) before recommend()")


def check_k(k: int) -> None:
    """Reject a cut-off that would make every metric meaningless."""
    if k < 1:
        raise EvaluationError(f"k must be at least 1, got {k}")


def as_session_lists(sessions: Sessions) -> Sequence[Sequence[str]]:
    """The SKU sequences of `sessions` (the `skus` column of a frame, or the sequences as given)."""
    if isinstance(sessions, pd.DataFrame):
        if "skus" not in sessions.columns:
            raise EvaluationError(
                f"sessions frame has no 'skus' column (columns: {list(sessions.columns)}); "
                "pass the time split's train/test frames or a list of SKU lists"
            )
        sessions = sessions["skus"].tolist()
    if any(isinstance(session, str) for session in sessions):
        raise EvaluationError(
            "a session is a string, not a list of SKUs; parse JSON array columns "
            "(Snowflake returns arrays as JSON text) before evaluating"
        )
    return sessions
