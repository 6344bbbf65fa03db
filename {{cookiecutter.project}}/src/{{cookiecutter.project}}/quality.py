"""Data quality of the session table (dbt model `training_sessions`) with great-expectations.

The expectation suite is built once (`build_suite`) and knows nothing about where the data lives:
here it runs on a pandas DataFrame read from the configured warehouse (GX's SQL engine fails on
DuckDB through duckdb-engine; on Snowflake it would need snowflake-sqlalchemy, not a dependency, and
the derived `action_set` column as a SQL expression). Results are turned into plain
dataclasses (`QualityReport`) so that they pickle as a Metaflow artifact and render in a card.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

# GX must not phone home: older 1.x releases read this variable when they are imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.core import (  # noqa: E402
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from .errors import ProjectError
from .schema import (
    CONTROL_CHARACTER,
    LIST_COLUMNS,
    MAX_IDENTIFIER_CHARS,
    MAX_SESSION_LENGTH,
    MIN_SESSION_LENGTH,
    TRAINING_COLUMNS,
)
from .warehouse import read_warehouse_sessions

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext

    from .settings import Settings

# Derived column: the session's distinct actions, sorted and comma-joined ("add,detail").
# On Snowflake: array_to_string(array_sort(array_distinct(actions)), ',').
ACTION_SET = "action_set"
# Derived columns of the SKU list, for the id rules of the loader: the length of the session's
# longest SKU, and its SKUs run together (a control character in one is a control character here).
LONGEST_SKU = "longest_sku"
SKUS_TEXT = "skus_text"
# Examples of bad values shown per failed expectation (each cut to MAX_EXAMPLE_CHARS), and the
# longest GX error message kept.
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 40
MAX_ERROR_CHARS = 120


class QualityInputError(ProjectError, ValueError):
    """The session table or the thresholds cannot be checked as given."""


@dataclass(frozen=True)
class QualityThresholds:
    """What a healthy session table looks like; the defaults fit the synthetic data."""

    min_session_length: int = MIN_SESSION_LENGTH
    max_session_length: int = MAX_SESSION_LENGTH
    min_mean_length: float = 3.0
    max_mean_length: float = 8.0
    min_median_length: float = 2.0
    max_median_length: float = 8.0
    min_rows: int = 100
    max_rows: int | None = None
    allowed_actions: tuple[str, ...] = ("detail", "add", "purchase")

    def __post_init__(self) -> None:
        ranges = {
            "session_length": (self.min_session_length, self.max_session_length),
            "mean length": (self.min_mean_length, self.max_mean_length),
            "median length": (self.min_median_length, self.max_median_length),
            "rows": (self.min_rows, self.max_rows),
        }
        for name, (low, high) in ranges.items():
            if high is not None and low > high:
                raise QualityInputError(
                    f"Quality thresholds: {name} minimum {low} is above its maximum {high}; "
                    "fix the values passed to QualityThresholds."
                )
        if not self.allowed_actions:
            raise QualityInputError(
                "Quality thresholds: allowed_actions is empty; list at least one."
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityThresholds:
        """Thresholds matching the project settings (the longest session kept for training)."""
        return cls(
            max_session_length=settings.max_session_length,
            min_rows=settings.quality_min_rows,
            min_mean_length=settings.quality_min_mean_length,
            max_mean_length=settings.quality_max_mean_length,
        )


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's outcome, as plain data."""

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_be_between"
    column: str | None  # checked column(s); None for table-level checks
    rule: str  # readable rule, e.g. "session_length between 2 and 50"
    success: bool
    observed_value: float | None = None  # aggregate checks: the measured value
    unexpected_count: int | None = None  # row checks: rows breaking the rule
    unexpected_percent: float | None = None
    unexpected_examples: tuple[str, ...] = ()
    unexpected_label: str = "failing"  # how the bad rows are described: "outside", "null", ...
    error: str | None = None  # GX could not evaluate the expectation

    def describe(self) -> str:
        """One line: the rule, and by how much it failed (or what was observed)."""
        if self.error is not None:
            return f"{self.rule}: could not be checked ({self.error})"
        if self.unexpected_count is not None:
            if not self.unexpected_count:
                return self.rule
            rows = "row" if self.unexpected_count == 1 else "rows"
            text = (
                f"{self.rule}: {self.unexpected_count:,} {rows} "
                f"({_percent(self.unexpected_percent or 0.0)}) {self.unexpected_label}"
            )
            if self.unexpected_examples:
                text += ", e.g. " + ", ".join(self.unexpected_examples)
            return text
        return f"{self.rule}: observed {_number(self.observed_value)}"


