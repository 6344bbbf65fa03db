"""The built image, run the way SageMaker and AWS Batch run it (`make test-image`).

`make test-image` builds IMAGE with IMAGE_ENGINE (docker or buildah) and runs these tests; other
test runs leave them out (conftest: they need the image and a container engine).

buildah runs containers with chroot isolation (no daemon, no namespaces to set up, so it works in
a CI container): the container shares the host's network. So the endpoint listens on a free port
that SAGEMAKER_BIND_TO_PORT names (part of SageMaker's contract; 8080, its default, may be taken
here) and the container reaches the moto server on 127.0.0.1; docker runs get `--network host`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from flow_runs import BUCKET, FLOW, FLOW_PARAMS, QUEUE, run_python
from helpers import build_tiny_model, free_port, request, wait_ping

from {{ cookiecutter.project }}.serving.server import create_server

pytestmark = pytest.mark.image

USER_ID = "10001"  # the Dockerfile's USER
DEV_ONLY = ("pytest", "ruff", "moto", "hypothesis", "fakesnow")  # dev dependencies, by module
REQUESTS = [
    {"sessions": [["sku-1", "sku-2"], ["sku-7"]], "k": 5},
    {"instances": [{"skus": ["sku-3"]}, ["sku-4", "never-seen"]], "k": 3},
    {"sessions": [["never-seen"]]},
]


@dataclass(frozen=True)
class Engine:
    """docker or buildah, and the image it runs."""

    name: str
    image: str

    def config(self) -> dict:
        """The image's run configuration: User, Cmd, Entrypoint, WorkingDir, ExposedPorts."""
        if self.name == "docker":
            command = ["docker", "image", "inspect", self.image]
            return json.loads(_check(command))[0]["Config"]
        config = json.loads(_check(["buildah", "inspect", "--type", "image", self.image]))
        return {key[0].upper() + key[1:]: value for key, value in config["OCIv1"]["config"].items()}

    @contextmanager
    def run(
        self,
        command: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
    ) -> Iterator[subprocess.Popen]:
        """Start `command` in a new container (the image's user and working directory); stdout
        and stderr go to `log`. The container is removed on leaving."""
        options = [f"--env={name}={value}" for name, value in (env or {}).items()]
        options += [f"--volume={host}:{inside}:ro" for host, inside in (volumes or {}).items()]
        name = f"test-image-{uuid.uuid4().hex[:12]}"
        if self.name == "docker":
            run = ["docker", "run", "--rm", f"--name={name}", "--network=host", *options]
            argv = [*run, self.image, *command]
        else:
            run = ["buildah", "from", "--pull=never", f"--name={name}", self.image]
            _check(run)
            argv = ["buildah", "run", "--isolation=chroot", *options, name, "--", *command]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            # A failed test leaves the container running: end its processes, not just the client.
            if self.name == "docker":
                subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
            elif process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    with suppress(psutil.NoSuchProcess):
                        child.kill()
            if process.poll() is None:
                process.kill()
            process.wait(30)
            if self.name == "buildah":
                subprocess.run(["buildah", "rm", name], capture_output=True, check=False)

    def stop(self, process: subprocess.Popen) -> int:
        """SIGTERM to the container's main process, as `docker stop` (and SageMaker) send it; its
        exit status. docker's client passes the signal on; buildah's would kill the container, so
        the signal goes to the process itself (chroot isolation: it is in this PID namespace)."""
        if self.name == "docker":
            process.send_signal(signal.SIGTERM)
        else:
            inside = [
                child
                for child in psutil.Process(process.pid).children(recursive=True)
                if "buildah" not in child.name()
            ]
            assert inside, "the container has no process left"
            min(inside, key=lambda child: child.create_time()).send_signal(signal.SIGTERM)
        return process.wait(60)

    def output(self, command: list[str], tmp_path: Path, timeout_s: float = 120) -> str:
        """Run `command` to its end in a new container; its output (fails on a non-zero exit)."""
        log = tmp_path / "output.log"
        with self.run(command, log) as process:
            code = process.wait(timeout_s)
        assert code == 0, log.read_text()[-3000:]
        return log.read_text()


