"""Metaflow on AWS against moto: the S3 datastore, the Batch switch, Step Functions, preflight.

moto's server stands in for S3, Batch, IAM and Step Functions. It cannot run containers, so the
Batch test asserts everything up to the job submission (image, resources, queue, environment) and
then lets the run fail; the Step Functions test builds the state machine JSON without deploying it.
The unit tests at the top need no server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from flow_runs import BUCKET, FLOW, FLOW_SETTINGS, PROJECT, QUEUE, run_python
from helpers import free_port
from metaflow import FlowSpec, step

from {{ cookiecutter.project }}.pipeline import compute
from {{ cookiecutter.project }}.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/{{ cookiecutter.project | replace('_', '-') }}:test"
JOB_ROLE = "arn:aws:iam::123456789012:role/recs-batch-job"
UNFORWARDED = "never-in-a-job-definition"


# --- the switch and the checks, without servers ---------------------------------------------


def _decorators(function) -> dict[str, dict]:
    return {d.name: dict(d.attributes) for d in getattr(function, "decorators", [])}


def test_batch_off_leaves_steps_unchanged() -> None:
    def train(self): ...

    assert compute.heavy(gpu=True, settings=Settings(batch=False))(train) is train


def test_batch_on_adds_batch_with_the_settings_resources() -> None:
    settings = Settings(
        batch=True,
        batch_image=IMAGE,
        batch_queue=QUEUE,
        batch_cpu=2,
        batch_memory=3000,
        batch_gpu=1,
    )

    class Probe(FlowSpec):
        @compute.heavy(gpu=True, settings=settings)
        @step
        def train(self): ...

        @compute.heavy(settings=settings)
        @step
        def evaluate(self): ...

    train, evaluate = _decorators(Probe.train), _decorators(Probe.evaluate)
    assert {"batch", "environment"} <= set(train)
    assert train["batch"]["queue"] == QUEUE
    assert (train["batch"]["cpu"], train["batch"]["memory"], train["batch"]["gpu"]) == (2, 3000, 1)
    # The GPU step runs in the GPU image (BATCH_IMAGE's tag + `-gpu`), the others in BATCH_IMAGE.
    assert train["batch"]["image"] == f"{IMAGE}-gpu"
    assert evaluate["batch"]["image"] == IMAGE
    assert evaluate["batch"]["gpu"] is None  # GPUs only where asked for
    assert train["environment"]["vars"]["BATCH_IMAGE"] == IMAGE


@pytest.mark.parametrize(
    ("values", "image"),
    [
        ({"batch_image": IMAGE}, f"{IMAGE}-gpu"),  # the GPU variant of the same build
        ({"batch_image": "localhost:5000/recs"}, "localhost:5000/recs:latest-gpu"),  # a port
        ({"batch_image": IMAGE, "batch_gpu_image": "elsewhere/recs:cuda"}, "elsewhere/recs:cuda"),
        ({"batch_image": "registry/recs@sha256:0123"}, None),  # a digest names one image only
        ({}, None),
    ],
)
def test_the_gpu_image_is_its_setting_or_batch_images_tag_with_gpu(values: dict, image) -> None:
    assert compute.gpu_image(Settings(batch=True, batch_gpu=1, **values)) == image


def test_gpus_without_a_gpu_image_are_refused() -> None:
    settings = Settings(batch=True, batch_gpu=1, batch_image="registry/recs@sha256:0123")
    with pytest.raises(compute.ComputeError, match="BATCH_GPU=1 needs the GPU image.*_GPU_IMAGE"):
        compute.check_batch(settings, datastore="s3", default_queue=QUEUE, job_role=JOB_ROLE)


@pytest.mark.parametrize(
    ("values", "backend"),
    [
        ({}, "tensorflow"),
        ({"batch": True}, "tensorflow"),  # Batch on CPUs: the CPU image's TensorFlow
        ({"batch": True, "batch_gpu": 1}, "jax"),  # the GPU image: Keras on JAX with CUDA
        ({"batch": True, "batch_gpu": 1, "train_backend": "tensorflow"}, "tensorflow"),
        ({"train_backend": "jax"}, "jax"),  # e.g. a workstation with a GPU
    ],
)
def test_the_training_backend_is_jax_where_the_step_has_gpus(values: dict, backend: str) -> None:
    assert compute.training_backend(Settings(**values)) == backend


def test_forwarded_settings_leave_out_secrets_paths_and_defaults() -> None:
    settings = Settings(
        batch=True, eval_max_examples=300, comet_api_key=UNFORWARDED, data_dir=Path("/home/me/data")
    )
    forwarded = compute.forwarded_settings(settings)
    assert forwarded == {"BATCH": "True", "EVAL_MAX_EXAMPLES": "300"}


@pytest.mark.parametrize(
    ("settings", "defaults", "named"),
    [
        (Settings(batch=True, batch_image=IMAGE, batch_queue=QUEUE), {"datastore": "local"}, "S3"),
        (Settings(batch=True, batch_queue=QUEUE), {}, "BATCH_IMAGE"),
        (Settings(batch=True, batch_image=IMAGE), {}, "BATCH_QUEUE"),
        (Settings(batch=True, batch_image=IMAGE, batch_queue=QUEUE), {}, "IAM_ROLE"),
    ],
)
def test_incomplete_batch_configuration_names_the_missing_setting(
    settings: Settings, defaults: dict, named: str
) -> None:
    with pytest.raises(compute.ComputeError, match=named):
        compute.check_batch(settings, **{"datastore": "s3", **defaults})


def test_complete_batch_configuration_passes() -> None:
    settings = Settings(batch=True, batch_image=IMAGE, batch_queue=QUEUE)
    compute.check_batch(settings, datastore="s3", job_role=JOB_ROLE)
    compute.check_batch(Settings(batch=False))  # nothing to check without Batch


def test_preflight_exits_with_one_line_naming_the_setting() -> None:
    with pytest.raises(SystemExit, match="Configuration error: BATCH=true needs"):
        compute.preflight(Settings(batch=True))


def test_preflight_trusts_the_launcher_inside_a_batch_job(monkeypatch) -> None:
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "job-1")  # the job gets part of Metaflow's variables
    compute.preflight(Settings(batch=True))


def test_local_datastore_needs_no_check() -> None:
    compute.check_datastore(datastore="local", sysroot=None)


def test_s3_datastore_needs_a_bucket_url() -> None:
    with pytest.raises(compute.ComputeError, match="METAFLOW_DATASTORE_SYSROOT_S3"):
        compute.check_datastore(datastore="s3", sysroot="my-bucket/metaflow")


# --- moto: datastore checks -------------------------------------------------------------------


@pytest.mark.cloud
def test_datastore_check_passes_on_an_existing_bucket(aws_env) -> None:
    boto3.client("s3").create_bucket(Bucket="recs-check")
    compute.check_datastore("s3", "s3://recs-check/metaflow", aws_env.url)


@pytest.mark.cloud
def test_missing_bucket_is_named(aws_env) -> None:
    with pytest.raises(compute.ComputeError, match="'no-such-bucket'.*does not exist"):
        compute.check_datastore("s3", "s3://no-such-bucket/metaflow", aws_env.url)


@pytest.mark.cloud
def test_closed_endpoint_fails_fast_naming_the_setting(aws_env) -> None:
    start = time.monotonic()
    with pytest.raises(compute.ComputeError, match="METAFLOW_S3_ENDPOINT_URL"):
        compute.check_datastore("s3", "s3://any/metaflow", f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 10


@pytest.mark.cloud
def test_silent_endpoint_fails_within_the_timeout(aws_env) -> None:
    """A server that accepts connections and never answers: no long retries."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(compute.ComputeError, match="within 2 s"):
            compute.check_datastore("s3", "s3://any/metaflow", endpoint, timeout_s=2)
        assert time.monotonic() - start < 8


