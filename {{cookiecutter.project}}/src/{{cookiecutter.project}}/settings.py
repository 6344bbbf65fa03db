"""One typed settings object, read from the environment and `.env`.

Every default makes the local run work with no cloud account; `.env.example` documents them.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values  # the parser pydantic-settings reads .env with
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ProjectError
from .schema import MAX_SESSION_LENGTH, MIN_SESSION_LENGTH

# The answers the project was baked with (cookiecutter renders bake.json): the optional parts that
# a bake left out are whole files the post-generation hook removed: settings may not ask for them.
BAKE: dict[str, str] = json.loads(resources.files(__package__).joinpath("bake.json").read_text())
# How close (difflib's ratio) an unknown variable's name must be to a setting's to be taken for a
# misspelling of it: .env holds mostly this project's variables, the environment many others'
# (PATH, METAFLOW_*, AWS_*, DBT_PROFILES_DIR at 0.77 of DBT_PROJECT_DIR), so it needs a closer one.
_CLOSE_IN_ENV_FILE = 0.8
_CLOSE_IN_ENVIRONMENT = 0.85
# (setting, value that needs an optional part, the bake question, the answer that keeps the part)
_NEEDS_PART = (
    ("tracking", "comet", "tracking", "comet"),
    ("dbt_runner", "cloud", "dbt_runner", "cloud"),
    ("deploy_target", "sagemaker", "deployment", "sagemaker"),
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- data -------------------------------------------------------------------------------
    data_dir: Path = Field(
        Path("data"), description="Folder for generated events and local outputs"
    )
    n_sessions: int = Field(20_000, ge=100, description="Synthetic sessions to generate")
    n_products: int = Field(2_000, ge=50, description="Synthetic catalogue size (SKUs)")
    seed: int = Field(42, description="Seed of the synthetic generator")
    start_date: date = Field(date(2026, 1, 1), description="First day of synthetic events")
    days: int = Field(28, ge=2, description="Days covered by synthetic events")
    coveo_dir: Path | None = Field(
        None, description="Folder with the real Coveo browsing_train.csv (source 'coveo')"
    )
    events_uri: str | None = Field(
        None,
        description="Landing location of the event feed: a folder or s3://bucket/prefix/ of "
        "Coveo-format CSV files (source 'landing'; the files not loaded yet are appended)",
    )
    reject_max_share: float = Field(
        0.5, ge=0, le=1, description="Largest share of a file's rows quarantined; more refuses it"
    )

    # --- warehouse --------------------------------------------------------------------------
    warehouse: Literal["duckdb", "snowflake"] = Field("duckdb", description="Where events live")
    duckdb_path: Path = Field(Path("data/warehouse.duckdb"), description="DuckDB file (local)")
    tenant: str = Field("demo", description="Tenant / API key recorded with each load")
    duckdb_memory_limit: str = Field("3GB", description="DuckDB memory cap (it spills beyond)")
    snowflake_account: str | None = Field(None, description="Snowflake account identifier")
    snowflake_user: str | None = Field(None, description="Snowflake user")
    snowflake_password: SecretStr | None = Field(None, description="Snowflake password")
    snowflake_role: str | None = Field(None, description="Snowflake role")
    snowflake_warehouse: str | None = Field(None, description="Snowflake virtual warehouse")
    snowflake_database: str | None = Field(None, description="Snowflake database")
    snowflake_schema: str | None = Field(None, description="Snowflake schema of the dbt models")
    # Distinct from the models' schema so a pull request can load and build in schemas of its own
    # (pr_<N>_raw, pr_<N>) while production keeps `raw`.
    snowflake_raw_schema: str = Field(
        "raw",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Snowflake schema of the raw event log (the loader writes it, dbt reads it)",
    )
    snowflake_host: str | None = Field(None, description="Snowflake host (only for an emulator)")
    snowflake_port: int = Field(443, description="Snowflake port (only for an emulator)")
    snowflake_protocol: Literal["https", "http"] = Field("https", description="Snowflake protocol")
    snowflake_timeout_s: int = Field(
        20, ge=1, description="Seconds to wait for a Snowflake login before giving up"
    )

    # --- transform --------------------------------------------------------------------------
    dbt_project_dir: Path = Field(Path("dbt"), description="dbt project folder")
    dbt_target: str = Field("local", description="dbt target in dbt/profiles.yml")
    dbt_state_dir: Path | None = Field(
        None,
        description="Folder of production's manifest.json: dbt builds only what changed "
        "(slim CI, deferring the rest to production); no manifest there: a full build",
    )
    dbt_runner: Literal["core", "cloud"] = Field(
        "core", description="core runs dbt here; cloud triggers a dbt Cloud job (production)"
    )
    dbt_cloud_url: str = Field("https://cloud.getdbt.com", description="dbt Cloud API base URL")
    dbt_cloud_account_id: int | None = Field(None, description="dbt Cloud account id")
    dbt_cloud_job_id: int | None = Field(None, description="dbt Cloud job that builds the models")
    dbt_cloud_api_token: SecretStr | None = Field(None, description="dbt Cloud API token")
    dbt_cloud_timeout_s: int = Field(3600, ge=1, description="Longest wait for a dbt Cloud run")
    dbt_cloud_poll_s: float = Field(10.0, gt=0, description="Seconds between dbt Cloud polls")

    # --- dataset ----------------------------------------------------------------------------
    test_days: int = Field(7, ge=1, description="Newest days held out as the test split")
    max_session_length: int = Field(
        MAX_SESSION_LENGTH, ge=MIN_SESSION_LENGTH, description="Longest session kept for training"
    )

    # --- data quality (great-expectations) ---------------------------------------------------
    quality_min_rows: int = Field(100, ge=1, description="Fewest training sessions accepted")
    quality_min_mean_length: float = Field(3.0, description="Lowest mean session length accepted")
    quality_max_mean_length: float = Field(8.0, description="Highest mean session length accepted")

    # --- evaluation and gate (the one copy of the defaults of release.gate.GateThresholds) ----
    eval_max_examples: int = Field(
        50_000, ge=100, description="Test examples scored per model and protocol"
    )
    gate_min_mrr_at_20: float = Field(0.05, description="Gate: lowest MRR@20 deployed")
    gate_min_hit_rate_at_20: float = Field(0.10, description="Gate: lowest HR@20 deployed")
    gate_min_lift_over_best_baseline: float = Field(
        0.03, description="Gate: MRR@20 lift over the best baseline (0.05 = 5% better)"
    )
    gate_max_regression_vs_champion: float = Field(
        0.02, description="Gate: largest MRR@20 drop vs the deployed champion (0.02 = 2%)"
    )
    gate_max_invalid_item_rate: float = Field(
        0.0, description="Gate: share of recommended slots allowed to hold unknown SKUs"
    )
    gate_min_repeat_overlap: float = Field(
        0.8, description="Gate: top-20 overlap kept when the last SKU is repeated"
    )
    gate_min_noise_overlap: float = Field(
        0.5, description="Gate: top-20 overlap kept with a stray product view inserted"
    )
    gate_min_short_prefix_lift_over_most_popular: float = Field(
        0.0, description="Gate: MRR@20 lift over most-popular on 1-2 SKU prefixes"
    )
    gate_min_coverage_lift_over_most_popular: float = Field(
        1.0, description="Gate: catalogue coverage lift over most-popular (1.0 = twice)"
    )
    eval_behaviour_sample: int = Field(
        1000, ge=10, description="Test prefixes perturbed per robustness test"
    )
    eval_short_prefix_max: int = Field(
        2, ge=1, description="Longest prefix of the short-session slice"
    )

    # --- compute: Metaflow on AWS Batch (the S3 datastore comes from METAFLOW_* variables) ----
    batch: bool = Field(False, description="Run the heavy steps on AWS Batch")
    batch_queue: str | None = Field(None, description="Batch job queue (else Metaflow's default)")
    batch_image: str | None = Field(None, description="Container image of the Batch tasks")
    batch_cpu: int = Field(4, ge=1, description="vCPUs of each heavy Batch task")
    batch_memory: int = Field(16_000, ge=512, description="Memory (MiB) of each heavy Batch task")
    batch_gpu: int = Field(0, ge=0, description="GPUs of the training task")
    batch_gpu_image: str | None = Field(
        None,
        description="Image of the GPU steps (tune, train) when BATCH_GPU>0: the GPU image; "
        "unset, BATCH_IMAGE with `-gpu` after its tag (repo:abc123 -> repo:abc123-gpu)",
    )
    train_backend: Literal["auto", "tensorflow", "jax"] = Field(
        "auto",
        description="Keras backend that trains (tune, train): auto = jax on Batch with "
        "BATCH_GPU>0 (the GPU image), else tensorflow; the serving export is TensorFlow's always",
    )

    # --- tracking ---------------------------------------------------------------------------
    tracking: Literal["comet", "none"] = Field(
        default_factory=lambda: BAKE["tracking"],
        description="Experiment tracking (comet when the project was baked with Comet)",
    )
    comet_api_key: SecretStr | None = Field(None, description="Comet key; offline archive if unset")
    comet_project: str = Field(
        default_factory=lambda: __package__.replace("_", "-"), description="Comet project name"
    )

    # --- serving ----------------------------------------------------------------------------
    serving_host: str = Field("127.0.0.1", description="Local endpoint host")
    serving_port: int = Field(8080, description="Local endpoint port")
    serving_workers: int | None = Field(
        None, ge=1, description="Server processes (default: one per core in the container, else 1)"
    )
    serving_max_batch: int = Field(
        256, ge=1, description="Most sessions the server scores in one model call"
    )
    serving_batch_wait_ms: float = Field(
        2.0, ge=0, description="Longest wait (ms) for concurrent requests to join a batch"
    )

    # --- deployment -------------------------------------------------------------------------
    deploy_target: Literal["local", "sagemaker"] = Field(
        "local", description="local starts the endpoint here; sagemaker deploys to AWS"
    )
    sagemaker_endpoint: str = Field(
        default_factory=lambda: __package__.replace("_", "-"),
        description="SageMaker endpoint name",
    )
    sagemaker_role_arn: str | None = Field(None, description="SageMaker execution role ARN")
    sagemaker_image_uri: str | None = Field(None, description="Serving image (the Dockerfile's)")
    sagemaker_instance_type: str = Field("ml.m5.large", description="Endpoint instance type")
    sagemaker_instance_count: int = Field(1, ge=1, description="Endpoint instances")
    model_bucket: str | None = Field(None, description="S3 bucket for model.tar.gz archives")
    model_prefix: str = Field("models", description="S3 key prefix of the model archives")
    model_max_unpacked_mb: int = Field(
        2048, ge=1, description="Largest unpacked size (MiB) of a model archive; bigger is refused"
    )
    sagemaker_timeout_s: int = Field(
        1800, ge=1, description="Longest wait for the endpoint to be InService"
    )
    sagemaker_poll_s: float = Field(
        15.0, gt=0, description="Seconds between checks of the endpoint's status"
    )

    @model_validator(mode="after")
    def _parts_in_bake(self) -> Settings:
        """A value that needs a part this project was baked without is refused, with the fix."""
        for name, value, question, answer in _NEEDS_PART:
            if getattr(self, name) == value and BAKE[question] != answer:
                raise ValueError(
                    f"{name.upper()}={value} needs a project baked with {question}={answer}, and "
                    f"this one was baked with {question}={BAKE[question]}: change {name.upper()}, "
                    "or bake the template again"
                )
        return self


class SettingsError(ProjectError, ValueError):
    """A variable in the environment or `.env` has a value that cannot be used."""


@lru_cache
def get_settings() -> Settings:
    """The settings of this process (read once); a bad value names its variable, and a variable
    that looks like a misspelled setting gets a one-line warning on stderr."""
    env_file = Path(str(Settings.model_config.get("env_file") or ".env"))
    for warning in misspelled_variables(env_file, os.environ):
        print(warning, file=sys.stderr)
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(
            f"Invalid setting(s): {_problems(error)}. Fix them in .env or the environment "
            "(see .env.example)."
        ) from None


def with_overrides(settings: Settings, **values: object) -> Settings:
    """`settings` with some fields set (a flow's parameters, command-line options), checked by the
    rules of the settings (`Field` limits, types): SettingsError names each bad value and its rule.
    """
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"{', '.join(unknown)}: not settings (see .env.example).")
    try:
        return Settings.model_validate({**dict(settings), **values})
    except ValidationError as error:
        raise SettingsError(f"{_problems(error)}.") from None


def misspelled_variables(env_file: Path, environ: Mapping[str, str]) -> list[str]:
    """A warning for each variable of env_file or environ that is no setting but close to one."""
    fields = list(Settings.model_fields)
    sources: list[tuple[str, Iterable[str], float]] = [
        ("the environment", environ, _CLOSE_IN_ENVIRONMENT)
    ]
    if env_file.is_file():
        sources.insert(0, (str(env_file), dotenv_values(env_file).keys(), _CLOSE_IN_ENV_FILE))
    warnings, seen = [], set(fields)
    for where, names, cutoff in sources:
        for name in sorted(names):
            if name.lower() in seen:
                continue
            seen.add(name.lower())
            close = difflib.get_close_matches(name.lower(), fields, n=1, cutoff=cutoff)
            if close:
                warnings.append(
                    f"Warning: {name} (in {where}) is not a setting and is ignored; did you mean "
                    f"{close[0].upper()}?"
                )
    return warnings


def _problems(error: ValidationError) -> str:
    return "; ".join(_problem(e) for e in error.errors())


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error as `NAME='value': why`; a check across settings shows no values."""
    if not error["loc"]:
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc'])).upper()}={error.get('input')!r}: {error['msg']}"
