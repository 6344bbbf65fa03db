"""What the warehouse backends share: the raw log's tables, its errors and its load protocol.

`raw.events` keeps every loaded row with its load id, load time, tenant and event date; `raw.loads`
has one row per loaded file; `raw.rejects` keeps the rows the converter quarantined (the batch's
`rejects-NNNNN.parquet`, see `ingest.rules`) with their line, reason and raw text. The load id is
the batch's content hash, so loading a file again (even renamed) adds nothing. Each batch, its
rows, its rejects and its load record, commits in one transaction: a load killed half-way leaves
nothing of the batch it was in, and running it again loads exactly what is missing.

The tables and the load protocol (`load_batches`) are written here once, in plain SQL; a backend
(`duckdb_backend`, `snowflake_backend`) supplies only what differs: how a named parameter is
written, the SQL of an event's UTC day, how a batch is made readable by SQL, and its connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ProjectError
from ..schema import EVENT_COLUMNS, REJECTS_SCHEMA, rejects_path

RAW_SCHEMA = "raw"
RAW_TABLES = ("loads", "events", "rejects")  # what raw_tables_sql creates
# Column types of the raw tables, derived from the data contract (see schema.py).
EVENT_TYPES = {column: "varchar" for column in EVENT_COLUMNS} | {
    "server_timestamp_epoch_ms": "bigint"
}
REJECT_TYPES = {
    field.name: "bigint" if pa.types.is_integer(field.type) else "varchar"
    for field in REJECTS_SCHEMA
}
_LOAD_PARAMS = ("load_id", "loaded_at", "tenant")


class WarehouseError(ProjectError, RuntimeError):
    """The warehouse cannot do what was asked; the message says why and what to do."""


class WarehouseLockedError(WarehouseError):
    """Another process holds the DuckDB file."""


class EventsFileError(WarehouseError):
    """An events file that cannot be loaded."""


@dataclass(frozen=True)
class LoadResult:
    path: Path
    load_id: str
    rows: int  # rows in the file
    skipped: bool  # True when this content was loaded before
    rejected: int = 0  # rows of its rejects file (quarantined in raw.rejects)


@dataclass(frozen=True)
class Sources:
    """Where the SQL of a backend reads one batch: a table or a table function, per file."""

    events: str
    rejects: str | None  # None: the batch has no rejects file


class RawLog(Protocol):
    """What a backend supplies to the shared load protocol, on one open connection."""

    schema: str  # the raw log's schema (RAW_SCHEMA, or a pull request's own on Snowflake)
    param: ClassVar[str]  # a named parameter in its SQL, as a format string: "${}", "%({})s"
    event_date: ClassVar[str]  # SQL of the UTC day of server_timestamp_epoch_ms
    file_errors: ClassVar[tuple[type[Exception], ...]]  # what reading a bad events file raises

    def fetch_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        """Execute one statement; its first row, if any."""
        ...

    def staged(
        self, events: Path, rejects: Path | None, load_id: str
    ) -> AbstractContextManager[Sources]:
        """Make one batch readable by SQL for the duration of the block (outside any transaction:
        a backend may need DDL, which would commit it)."""
        ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


def raw_tables_sql(timestamp: str, schema: str = RAW_SCHEMA) -> tuple[str, ...]:
    """The statements that create the raw log's tables in `schema` if missing; `timestamp` is the
    backend's type of a timestamp without time zone."""
    load_columns = (
        f"load_id varchar not null, loaded_at {timestamp} not null, tenant varchar not null"
    )
    return (
        f"create schema if not exists {schema}",
        f"""create table if not exists {schema}.loads (
            load_id varchar primary key,
            loaded_at {timestamp} not null,
            tenant varchar not null,
            source_file varchar not null,
            row_count bigint not null
        )""",
        f"""create table if not exists {schema}.events (
            {load_columns}, event_date date not null, {columns_sql(EVENT_TYPES)}
        )""",
        f"""create table if not exists {schema}.rejects (
            {load_columns}, {columns_sql(REJECT_TYPES, not_null=True)}
        )""",
    )


def columns_sql(types: Mapping[str, str], not_null: bool = False) -> str:
    """Column definitions of a CREATE TABLE: `name type[ not null], ...`."""
    suffix = " not null" if not_null else ""
    return ", ".join(f"{column} {kind}{suffix}" for column, kind in types.items())


