"""The expectation suite on the session table: good data passes, each kind of bad data fails."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import duckdb
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.project }}.pipeline.plots import plot_session_lengths
from {{ cookiecutter.project }}.quality import (
    QualityError,
    QualityInputError,
    QualityReport,
    QualityThresholds,
    assert_quality,
    build_suite,
    check_sessions,
    check_warehouse,
    format_report,
)
from {{ cookiecutter.project }}.settings import Settings

ACTIONS = np.array(["detail", "add", "purchase"], dtype=object)


def good_sessions(n: int = 300, seed: int = 7) -> pd.DataFrame:
    """A small session table shaped like the dbt model `training_sessions`."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.25, n) + 1, 30)
    first = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 28 * 86_400, n), "s")
    durations = lengths * 40
    durations[0] = 0  # all events within one second: first_event_at == last_event_at is fine
    return pd.DataFrame(
        {
            "session_id": [f"s{i:05d}" for i in range(n)],
            "skus": [[f"sku{j}" for j in rng.integers(0, 500, k)] for k in lengths],
            "actions": [list(rng.choice(ACTIONS, k, p=[0.8, 0.15, 0.05])) for k in lengths],
            "session_length": lengths.astype("int64"),
            "first_event_at": first,
            "last_event_at": first + pd.to_timedelta(durations, "s"),
            "session_date": first.date,
        }
    )


