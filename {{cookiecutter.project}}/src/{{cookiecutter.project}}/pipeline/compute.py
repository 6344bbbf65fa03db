"""Where the flow's heavy steps run (here, or on AWS Batch) and whether the datastore is usable.

`BATCH=true` switches the model steps (train, tune, evaluate) to Metaflow's `@batch` with the
resources of the BATCH_* settings; no code changes. The warehouse steps (ingest, transform,
quality, dataset) stay where the flow is launched: their heavy lifting happens inside the
warehouse (dbt, SQL), a local DuckDB file is only reachable from this machine, and a container
start would add minutes to steps that mostly wait on the warehouse.

Metaflow's own configuration (METAFLOW_DEFAULT_DATASTORE, METAFLOW_DATASTORE_SYSROOT_S3, ...)
comes from the environment; `preflight()` checks it in seconds, because Metaflow itself retries an
unreachable S3 endpoint for many minutes before failing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args
from urllib.parse import urlparse

from metaflow import batch, environment, metaflow_config
from pydantic import SecretStr

from ..errors import ProjectError
from ..modeling.backend import use_backend
from ..settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])

GPU_TAG_SUFFIX = "-gpu"  # BATCH_IMAGE's tag + this = the GPU image's, when BATCH_GPU_IMAGE is unset

# Settings not forwarded to Batch tasks: secrets, which anyone allowed to describe Batch jobs could
# read in the job's environment (give them to the task through a secrets manager instead), and
# paths of this machine, which mean nothing in the container.
_NOT_FORWARDED = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if {SecretStr, Path} & {field.annotation, *get_args(field.annotation)}
)


class ComputeError(ProjectError, RuntimeError):
    """The compute or datastore configuration cannot run the flow; the message says what to set."""


def heavy(gpu: bool = False, settings: Settings | None = None) -> Callable[[F], F]:
    """The decorator of a heavy step: `@batch` with the BATCH_* resources when BATCH=true, else
    nothing. `gpu=True` (training) adds BATCH_GPU GPUs, in the GPU image (`gpu_image`), when that
    setting is above zero."""
    settings = settings or get_settings()
    if not settings.batch:
        return _unchanged
    resources: dict[str, Any] = {"cpu": settings.batch_cpu, "memory": settings.batch_memory}
    if settings.batch_image:
        resources["image"] = settings.batch_image
    if settings.batch_queue:
        resources["queue"] = settings.batch_queue
    if gpu and settings.batch_gpu:
        resources["gpu"] = settings.batch_gpu
        if image := gpu_image(settings):  # check_batch refuses BATCH_GPU without one
            resources["image"] = image
    on_batch = batch(**resources)
    with_settings = environment(vars=forwarded_settings(settings))
    return lambda step: with_settings(on_batch(step))


def _unchanged(step: F) -> F:
    return step


def gpu_image(settings: Settings) -> str | None:
    """The image of the GPU steps: BATCH_GPU_IMAGE, else BATCH_IMAGE's tag with `-gpu` appended
    (`repo:abc123` -> `repo:abc123-gpu`: the GPU variant of the same build, as `make image
    IMAGE_VARIANT=gpu` tags it; Keras on JAX with CUDA wheels); None when neither gives one (no
    BATCH_IMAGE, or one pinned by digest). The CPU image is no fallback: it would train on the
    CPU of the GPU instance."""
    if settings.batch_gpu_image:
        return settings.batch_gpu_image
    image = settings.batch_image or ""
    name = image.rsplit("/", 1)[-1]  # a registry's host:port may hold a colon too
    if not image or "@" in name:
        return None
    repository, _, tag = name.partition(":")
    return f"{image[: len(image) - len(name)]}{repository}:{tag or 'latest'}{GPU_TAG_SUFFIX}"


def training_backend(settings: Settings) -> str:
    """The Keras backend of the training steps (TRAIN_BACKEND): `auto` is JAX where the step has
    GPUs (Batch with BATCH_GPU>0: the GPU image has jax[cuda12], its TensorFlow is CPU-only), else
    TensorFlow. Inside a Batch job the same answer comes out: BATCH and BATCH_GPU are forwarded."""
    if settings.train_backend != "auto":
        return settings.train_backend
    return "jax" if settings.batch and settings.batch_gpu > 0 else "tensorflow"


def select_training_backend(settings: Settings) -> str:
    """Make this step's Keras train on `training_backend(settings)`; call it before anything
    imports Keras (the training modules do). Returns the backend's name."""
    name = training_backend(settings)
    use_backend(name)
    return name


def forwarded_settings(settings: Settings) -> dict[str, str]:
    """The settings a Batch task needs to behave like this process, as environment variables:
    every value that differs from its default (`.env` is not in the container), but secrets and
    local paths."""
    values = settings.model_dump(mode="json", exclude_defaults=True, exclude=set(_NOT_FORWARDED))
    return {name.upper(): str(value) for name, value in values.items() if value is not None}