@dataclass(frozen=True)
class QualityReport:
    """The suite's outcome on one session table: picklable, for artifacts, cards and the CLI."""

    results: tuple[ExpectationResult, ...]
    success: bool
    row_count: int
    runtime_s: float

    @property
    def failures(self) -> tuple[ExpectationResult, ...]:
        return tuple(result for result in self.results if not result.success)


class QualityError(ProjectError):
    """The session table broke one or more expectations."""

    def __init__(self, report: QualityReport) -> None:
        super().__init__(format_report(report))
        self.report = report


def build_suite(
    thresholds: QualityThresholds, name: str = "training_sessions"
) -> gx.ExpectationSuite:
    """The expectation suite of the session table, independent of any data source.

    It reads the scalar columns of the table plus the derived `action_set` column (see
    `validation_frame`); each expectation carries its readable rule as `description` and, for row
    checks, the word for its bad rows in `meta["unexpected"]`.
    """
    t = thresholds
    # GX checks scalar columns only, so the list column `actions` is checked through `action_set`
    # (one short string per session, see `validation_frame`): it must be one of the combinations
    # of allowed actions. The allowed set stays in the suite, not in the derivation, and a set
    # lookup is a hash lookup in pandas (a regex is a Python call per row) and an IN list in SQL.
    allowed = sorted(t.allowed_actions)
    action_sets = [
        ",".join(combination)
        for size in range(1, len(allowed) + 1)
        for combination in combinations(allowed, size)
    ]
    rows = (
        f"row count between {t.min_rows:,} and {t.max_rows:,}"
        if t.max_rows is not None
        else f"row count at least {t.min_rows:,}"
    )
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=t.min_rows, max_value=t.max_rows, description=rows
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="session_id", description="session_id not null", meta={"unexpected": "null"}
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="session_id",
            description="session_id unique",
            meta={"unexpected": "share an id"},
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="session_id",
            min_value=1,
            max_value=MAX_IDENTIFIER_CHARS,
            description=f"session_id 1 to {MAX_IDENTIFIER_CHARS} characters",
            meta={"unexpected": "outside"},
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="session_id",
            regex=CONTROL_CHARACTER,
            description="session_id without control characters",
            meta={"unexpected": "with one"},
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=LONGEST_SKU,
            min_value=1,
            max_value=MAX_IDENTIFIER_CHARS,
            description=f"skus 1 to {MAX_IDENTIFIER_CHARS} characters (the longest of a session)",
            meta={"unexpected": "outside"},
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=SKUS_TEXT,
            regex=CONTROL_CHARACTER,
            description="skus without control characters",
            meta={"unexpected": "with one"},
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="session_length",
            min_value=t.min_session_length,
            max_value=t.max_session_length,
            description=(
                f"session_length between {t.min_session_length} and {t.max_session_length}"
            ),
            meta={"unexpected": "outside"},
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column="session_length",
            min_value=t.min_mean_length,
            max_value=t.max_mean_length,
            description=(
                f"mean session_length between {_number(t.min_mean_length)} "
                f"and {_number(t.max_mean_length)}"
            ),
        ),
        gxe.ExpectColumnMedianToBeBetween(
            column="session_length",
            min_value=t.min_median_length,
            max_value=t.max_median_length,
            description=(
                f"median session_length between {_number(t.min_median_length)} "
                f"and {_number(t.max_median_length)}"
            ),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=ACTION_SET,
            value_set=action_sets,
            description=f"actions only {', '.join(t.allowed_actions)}",
            meta={"unexpected": "with other actions"},
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="last_event_at",
            column_B="first_event_at",
            or_equal=True,
            # Rule text in GX's column order, so that examples read (last_event_at, first_event_at).
            description="last_event_at >= first_event_at",
            meta={"unexpected": "inverted"},
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="session_date", description="session_date not null", meta={"unexpected": "null"}
        ),
    ]
    return gx.ExpectationSuite(name=name, expectations=expectations)


