"""The champion record in S3 (DEPLOY_TARGET=sagemaker): s3://MODEL_BUCKET/MODEL_PREFIX/champion/.

Projects baked with deployment=none do not have this module (their settings refuse the target).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ..settings import Settings
from . import ARCHIVE_FILE, CHAMPION_FILE, ChampionUnavailable


def write(settings: Settings, record: dict[str, Any], model_archive: bytes) -> None:
    """Put the archive, then the record that points at it."""
    bucket, prefix = _location(settings)
    s3 = boto3.client("s3")
    with _store(f"writing the champion record to s3://{bucket}/{prefix}"):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{ARCHIVE_FILE}", Body=model_archive)
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{CHAMPION_FILE}",
            Body=json.dumps(record, indent=1).encode(),
            ContentType="application/json",
        )


def read(settings: Settings, name: str) -> bytes | None:
    """The object `name` beside the champion record, or None if it is not there."""
    bucket, prefix = _location(settings)
    with _store(f"reading s3://{bucket}/{prefix}/{name}"):
        s3 = boto3.client("s3")
        try:
            return s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise


def uri(settings: Settings) -> str:
    """Where the champion's files are: s3://MODEL_BUCKET/MODEL_PREFIX/champion/."""
    bucket, prefix = _location(settings)
    return f"s3://{bucket}/{prefix}/"


def _location(settings: Settings) -> tuple[str, str]:
    if not settings.model_bucket:
        raise ChampionUnavailable(
            "DEPLOY_TARGET=sagemaker keeps the champion record in S3: set MODEL_BUCKET."
        )
    return settings.model_bucket, f"{settings.model_prefix.strip('/')}/champion"


@contextmanager
def _store(doing: str) -> Iterator[None]:
    """Storage and AWS errors while `doing` become one-line `ChampionUnavailable` errors."""
    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        raise ChampionUnavailable(
            f"AWS refused {doing}: {details.get('Code')}: {details.get('Message')} (does "
            "MODEL_BUCKET exist, and may these credentials use it?)"
        ) from None
    except (BotoCoreError, OSError) as error:
        raise ChampionUnavailable(f"failed {doing}: {error}") from None
