"""Train/test split by time: train on older sessions, test on the newest days, never both."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .errors import ProjectError
from .settings import Settings
from .warehouse import read_warehouse_sessions


class DatasetError(ProjectError, ValueError):
    """The sessions cannot be split as asked; the message says what to change."""


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame  # sessions that ended before the cutoff
    test: pd.DataFrame  # sessions that started at or after the cutoff
    cutoff: pd.Timestamp  # midnight starting the first test day
    dropped: int  # sessions spanning the cutoff, in neither split


def split_by_time(sessions: pd.DataFrame, test_days: int) -> Split:
    """Hold out the newest `test_days` calendar days (by first_event_at / last_event_at).

    The cutoff is midnight `test_days` days before the day after the newest session ends; sessions
    that span it are dropped so that no session (or part of one) is in both splits.
    """
    if test_days < 1:
        raise DatasetError(f"test_days must be at least 1, got {test_days}.")
    if sessions.empty:
        raise DatasetError("There are no sessions to split: load events and build the models.")
    newest = pd.Timestamp(sessions["last_event_at"].max())
    cutoff = newest.normalize() + pd.Timedelta(days=1 - test_days)
    in_train = sessions["last_event_at"] < cutoff
    in_test = sessions["first_event_at"] >= cutoff
    for name, mask in (("train", in_train), ("test", in_test)):
        if not mask.any():
            raise DatasetError(
                f"The {name} split is empty with test_days={test_days} (cutoff {cutoff}, sessions "
                f"from {sessions['first_event_at'].min()} to {newest}). Generate or load more days "
                "of events, or use a smaller TEST_DAYS."
            )
    return Split(
        train=sessions[in_train].reset_index(drop=True),
        test=sessions[in_test].reset_index(drop=True),
        cutoff=cutoff,
        dropped=int((~in_train & ~in_test).sum()),
    )


def load_split(settings: Settings, test_days: int) -> Split:
    """Read the training sessions from the warehouse and split them by time."""
    return split_by_time(read_warehouse_sessions(settings), test_days)