def validation_frame(sessions: pd.DataFrame) -> pd.DataFrame:
    """The session table as the suite reads it: scalar columns plus the derived `action_set`.

    The list columns stay out of the GX batch: GX never needs them and object columns of lists
    only slow it down.
    """
    missing = [column for column in TRAINING_COLUMNS if column not in sessions.columns]
    if missing:
        raise QualityInputError(
            f"The session table lacks the columns {', '.join(missing)}; it should be the dbt model "
            f"training_sessions with columns {', '.join(TRAINING_COLUMNS)} (run `dbt build` first)."
        )
    # Built as one new frame: GX copies the batch per metric, and copying a frame whose blocks
    # are not consolidated merges them again each time.
    columns = {
        column: sessions[column] for column in TRAINING_COLUMNS if column not in LIST_COLUMNS
    }
    columns[ACTION_SET] = [_action_set(actions) for actions in sessions["actions"]]
    skus = [list(map(str, s)) if pd.api.types.is_list_like(s) else [] for s in sessions["skus"]]
    columns[LONGEST_SKU] = [max(map(len, s), default=0) for s in skus]
    columns[SKUS_TEXT] = ["".join(s) for s in skus]
    return pd.DataFrame(columns, index=sessions.index)


def check_sessions(
    sessions: pd.DataFrame, thresholds: QualityThresholds | None = None
) -> QualityReport:
    """Run the suite on a session table held in pandas and summarise the outcome."""
    started = time.perf_counter()
    frame = validation_frame(sessions)
    context = quiet_context()
    asset = context.data_sources.add_pandas("sessions").add_dataframe_asset("training_sessions")
    result = run_suite(
        context,
        asset.add_batch_definition_whole_dataframe("whole_table"),
        build_suite(thresholds or QualityThresholds()),
        batch_parameters={"dataframe": frame},
    )
    return report_from_validation(result, runtime_s=time.perf_counter() - started)


def check_warehouse(settings: Settings) -> QualityReport:
    """Run the suite on the dbt model `training_sessions` in the configured warehouse."""
    return check_sessions(
        read_warehouse_sessions(settings), QualityThresholds.from_settings(settings)
    )


def quiet_context() -> AbstractDataContext:
    """An in-memory GX context: no files, no analytics, no progress bars."""
    return gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )


def run_suite(
    context: AbstractDataContext,
    batch_definition: BatchDefinition,
    suite: gx.ExpectationSuite,
    batch_parameters: dict[str, Any] | None = None,
) -> ExpectationSuiteValidationResult:
    """Validate one batch of any data source (pandas here, Snowflake through SQLAlchemy later).

    A validation definition loads the batch once; `Batch.validate` would load (and, for pandas,
    hash) the whole DataFrame a second time.
    """
    definition = gx.ValidationDefinition(
        name=suite.name, data=batch_definition, suite=context.suites.add(suite)
    )
    return context.validation_definitions.add(definition).run(
        batch_parameters=batch_parameters, result_format="BASIC"
    )


