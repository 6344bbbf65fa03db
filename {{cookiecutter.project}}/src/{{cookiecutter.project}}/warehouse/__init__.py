"""The warehouse: an append-only raw event log, and the training view dbt builds on it.

Callers (ingest, dataset, quality, the CLI and the flow) use the functions here; settings.warehouse
picks the backend: `duckdb_backend` (a local file) or `snowflake_backend`. What both share (the raw
tables, the per-file load protocol, the errors) is in `base`; the backends never import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..settings import Settings
from . import duckdb_backend, snowflake_backend
from .base import (
    EventsFileError,
    LoadResult,
    WarehouseError,
    WarehouseLockedError,
    as_list,
    check_events_file,
    file_load_id,
)
from .duckdb_backend import describe_rejects

__all__ = [
    "EventsFileError",
    "LoadResult",
    "WarehouseError",
    "WarehouseLockedError",
    "as_list",
    "check_events_file",
    "check_warehouse",
    "describe_rejects",
    "file_load_id",
    "load_to_warehouse",
    "read_warehouse_sessions",
    "warehouse_last_load",
    "warehouse_log_size",
    "warehouse_name",
]


def load_to_warehouse(
    paths: Iterable[Path],
    settings: Settings,
    progress: Callable[[LoadResult], None] | None = None,
) -> list[LoadResult]:
    """Append event Parquet files to the configured warehouse's raw log (`base.load_batches`)."""
    if settings.warehouse == "snowflake":
        return snowflake_backend.load_files(paths, settings, progress)
    return duckdb_backend.load_files(paths, settings.duckdb_path, settings.tenant, progress)


def read_warehouse_sessions(settings: Settings) -> pd.DataFrame:
    """The dbt model training_sessions of the configured warehouse (one row per session), oldest
    first, with the sku/action lists as lists and the same dtypes whichever the backend."""
    if settings.warehouse == "snowflake":
        return snowflake_backend.read_training_sessions(settings)
    return duckdb_backend.read_training_sessions(settings.duckdb_path)


def check_warehouse(settings: Settings) -> None:
    """Fail early, with a message saying what to fix, if the configured warehouse is unusable."""
    if settings.warehouse == "snowflake":
        snowflake_backend.check_connection(settings)
    else:
        duckdb_backend.check_connection(settings.duckdb_path)


def warehouse_log_size(settings: Settings) -> tuple[int, int]:
    """Rows in the configured warehouse's raw log and number of loads so far."""
    if settings.warehouse == "snowflake":
        return snowflake_backend.raw_log_size(settings)
    return duckdb_backend.raw_log_size(settings.duckdb_path)


def warehouse_last_load(settings: Settings) -> datetime | None:
    """When the configured warehouse's newest load committed (None: nothing loaded yet)."""
    if settings.warehouse == "snowflake":
        return snowflake_backend.last_load_time(settings)
    return duckdb_backend.last_load_time(settings.duckdb_path)


def warehouse_name(settings: Settings) -> str:
    """Where the raw log lives, for progress messages."""
    if settings.warehouse == "snowflake":
        return f"Snowflake {settings.snowflake_database}.{settings.snowflake_raw_schema}"
    return str(settings.duckdb_path)
