"""The DuckDB raw log: loads, idempotency, clear errors, the lock, the training view."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from {{ cookiecutter.project }}.ingest.synthetic import GeneratorConfig, write_events
from {{ cookiecutter.project }}.schema import TRAINING_COLUMNS
from {{ cookiecutter.project }}.warehouse import EventsFileError, WarehouseError, WarehouseLockedError, as_list
from {{ cookiecutter.project }}.warehouse.duckdb_backend import (
    connect,
    ensure_schema,
    load_files,
    read_training_sessions,
)

CONFIG = GeneratorConfig(n_sessions=600, n_products=100, n_intents=5, batch_sessions=200, days=3)


@pytest.fixture(scope="module")
def event_files(tmp_path_factory) -> list[Path]:
    return write_events(CONFIG, tmp_path_factory.mktemp("events")).paths


def counts(db_path: Path) -> tuple[int, int]:
    with connect(db_path, read_only=True) as con:
        events = con.execute("select count(*) from raw.events").fetchone()[0]
        loads = con.execute("select count(*) from raw.loads").fetchone()[0]
    return events, loads


def test_load_appends_rows_with_load_records(event_files, tmp_path) -> None:
    db = tmp_path / "wh" / "warehouse.duckdb"
    results = load_files(event_files, db, tenant="acme")
    file_rows = [pq.read_metadata(p).num_rows for p in event_files]
    assert [r.rows for r in results] == file_rows
    assert not any(r.skipped for r in results)
    assert counts(db) == (sum(file_rows), len(event_files))
    with connect(db, read_only=True) as con:
        loads = con.execute("select * from raw.loads order by source_file").df()
        sample = con.execute(
            "select event_date, server_timestamp_epoch_ms, tenant, load_id from raw.events"
        ).df()
    assert loads["source_file"].tolist() == [p.name for p in event_files]
    assert set(loads["tenant"]) == {"acme"}
    assert set(sample["load_id"]) == set(loads["load_id"])
    utc_day = pd.to_datetime(sample["server_timestamp_epoch_ms"], unit="ms").dt.date
    assert (pd.to_datetime(sample["event_date"]).dt.date == utc_day).all()
    assert set(sample["tenant"]) == {"acme"}


def test_loading_the_same_content_again_adds_nothing(event_files, tmp_path) -> None:
    db = tmp_path / "warehouse.duckdb"
    load_files(event_files[:2], db, tenant="demo")
    before = counts(db)
    renamed = tmp_path / "copy-of-first.parquet"
    shutil.copy(event_files[0], renamed)
    again = load_files([event_files[1], renamed], db, tenant="demo")
    assert all(r.skipped for r in again)
    assert again[1].rows == pq.read_metadata(renamed).num_rows
    assert counts(db) == before
    rest = load_files(event_files, db, tenant="demo")
    assert [r.skipped for r in rest] == [True, True, False]


def test_wrong_columns_are_named_and_nothing_is_loaded(event_files, tmp_path) -> None:
    table = pq.read_table(event_files[0]).drop_columns(["hashed_url"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.append_column("extra", pa.array(np.zeros(table.num_rows))), bad)
    db = tmp_path / "warehouse.duckdb"
    with pytest.raises(EventsFileError) as error:
        load_files([event_files[0], bad], db, tenant="demo")
    message = str(error.value)
    assert "bad.parquet" in message and "hashed_url" in message and "extra" in message
    assert not db.exists()  # every file is checked before anything is loaded
    not_parquet = tmp_path / "events.csv"
    not_parquet.write_text("session_id_hash,event_type\n")
    with pytest.raises(EventsFileError, match="events.csv"):
        load_files([not_parquet], db, tenant="demo")


def test_a_file_that_fails_half_way_leaves_nothing_behind(event_files, tmp_path) -> None:
    table = pq.read_table(event_files[0])
    timestamps = table["server_timestamp_epoch_ms"].to_numpy().astype(str)
    timestamps[-1] = "yesterday"  # the cast fails on the last row, after others were read
    bad = tmp_path / "bad-values.parquet"
    pq.write_table(table.set_column(4, "server_timestamp_epoch_ms", pa.array(timestamps)), bad)
    db = tmp_path / "warehouse.duckdb"
    load_files(event_files[1:2], db, tenant="demo")
    before = counts(db)
    with pytest.raises(EventsFileError, match="bad-values.parquet"):
        load_files([bad], db, tenant="demo")
    assert counts(db) == before


def test_rows_and_load_record_commit_together(event_files, tmp_path) -> None:
    """If recording the load fails after the rows went in, the rows go too."""
    db = tmp_path / "warehouse.duckdb"
    with connect(db) as con:  # raw.loads as ensure_schema makes it, plus a check that fails
        con.execute(
            """
            create schema raw;
            create table raw.loads (
                load_id varchar primary key, loaded_at timestamp, tenant varchar,
                source_file varchar, row_count bigint, check (tenant <> 'blocked')
            );
            """
        )
        ensure_schema(con)
    with pytest.raises(duckdb.ConstraintException):
        load_files(event_files[:1], db, tenant="blocked")
    assert counts(db) == (0, 0)


def test_a_second_process_holding_the_file_gives_a_clear_error(tmp_path) -> None:
    db = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseLockedError) as error:
            connect(db)
        message = str(error.value)
        assert str(db) in message and str(holder.pid) in message and "DUCKDB_PATH" in message
        with pytest.raises(WarehouseLockedError):
            read_training_sessions(db)
    finally:
        holder.kill()
        holder.wait()
    connect(db).close()  # free again once the other process is gone


def test_reading_a_missing_warehouse_or_model_says_what_to_do(tmp_path) -> None:
    with pytest.raises(WarehouseError, match="load events first"):
        read_training_sessions(tmp_path / "nothing.duckdb")
    db = tmp_path / "warehouse.duckdb"
    connect(db).close()
    with pytest.raises(WarehouseError, match="dbt build"):
        read_training_sessions(db)


def test_read_training_sessions_gives_python_lists(tmp_path) -> None:
    db = tmp_path / "warehouse.duckdb"
    with connect(db) as con:
        con.execute(
            """
            create table training_sessions as
            select * from (values
                ('s2', ['b', 'c'], ['detail', 'add'], 2,
                 timestamp '2026-01-02 10:00', timestamp '2026-01-02 10:05', date '2026-01-02'),
                ('s1', ['a'], ['detail'], 1,
                 timestamp '2026-01-01 09:00', timestamp '2026-01-01 09:00', date '2026-01-01')
            ) as t(session_id, skus, actions, session_length,
                   first_event_at, last_event_at, session_date)
            """
        )
    sessions = read_training_sessions(db)
    assert tuple(sessions.columns) == TRAINING_COLUMNS
    assert sessions["session_id"].tolist() == ["s1", "s2"]  # oldest first
    assert sessions["skus"].tolist() == [["a"], ["b", "c"]]
    assert sessions["actions"].tolist() == [["detail"], ["detail", "add"]]
    assert sessions["first_event_at"].dtype.kind == "M"


@pytest.mark.parametrize(
    "value",
    ['["a", "b"]', np.array(["a", "b"]), ["a", "b"], ("a", "b")],
    ids=["json-text", "numpy", "list", "tuple"],
)
def test_as_list_normalises_array_values(value) -> None:
    assert as_list(value) == ["a", "b"]


# A loader in its own process: it reports each committed file and, with "pause", waits after it.
LOADER = """
import sys, time
from pathlib import Path
from {{ cookiecutter.project }}.warehouse.duckdb_backend import load_files

