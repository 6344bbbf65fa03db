"""The local warehouse: an append-only raw event log in DuckDB, and the training view dbt builds.

`raw.events` keeps every loaded row with its load id, load time, tenant and event date; `raw.loads`
has one row per loaded file; `raw.rejects` keeps the rows the converter quarantined (the batch's
`rejects-NNNNN.parquet`, see `validation`) with their line, reason and raw text. The load id is the
batch's content hash, so loading a file again (even renamed) adds nothing. Each batch, its rows,
its rejects and its load record, commits in one transaction: a load killed half-way leaves nothing
of the batch it was in, and running it again loads exactly what is missing. The SQL is kept plain
so that the Snowflake variant can share it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .data import EVENT_COLUMNS
from .errors import ProjectError
from .settings import Settings, get_settings
from .validation import REJECTS_SCHEMA, rejects_path

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
create table if not exists raw.rejects (
    load_id varchar not null,
    loaded_at timestamp not null,
    tenant varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    reason varchar not null,
    raw_line varchar not null
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
_INSERT_REJECTS_SQL = """
insert into raw.rejects
select $load_id, $loaded_at, $tenant, source_file, line_number, reason, raw_line
from read_parquet($path)
"""


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


def load_files(
    paths: Iterable[Path],
    db_path: Path,
    tenant: str,
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
                rejected = 0
                if rejects_path(path).is_file():
                    (rejected,) = con.execute(
                        _INSERT_REJECTS_SQL, {**values, "path": str(rejects_path(path))}
                    ).fetchone()
                con.execute(
                    "insert into raw.loads values (?, ?, ?, ?, ?)",
                    [load_id, loaded_at, tenant, path.name, rows],
                )
                con.commit()
            except BaseException:
                con.rollback()
                raise
            results.append(LoadResult(path, load_id, rows, skipped=False, rejected=rejected))
            if progress is not None:
                progress(results[-1])
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


# --- the configured warehouse ------------------------------------------------------------------
# Callers (ingest, dataset, quality, the CLI and the flow) use these: settings.warehouse picks
# DuckDB (the functions above) or Snowflake (snowflake.py, imported only when chosen).


def load_to_warehouse(
    paths: Iterable[Path],
    settings: Settings,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to the configured warehouse's raw log (see `load_files`)."""
    if settings.warehouse == "snowflake":
        from . import snowflake

        return snowflake.load_files(paths, settings, progress)
    return load_files(paths, settings.duckdb_path, settings.tenant, progress)


def read_warehouse_sessions(settings: Settings) -> pd.DataFrame:
    """The dbt model training_sessions of the configured warehouse, as `read_training_sessions`."""
    if settings.warehouse == "snowflake":
        from . import snowflake

        return snowflake.read_training_sessions(settings)
    return read_training_sessions(settings.duckdb_path)


def check_warehouse(settings: Settings) -> None:
    """Fail early, with a message saying what to fix, if the configured warehouse is unusable."""
    if settings.warehouse == "snowflake":
        from . import snowflake

        snowflake.check_connection(settings)
    else:
        check_connection(settings.duckdb_path)


def warehouse_log_size(settings: Settings) -> tuple[int, int]:
    """Rows in the configured warehouse's raw log and number of loads so far."""
    if settings.warehouse == "snowflake":
        from . import snowflake

        return snowflake.raw_log_size(settings)
    return raw_log_size(settings.duckdb_path)


def warehouse_name(settings: Settings) -> str:
    """Where the raw log lives, for progress messages."""
    if settings.warehouse == "snowflake":
        return f"Snowflake {settings.snowflake_database}.raw"
    return str(settings.duckdb_path)
