"""The landing location (EVENTS_URI): where the event feed drops Coveo-format CSV files.

A local folder, or `s3://bucket/prefix/` in production. Every `*.csv` under it is one export in the
browsing_train.csv format (the header names the columns; `coveo` checks each row). Files are
never moved or deleted here: the loader content-hashes what it converts, so a file loaded before
adds nothing when it is read again, and a new file adds exactly its rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..errors import ProjectError

CSV_SUFFIX = ".csv"
T = TypeVar("T")


class LandingError(ProjectError, ValueError):
    """The landing location cannot be read; the message says what to fix."""


def landing_files(uri: str) -> list[str]:
    """The CSV files under uri (paths, or s3:// URIs), sorted, so files load in their drop order
    when their names start with a date."""
    if not uri.startswith("s3://"):
        folder = Path(uri)
        if not folder.is_dir():
            raise LandingError(f"EVENTS_URI={uri} is no folder: create it or point it elsewhere.")
        return sorted(str(p) for p in folder.rglob(f"*{CSV_SUFFIX}") if p.is_file())
    bucket, prefix = _bucket_key(uri)
    pages = _s3_call(
        uri,
        lambda s3: (
            s3.get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix)
            .build_full_result()
        ),
    )
    keys = [o["Key"] for o in pages.get("Contents", []) if o["Key"].endswith(CSV_SUFFIX)]
    return [f"s3://{bucket}/{key}" for key in sorted(keys)]


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A readable path for one landing file: the file itself, or an S3 object downloaded under its
    own name (rejects name the file) into a temporary folder removed afterwards."""
    if not uri.startswith("s3://"):
        yield Path(uri)
        return
    bucket, key = _bucket_key(uri)
    with tempfile.TemporaryDirectory(prefix="landing-") as folder:
        path = Path(folder) / Path(key).name
        _s3_call(uri, lambda s3: s3.download_file(bucket, key, str(path)))
        yield path


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_call(uri: str, call: Callable[[Any], T]) -> T:
    """One boto3 S3 call, its errors made one readable line."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(boto3.client("s3"))
    except (BotoCoreError, ClientError) as e:
        raise LandingError(
            f"Cannot read the landing location {uri}: {e}. Check EVENTS_URI and that the job's "
            "AWS credentials may list and read it (s3:ListBucket, s3:GetObject)."
        ) from e
