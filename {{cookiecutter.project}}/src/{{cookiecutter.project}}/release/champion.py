"""The champion: the model deployed now, kept where the next run's gate can re-score it.

`write_champion` keeps the deployed model.tar.gz and its record (run, metrics, where it runs, the
archive's sha256) in DATA_DIR/deployments/, or with DEPLOY_TARGET=sagemaker in S3 (`champion_s3`, a
part of projects baked with deployment=sagemaker). `champion_status` reads them back as a
`ChampionStatus` for the gate, and `load_champion` also as a recommender to evaluate beside the
challenger. Both fail closed: an archive without its record, a record without its archive, or an
archive whose sha256 is not the record's is `unavailable` (a SavedModel is code: a swapped one is
never loaded). With DEPLOY_TARGET=sagemaker, `check_endpoint` also holds the record against
what the endpoint serves now (its config, from DescribeEndpoint in `deploy`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from ..evaluation.protocol import Recommender
from ..modeling.archive import load_archive
from ..settings import Settings, get_settings
from . import ARCHIVE_FILE, CHAMPION_FILE, ChampionUnavailable, sha256_hex
from .gate import CHAMPION_NAME, ChampionStatus


def write_champion(
    settings: Settings, record: Mapping[str, Any], model_archive: bytes
) -> dict[str, Any]:
    """Keep the deployed archive and its record where later runs (and CI jobs) find them.

    Local: DATA_DIR/deployments/; sagemaker: s3://MODEL_BUCKET/MODEL_PREFIX/champion/. The
    archive goes first, so a record never points at an archive that is not there yet; the record
    carries the archive's sha256, which `champion_status` checks before anything loads it.
    """
    record = dict(record) | {"sha256": sha256_hex(model_archive)}
    if settings.deploy_target == "sagemaker":
        from . import champion_s3  # a part of deployment=sagemaker bakes (settings check it)

        champion_s3.write(settings, record, model_archive)
        return record
    folder = _champion_dir(settings)
    with _local_store(f"writing the champion record to {folder}"):
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / ARCHIVE_FILE
        _write_atomic(archive, model_archive)
        record["model_uri"] = record.get("model_uri") or str(archive.resolve())
        _write_atomic(folder / CHAMPION_FILE, json.dumps(record, indent=1).encode())
    return record


def read_champion(settings: Settings | None = None) -> dict[str, Any] | None:
    """The record of the model deployed now, or None if nothing was deployed yet.

    Raises `ChampionUnavailable` when the store cannot be read (no bucket, no credentials, a
    corrupt record): a gate must not mistake "cannot tell" for "no champion".
    """
    data = _read_champion_file(settings or get_settings(), CHAMPION_FILE)
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError as error:
        raise ChampionUnavailable(
            f"the champion record is not JSON ({error}): deploy a model again to rewrite it"
        ) from None
    if not isinstance(record, dict):
        raise ChampionUnavailable("the champion record is not a JSON object: deploy again")
    return record


def load_champion_archive(settings: Settings | None = None) -> bytes | None:
    """The deployed model.tar.gz kept with the champion record, or None if there is none."""
    return _read_champion_file(settings or get_settings(), ARCHIVE_FILE)


def champion_status(settings: Settings) -> tuple[ChampionStatus, bytes | None]:
    """What is deployed now, checked against its record: (status, the archive when `deployed`).

    Never raises for an unreadable store: that is an `unavailable` status with its reason, and so
    is an archive without a record, a record without an archive, or an archive whose sha256 is not
    the record's. Only when neither file exists is there no champion yet (a first deployment).
    """
    try:
        record = read_champion(settings)
        archive = load_champion_archive(settings)
    except ChampionUnavailable as error:
        return ChampionStatus("unavailable", str(error)), None
    if record is None and archive is None:
        return ChampionStatus("none", "no champion deployed yet"), None
    # No model can be gated against a champion that fails these checks, so the way out is by hand.
    recover = (
        f"check what is deployed, then delete both files in {store_uri(settings)} (the next "
        "gate then counts as a first deployment)"
    )
    if record is None:
        reason = f"{ARCHIVE_FILE} is there without its {CHAMPION_FILE}: {recover}"
        return ChampionStatus("unavailable", reason), None
    if archive is None:
        run = record.get("run_id")
        reason = f"the record of run {run} has no {ARCHIVE_FILE} beside it: {recover}"
        return ChampionStatus("unavailable", reason, record), None
    actual, expected = sha256_hex(archive), record.get("sha256")
    if actual != expected:
        reason = (
            f"the sha256 of {ARCHIVE_FILE} ({actual[:12]}...) is not its record's "
            f"({expected or 'none recorded'}), so it is not loaded: {recover}"
        )
        return ChampionStatus("unavailable", reason, record), None
    return ChampionStatus("deployed", "", record), archive


def check_endpoint(
    status: ChampionStatus, endpoint: str, live_config: str | None, store: str
) -> ChampionStatus:
    """`status` (from `champion_status`) checked against what `endpoint` serves now.

    `live_config` is the endpoint's EndpointConfigName (None: there is no such endpoint) and
    `store` where the record is kept. The record must name this endpoint and its live config;
    otherwise the model the gate would compare with is not the one serving, and the status is
    `unavailable` with what to do. No endpoint and no record is still a first deployment.
    """
    if status.state == "unavailable":
        return status  # already failing closed, for its own reason
    if status.state == "none":
        if live_config is None:
            return status
        reason = (
            f"endpoint {endpoint} is live (config {live_config}) but has no champion record at "
            f"{store}: it was deployed by hand, or MODEL_BUCKET / MODEL_PREFIX point elsewhere; "
            "fix those, or delete the endpoint (or set a new SAGEMAKER_ENDPOINT) so that the "
            "next gate counts as a first deployment"
        )
        return ChampionStatus("unavailable", reason)
    recorded_endpoint = status.record.get("endpoint")
    recorded = status.record.get("endpoint_config")
    if recorded_endpoint != endpoint:
        reason = (
            f"the champion record at {store} is for endpoint {recorded_endpoint}, not "
            f"SAGEMAKER_ENDPOINT={endpoint}: set SAGEMAKER_ENDPOINT back, or give each endpoint "
            "its own MODEL_PREFIX"
        )
    elif live_config is None:
        # Not a first deployment: a record without its endpoint means the endpoint was deleted,
        # or these credentials look at another account or region, where a first deployment
        # would start a second production endpoint. Either way a person decides.
        reason = (
            f"the champion record at {store} says endpoint {endpoint} serves config {recorded}, "
            "but there is no such endpoint: check the AWS account and region (AWS_DEFAULT_REGION);"
            f" if it was deleted on purpose, delete both files in {store} so that the next gate "
            "counts as a first deployment"
        )
    elif live_config != recorded:
        reason = (
            f"endpoint {endpoint} serves config {live_config} but the champion record at {store} "
            f"says {recorded} (changed by hand, or a deployment stopped before recording its "
            f"champion): put it back with `aws sagemaker update-endpoint --endpoint-name {endpoint}"
            f" --endpoint-config-name {recorded}`, then deploy again through the gate"
        )
    else:
        return status
    return ChampionStatus("unavailable", reason, status.record)


def load_champion(settings: Settings, work_dir: Path) -> tuple[ChampionStatus, Recommender | None]:
    """The deployed champion's status and, when there is one, the model to re-score as it.

    Never raises: `champion_status`'s `unavailable` (an unreadable store, a missing or swapped
    file) and an archive that does not load are an `unavailable` status, which the gate turns
    into a failed check with its reason (the evaluation still runs without it).
    """
    status, archive = champion_status(settings)
    if archive is None:
        return status, None
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        recommender = load_archive(archive, work_dir)
    except (ProjectError, OSError, ValueError) as error:  # a broken archive or SavedModel
        reason = f"the champion's model archive cannot be loaded ({error}); deploy a model again"
        return ChampionStatus("unavailable", reason, status.record), None
    recommender.name = CHAMPION_NAME  # scored under its role, whatever the class calls itself
    return status, recommender


def _read_champion_file(settings: Settings, name: str) -> bytes | None:
    if settings.deploy_target == "sagemaker":
        from . import champion_s3  # a part of deployment=sagemaker bakes (settings check it)

        return champion_s3.read(settings, name)
    path = _champion_dir(settings) / name
    with _local_store(f"reading {path}"):
        return path.read_bytes() if path.is_file() else None


def store_uri(settings: Settings) -> str:
    """Where the champion's files are kept (a folder, or an s3:// prefix)."""
    if settings.deploy_target == "sagemaker":
        from . import champion_s3  # a part of deployment=sagemaker bakes (settings check it)

        return champion_s3.uri(settings)
    return str(_champion_dir(settings))


def _champion_dir(settings: Settings) -> Path:
    return settings.data_dir / "deployments"


@contextmanager
def _local_store(doing: str) -> Iterator[None]:
    """File system errors while `doing` become one-line `ChampionUnavailable` errors."""
    try:
        yield
    except OSError as error:
        raise ChampionUnavailable(f"failed {doing}: {error}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    staging = path.with_name(path.name + ".partial")
    staging.write_bytes(data)
    staging.replace(path)