def null_id(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[3, "session_id"] = None
    return df


def duplicate_id(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[5, "session_id"] = df.loc[6, "session_id"]
    return df


def too_long(df: pd.DataFrame) -> pd.DataFrame:
    df.at[7, "skus"] = [f"sku{j}" for j in range(61)]
    df.at[7, "actions"] = ["detail"] * 61
    df.loc[7, "session_length"] = 61
    return df


def unknown_action(df: pd.DataFrame) -> pd.DataFrame:
    df.at[9, "actions"] = ["detail"] * (df.loc[9, "session_length"] - 1) + ["remove"]
    return df


def inverted_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[11, ["first_event_at", "last_event_at"]] = df.loc[
        11, ["last_event_at", "first_event_at"]
    ].to_numpy()
    return df


def too_few_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.head(60).copy()


def sku_with_nul(df: pd.DataFrame) -> pd.DataFrame:
    df.at[4, "skus"] = [*df.loc[4, "skus"][:-1], "0badf00d\x00"]
    return df


def huge_sku(df: pd.DataFrame) -> pd.DataFrame:
    df.at[4, "skus"] = [*df.loc[4, "skus"][:-1], "0badf00d" * 125_000]  # a million characters
    return df


def session_id_with_newline(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[2, "session_id"] = "s\n2"
    return df


def long_session_id(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[2, "session_id"] = "s" * 257
    return df


def all_long(df: pd.DataFrame) -> pd.DataFrame:
    df["session_length"] = 12
    return df


BAD_DATA: list[tuple[Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = [
    (null_id, ["session_id not null: 1 row (0.3%) null"]),
    (duplicate_id, ["session_id unique: 2 rows (0.7%) share an id, e.g. 's00006'"]),
    (too_long, ["session_length between 2 and 50: 1 row (0.3%) outside, e.g. 61"]),
    (
        unknown_action,
        [
            "actions only detail, add, purchase: 1 row (0.3%) with other actions, "
            "e.g. 'detail,remove'"
        ],
    ),
    (
        inverted_timestamps,
        ["last_event_at >= first_event_at: 1 row (0.3%) inverted, e.g. (2026-"],
    ),
    (too_few_rows, ["row count at least 100: observed 60"]),
    (sku_with_nul, ["skus without control characters: 1 row (0.3%) with one, e.g. 'sku"]),
    (
        huge_sku,
        [
            "skus 1 to 256 characters (the longest of a session): 1 row (0.3%) outside, "
            "e.g. 1,000,000"
        ],
    ),
    (
        session_id_with_newline,
        ["session_id without control characters: 1 row (0.3%) with one, e.g. 's\\n2'"],
    ),
    (
        long_session_id,
        [f"session_id 1 to 256 characters: 1 row (0.3%) outside, e.g. '{'s' * 40}'..."],
    ),
    (
        all_long,
        [
            "mean session_length between 3 and 8: observed 12",
            "median session_length between 2 and 8: observed 12",
        ],
    ),
]


@pytest.fixture(scope="module")
def good_report() -> QualityReport:
    return check_sessions(good_sessions(), QualityThresholds())


def test_good_table_passes_every_expectation(good_report: QualityReport) -> None:
    assert good_report.success, format_report(good_report)
    assert good_report.failures == ()
    assert len(good_report.results) == len(build_suite(QualityThresholds()).expectations)
    assert good_report.row_count == 300
    assert good_report.runtime_s > 0
    assert_quality(good_report)
    assert format_report(good_report).startswith("Data quality passed: 13/13 expectations met")


def test_report_lists_every_rule_when_asked(good_report: QualityReport) -> None:
    text = format_report(good_report, include_passed=True)
    lines = text.splitlines()[1:]
    assert len(lines) == 13
    assert all(line.startswith("  ok ") for line in lines)
    assert "mean session_length between 3 and 8: observed" in text
    assert "  ok   session_length between 2 and 50" in lines


@pytest.mark.parametrize(("spoil", "expected"), BAD_DATA, ids=[f.__name__ for f, _ in BAD_DATA])
def test_bad_data_fails_exactly_its_expectation(
    spoil: Callable[[pd.DataFrame], pd.DataFrame], expected: list[str]
) -> None:
    report = check_sessions(spoil(good_sessions()), QualityThresholds())

    assert not report.success
    failed = [result.describe() for result in report.failures]
    assert len(failed) == len(expected), failed
    for line, start in zip(failed, expected, strict=True):
        assert line.startswith(start), line

    with pytest.raises(QualityError) as raised:
        assert_quality(report)
    message = str(raised.value)
    assert message.splitlines()[0].startswith(f"Data quality FAILED: {13 - len(expected)}/13")
    assert message.splitlines()[1:] == [f"  FAIL {line}" for line in failed]
    assert "Traceback" not in message
    assert raised.value.report is report


def test_uncheckable_column_is_reported_without_traceback() -> None:
    sessions = good_sessions()
    sessions["session_length"] = sessions["session_length"].astype(str)

    report = check_sessions(sessions, QualityThresholds())

    assert sorted(r.rule for r in report.failures) == [
        "mean session_length between 3 and 8",
        "median session_length between 2 and 8",
        "session_length between 2 and 50",
    ]
    for result in report.failures:
        assert result.error
        assert "could not be checked" in result.describe()
        assert "\n" not in result.error and len(result.error) <= 123
        assert "Traceback" not in result.error


def test_failed_report_pickles() -> None:
    report = check_sessions(unknown_action(too_long(good_sessions())), QualityThresholds())
    restored = pickle.loads(pickle.dumps(report))
    assert restored == report
    assert len(restored.failures) == 2


def test_table_read_from_duckdb_passes() -> None:
    # DuckDB hands list columns to pandas as numpy arrays and dates as timestamps.
    con = duckdb.connect()
    con.register("sessions", good_sessions())
    sessions = con.sql("select * replace (session_date::date as session_date) from sessions").df()
    assert isinstance(sessions["actions"].iloc[0], np.ndarray)

    report = check_sessions(sessions, QualityThresholds())

    assert report.success, format_report(report)


def test_warehouse_table_is_checked_with_the_settings_thresholds(tmp_path) -> None:
    db_path = tmp_path / "warehouse.duckdb"
    sessions = too_long(good_sessions())
    with duckdb.connect(str(db_path)) as con:
        con.register("sessions", sessions)
        con.execute("create table training_sessions as select * from sessions")

    report = check_warehouse(Settings(duckdb_path=db_path, max_session_length=61))

    assert report.success, format_report(report)
    assert report.row_count == len(sessions)
    assert "session_length between 2 and 61" in [r.rule for r in report.results]


def test_missing_actions_count_as_bad_actions() -> None:
    sessions = good_sessions()
    sessions.at[4, "actions"] = None
    report = check_sessions(sessions, QualityThresholds())
    assert [r.rule for r in report.failures] == ["actions only detail, add, purchase"]


def test_thresholds_reach_the_suite() -> None:
    thresholds = QualityThresholds(max_session_length=20, min_rows=10, max_rows=250)
    report = check_sessions(good_sessions(), thresholds)
    assert sorted(r.rule for r in report.failures) == [
        "row count between 10 and 250",
        "session_length between 2 and 20",
    ]
    settings = Settings(max_session_length=35)
    assert QualityThresholds.from_settings(settings).max_session_length == 35


def test_missing_column_is_reported_clearly() -> None:
    with pytest.raises(QualityInputError, match="lacks the columns actions, session_date"):
        check_sessions(good_sessions().drop(columns=["actions", "session_date"]))


def test_inconsistent_thresholds_are_rejected() -> None:
    with pytest.raises(QualityInputError, match="session_length minimum 10 is above its maximum 5"):
        QualityThresholds(min_session_length=10, max_session_length=5)


def test_checks_write_no_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_sessions(good_sessions(), QualityThresholds())
    assert list(tmp_path.iterdir()) == []


def test_session_length_plot_marks_the_thresholds(tmp_path) -> None:
    sessions = too_long(good_sessions())
    figure = plot_session_lengths(sessions, QualityThresholds(max_session_length=40))

    (ax,) = figure.axes
    marked = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert marked == [2, 40]
    assert sum(patch.get_height() for patch in ax.patches) == len(sessions)
    figure.savefig(tmp_path / "lengths.png")
    assert (tmp_path / "lengths.png").stat().st_size > 0