def load_batches(
    open_log: Callable[[], AbstractContextManager[RawLog]],
    paths: Iterable[Path],
    tenant: str,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to raw.events (and their rejects to raw.rejects), each file in
    one transaction; `progress` is called after each commit.

    Files whose content was loaded before are skipped. Every file is checked before the warehouse
    is opened (`open_log`: a connection on which the raw tables exist), so a bad file loads nothing.
    """
    paths = list(paths)
    for path in paths:
        check_events_file(path)
    results = []
    with open_log() as log:
        for path in paths:
            results.append(_load_batch(log, path, tenant))
            if progress is not None and not results[-1].skipped:
                progress(results[-1])
    return results


def _load_batch(log: RawLog, path: Path, tenant: str) -> LoadResult:
    load_id = file_load_id(path)
    if (seen := _loaded_rows(log, load_id)) is not None:
        return LoadResult(path, load_id, seen, skipped=True)
    rejects = rejects_path(path)
    with log.staged(path, rejects if rejects.is_file() else None, load_id) as sources:
        log.begin()
        try:
            if (seen := _loaded_rows(log, load_id)) is not None:  # another loader was faster
                log.rollback()
                return LoadResult(path, load_id, seen, skipped=True)
            loaded_at = datetime.now(UTC).replace(tzinfo=None)
            values = {"load_id": load_id, "loaded_at": loaded_at, "tenant": tenant}
            p = {name: log.param.format(name) for name in (*_LOAD_PARAMS, "source_file", "rows")}
            load_values = ", ".join(p[name] for name in _LOAD_PARAMS)
            insert_events = (
                f"insert into {log.schema}.events select {load_values}, {log.event_date}, "
                f"{', '.join(EVENT_COLUMNS)} from {sources.events}"
            )
            try:
                (rows,) = _one(log.fetch_one(insert_events, values))
            except log.file_errors as e:
                raise EventsFileError(
                    f"Cannot load {path}: {e}. Nothing of it was loaded; fix or regenerate it."
                ) from e
            rejected = 0
            if sources.rejects is not None:
                insert_rejects = (
                    f"insert into {log.schema}.rejects select {load_values}, "
                    f"{', '.join(REJECT_TYPES)} from {sources.rejects}"
                )
                (rejected,) = _one(log.fetch_one(insert_rejects, values))
            log.fetch_one(
                f"insert into {log.schema}.loads values "
                f"({load_values}, {p['source_file']}, {p['rows']})",
                values | {"source_file": path.name, "rows": rows},
            )
            log.commit()
        except BaseException:
            log.rollback()
            raise
    return LoadResult(path, load_id, int(rows), skipped=False, rejected=int(rejected))


def _loaded_rows(log: RawLog, load_id: str) -> int | None:
    row = log.fetch_one(
        f"select row_count from {log.schema}.loads where load_id = {log.param.format('load_id')}",
        {"load_id": load_id},
    )
    return int(row[0]) if row else None


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # an insert reports its row count; no backend returns nothing
        raise WarehouseError("The warehouse did not report how many rows an insert added.")
    return row


def raw_log_size(log: RawLog) -> tuple[int, int]:
    """Rows in the raw log and number of loads so far."""
    (rows,) = _one(log.fetch_one(f"select count(*) from {log.schema}.events", {}))
    (loads,) = _one(log.fetch_one(f"select count(*) from {log.schema}.loads", {}))
    return int(rows), int(loads)


def last_load_time(log: RawLog) -> datetime | None:
    """When the newest load committed (None: nothing loaded yet)."""
    (loaded_at,) = _one(log.fetch_one(f"select max(loaded_at) from {log.schema}.loads", {}))
    return loaded_at


def file_load_id(path: Path) -> str:
    """The load id of a batch: the SHA-256 of the file's bytes, then its rejects file's, if any."""
    digest = hashlib.sha256()
    for part in (path, rejects_path(path)):
        if part == path or part.is_file():
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def check_events_file(path: Path) -> None:
    """Raise EventsFileError unless path is a Parquet file with exactly the event columns."""
    try:
        columns = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise EventsFileError(f"Cannot read {path} as a Parquet events file: {e}") from e
    missing = [c for c in EVENT_COLUMNS if c not in columns]
    unexpected = [c for c in columns if c not in EVENT_COLUMNS]
    if missing or unexpected:
        raise EventsFileError(
            f"{path} does not have the events columns: missing {missing or 'none'}, unexpected "
            f"{unexpected or 'none'}. Expected exactly {list(EVENT_COLUMNS)} (Coveo "
            "browsing_train schema)."
        )
    rejects = rejects_path(path)
    if rejects.is_file():
        try:
            names = pq.read_schema(rejects).names
        except (OSError, pa.ArrowException) as e:
            raise EventsFileError(f"Cannot read {rejects} as a Parquet rejects file: {e}") from e
        if names != REJECTS_SCHEMA.names:
            raise EventsFileError(
                f"{rejects} (the rejects of {path.name}) has the columns {names}, not "
                f"{REJECTS_SCHEMA.names}; convert the source file again."
            )


def as_list(value: object) -> list:
    """An array column value as a Python list: DuckDB gives lists or arrays, Snowflake JSON text."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)
