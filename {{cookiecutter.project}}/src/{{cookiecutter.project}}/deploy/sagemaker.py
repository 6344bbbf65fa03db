"""Deploy a model archive to a SageMaker endpoint with plain boto3, blue/green, with rollback.

One deployment: upload model.tar.gz to s3://MODEL_BUCKET/MODEL_PREFIX/<name>/, create a model and a
new endpoint config (names are unique per deployment), then create the endpoint or switch the
existing one to the new config. SageMaker's update is blue/green: the old fleet serves until the new
one is healthy. Once InService, one smoke request goes through `invoke_endpoint` with the serving
contract's payload; if it fails, the endpoint goes back to its previous config (a brand-new endpoint
is deleted) and `SmokeTestFailed` says why.

This module is removed from projects baked with deployment=none.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ProjectError
from ..settings import Settings

VARIANT = "AllTraffic"
_NAME_MAX = 63  # SageMaker names: letters, digits and hyphens, at most 63 characters


class SageMakerError(ProjectError, RuntimeError):
    """The deployment could not be made or checked; the message says what to do."""


class SmokeTestFailed(SageMakerError):
    """The new model answered the smoke request badly; the endpoint was rolled back."""


@dataclass(frozen=True)
class Clients:
    """The three AWS clients a deployment uses (tests pass stubbed ones)."""

    s3: Any
    sagemaker: Any
    runtime: Any

    @classmethod
    def from_session(cls, session: boto3.Session | None = None) -> Clients:
        """Clients of `session` (default: the environment's credentials and region)."""
        session = session or boto3.Session()
        if session.region_name is None:
            raise SageMakerError(
                "No AWS region: set AWS_DEFAULT_REGION (or AWS_REGION, or a profile's region)."
            )
        if session.get_credentials() is None:
            raise SageMakerError(
                "No AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE, or run with a role (in CI: the OIDC deploy role)."
            )
        return cls(
            s3=session.client("s3"),
            sagemaker=session.client("sagemaker"),
            runtime=session.client("sagemaker-runtime"),
        )


def check_settings(settings: Settings) -> None:
    """Raise one line naming every deployment variable that is missing."""
    required = {
        "MODEL_BUCKET": settings.model_bucket,
        "SAGEMAKER_ROLE_ARN": settings.sagemaker_role_arn,
        "SAGEMAKER_IMAGE_URI": settings.sagemaker_image_uri,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise SageMakerError(
            f"DEPLOY_TARGET=sagemaker needs {', '.join(missing)}: set them in .env or the "
            "environment (README: Going to production > SageMaker), or use DEPLOY_TARGET=local."
        )


def deployment_name(endpoint: str, now: datetime | None = None) -> str:
    """A unique model / endpoint-config name: the endpoint's name, a UTC timestamp, a nonce."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    suffix = f"-{stamp}-{secrets.token_hex(2)}"
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", endpoint).strip("-")[: _NAME_MAX - len(suffix)]
    return base.rstrip("-") + suffix


def model_uri(settings: Settings, name: str) -> str:
    return f"s3://{settings.model_bucket}/{settings.model_prefix.strip('/')}/{name}/model.tar.gz"


def deploy(
    archive: bytes | Path,
    settings: Settings,
    smoke_sessions: Sequence[Sequence[str]],
    k: int = 10,
    clients: Clients | None = None,
    name: str | None = None,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Deploy `archive` (model.tar.gz bytes or path) to `settings.sagemaker_endpoint`.

    `name` names the model and endpoint config (default: `deployment_name`, unique).

    Returns a plain record: endpoint, config and model names, model_uri, the previous config (None
    for a new endpoint), the smoke request, its answer and latency. Raises `SageMakerError` (missing
    settings, AWS errors, endpoint failed or not InService within `sagemaker_timeout_s`) and
    `SmokeTestFailed` after a rollback.
    """
    check_settings(settings)
    body = archive if isinstance(archive, bytes) else Path(archive).read_bytes()
    clients = clients or Clients.from_session()
    endpoint = settings.sagemaker_endpoint
    name = name or deployment_name(endpoint)
    uri = model_uri(settings, name)
    with _aws(f"uploading the model to {uri}", "Does MODEL_BUCKET exist, may you write to it?"):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    log(f"Uploaded {len(body) / 1e6:.1f} MB to {uri}")
    previous = current_config(clients.sagemaker, endpoint)
    with _aws(f"creating model and endpoint config {name}"):
        clients.sagemaker.create_model(
            ModelName=name,
            PrimaryContainer={"Image": settings.sagemaker_image_uri, "ModelDataUrl": uri},
            ExecutionRoleArn=settings.sagemaker_role_arn,
        )
        clients.sagemaker.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": name,
                    "InitialInstanceCount": settings.sagemaker_instance_count,
                    "InstanceType": settings.sagemaker_instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
    if previous is None:
        log(f"Creating endpoint {endpoint} with config {name}")
        with _aws(f"creating endpoint {endpoint}"):
            clients.sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
    else:
        log(f"Updating endpoint {endpoint}: {previous} -> {name} (blue/green)")
        with _aws(f"updating endpoint {endpoint}"):
            clients.sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=name)
    try:
        wait_in_service(
            clients.sagemaker, endpoint, name, settings.sagemaker_timeout_s, poll_s, log
        )
    except SageMakerError as error:
        if previous is not None:
            raise  # a failed update leaves SageMaker serving the previous config
        # A new endpoint that never came up would block the next deployment's create.
        rollback(clients.sagemaker, endpoint, None, settings.sagemaker_timeout_s, poll_s, log)
        raise SageMakerError(f"{error} The new endpoint {endpoint} was deleted.") from None

    payload = {"sessions": [list(s) for s in smoke_sessions], "k": k}
    try:
        answer, latency_ms = smoke_test(clients.runtime, endpoint, payload)
    except SmokeTestFailed as failure:
        rollback(clients.sagemaker, endpoint, previous, settings.sagemaker_timeout_s, poll_s, log)
        restored = f"back on {previous}" if previous else "deleted (it was new)"
        raise SmokeTestFailed(f"{failure} The endpoint {endpoint} is {restored}.") from None
    log(f"Smoke request answered in {latency_ms:.0f} ms")
    return {
        "endpoint_name": endpoint,
        "endpoint_config_name": name,
        "model_name": name,
        "model_uri": uri,
        "previous_config": previous,
        "smoke_payload": payload,
        "smoke_answer": answer,
        "smoke_latency_ms": latency_ms,
    }


def current_config(sagemaker: Any, endpoint: str) -> str | None:
    """The endpoint's current config name, or None if there is no such endpoint."""
    with _aws(f"describing endpoint {endpoint}"):
        try:
            return sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise


def wait_in_service(
    sagemaker: Any,
    endpoint: str,
    config: str,
    timeout_s: float,
    poll_s: float,
    log: Callable[[str], None] = print,
) -> None:
    """Poll until `endpoint` is InService on `config`; print each status change.

    A failed update leaves the endpoint InService on its old config with a FailureReason: that
    is an error too, as are Failed and running out of `timeout_s` (SAGEMAKER_TIMEOUT_S).
    """
    started = time.monotonic()
    last = None
    while True:
        with _aws(f"describing endpoint {endpoint}"):
            described = sagemaker.describe_endpoint(EndpointName=endpoint)
        status = described["EndpointStatus"]
        elapsed = time.monotonic() - started
        if status != last:
            log(f"  endpoint {endpoint}: {status} ({elapsed:.0f} s)")
            last = status
        reason = described.get("FailureReason")
        if status == "InService" and described.get("EndpointConfigName") == config:
            return
        if status == "Failed" or (status == "InService" and reason):
            raise SageMakerError(
                f"endpoint {endpoint} did not go InService on {config}: {reason or status}. "
                "Check the serving image (SAGEMAKER_IMAGE_URI) and the endpoint's CloudWatch logs."
            )
        if elapsed + poll_s > timeout_s:
            raise SageMakerError(
                f"endpoint {endpoint} is still {status} after {elapsed:.0f} s "
                f"(SAGEMAKER_TIMEOUT_S={timeout_s:g}); check it in the SageMaker console."
            )
        time.sleep(poll_s)


def smoke_test(
    runtime: Any, endpoint: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """Send the serving contract's payload; return the answer and latency, else SmokeTestFailed."""
    started = time.perf_counter()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(payload).encode(),
        )
        raw = response["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        detail = _reason(exc) if isinstance(exc, ClientError) else str(exc)
        raise SmokeTestFailed(f"The smoke request to {endpoint} failed: {detail}.") from None
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        answer = json.loads(raw)
        recommendations = answer["recommendations"]
    except (ValueError, TypeError, KeyError):
        raise SmokeTestFailed(
            f"The smoke request to {endpoint} got an answer that is not the serving contract's "
            f"JSON: {raw[:200]!r}."
        ) from None
    if not isinstance(recommendations, list) or len(recommendations) != len(payload["sessions"]):
        raise SmokeTestFailed(
            f"The smoke request to {endpoint} sent {len(payload['sessions'])} session(s) and got "
            f"an answer of the wrong shape: {raw[:200]!r}."
        )
    return answer, latency_ms


def rollback(
    sagemaker: Any,
    endpoint: str,
    previous: str | None,
    timeout_s: float,
    poll_s: float,
    log: Callable[[str], None] = print,
) -> None:
    """Put `endpoint` back on `previous` (and wait), or delete it if it had no previous config."""
    if previous is None:
        log(f"Rolling back: deleting the new endpoint {endpoint}")
        with _aws(f"deleting endpoint {endpoint} during the rollback"):
            sagemaker.delete_endpoint(EndpointName=endpoint)
        return
    log(f"Rolling back: endpoint {endpoint} -> {previous}")
    with _aws(f"rolling endpoint {endpoint} back to {previous}"):
        sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=previous)
    wait_in_service(sagemaker, endpoint, previous, timeout_s, poll_s, log)


@contextmanager
def _aws(doing: str, hint: str = "") -> Iterator[None]:
    """Turn boto errors inside the block into one-line SageMakerErrors: what was done, why, hint."""
    try:
        yield
    except ClientError as error:
        raise SageMakerError(f"AWS refused {doing}: {_reason(error)}. {hint}".rstrip()) from None
    except BotoCoreError as error:
        raise SageMakerError(f"AWS failed {doing}: {error}. {hint}".rstrip()) from None


def _reason(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'error')}: {details.get('Message', error)}"


def _is_missing(error: ClientError) -> bool:
    """describe_endpoint's answer for an endpoint that does not exist."""
    details = error.response.get("Error", {})
    return details.get("Code") == "ValidationException" and "Could not find" in str(
        details.get("Message", "")
    )
