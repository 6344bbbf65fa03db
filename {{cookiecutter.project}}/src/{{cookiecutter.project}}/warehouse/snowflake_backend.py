"""The Snowflake warehouse: the same append-only raw log and training view as the DuckDB one.

`raw.events`, `raw.loads` and `raw.rejects` are those of `base` (the DuckDB ones too), in
SNOWFLAKE_RAW_SCHEMA (`raw`; a pull request's own, see `clone_raw`). A batch is loaded the way
Snowflake loads fast: PUT into the table stage of a per-file staging table, COPY INTO it (Parquet,
columns matched by name), then one transaction appends its rows with the load columns to
`raw.events` (its quarantined rows, if any, to `raw.rejects`) and records the load in
`raw.loads`. The load id is the batch's content hash, so a batch loaded before is skipped.
`write_pandas` and `executemany` would send rows through the client; PUT + COPY is Snowflake's bulk
path (and the one the fakesnow emulator supports). Memory holds no more than the client's upload
buffer, whatever the file size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..schema import LIST_COLUMNS, TRAINING_COLUMNS
from ..settings import Settings
from .base import (
    EVENT_TYPES,
    RAW_SCHEMA,
    RAW_TABLES,
    REJECT_TYPES,
    EventsFileError,
    LoadResult,
    Sources,
    WarehouseError,
    as_list,
    columns_sql,
    load_batches,
    raw_tables_sql,
)
from .base import last_load_time as _last_load_time
from .base import raw_log_size as _raw_log_size

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

# snowflake.connector takes seconds to import: it is imported where a connection is made or its
# errors are caught, so that importing the warehouse package costs a DuckDB project nothing.

# Settings every Snowflake connection and the dbt profile need, as (attribute, variable).
REQUIRED_SETTINGS = tuple(
    (f"snowflake_{name}", f"SNOWFLAKE_{name.upper()}")
    for name in ("account", "user", "password", "role", "warehouse", "database", "schema")
)


# A pull request's schemas (pr_<N> for the models, pr_<N>_raw for the raw log): the only ones
# `clone_raw` and `drop_pr_schemas` replace or drop.
PR_SCHEMA = re.compile(r"pr_\w+", re.IGNORECASE | re.ASCII)


class SnowflakeError(WarehouseError):
    """Snowflake cannot be reached or used as configured; the message names the settings."""


def require_settings(settings: Settings, needed_by: str = "WAREHOUSE=snowflake") -> None:
    """Raise SnowflakeError naming every needed SNOWFLAKE_* variable that is unset."""
    missing = [variable for name, variable in REQUIRED_SETTINGS if not getattr(settings, name)]
    if missing:
        raise SnowflakeError(
            f"{needed_by} needs {', '.join(missing)}: set them in .env or the environment (see "
            ".env.example), or use WAREHOUSE=duckdb."
        )


def connect(settings: Settings) -> SnowflakeConnection:
    """A connection to the configured database; fails within SNOWFLAKE_TIMEOUT_S, in one line."""
    require_settings(settings)
    assert settings.snowflake_password is not None  # checked above; narrows the type
    options: dict[str, object] = {
        "account": settings.snowflake_account,
        "user": settings.snowflake_user,
        "password": settings.snowflake_password.get_secret_value(),
        "role": settings.snowflake_role,
        "warehouse": settings.snowflake_warehouse,
        "database": settings.snowflake_database,
        "login_timeout": settings.snowflake_timeout_s,
        # Per HTTP request: without it a server that accepts but never answers holds a login 60 s.
        # Reset after the login (below); network_timeout stays unset, as it would cut long queries.
        "socket_timeout": settings.snowflake_timeout_s,
        "client_session_keep_alive": False,
    }
    if settings.snowflake_host:  # an emulator; the real service derives the host from the account
        options |= {
            "host": settings.snowflake_host,
            "port": settings.snowflake_port,
            "protocol": settings.snowflake_protocol,
        }
    import snowflake.connector
    from snowflake.connector.errors import Error as ConnectorError

    try:
        con = snowflake.connector.connect(**options)
    except ConnectorError as e:
        where = (
            f"{settings.snowflake_protocol}://{settings.snowflake_host}:{settings.snowflake_port}"
            if settings.snowflake_host
            else f"account {settings.snowflake_account!r}"
        )
        raise SnowflakeError(
            f"Cannot log in to Snowflake at {where} as {settings.snowflake_user!r}: "
            f"{_first_line(e)}. Check SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER, SNOWFLAKE_PASSWORD and "
            "SNOWFLAKE_ROLE (and SNOWFLAKE_HOST, SNOWFLAKE_PORT, SNOWFLAKE_PROTOCOL, which only an "
            f"emulator needs); SNOWFLAKE_TIMEOUT_S ({settings.snowflake_timeout_s} s) bounds the "
            "wait."
        ) from e
    # Snowflake may hold a query request ~45 s before answering "still running": queries get the
    # connector's default socket timeout (the connector has no public setter for it).
    con._socket_timeout = None
    return con


@contextmanager
def cursor(settings: Settings) -> Iterator[SnowflakeCursor]:
    """A cursor on a fresh connection, both closed afterwards."""
    with connect(settings) as con, con.cursor() as cur:
        yield cur


def ensure_schema(cur: SnowflakeCursor, schema: str = RAW_SCHEMA) -> None:
    """Create the raw log tables in `schema` if they are missing (the role needs CREATE SCHEMA)."""
    from snowflake.connector.errors import ProgrammingError

    try:
        # timestamp_ntz spelled out: plain `timestamp` follows the account's TIMESTAMP_TYPE_MAPPING.
        for statement in raw_tables_sql(timestamp="timestamp_ntz", schema=schema):
            cur.execute(statement)
    except ProgrammingError as e:
        raise SnowflakeError(
            f"Cannot create the raw log tables in SNOWFLAKE_DATABASE: {_first_line(e)}. Grant "
            "the role USAGE and CREATE SCHEMA on the database (see the README, Snowflake)."
        ) from e


class _SnowflakeLog:
    """The Snowflake side of the shared load protocol (`base.RawLog`).

    A batch is staged the way Snowflake loads fast: PUT into the table stage of a staging table of
    its own, then COPY INTO it (Parquet, columns matched by name). Own staging tables: loaders
    running at once never share rows, and their DDL stays out of the transaction (a DDL statement
    would commit it in Snowflake).
    """

    param: ClassVar[str] = "%({})s"
    # The UTC day, as in DuckDB: to_timestamp_ntz of epoch milliseconds is in UTC.
    event_date: ClassVar[str] = "to_date(to_timestamp_ntz(server_timestamp_epoch_ms, 3))"
    file_errors: ClassVar[tuple[type[Exception], ...]] = ()  # `_stage` reports a bad file

    def __init__(self, cur: SnowflakeCursor, schema: str) -> None:
        self.cur = cur
        self.schema = schema

    def fetch_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        return self.cur.execute(sql, dict(params) if params else None).fetchone()

    @contextmanager
    def staged(self, events: Path, rejects: Path | None, load_id: str) -> Iterator[Sources]:
        staged = {events: f"{self.schema}.load_{load_id[:16]}"}
        if rejects is not None:
            staged[rejects] = f"{self.schema}.load_{load_id[:16]}_rejects"
        try:
            _stage(self.cur, events, staged[events], EVENT_TYPES)
            if rejects is not None:
                _stage(self.cur, rejects, staged[rejects], REJECT_TYPES)
            yield Sources(staged[events], staged.get(rejects) if rejects else None)
        finally:
            for table in staged.values():
                self.cur.execute(f"drop table if exists {table}")

    def begin(self) -> None:
        self.cur.execute("begin")

    def commit(self) -> None:
        self.cur.execute("commit")

    def rollback(self) -> None:
        self.cur.execute("rollback")


def load_files(
    paths: Iterable[Path],
    settings: Settings,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to the raw log in SNOWFLAKE_DATABASE.SNOWFLAKE_RAW_SCHEMA (see
    `base.load_batches`)."""
    return load_batches(partial(_open_log, settings), paths, settings.tenant, progress)