# --- moto: whole-flow runs --------------------------------------------------------------------


@pytest.mark.cloud
@pytest.mark.e2e
def test_run_keeps_artifacts_and_cards_in_the_bucket(aws, s3_run) -> None:
    assert s3_run["successful"] and s3_run["gate"]
    assert {"start", "dataset", "tune", "train", "evaluate", "gate", "end"} <= set(s3_run["steps"])
    assert s3_run["train_sessions"] > 100
    assert s3_run["evaluate_cards"] >= 1
    pages = aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    assert any(key.startswith("metaflow/RecsFlow/data/") for key in keys)  # artifacts
    cards = [key for key in keys if key.startswith("metaflow/mf.cards/RecsFlow/")]
    assert any(f"/runs/{s3_run['id']}/" in key for key in cards), cards[:5]


@pytest.mark.cloud
@pytest.mark.e2e
def test_code_package_ships_every_part_of_the_package(s3_run) -> None:
    """Batch tasks run the run's own code (METAFLOW_PACKAGE_POLICY): every module of every
    subpackage, and the bake's answers (bake.json), must be in the code package in S3."""
    assert len(s3_run["package_files"]) > 20  # the subpackages were found at all
    assert any(f.endswith("/bake.json") for f in s3_run["package_files"])
    assert s3_run["not_shipped"] == []


