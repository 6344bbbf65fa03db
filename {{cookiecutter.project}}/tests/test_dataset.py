"""The time split: train before the cutoff, test after it, no session in both."""

from __future__ import annotations

import pandas as pd
import pytest

from {{ cookiecutter.project }}.dataset import DatasetError, split_by_time


def sessions(spans: list[tuple[str, str]], tz: str | None = None) -> pd.DataFrame:
    """A training_sessions-shaped frame with one session per (first, last) event time."""
    first = pd.to_datetime([a for a, _ in spans]).tz_localize(tz)
    last = pd.to_datetime([b for _, b in spans]).tz_localize(tz)
    return pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(len(spans))],
            "skus": [["a", "b"]] * len(spans),
            "first_event_at": first,
            "last_event_at": last,
        }
    )


SPANS = [
    ("2026-01-01 08:00", "2026-01-01 08:20"),
    ("2026-01-02 12:00", "2026-01-02 12:30"),
    ("2026-01-03 23:50", "2026-01-04 00:10"),  # spans the cutoff of test_days=2
    ("2026-01-03 23:40", "2026-01-03 23:59"),
    ("2026-01-04 00:00", "2026-01-04 00:05"),
    ("2026-01-05 21:00", "2026-01-05 21:30"),
]


@pytest.mark.parametrize("tz", [None, "UTC"])
def test_split_respects_the_cutoff_and_never_overlaps(tz) -> None:
    frame = sessions(SPANS, tz)
    split = split_by_time(frame, test_days=2)
    assert split.cutoff == pd.Timestamp("2026-01-04", tz=tz)
    assert split.train["session_id"].tolist() == ["s0", "s1", "s3"]
    assert split.test["session_id"].tolist() == ["s4", "s5"]
    assert split.dropped == 1
    assert (split.train["last_event_at"] < split.cutoff).all()
    assert (split.test["first_event_at"] >= split.cutoff).all()
    assert not set(split.train["session_id"]) & set(split.test["session_id"])
    assert len(split.train) + len(split.test) + split.dropped == len(frame)


def test_one_test_day_holds_out_the_newest_day() -> None:
    split = split_by_time(sessions(SPANS), test_days=1)
    assert split.cutoff == pd.Timestamp("2026-01-05")
    assert split.test["session_id"].tolist() == ["s5"]
    assert split.dropped == 0


def test_an_empty_side_is_an_error_that_says_what_to_change() -> None:
    with pytest.raises(DatasetError, match="train split is empty.*TEST_DAYS"):
        split_by_time(sessions(SPANS), test_days=5)
    late_night = sessions([("2026-01-01 08:00", "2026-01-01 09:00"), SPANS[2]])
    with pytest.raises(DatasetError, match="test split is empty"):
        split_by_time(late_night, test_days=1)
    with pytest.raises(DatasetError, match="at least 1"):
        split_by_time(sessions(SPANS), test_days=0)
    with pytest.raises(DatasetError, match="no sessions"):
        split_by_time(sessions(SPANS).iloc[:0], test_days=1)