def report(result):
    print("committed", result.path.name, flush=True)
    if sys.argv[2] == "pause":
        time.sleep(60)

load_files([Path(p) for p in sys.argv[3:]], Path(sys.argv[1]), "demo", progress=report)
print("done", flush=True)
"""


def consistent_loads(db: Path) -> int:
    """Number of complete loads; fails if any load is partial or rows lack their load record."""
    with connect(db, read_only=True) as con:
        per_load = con.execute(
            """
            select l.load_id, l.row_count, count(e.load_id)
            from raw.loads l left join raw.events e using (load_id)
            group by all
            """
        ).fetchall()
        orphans = con.execute(
            "select count(*) from raw.events where load_id not in (select load_id from raw.loads)"
        ).fetchone()[0]
    assert orphans == 0
    assert all(expected == found for _, expected, found in per_load)
    return len(per_load)


@pytest.fixture(scope="module")
def big_event_files(tmp_path_factory) -> list[Path]:
    """Files big enough that loading one takes a while, so a kill can land inside it."""
    config = GeneratorConfig(n_sessions=24_000, n_products=500, batch_sessions=8_000, days=3)
    return write_events(config, tmp_path_factory.mktemp("big")).paths


@pytest.mark.parametrize(
    ("mode", "delay_s"),
    # A file takes ~0.5-1 s to load here, so "run" kills inside the second file's transaction.
    [("pause", 0.0), ("run", 0.02)],
    ids=["between-files", "inside-the-next-file"],
)
def test_a_load_killed_half_way_then_rerun_has_no_duplicates_and_no_gaps(
    big_event_files, tmp_path, mode: str, delay_s: float
) -> None:
    db = tmp_path / "warehouse.duckdb"
    command = [sys.executable, "-c", LOADER, str(db), mode, *map(str, big_event_files)]
    loader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert loader.stdout is not None
        assert loader.stdout.readline().startswith("committed events-00000")
        time.sleep(delay_s)
        loader.send_signal(signal.SIGKILL)  # kill -9: no cleanup, no rollback by the loader
    finally:
        loader.wait()
    assert loader.returncode == -signal.SIGKILL
    done_before = consistent_loads(db)
    assert 1 <= done_before < len(big_event_files)  # killed before the load was over

    again = load_files(big_event_files, db, tenant="demo")
    assert [r.skipped for r in again] == [i < done_before for i in range(len(big_event_files))]
    assert consistent_loads(db) == len(big_event_files)
    file_rows = [pq.read_metadata(p).num_rows for p in big_event_files]
    assert counts(db) == (sum(file_rows), len(big_event_files))
    with connect(db, read_only=True) as con:
        loaded = con.execute(
            "select source_file, count(*) from raw.events join raw.loads using (load_id) "
            "group by source_file order by source_file"
        ).fetchall()
    assert loaded == [(p.name, n) for p, n in zip(big_event_files, file_rows, strict=True)]
