"""The DuckDB warehouse: the raw log (see `base`) and the training view dbt builds, in one file.

DuckDB reads each batch straight from its Parquet files (`read_parquet`); it allows one writer at a
time, so a file held by another process gives a clear `WarehouseLockedError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pandas as pd

from ..schema import LIST_COLUMNS, TRAINING_COLUMNS
from ..settings import get_settings
from .base import (
    RAW_SCHEMA,
    LoadResult,
    Sources,
    WarehouseError,
    WarehouseLockedError,
    as_list,
    load_batches,
    raw_tables_sql,
)
from .base import last_load_time as _last_load_time
from .base import raw_log_size as _raw_log_size


class _DuckDBLog:
    """The DuckDB side of the shared load protocol (`base.RawLog`)."""

    schema = RAW_SCHEMA
    param: ClassVar[str] = "${}"
    # epoch_ms() gives a timestamp without time zone: its date is the UTC day.
    event_date: ClassVar[str] = "cast(epoch_ms(server_timestamp_epoch_ms) as date)"
    file_errors: ClassVar[tuple[type[Exception], ...]] = (duckdb.Error,)

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def fetch_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        return self.con.execute(sql, dict(params) if params else None).fetchone()

    @contextmanager
    def staged(self, events: Path, rejects: Path | None, load_id: str) -> Iterator[Sources]:
        yield Sources(_read_parquet(events), _read_parquet(rejects) if rejects else None)

    def begin(self) -> None:
        self.con.begin()

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()


def _read_parquet(path: Path) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def connect(db_path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, with clear errors for a locked or missing database."""
    if not read_only:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        config = {"memory_limit": get_settings().duckdb_memory_limit}
        return duckdb.connect(str(db_path), read_only=read_only, config=config)
    except duckdb.IOException as e:
        message = str(e)
        if "Could not set lock" in message:
            holder = re.search(r"held in (.+?) \(PID (\d+)\)", message)
            who = f"process {holder[2]} ({holder[1]})" if holder else "another process"
            raise WarehouseLockedError(
                f"The DuckDB file {db_path} is in use by {who}; DuckDB allows one writer. Stop "
                "that process (e.g. a running flow, dbt or notebook), or set DUCKDB_PATH to "
                "another file."
            ) from e
        if "database does not exist" in message:
            raise WarehouseError(
                f"There is no DuckDB warehouse at {db_path}: load events first (or set "
                "DUCKDB_PATH to the warehouse file)."
            ) from e
        raise


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw log tables if they are missing."""
    for statement in raw_tables_sql(timestamp="timestamp"):
        con.execute(statement)


def load_files(
    paths: Iterable[Path],
    db_path: Path,
    tenant: str,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to the raw log in `db_path` (see `base.load_batches`)."""
    return load_batches(partial(_open_log, db_path), paths, tenant, progress)


@contextmanager
def _open_log(db_path: Path) -> Iterator[_DuckDBLog]:
    with connect(db_path) as con:
        ensure_schema(con)
        yield _DuckDBLog(con)


def read_training_sessions(db_path: Path, relation: str = "training_sessions") -> pd.DataFrame:
    """The ML view built by dbt (one row per session), oldest first; sku/action lists as lists."""
    columns = ", ".join(TRAINING_COLUMNS)
    with connect(db_path, read_only=True) as con:
        try:
            frame = con.execute(
                f"select {columns} from {relation} order by first_event_at, session_id"
            ).df()
        except (duckdb.CatalogException, duckdb.BinderException) as e:
            raise WarehouseError(
                f"{db_path} has no usable {relation} ({e}). Build the dbt models first "
                "(dbt build), with the same DUCKDB_PATH."
            ) from e
    for column in LIST_COLUMNS:
        frame[column] = frame[column].map(as_list)
    return frame


def check_connection(db_path: Path) -> None:
    """Fail early, with the warehouse's own message, if the file cannot be opened for writing."""
    with connect(db_path) as con:
        ensure_schema(con)


def last_load_time(db_path: Path) -> datetime | None:
    """When the newest load committed (None: nothing loaded yet)."""
    with connect(db_path) as con:
        ensure_schema(con)
        return _last_load_time(_DuckDBLog(con))


def raw_log_size(db_path: Path) -> tuple[int, int]:
    """Rows in the raw log and number of loads so far."""
    with connect(db_path) as con:
        ensure_schema(con)
        return _raw_log_size(_DuckDBLog(con))


def describe_rejects(db_path: Path, examples: int = 3, reasons: int = 20) -> str:
    """The rows quarantined in raw.rejects: a count per reason, with `file:line: line` examples."""
    with connect(db_path, read_only=True) as con:
        try:
            total = con.execute("select count(*) from raw.rejects").fetchone()[0]
            groups = con.execute(
                """
                select reason, count(*) as n,
                    list(source_file || ':' || line_number || ': ' || raw_line
                         order by loaded_at, line_number)[1:$examples]
                from raw.rejects
                group by reason
                order by n desc, reason
                limit $reasons
                """,
                {"examples": examples, "reasons": reasons},
            ).fetchall()
        except duckdb.CatalogException:
            total, groups = 0, []
    lines = [f"{total:,} row(s) quarantined in raw.rejects of {db_path}"]
    for reason, n, shown in groups:
        lines.append(f"  {n:,} x {reason}")
        lines.extend(f"      {example[:160]}" for example in shown)
    return "\n".join(lines)
