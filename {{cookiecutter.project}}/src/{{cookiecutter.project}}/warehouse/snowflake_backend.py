"""The Snowflake warehouse: the same append-only raw log and training view as the DuckDB one.

`raw.events`, `raw.loads` and `raw.rejects` have the columns of `warehouse.py`'s tables. A batch
is loaded the way Snowflake loads fast: PUT into the table stage of a per-file staging table, COPY
INTO it (Parquet, columns matched by name), then one transaction appends its rows with the load
columns to `raw.events` (its quarantined rows, if any, to `raw.rejects`) and records the load in
`raw.loads`. The load id is the batch's content hash, so a batch loaded before is skipped.
`write_pandas` and `executemany` would send rows through the client; PUT + COPY is Snowflake's bulk
path (and the one the fakesnow emulator supports). Memory holds no more than the client's upload
buffer, whatever the file size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.connector.errors import Error as ConnectorError
from snowflake.connector.errors import ProgrammingError

from .data import EVENT_COLUMNS
from .settings import Settings
from .validation import REJECTS_SCHEMA, rejects_path
from .warehouse import (
    TRAINING_COLUMNS,
    EventsFileError,
    LoadResult,
    WarehouseError,
    as_list,
    check_events_file,
    file_load_id,
)


def _columns_sql(types: dict[str, str], not_null: bool = False) -> str:
    suffix = " not null" if not_null else ""
    return ", ".join(f"{column} {kind}{suffix}" for column, kind in types.items())


# Settings every Snowflake connection and the dbt profile need, as (attribute, variable).
REQUIRED_SETTINGS = tuple(
    (f"snowflake_{name}", f"SNOWFLAKE_{name.upper()}")
    for name in ("account", "user", "password", "role", "warehouse", "database", "schema")
)
RAW_SCHEMA = "raw"
_EVENT_TYPES = {column: "varchar" for column in EVENT_COLUMNS} | {
    "server_timestamp_epoch_ms": "bigint"
}
_REJECT_TYPES = {
    field.name: "bigint" if pa.types.is_integer(field.type) else "varchar"
    for field in REJECTS_SCHEMA
}
# timestamp_ntz spelled out: plain `timestamp` follows the account's TIMESTAMP_TYPE_MAPPING.
_LOAD_COLUMNS = (
    "load_id varchar not null, loaded_at timestamp_ntz not null, tenant varchar not null"
)
_SCHEMA_SQL = (
    f"create schema if not exists {RAW_SCHEMA}",
    f"""create table if not exists {RAW_SCHEMA}.loads (
        load_id varchar primary key,
        loaded_at timestamp_ntz not null,
        tenant varchar not null,
        source_file varchar not null,
        row_count bigint not null
    )""",
    f"""create table if not exists {RAW_SCHEMA}.events (
        {_LOAD_COLUMNS}, event_date date not null, {_columns_sql(_EVENT_TYPES)}
    )""",
    f"""create table if not exists {RAW_SCHEMA}.rejects (
        {_LOAD_COLUMNS}, {_columns_sql(_REJECT_TYPES, not_null=True)}
    )""",
)
# event_date is the UTC day, as in DuckDB: to_timestamp_ntz of epoch milliseconds is in UTC.
_INSERT_EVENTS_SQL = f"""
insert into {RAW_SCHEMA}.events
select
    %(load_id)s, %(loaded_at)s, %(tenant)s,
    to_date(to_timestamp_ntz(server_timestamp_epoch_ms, 3)),
    {", ".join(EVENT_COLUMNS)}
from {{staging}}
"""
_INSERT_REJECTS_SQL = f"""
insert into {RAW_SCHEMA}.rejects
select %(load_id)s, %(loaded_at)s, %(tenant)s, {", ".join(_REJECT_TYPES)}
from {{staging}}
"""


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


def ensure_schema(cur: SnowflakeCursor) -> None:
    """Create the raw log tables if they are missing (the role needs CREATE SCHEMA)."""
    try:
        for statement in _SCHEMA_SQL:
            cur.execute(statement)
    except ProgrammingError as e:
        raise SnowflakeError(
            f"Cannot create the raw log tables in SNOWFLAKE_DATABASE: {_first_line(e)}. Grant "
            "the role USAGE and CREATE SCHEMA on the database (see the README, Snowflake)."
        ) from e


def load_files(
    paths: Iterable[Path],
    settings: Settings,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to raw.events (and their rejects to raw.rejects), each file in
    one transaction; `progress` is called after each commit.

    Files whose content was loaded before are skipped. Every file is checked before any is loaded.
    """
    paths = list(paths)
    for path in paths:
        check_events_file(path)
    results = []
    with cursor(settings) as cur:
        ensure_schema(cur)
        for path in paths:
            results.append(_load_file(cur, path, settings.tenant))
            if progress is not None and not results[-1].skipped:
                progress(results[-1])
    return results


