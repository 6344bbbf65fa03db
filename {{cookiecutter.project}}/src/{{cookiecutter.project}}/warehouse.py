"""The local warehouse: an append-only raw event log in DuckDB, and the training view dbt builds.

`raw.events` keeps every loaded row with its load id, load time, tenant and event date; `raw.loads`
has one row per loaded file. The load id is the file's content hash, so loading a file again (even
renamed) adds nothing. The SQL is kept plain so that the Snowflake variant can share it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .data import EVENT_COLUMNS
from .settings import get_settings

TRAINING_COLUMNS = (
    "session_id",
    "skus",
    "actions",
    "session_length",
    "first_event_at",
    "last_event_at",
    "session_date",
)
_LIST_COLUMNS = ("skus", "actions")

_SCHEMA_SQL = """
create schema if not exists raw;
create table if not exists raw.loads (
    load_id varchar primary key,
    loaded_at timestamp not null,
    tenant varchar not null,
    source_file varchar not null,
    row_count bigint not null
);
create table if not exists raw.events (
    load_id varchar not null,
    loaded_at timestamp not null,
    tenant varchar not null,
    event_date date not null,
    session_id_hash varchar,
    event_type varchar,
    product_action varchar,
    product_sku_hash varchar,
    server_timestamp_epoch_ms bigint,
    hashed_url varchar
);
"""

# event_date is the UTC day: epoch_ms() gives a timestamp without time zone.
_INSERT_EVENTS_SQL = """
insert into raw.events
select
    $load_id, $loaded_at, $tenant,
    cast(epoch_ms(server_timestamp_epoch_ms) as date),
    session_id_hash, event_type, product_action, product_sku_hash,
    server_timestamp_epoch_ms, hashed_url
from read_parquet($path)
"""


class WarehouseError(RuntimeError):
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
    con.execute(_SCHEMA_SQL)


def file_load_id(path: Path) -> str:
    """The load id of a file: the SHA-256 of its bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
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


def load_files(paths: Iterable[Path], db_path: Path, tenant: str) -> list[LoadResult]:
    """Append event Parquet files to raw.events, each file in one transaction.

    Files whose content was loaded before are skipped. Every file is checked before any is loaded.
    """
    paths = list(paths)
    for path in paths:
        check_events_file(path)
    results = []
    with connect(db_path) as con:
        ensure_schema(con)
        for path in paths:
            load_id = file_load_id(path)
            con.begin()
            try:
                seen = con.execute(
                    "select row_count from raw.loads where load_id = ?", [load_id]
                ).fetchone()
                if seen:
                    con.rollback()
                    results.append(LoadResult(path, load_id, seen[0], skipped=True))
                    continue
                loaded_at = datetime.now(UTC).replace(tzinfo=None)
                values = {"load_id": load_id, "loaded_at": loaded_at, "tenant": tenant}
                try:
                    (rows,) = con.execute(
                        _INSERT_EVENTS_SQL, {**values, "path": str(path)}
                    ).fetchone()
                except duckdb.Error as e:
                    raise EventsFileError(
                        f"Cannot load {path}: {e}. Nothing of it was loaded; fix or regenerate it."
                    ) from e
                con.execute(
                    "insert into raw.loads values (?, ?, ?, ?, ?)",
                    [load_id, loaded_at, tenant, path.name, rows],
                )
                con.commit()
            except BaseException:
                con.rollback()
                raise
            results.append(LoadResult(path, load_id, rows, skipped=False))
    return results


def as_list(value: object) -> list:
    """An array column value as a Python list: DuckDB gives lists or arrays, Snowflake JSON text."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


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
    for column in _LIST_COLUMNS:
        frame[column] = frame[column].map(as_list)
    return frame


def check_connection(db_path: Path) -> None:
    """Fail early, with the warehouse's own message, if the file cannot be opened for writing."""
    with connect(db_path) as con:
        ensure_schema(con)


def raw_log_size(db_path: Path) -> tuple[int, int]:
    """Rows in the raw log and number of loads so far."""
    with connect(db_path) as con:
        ensure_schema(con)
        rows = con.execute("select count(*) from raw.events").fetchone()[0]
        loads = con.execute("select count(*) from raw.loads").fetchone()[0]
    return int(rows), int(loads)