def check_batch(
    settings: Settings,
    datastore: str | None = None,
    default_image: str | None = None,
    default_queue: str | None = None,
    job_role: str | None = None,
) -> None:
    """With BATCH=true: the S3 datastore, an image, a job queue and a job role must be set.

    The optional arguments stand for Metaflow's configuration (METAFLOW_* variables), the default.
    """
    if not settings.batch:
        return
    datastore = datastore or metaflow_config.DEFAULT_DATASTORE
    if datastore != "s3":
        raise ComputeError(
            f"BATCH=true needs Metaflow's S3 datastore, but METAFLOW_DEFAULT_DATASTORE={datastore}."
            " Set METAFLOW_DEFAULT_DATASTORE=s3 and METAFLOW_DATASTORE_SYSROOT_S3=s3://bucket/"
            "prefix (README: Going to production), or set BATCH=false."
        )
    if not (settings.batch_image or default_image or metaflow_config.BATCH_CONTAINER_IMAGE):
        raise ComputeError(
            "BATCH=true needs the project's image: push the Dockerfile's image to ECR and set "
            "BATCH_IMAGE to its URI (a plain Python image lacks the project's dependencies)."
        )
    if settings.batch_gpu and not gpu_image(settings):
        raise ComputeError(
            f"BATCH_GPU={settings.batch_gpu} needs the GPU image: build and push it (make image "
            "IMAGE_VARIANT=gpu) and set BATCH_GPU_IMAGE to its URI (its tag is derived only from "
            "a BATCH_IMAGE with a tag, not a digest)."
        )
    if not (settings.batch_queue or default_queue or metaflow_config.BATCH_JOB_QUEUE):
        raise ComputeError(
            "BATCH=true needs a Batch job queue: set BATCH_QUEUE or METAFLOW_BATCH_JOB_QUEUE."
        )
    if not (job_role or metaflow_config.ECS_S3_ACCESS_IAM_ROLE):
        raise ComputeError(
            "BATCH=true needs the IAM role of the Batch tasks (it reads and writes the S3 "
            "datastore): set METAFLOW_ECS_S3_ACCESS_IAM_ROLE to its ARN."
        )


def check_datastore(
    datastore: str | None = None,
    sysroot: str | None = None,
    endpoint_url: str | None = None,
    timeout_s: float = 5.0,
) -> None:
    """With the S3 datastore, its bucket must exist and answer within `timeout_s` seconds.

    Arguments default to Metaflow's configuration (METAFLOW_* variables or its config file).
    """
    datastore = datastore or metaflow_config.DEFAULT_DATASTORE
    if datastore != "s3":
        return
    sysroot = sysroot or metaflow_config.DATASTORE_SYSROOT_S3
    endpoint_url = endpoint_url or metaflow_config.S3_ENDPOINT_URL
    location = urlparse(sysroot or "")
    if location.scheme != "s3" or not location.netloc:
        raise ComputeError(
            "METAFLOW_DEFAULT_DATASTORE=s3 needs METAFLOW_DATASTORE_SYSROOT_S3=s3://bucket/"
            f"prefix, not {sysroot!r}."
        )
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    config = Config(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1}
    )
    where = f"S3 endpoint {endpoint_url} (METAFLOW_S3_ENDPOINT_URL)" if endpoint_url else "S3"
    try:
        client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        client.head_bucket(Bucket=location.netloc)
    except NoCredentialsError:
        raise ComputeError(
            "No AWS credentials for Metaflow's S3 datastore: set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        ) from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        problem = (
            "does not exist: create it or fix the setting"
            if code in {"404", "NoSuchBucket"}
            else f"refuses these credentials ({code}): they need s3:ListBucket on it"
        )
        raise ComputeError(
            f"The bucket {location.netloc!r} of METAFLOW_DATASTORE_SYSROOT_S3={sysroot} at "
            f"{where} {problem}."
        ) from None
    except BotoCoreError as error:
        raise ComputeError(
            f"Cannot reach {where} within {timeout_s:.0f} s ({error}). Check "
            "METAFLOW_S3_ENDPOINT_URL (unset it for AWS itself) and the network."
        ) from None


def preflight(settings: Settings | None = None) -> None:
    """Check the compute and datastore configuration; exit with its message when unusable.

    Runs before Metaflow touches S3, so a wrong bucket or endpoint fails in seconds, not minutes.
    Inside a Batch job it does nothing: the launcher checked, and the job sees only part of the
    launcher's configuration (Metaflow's own variables are not all passed on).
    """
    if os.environ.get("AWS_BATCH_JOB_ID"):
        return
    try:
        check_batch(settings or get_settings())
        check_datastore()
    except ComputeError as error:
        raise SystemExit(f"Configuration error: {error}") from None