def report_from_validation(
    result: ExpectationSuiteValidationResult, runtime_s: float
) -> QualityReport:
    """Plain data from a GX validation result of `build_suite`'s suite, whatever the source."""
    results = tuple(_expectation_result(outcome) for outcome in result.results)
    row_count = next(
        (
            int(r.observed_value)
            for r in results
            if r.expectation == "expect_table_row_count_to_be_between"
            and r.observed_value is not None
        ),
        0,
    )
    return QualityReport(
        results=results,
        success=bool(result.success),
        row_count=row_count,
        runtime_s=round(runtime_s, 3),
    )


def assert_quality(report: QualityReport) -> None:
    """Raise `QualityError` (its message lists the failures) unless every expectation passed."""
    if not report.success:
        raise QualityError(report)


def format_report(report: QualityReport, *, include_passed: bool = False) -> str:
    """A short readable report: a summary line, then one line per failed (or every) expectation."""
    passed = len(report.results) - len(report.failures)
    verdict = "passed" if report.success else "FAILED"
    lines = [
        f"Data quality {verdict}: {passed}/{len(report.results)} expectations met on "
        f"{report.row_count:,} sessions ({report.runtime_s:.1f} s)"
    ]
    for result in report.results:
        if include_passed or not result.success:
            mark = "ok  " if result.success else "FAIL"
            lines.append(f"  {mark} {result.describe()}")
    return "\n".join(lines)


def _action_set(actions: Iterable[Any] | None) -> str:
    # A missing list becomes "" so that the set check flags it (GX skips null values).
    if not pd.api.types.is_list_like(actions):
        return ""
    return ",".join(sorted(map(str, set(actions))))


def _expectation_result(outcome: ExpectationValidationResult) -> ExpectationResult:
    config = outcome.expectation_config
    kwargs = config.kwargs
    details = outcome.result or {}
    columns = [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]
    observed = details.get("observed_value")
    count = details.get("unexpected_count")
    percent = details.get("unexpected_percent")
    return ExpectationResult(
        expectation=config.type,
        column=", ".join(columns) or None,
        rule=config.description or config.type,
        success=bool(outcome.success),
        observed_value=float(observed) if isinstance(observed, int | float | np.number) else None,
        unexpected_count=int(count) if count is not None else None,
        unexpected_percent=float(percent) if percent is not None else None,
        unexpected_examples=_examples(details.get("partial_unexpected_list") or []),
        unexpected_label=(config.meta or {}).get("unexpected", "failing"),
        error=_error_message(outcome.exception_info),
    )


def _error_message(info: dict[str, Any] | None) -> str | None:
    """GX's first error message, one shortened line; its tracebacks stay out of the report."""
    if not info:
        return None
    # GX reports one exception flat, or several keyed by the metric that raised them.
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "unknown error").splitlines()[0]
            return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "..."
    return None


def _examples(values: Iterable[Any]) -> tuple[str, ...]:
    """A few distinct bad values as text; nulls say nothing, so they are left out."""
    texts: list[str] = []
    for value in values:
        text = _value_text(value)
        if text is not None and text not in texts:
            texts.append(text)
        if len(texts) == MAX_EXAMPLES:
            break
    return tuple(texts)


def _value_text(value: Any) -> str | None:
    if isinstance(value, tuple):  # column pairs: (column_A, column_B)
        parts = [_value_text(part) for part in value]
        return "(" + ", ".join(part or "null" for part in parts) + ")"
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, np.datetime64 | pd.Timestamp):
        return str(pd.Timestamp(value))
    if isinstance(value, str):  # a bad id may be megabytes long
        return repr(value[:MAX_EXAMPLE_CHARS]) + ("..." if len(value) > MAX_EXAMPLE_CHARS else "")
    return _number(value) if isinstance(value, int | float | np.number) else str(value)


def _number(value: float | None) -> str:
    """Whole numbers without decimals, others with three significant digits."""
    if value is None:
        return "n/a"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3g}"


def _percent(value: float) -> str:
    """A percentage that stays informative for a handful of rows among millions."""
    return f"{value:.1f}%" if value >= 0.1 else f"{value:.1g}%"
