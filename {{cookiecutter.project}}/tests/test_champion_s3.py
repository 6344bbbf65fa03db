"""The champion record in S3 (DEPLOY_TARGET=sagemaker), against moto's server."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from conftest import Emulator

from {{ cookiecutter.project }}.release import sha256_hex
from {{ cookiecutter.project }}.release.champion import (
    ChampionUnavailable,
    champion_status,
    load_champion,
    load_champion_archive,
    read_champion,
    write_champion,
)
from {{ cookiecutter.project }}.release.gate import ChampionStatus
from {{ cookiecutter.project }}.settings import Settings

pytestmark = pytest.mark.cloud


def s3_settings(tmp_path: Path, bucket: str | None) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", deploy_target="sagemaker", model_bucket=bucket
    )


def test_the_record_and_its_archive_live_under_the_model_prefix(
    aws_env: Emulator, tmp_path: Path
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    settings = s3_settings(tmp_path, bucket)
    assert read_champion(settings) is None and load_champion_archive(settings) is None

    record = {"run_id": "42", "model_uri": "s3://elsewhere/model.tar.gz"}
    written = write_champion(settings, record, b"archive")
    assert written == record | {"sha256": sha256_hex(b"archive")}
    assert read_champion(settings) == written and load_champion_archive(settings) == b"archive"
    assert champion_status(settings) == (ChampionStatus("deployed", "", written), b"archive")
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"models/champion/champion.json", "models/champion/model.tar.gz"}


def test_an_unreachable_champion_store_is_reported(
    aws_env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = s3_settings(tmp_path, f"absent-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ChampionUnavailable, match="NoSuchBucket"):
        read_champion(settings)
    with pytest.raises(ChampionUnavailable, match="set MODEL_BUCKET"):
        read_champion(settings.model_copy(update={"model_bucket": None}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ChampionUnavailable, match="failed reading s3://"):
        load_champion_archive(settings)


def test_an_unreachable_s3_record_store_makes_the_champion_unavailable(
    aws_env: Emulator, tmp_path: Path
) -> None:
    settings = s3_settings(tmp_path, "no-such-bucket-s6")
    status, model = load_champion(settings, tmp_path / "work")
    assert (status.state, model) == ("unavailable", None)
    assert "no-such-bucket-s6" in status.reason


def test_a_swapped_archive_or_a_deleted_record_in_s3_fails_closed(
    aws_env: Emulator, tmp_path: Path
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    settings = s3_settings(tmp_path, bucket)
    write_champion(settings, {"run_id": "42"}, b"the deployed archive")

    s3.put_object(Bucket=bucket, Key="models/champion/model.tar.gz", Body=b"a swapped archive")
    status, model = load_champion(settings, tmp_path / "work")
    assert (status.state, model) == ("unavailable", None)
    assert "is not its record's" in status.reason and status.record["run_id"] == "42"

    s3.delete_object(Bucket=bucket, Key="models/champion/champion.json")
    status, model = load_champion(settings, tmp_path / "work")
    assert (status.state, model) == ("unavailable", None)
    assert "there without its champion.json" in status.reason
    assert f"delete both files in s3://{bucket}/models/champion/" in status.reason

    s3.delete_object(Bucket=bucket, Key="models/champion/model.tar.gz")
    assert champion_status(settings)[0] == ChampionStatus("none", "no champion deployed yet")