def _check(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.fixture(scope="module")
def engine() -> Engine:
    image, name = os.environ.get("IMAGE"), os.environ.get("IMAGE_ENGINE")
    assert image and name in {"docker", "buildah"}, (
        "run these tests with `make test-image` (it builds the image and sets IMAGE, IMAGE_ENGINE)"
    )
    return Engine(name, image)


# --- what every run of the image gets ----------------------------------------------------------


def test_the_image_starts_serve_as_a_non_root_user(engine: Engine) -> None:
    config = engine.config()
    assert config["Cmd"] == ["serve"] and not config.get("Entrypoint")  # `docker run IMAGE serve`
    assert config["User"].split(":")[0] == USER_ID
    assert "8080/tcp" in config["ExposedPorts"]


def test_runs_as_its_user_in_a_writable_home_without_dev_tools(
    engine: Engine, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, os, pathlib;"
        "pathlib.Path('probe').write_text('x');"  # Metaflow unpacks the code package here
        f"print(os.getuid(), os.getcwd(), [m for m in {DEV_ONLY!r} if importlib.util.find_spec(m)])"
    )
    printed = engine.output(["python", "-c", probe], tmp_path).split()
    assert printed[-3:] == [USER_ID, "/home/app", "[]"], printed


# --- SageMaker ---------------------------------------------------------------------------------


@contextmanager
def _local_endpoint(model_dir: Path) -> Iterator[tuple[str, int]]:
    """The local endpoint (this environment, in a thread) serving the same exported model."""
    server = create_server(model_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        assert wait_ping(host, port)[0] == 200
        yield host, port
    finally:
        server.stop()
        thread.join(30)


def _answers(host: str, port: int) -> list[tuple[int, dict]]:
    headers = {"Content-Type": "application/json"}
    answers = []
    for payload in REQUESTS:
        body = json.dumps(payload).encode()
        status, answer = request(host, port, "POST", "/invocations", body, headers)
        answers.append((status, json.loads(answer)))
    return answers


def _rounded(answers: list[tuple[int, dict]]) -> str:
    """The answers with scores to 4 decimals: the same model on another Python build (a stand-in
    base) may differ in the last bits of a float."""
    return re.sub(r"(\d+\.\d{4})\d*", r"\1", json.dumps(answers, sort_keys=True))


def test_sagemaker_serves_the_unpacked_archive_like_the_local_endpoint(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    export_dir, archive = build_tiny_model(tmp_path_factory)
    model_dir = tmp_path / "model"  # SageMaker unpacks model.tar.gz into /opt/ml/model
    model_dir.mkdir(mode=0o755)
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    port = free_port()
    log = tmp_path / "serve.log"
    with engine.run(
        ["serve"],
        log,
        env={"SAGEMAKER_BIND_TO_PORT": str(port)},
        volumes={model_dir: "/opt/ml/model"},
    ) as container:
        status, body = wait_ping("127.0.0.1", port, 300)
        assert status == 200, f"{body}\n{log.read_text()[-3000:]}"
        in_image = _answers("127.0.0.1", port)
        with _local_endpoint(export_dir) as (host, local_port):
            local = _answers(host, local_port)
        assert [status for status, _ in in_image] == [200] * len(REQUESTS), in_image
        assert _rounded(in_image) == _rounded(local)
        assert engine.stop(container) == 0, log.read_text()[-3000:]
    served = log.read_text()
    assert "stopped (drained)" in served and "Traceback" not in served, served[-3000:]


# --- AWS Batch ---------------------------------------------------------------------------------


def test_batch_runs_a_flow_step_in_the_image(engine: Engine, aws, tmp_path: Path) -> None:
    """Run the flow on moto's S3 with BATCH=true and BATCH_IMAGE=this image: the warehouse steps
    run here, then Metaflow submits the first heavy step (`tune`) to moto, which takes the job but
    cannot run containers (the run then fails). So this test runs that job the way Batch would: the
    command and environment Metaflow submitted, in the image, with the job role's credentials
    (moto's here). The command downloads the code package from the bucket, runs the package's flow
    file (the image has none) and writes the step's artifacts back to the bucket."""
    env = {
        **aws["env"],
        "DATA_DIR": str(tmp_path / "data"),
        "DUCKDB_PATH": str(tmp_path / "data" / "warehouse.duckdb"),
        "AWS_ENDPOINT_URL_BATCH": aws["batch_url"],
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": "arn:aws:iam::123456789012:role/recs-batch-job",
        "BATCH": "true",
        "BATCH_IMAGE": engine.image,
        "BATCH_QUEUE": QUEUE,
    }
    one_trial = [*FLOW_PARAMS[: FLOW_PARAMS.index("--tune_grid")], "--tune_grid", "[{}]"]
    aws["calls"].clear()
    launched = run_python(
        [str(FLOW), "--no-pylint", "run", *one_trial, "--deploy_enabled", "False"],
        tmp_path,
        env,
        1200,
    )
    jobs = [body for path, body in aws["calls"] if path.endswith("submitjob")]
    assert jobs, launched.stdout[-2000:] + launched.stderr[-2000:]
    assert "-tune-" in jobs[0]["jobName"]
    overrides = jobs[0]["containerOverrides"]
    command = overrides["command"]
    assert command[:2] == ["bash", "-c"]
    job_env = {item["name"]: item["value"] for item in overrides["environment"]}
    role = {name: value for name, value in aws["env"].items() if name.startswith("AWS_")}
    # What AWS Batch adds to every job's container (the flow's preflight trusts the launcher then).
    batch = {
        "AWS_BATCH_JOB_ID": str(uuid.uuid4()),
        "AWS_BATCH_JOB_ATTEMPT": "1",
        "AWS_BATCH_JQ_NAME": QUEUE,
        "AWS_BATCH_CE_NAME": "recs-compute",
        "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
    }
    log = tmp_path / "job.log"
    with engine.run(command, log, env={**job_env, **role, **batch}) as job:
        code = job.wait(900)
    ran = log.read_text()
    assert code == 0, ran[-4000:]
    assert "Code package downloaded." in ran and "Task is starting." in ran, ran[-4000:]
    run_id = re.search(r"--run-id[= ](\S+)", command[-1]).group(1)
    task_id = re.search(r"--task-id[= ](\S+)", command[-1]).group(1)
    task = f"metaflow/RecsFlow/{run_id}/tune/{task_id}"
    saved = aws["s3"].get_object(Bucket=BUCKET, Key=f"{task}/0.data.json")["Body"].read()
    artifacts = json.loads(saved)["objects"]
    assert {"trial", "_task_ok"} <= set(artifacts), sorted(artifacts)
