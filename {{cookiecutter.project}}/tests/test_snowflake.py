"""The Snowflake path against fakesnow: loads, dbt build, the training view, quality, errors."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import boto3
import pandas as pd
import pytest
from conftest import Emulator

from {{ cookiecutter.project }} import dataset, quality, transform, warehouse
from {{ cookiecutter.project }}.ingest.load import ingest
from {{ cookiecutter.project }}.ingest.synthetic import GeneratorConfig, write_events
from {{ cookiecutter.project }}.settings import Settings
from {{ cookiecutter.project }}.warehouse import duckdb_backend, snowflake_backend

pytestmark = pytest.mark.cloud

DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
COVEO_SAMPLE = Path(__file__).parent / "data" / "coveo" / "browsing_train.csv"
# Enough sessions for the quality suite's row minimum (100) after the dbt filters; 2 files.
CONFIG = GeneratorConfig(n_sessions=400, n_products=80, n_intents=4, batch_sessions=200, days=3)
PASSWORD = "not-a-real-password"
_databases = count()


def snowflake_settings(server, name: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a database of its own on the fakesnow server (its databases are in memory)."""
    database = f"{re.sub(r'[^a-z0-9]+', '_', name.lower())[:40]}_{next(_databases)}"
    values = {
        "warehouse": "snowflake",
        "dbt_target": "snowflake",
        "dbt_runner": "core",
        "dbt_project_dir": DBT_PROJECT,
        "data_dir": tmp_path,
        "snowflake_account": "fakesnow",
        "snowflake_user": "tester",
        "snowflake_password": PASSWORD,
        "snowflake_role": "recs_loader",
        "snowflake_warehouse": "recs_wh",
        "snowflake_database": database,
        "snowflake_schema": "analytics",
        "snowflake_host": server.host,
        "snowflake_port": server.port,
        "snowflake_protocol": "http",
        "snowflake_timeout_s": 5,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def event_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_events(CONFIG, tmp_path_factory.mktemp("events")).paths


@pytest.fixture
def settings(fakesnow_server, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return snowflake_settings(fakesnow_server, request.node.name, tmp_path)


def raw_counts(settings: Settings) -> tuple[int, int, int]:
    schema = settings.snowflake_raw_schema
    with snowflake_backend.cursor(settings) as cur:
        return tuple(
            cur.execute(f"select count(*) from {schema}.{table}").fetchone()[0]
            for table in ("events", "loads", "rejects")
        )


def schemas(settings: Settings) -> set[str]:
    with snowflake_backend.cursor(settings) as cur:
        rows = cur.execute("select lower(schema_name) from information_schema.schemata").fetchall()
    return {name for (name,) in rows}


def pr_settings(production: Settings, number: int, **overrides: object) -> Settings:
    """A pull request's settings, as pr.yml sets them: the same database, schemas of its own."""
    return production.model_copy(
        update={"snowflake_schema": f"pr_{number}", "snowflake_raw_schema": f"pr_{number}_raw"}
        | overrides
    )


def test_loading_twice_adds_nothing(settings: Settings, event_files: list[Path]) -> None:
    committed = []
    first = warehouse.load_to_warehouse(event_files, settings, progress=committed.append)
    rows = sum(r.rows for r in first)
    assert rows > 0 and not any(r.skipped for r in first)
    assert [r.path for r in committed] == event_files
    assert raw_counts(settings) == (rows, len(event_files), 0)

    again = warehouse.load_to_warehouse(event_files, settings)
    assert all(r.skipped for r in again)
    assert [r.load_id for r in again] == [r.load_id for r in first]
    assert warehouse.warehouse_log_size(settings) == (rows, len(event_files))
    last = warehouse.warehouse_last_load(settings)  # `make new-events` says "since" it
    assert last is not None
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(now - last.replace(tzinfo=None)) < timedelta(hours=1)
    with snowflake_backend.cursor(settings) as cur:
        # The short login timeout does not cut queries, which Snowflake may hold ~45 s.
        assert cur.connection.socket_timeout is None
        # The per-file staging tables are gone.
        tables = {row[1].lower() for row in cur.execute("show tables in schema raw").fetchall()}
    assert tables == {"events", "loads", "rejects"}


def test_raw_log_matches_the_duckdb_one(
    settings: Settings, event_files: list[Path], tmp_path: Path
) -> None:
    """Same rows, same event dates (the UTC day), same load ids on both warehouses."""
    warehouse.load_to_warehouse(event_files[:1], settings)
    db = tmp_path / "w.duckdb"
    duckdb_backend.load_files(event_files[:1], db, tenant=settings.tenant)
    query = (
        "select load_id, tenant, event_date, session_id_hash, event_type, product_action, "
        "product_sku_hash, server_timestamp_epoch_ms, hashed_url from raw.events"
    )
    with duckdb_backend.connect(db, read_only=True) as con:
        duck = con.execute(query).df()
    with snowflake_backend.cursor(settings) as cur:
        snow = pd.DataFrame(cur.execute(query).fetchall(), columns=list(duck.columns))
    key = ["server_timestamp_epoch_ms", "session_id_hash", "event_type", "hashed_url"]
    duck = duck.sort_values(key, ignore_index=True)
    snow = snow.sort_values(key, ignore_index=True)
    snow["event_date"] = pd.to_datetime(snow["event_date"]).astype(duck["event_date"].dtype)
    snow["server_timestamp_epoch_ms"] = snow["server_timestamp_epoch_ms"].astype("int64")
    pd.testing.assert_frame_equal(snow, duck)


@pytest.fixture(scope="module")
def built(
    fakesnow_server, event_files: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, transform.DbtRunResult]:
    """One Snowflake database loaded with the events and built by dbt (dbt takes ~20 s here)."""
    tmp_path = tmp_path_factory.mktemp("built")
    settings = snowflake_settings(fakesnow_server, "built", tmp_path)
    warehouse.load_to_warehouse(event_files, settings)
    return settings, transform.build(settings, tmp_path / "dbt")


def test_dbt_builds_the_models_and_passes_its_tests_on_snowflake(built) -> None:
    _, result = built
    assert result.target == "snowflake"
    assert result.success and not result.failed, transform.describe(result)
    ran = {node.name for node in result.executed if node.resource_type == "model"}
    assert ran == {"stg_events", "stg_product_events", "sessions", "training_sessions"}
    assert sum(node.resource_type == "test" for node in result.executed) >= 20
    # An emulator cannot stage unit-test inputs (see profiles.dbt_environment): left out there.
    assert not any(node.resource_type == "unit_test" for node in result.executed)
    # The password reached dbt through the environment of the call only, and no log has it.
    assert "SNOWFLAKE_PASSWORD" not in os.environ
    assert PASSWORD not in (Path(result.output_dir) / "logs" / "dbt.log").read_text()


def test_training_sessions_are_the_duckdb_ones(
    built, event_files: list[Path], tmp_path: Path
) -> None:
    settings, _ = built
    local = Settings(
        warehouse="duckdb",
        dbt_target="local",
        dbt_runner="core",
        dbt_project_dir=DBT_PROJECT,
        duckdb_path=tmp_path / "w.duckdb",
    )
    warehouse.load_to_warehouse(event_files, local)
    transform.raise_on_failure(transform.build(local, tmp_path / "dbt"))

    snow = warehouse.read_warehouse_sessions(settings)
    duck = warehouse.read_warehouse_sessions(local)
    assert len(snow) > 100
    assert isinstance(snow["skus"][0], list) and isinstance(snow["actions"][0], list)
    pd.testing.assert_frame_equal(snow, duck)
    split = dataset.load_split(settings, test_days=1)
    assert len(split.train) and len(split.test)


def test_quality_suite_passes_on_snowflake(built) -> None:
    settings, _ = built
    report = quality.check_warehouse(settings)
    assert report.success, quality.format_report(report)
    assert report.row_count > 100


def test_a_pull_request_loads_into_a_clone_and_leaves_production_raw_untouched(
    settings: Settings, event_files: list[Path], tmp_path: Path
) -> None:
    warehouse.load_to_warehouse(event_files[:1], settings)
    production = raw_counts(settings)
    pr = pr_settings(settings, 12)

    snowflake_backend.clone_raw(pr)
    assert raw_counts(pr) == production  # production's events, to build over
    sample = write_events(replace(CONFIG, seed=7), tmp_path / "pr").paths[:1]
    [loaded] = warehouse.load_to_warehouse(sample, pr)

    assert raw_counts(pr)[:2] == (production[0] + loaded.rows, production[1] + 1)
    assert raw_counts(settings) == production
    # A new push starts again from production's current log.
    snowflake_backend.clone_raw(pr)
    assert raw_counts(pr) == production


def test_the_first_pull_request_clones_an_empty_raw_log(settings: Settings) -> None:
    pr = pr_settings(settings, 3)
    snowflake_backend.clone_raw(pr)  # production has loaded nothing yet: no raw schema
    assert raw_counts(pr) == (0, 0, 0)
    assert "raw" not in schemas(settings)  # and none was created for it


def test_cloning_into_production_raw_is_refused(settings: Settings) -> None:
    with pytest.raises(snowflake_backend.SnowflakeError, match="Not a pull request's schema: raw"):
        snowflake_backend.clone_raw(settings)


def test_closing_a_pull_request_drops_its_schemas_only(
    settings: Settings, event_files: list[Path]
) -> None:
    warehouse.load_to_warehouse(event_files[:1], settings)
    production = raw_counts(settings)
    pr = pr_settings(settings, 4)
    snowflake_backend.clone_raw(pr)
    with snowflake_backend.cursor(pr) as cur:
        cur.execute("create schema pr_4")
        cur.execute("create table pr_4.sessions as select 1 as session_id")

    assert snowflake_backend.drop_pr_schemas(pr) == ("pr_4", "pr_4_raw")
    assert {"pr_4", "pr_4_raw"}.isdisjoint(schemas(settings))
    assert raw_counts(settings) == production
    snowflake_backend.drop_pr_schemas(pr)  # a second close (a re-run job) is fine


@pytest.mark.parametrize(
    "overrides",
    [
        {"snowflake_schema": "analytics"},
        {"snowflake_raw_schema": "raw"},
        {"snowflake_schema": "pr_5; drop schema raw"},
    ],
)
def test_closing_never_drops_a_schema_not_named_pr(
    settings: Settings, overrides: dict[str, str]
) -> None:
    with pytest.raises(snowflake_backend.SnowflakeError, match="Not a pull request's schema"):
        snowflake_backend.drop_pr_schemas(pr_settings(settings, 5, **overrides))


def test_slim_ci_builds_what_changed_in_the_pr_schema_over_production(
    built, tmp_path: Path
) -> None:
    production, _ = built
    manifest = transform.core.write_manifest(production, tmp_path / "production")
    # The pull request changes one model: only it and its tests run, in pr_9, and the refs to
    # the models it did not change read production's (--defer).
    project = shutil.copytree(DBT_PROJECT, tmp_path / "dbt")
    model = project / "models" / "marts" / "training_sessions.sql"
    model.write_text(model.read_text() + "\n-- changed in a pull request\n")
    pr = pr_settings(production, 9, dbt_project_dir=project, dbt_state_dir=manifest.parent)
    snowflake_backend.clone_raw(pr)

    result = transform.build(pr, tmp_path / "pr-dbt")

    assert result.success, transform.describe(result)
    ran = {node.name for node in result.executed if node.resource_type == "model"}
    assert ran == {"training_sessions"}
    assert any(node.resource_type == "test" for node in result.executed)
    with snowflake_backend.cursor(pr) as cur:
        tables = cur.execute(
            "select lower(table_name) from information_schema.tables "
            "where lower(table_schema) = 'pr_9' and table_type = 'BASE TABLE'"
        ).fetchall()
    assert tables == []  # sessions and stg_product_events: production's, not rebuilt
    # pr_9.training_sessions (a view) reads production's sessions.
    assert len(warehouse.read_warehouse_sessions(pr)) == len(
        warehouse.read_warehouse_sessions(production)
    )
    snowflake_backend.drop_pr_schemas(pr)


def test_coveo_files_go_through_the_snowflake_loader(settings: Settings, tmp_path: Path) -> None:
    """ingest's coveo source: CSV chunks to Parquet batches, loaded with their rejects."""
    coveo_dir = tmp_path / "coveo"
    coveo_dir.mkdir()
    lines = COVEO_SAMPLE.read_text().splitlines()
    (coveo_dir / "browsing_train.csv").write_text("\n".join([*lines, "cut,line"]) + "\n")
    settings = settings.model_copy(update={"coveo_dir": coveo_dir})

    result = ingest(settings, source="coveo", progress=None)
    assert result.files_loaded >= 1 and result.files_skipped == 0
    assert result.raw_rows_total == result.rows_loaded == len(lines) - 1
    events, loads, rejects = raw_counts(settings)
    assert (events, loads, rejects) == (len(lines) - 1, result.files_loaded, 1)

    again = ingest(settings, source="coveo", progress=None)
    assert again.files_loaded == 0 and again.files_skipped == result.files_loaded
    assert raw_counts(settings) == (events, loads, rejects)


def test_landed_files_in_s3_go_through_the_snowflake_loader(
    settings: Settings, aws_env: Emulator, tmp_path: Path
) -> None:
    """Production's path: the files under EVENTS_URI (S3) into Snowflake, each file once."""
    bucket = f"events-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").upload_file(str(COVEO_SAMPLE), bucket, "landing/2026-01-02.csv")
    settings = settings.model_copy(update={"events_uri": f"s3://{bucket}/landing/"})

    result = ingest(settings, source="landing", progress=None)
    rows = len(COVEO_SAMPLE.read_text().splitlines()) - 1
    assert (result.rows_loaded, result.raw_rows_total) == (rows, rows)
    assert ingest(settings, source="landing", progress=None).files_loaded == 0
    assert raw_counts(settings) == (rows, result.files_loaded, 0)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("where", ["refused port", "unknown host", "silent server"])
def test_an_unreachable_snowflake_fails_fast_naming_the_settings(
    fakesnow_server, where: str, silent_port: int, tmp_path: Path
) -> None:
    host, port = {
        "refused port": ("127.0.0.1", refused_port()),
        "unknown host": ("no-such-host.invalid", 443),
        "silent server": ("127.0.0.1", silent_port),
    }[where]
    settings = snowflake_settings(
        fakesnow_server,
        where,
        tmp_path,
        snowflake_host=host,
        snowflake_port=port,
        snowflake_timeout_s=2,
    )
    started = time.perf_counter()
    with pytest.raises(snowflake_backend.SnowflakeError) as error:
        warehouse.check_warehouse(settings)
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert "\n" not in message
    assert f"{host}:{port}" in message and "SNOWFLAKE_HOST" in message
    assert PASSWORD not in message


def test_a_missing_account_is_named(fakesnow_server, tmp_path: Path) -> None:
    settings = snowflake_settings(fakesnow_server, "missing", tmp_path, snowflake_account=None)
    with pytest.raises(snowflake_backend.SnowflakeError, match="needs SNOWFLAKE_ACCOUNT:"):
        warehouse.check_warehouse(settings)
    with pytest.raises(snowflake_backend.SnowflakeError, match="needs SNOWFLAKE_ACCOUNT:"):
        transform.build(settings, tmp_path / "dbt")


def test_a_dbt_target_of_the_other_warehouse_is_refused(fakesnow_server, tmp_path: Path) -> None:
    settings = snowflake_settings(fakesnow_server, "target", tmp_path, dbt_target="local")
    with pytest.raises(transform.DbtError, match="Set DBT_TARGET=snowflake"):
        transform.build(settings, tmp_path / "dbt")
