"""The landing location (EVENTS_URI, source 'landing'): each run appends the Coveo-format files
the event feed dropped since the last one, from a folder or an S3 prefix, and says when there was
nothing new (the nightly run then does not train)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import Emulator
from test_ingest import coveo_file, rows_by_prefix

from {{ cookiecutter.project }} import cli
from {{ cookiecutter.project }}.ingest import landing, load
from {{ cookiecutter.project }}.settings import Settings, get_settings


def landing_settings(tmp_path: Path, events_uri: str | None) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        duckdb_path=tmp_path / "warehouse.duckdb",
        events_uri=events_uri,
        warehouse="duckdb",
    )


def drop(folder: Path, name: str, prefix: str, rows: int) -> Path:
    """A Coveo-format export of `rows` rows named `name` in folder, as the event feed drops it."""
    path = coveo_file(folder / f".{name}", prefix, rows)
    return path.rename(folder / name)


def test_each_run_appends_only_the_files_dropped_since_the_last(tmp_path: Path) -> None:
    feed = tmp_path / "landing"
    drop(feed, "2026-01-01.csv", "aaaa", 60)
    drop(feed / "2026-01-02", "export.csv", "bbbb", 30)  # sub-folders count too
    (feed / "README.txt").write_text("not events")
    settings = landing_settings(tmp_path, str(feed))

    first = load.ingest(settings, source="landing", progress=None)
    assert (first.files_loaded, first.rows_loaded) == (2, 90)
    late = drop(feed, "2026-01-03.csv", "cccc", 24)  # with a row the row rules quarantine
    late.write_text(late.read_text().replace("event_product", "click", 1))
    second = load.ingest(settings, source="landing", progress=None)
    assert (second.files_loaded, second.rows_loaded, second.rows_already_loaded) == (1, 23, 90)
    assert (second.rows_read, second.quarantined) == (
        114,
        {"event_type '...' is not pageview or event_product": 1},
    )
    assert rows_by_prefix(settings.duckdb_path) == {"aaaa": 60, "bbbb": 30, "cccc": 23}
    assert load.ingest(settings, source="landing", progress=None).files_loaded == 0


def test_the_landing_source_needs_an_existing_events_uri(tmp_path: Path) -> None:
    with pytest.raises(load.IngestError, match="needs EVENTS_URI"):
        load.ingest(landing_settings(tmp_path, None), source="landing", progress=None)
    with pytest.raises(landing.LandingError, match="is no folder"):
        load.ingest(landing_settings(tmp_path, str(tmp_path / "nope")), source="landing")


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI reads its settings once from the environment: a tmp folder, no project .env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_outcome_says_new_then_since_when_nothing_is_new(
    tmp_path: Path, cli_settings: None
) -> None:
    feed = tmp_path / "landing"
    drop(feed, "day1.csv", "aaaa", 30)
    outcome = tmp_path / "outcome"
    command = ["data", "--source", "landing", "--events-uri", str(feed), "--outcome", str(outcome)]
    assert cli.main(command) == 0
    assert outcome.read_text() == "new\n"
    assert cli.main(command) == 0
    assert outcome.read_text().startswith("no new events since 20")
    assert outcome.read_text().endswith(" UTC: nothing to train\n")
    assert rows_by_prefix(tmp_path / "warehouse.duckdb") == {"aaaa": 30}


@pytest.mark.cloud
def test_files_under_an_s3_prefix_are_listed_read_and_loaded_once(
    aws_env: Emulator, tmp_path: Path
) -> None:
    bucket = f"events-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "exports"
    for key, prefix, rows in (("landing/a.csv", "aaaa", 40), ("landing/b/b.csv", "bbbb", 20)):
        s3.upload_file(str(drop(local, Path(key).name, prefix, rows)), bucket, key)
    s3.put_object(Bucket=bucket, Key="elsewhere/c.csv", Body=b"not under the prefix")
    s3.put_object(Bucket=bucket, Key="landing/_SUCCESS", Body=b"")
    settings = landing_settings(tmp_path, f"s3://{bucket}/landing/")

    assert landing.landing_files(settings.events_uri or "") == [
        f"s3://{bucket}/landing/a.csv",
        f"s3://{bucket}/landing/b/b.csv",
    ]
    first = load.ingest(settings, source="landing", progress=None)
    assert (first.files_loaded, first.rows_loaded) == (2, 60)
    assert load.ingest(settings, source="landing", progress=None).files_loaded == 0
    assert rows_by_prefix(settings.duckdb_path) == {"aaaa": 40, "bbbb": 20}
    with pytest.raises(landing.LandingError, match="NoSuchBucket"):
        landing.landing_files(f"s3://absent-{bucket}/landing/")