@pytest.mark.cloud
@pytest.mark.e2e
def test_batch_switch_submits_train_with_the_settings(aws, s3_run) -> None:
    """Resume the finished run at `train` with BATCH=true: Metaflow registers a job definition and
    submits the job to moto, which cannot run it (no container engine), so the run then fails."""
    env = {
        **aws["env"],
        "AWS_ENDPOINT_URL_BATCH": aws["batch_url"],
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": JOB_ROLE,
        "BATCH": "true",
        "BATCH_IMAGE": IMAGE,
        "BATCH_QUEUE": QUEUE,
        "BATCH_CPU": "2",
        "BATCH_MEMORY": "3000",
        "BATCH_GPU": "1",
        "COMET_API_KEY": UNFORWARDED,
    }
    aws["calls"].clear()
    resumed = run_python(
        [str(FLOW), "--no-pylint", "resume", "train", "--origin-run-id", s3_run["id"]],
        aws["work"],
        env,
        600,
    )
    assert resumed.returncode != 0  # moto accepted the job but cannot run it
    definitions = [body for path, body in aws["calls"] if path.endswith("registerjobdefinition")]
    jobs = [body for path, body in aws["calls"] if path.endswith("submitjob")]
    assert jobs, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    job = jobs[0]
    assert "-train-" in job["jobName"] and job["jobQueue"] == QUEUE
    resources = {r["type"]: r["value"] for r in job["containerOverrides"]["resourceRequirements"]}
    assert resources == {"VCPU": "2", "MEMORY": "3000", "GPU": "1"}
    container = definitions[0]["containerProperties"]
    # train is given a GPU: it runs in the GPU image (BATCH_IMAGE's tag + `-gpu`) on Keras-JAX.
    assert container["image"] == f"{IMAGE}-gpu" and container["jobRoleArn"] == JOB_ROLE
    variables = {e["name"]: e["value"] for e in job["containerOverrides"]["environment"]}
    assert variables["METAFLOW_DEFAULT_DATASTORE"] == "s3"
    assert variables["EVAL_MAX_EXAMPLES"] == FLOW_SETTINGS["EVAL_MAX_EXAMPLES"]
    assert variables["TRACKING"] == "none"
    assert variables["BATCH_GPU"] == "1"  # so that the task picks the JAX backend
    assert UNFORWARDED not in json.dumps(aws["calls"])
    assert "DATA_DIR" not in variables  # a path of this machine


def _state_names(states: dict) -> set[str]:
    names = set(states)
    for state in states.values():
        for nested in (state.get("Iterator") or state.get("ItemProcessor") or {},):
            names |= _state_names(nested.get("States", {}))
    return names


@pytest.mark.cloud
def test_make_deploy_schedule_writes_the_state_machine(aws, tmp_path: Path) -> None:
    """`make deploy-schedule` with the settings in a .env (inline comments included)."""
    (tmp_path / ".env").write_text(
        f"METAFLOW_SFN_IAM_ROLE=arn:aws:iam::123456789012:role/recs-sfn  # the role\n"
        f"METAFLOW_SFN_DYNAMO_DB_TABLE=recs-foreach    # foreach bookkeeping\n"
        f"METAFLOW_BATCH_JOB_QUEUE={QUEUE}\n"
        f"METAFLOW_ECS_S3_ACCESS_IAM_ROLE={JOB_ROLE}\n"
    )
    out = tmp_path / "schedule" / "recs.json"
    env = {**aws["env"], "VIRTUAL_ENV": sys.prefix, "AWS_ENDPOINT_URL_BATCH": aws["batch_url"]}
    made = subprocess.run(
        ["make", "-f", str(PROJECT / "Makefile"), "-o", ".venv/.synced", "deploy-schedule"]
        + [f"FLOW={FLOW}", f"SFN_JSON={out}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    machine = json.loads(out.read_text())
    expected = {"start", "ingest", "transform", "quality", "dataset", "tune", "choose", "train"}
    assert expected | {"evaluate", "gate", "deploy", "end"} <= _state_names(machine["States"])
    text = out.read_text()
    assert "recs-foreach" in text and "recs-foreach    #" not in text
    assert f'"JobQueue": "{QUEUE}"' in text


@pytest.mark.cloud
def test_missing_bucket_stops_the_flow_in_seconds(aws) -> None:
    """Metaflow itself would retry for many minutes; preflight names the setting at once."""
    env = {**aws["env"], "METAFLOW_DATASTORE_SYSROOT_S3": "s3://no-such-bucket/metaflow"}
    start = time.monotonic()
    ran = run_python([str(FLOW), "--no-pylint", "run"], aws["work"], env, 300)
    assert ran.returncode != 0
    assert "METAFLOW_DATASTORE_SYSROOT_S3" in ran.stderr and "no-such-bucket" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert time.monotonic() - start < 120