def _load_file(cur: SnowflakeCursor, path: Path, tenant: str) -> LoadResult:
    load_id = file_load_id(path)
    if (seen := _loaded_rows(cur, load_id)) is not None:
        return LoadResult(path, load_id, seen, skipped=True)
    rejects = rejects_path(path)
    # Staging tables of their own: loaders running at once never share rows, and their DDL stays
    # out of the transaction (a DDL statement would commit it in Snowflake).
    staged = {"events": f"{RAW_SCHEMA}.load_{load_id[:16]}"}
    if rejects.is_file():
        staged["rejects"] = f"{RAW_SCHEMA}.load_{load_id[:16]}_rejects"
    try:
        _stage(cur, path, staged["events"], _EVENT_TYPES)
        if rejects.is_file():
            _stage(cur, rejects, staged["rejects"], _REJECT_TYPES)
        cur.execute("begin")
        try:
            if (seen := _loaded_rows(cur, load_id)) is not None:  # another loader was faster
                cur.execute("rollback")
                return LoadResult(path, load_id, seen, skipped=True)
            loaded_at = datetime.now(UTC).replace(tzinfo=None)
            values = {"load_id": load_id, "loaded_at": loaded_at, "tenant": tenant}
            insert = _INSERT_EVENTS_SQL.format(staging=staged["events"])
            (rows,) = cur.execute(insert, values).fetchone()
            rejected = 0
            if "rejects" in staged:
                insert = _INSERT_REJECTS_SQL.format(staging=staged["rejects"])
                (rejected,) = cur.execute(insert, values).fetchone()
            cur.execute(
                f"insert into {RAW_SCHEMA}.loads values (%s, %s, %s, %s, %s)",
                (load_id, loaded_at, tenant, path.name, rows),
            )
            cur.execute("commit")
        except BaseException:
            cur.execute("rollback")
            raise
    finally:
        for table in staged.values():
            cur.execute(f"drop table if exists {table}")
    return LoadResult(path, load_id, int(rows), skipped=False, rejected=int(rejected))


def _stage(cur: SnowflakeCursor, path: Path, table: str, types: dict[str, str]) -> None:
    """Bulk-load one Parquet file into a new staging table through the table's own stage."""
    cur.execute(f"create or replace transient table {table} ({_columns_sql(types)})")
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


def _loaded_rows(cur: SnowflakeCursor, load_id: str) -> int | None:
    row = cur.execute(
        f"select row_count from {RAW_SCHEMA}.loads where load_id = %s", (load_id,)
    ).fetchone()
    return int(row[0]) if row else None


def read_training_sessions(settings: Settings, relation: str = "training_sessions") -> pd.DataFrame:
    """The ML view built by dbt in SNOWFLAKE_SCHEMA, oldest first, typed as the DuckDB path's."""
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
    for column in ("skus", "actions"):  # VARIANT arrays arrive as JSON text
        frame[column] = frame[column].map(as_list)
    # NUMBER may arrive as a narrow integer and DATE as datetime.date: give DuckDB's dtypes.
    frame["session_length"] = frame["session_length"].astype("int64")
    for column in ("first_event_at", "last_event_at", "session_date"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    return frame


def check_connection(settings: Settings) -> None:
    """Fail early, with a message naming the settings, if Snowflake cannot be used."""
    with cursor(settings) as cur:
        ensure_schema(cur)


def raw_log_size(settings: Settings) -> tuple[int, int]:
    """Rows in the raw log and number of loads so far."""
    with cursor(settings) as cur:
        ensure_schema(cur)
        (rows,) = cur.execute(f"select count(*) from {RAW_SCHEMA}.events").fetchone()
        (loads,) = cur.execute(f"select count(*) from {RAW_SCHEMA}.loads").fetchone()
    return int(rows), int(loads)


def dbt_environment(settings: Settings) -> dict[str, str]:
    """The SNOWFLAKE_* variables dbt/profiles.yml reads, from the settings (which may come from
    .env rather than the environment). Only the dbt call's environment sees the password."""
    require_settings(settings, needed_by="dbt's snowflake target")
    assert settings.snowflake_password is not None
    values = {
        variable: str(getattr(settings, name))
        for name, variable in REQUIRED_SETTINGS
        if name != "snowflake_password"
    }
    values |= {
        "SNOWFLAKE_PASSWORD": settings.snowflake_password.get_secret_value(),
        "SNOWFLAKE_HOST": settings.snowflake_host or "",
        "SNOWFLAKE_PORT": str(settings.snowflake_port),
        "SNOWFLAKE_PROTOCOL": settings.snowflake_protocol,
        "SNOWFLAKE_TIMEOUT_S": str(settings.snowflake_timeout_s),
    }
    if settings.snowflake_host:
        # An emulator (fakesnow) cannot run dbt unit tests: dbt-snowflake stages their inputs in
        # `create temporary table <db>.<schema>.<name>`, which DuckDB rejects. The real service
        # runs them; the local DuckDB target runs them everywhere.
        values["DBT_EXCLUDE_RESOURCE_TYPES"] = "unit_test"
    return values


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