@contextmanager
def _open_log(settings: Settings) -> Iterator[_SnowflakeLog]:
    with cursor(settings) as cur:
        ensure_schema(cur, settings.snowflake_raw_schema)
        yield _SnowflakeLog(cur, settings.snowflake_raw_schema)


def _stage(cur: SnowflakeCursor, path: Path, table: str, types: Mapping[str, str]) -> None:
    """Bulk-load one Parquet file into a new staging table through the table's own stage."""
    from snowflake.connector.errors import ProgrammingError

    cur.execute(f"create or replace transient table {table} ({columns_sql(types)})")
    schema, name = table.split(".")
    uri = "file://" + path.resolve().as_posix().replace("'", "\\'")
    try:
        cur.execute(f"put '{uri}' @{schema}.%{name} auto_compress=false overwrite=true")
        cur.execute(
            f"copy into {table} from @{schema}.%{name} file_format=(type=parquet) "
            "match_by_column_name=case_insensitive force=true purge=true"
        )
    except ProgrammingError as e:
        raise EventsFileError(
            f"Cannot load {path} into Snowflake: {_first_line(e)}. Nothing of it was loaded; "
            "fix or regenerate it."
        ) from e


def read_training_sessions(settings: Settings, relation: str = "training_sessions") -> pd.DataFrame:
    """The ML view built by dbt in SNOWFLAKE_SCHEMA, oldest first, typed as the DuckDB path's."""
    from snowflake.connector.errors import ProgrammingError

    columns = ", ".join(TRAINING_COLUMNS)
    table = f"{settings.snowflake_database}.{settings.snowflake_schema}.{relation}"
    with cursor(settings) as cur:
        try:
            cur.execute(f"select {columns} from {table} order by first_event_at, session_id")
        except ProgrammingError as e:
            raise SnowflakeError(
                f"Snowflake has no usable {table} ({_first_line(e)}). Build the dbt models first "
                "(make dbt, with DBT_TARGET=snowflake and the same SNOWFLAKE_DATABASE/SCHEMA)."
            ) from e
        # Arrow batches: far faster than rows of Python objects for millions of sessions.
        frame = cur.fetch_pandas_all().rename(columns=str.lower)
    frame = frame.reindex(columns=list(TRAINING_COLUMNS))  # an empty result may lack columns
    for column in LIST_COLUMNS:  # VARIANT arrays arrive as JSON text
        frame[column] = frame[column].map(as_list)
    # NUMBER may arrive as a narrow integer and DATE as datetime.date: give DuckDB's dtypes.
    frame["session_length"] = frame["session_length"].astype("int64")
    for column in ("first_event_at", "last_event_at", "session_date"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    return frame


def check_connection(settings: Settings) -> None:
    """Fail early, with a message naming the settings, if Snowflake cannot be used."""
    with cursor(settings) as cur:
        ensure_schema(cur, settings.snowflake_raw_schema)


def last_load_time(settings: Settings) -> datetime | None:
    """When the newest load committed (None: nothing loaded yet)."""
    with cursor(settings) as cur:
        ensure_schema(cur, settings.snowflake_raw_schema)
        return _last_load_time(_SnowflakeLog(cur, settings.snowflake_raw_schema))


def raw_log_size(settings: Settings) -> tuple[int, int]:
    """Rows in the raw log and number of loads so far."""
    with cursor(settings) as cur:
        ensure_schema(cur, settings.snowflake_raw_schema)
        return _raw_log_size(_SnowflakeLog(cur, settings.snowflake_raw_schema))


def clone_raw(settings: Settings, source: str = RAW_SCHEMA) -> None:
    """Make SNOWFLAKE_RAW_SCHEMA (a pull request's pr_<N>_raw) a copy of production's raw log.

    `create table ... clone` is zero-copy on Snowflake (the clone shares the source's storage until
    either side changes), so a pull request loads its sample and builds dbt over production's
    events without writing to them; the role needs only SELECT on `source`. Tables one by one, not
    `create schema ... clone`: the fakesnow emulator the tests use clones tables only. Each call
    starts over from production's current log; a table production does not have yet (nothing
    loaded) is created empty.
    """
    require_settings(settings)
    target = settings.snowflake_raw_schema
    _require_pr_schemas(target)
    with cursor(settings) as cur:
        existing = {
            name
            for (name,) in cur.execute(
                "select lower(table_name) from information_schema.tables "
                "where lower(table_schema) = %(schema)s",
                {"schema": source.lower()},
            ).fetchall()
        }
        cur.execute(f"drop schema if exists {target} cascade")
        cur.execute(f"create schema {target}")
        for table in RAW_TABLES:
            if table in existing:
                cur.execute(f"create table {target}.{table} clone {source}.{table}")
        ensure_schema(cur, target)


def drop_pr_schemas(settings: Settings) -> tuple[str, str]:
    """Drop a pull request's SNOWFLAKE_SCHEMA and SNOWFLAKE_RAW_SCHEMA with all they hold."""
    require_settings(settings)
    assert settings.snowflake_schema is not None  # checked above; narrows the type
    schemas = (settings.snowflake_schema, settings.snowflake_raw_schema)
    _require_pr_schemas(*schemas)
    with cursor(settings) as cur:
        for schema in schemas:
            cur.execute(f"drop schema if exists {schema} cascade")
    return schemas


def _require_pr_schemas(*schemas: str) -> None:
    """Refuse any schema not named pr_<...>: a production schema is never dropped or replaced."""
    if others := [schema for schema in schemas if not PR_SCHEMA.fullmatch(schema)]:
        raise SnowflakeError(
            f"Not a pull request's schema: {', '.join(others)}. Only pr_<N> schemas are replaced "
            "or dropped; check SNOWFLAKE_SCHEMA and SNOWFLAKE_RAW_SCHEMA."
        )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
