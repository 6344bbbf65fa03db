"""The act harness: run a baked project's GitHub workflows with act, on this machine, against
test doubles and local servers (a pytest plugin: the template's conftest names it).

act runs each job on the host (`-P ubuntu-latest=-self-hosted`) in a copy of the bake's git tree.
Every action the workflows use is replaced by a composite double from tests/act_doubles/ (see its
README), given to act with `--local-repository owner/repo@<sha>=<folder>`; `gh` (on PATH) and the
Makefile's `UV` are doubles too. act does not know GitHub's `$/` self-repository syntax yet, so the
bake's call of its reusable deploy workflow is rewritten to the equivalent `./` form before it runs.
AWS is a moto server started here, Snowflake a fakesnow server; the jobs run with BATCH=false (no
containers on this host: a repository variable that real CI leaves unset, so it gets true).

The jobs reuse a prepared Python environment instead of `make setup`: TEMPLATE_TEST_VENV names one
that holds the project's dependencies (its tests import the bake's own src/ through PYTHONPATH);
without it the bake's environment is made once with `uv sync` (network, minutes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from bakery import TEMPLATE_DIR
from cookiecutter.main import cookiecutter

DOUBLES = TEMPLATE_DIR / "tests" / "act_doubles"
TOOLS = Path(sys.executable).parent
# The actions the generated workflows pin, each with the double that stands in for it.
ACTIONS = {
    "actions/checkout": "checkout",
    "astral-sh/setup-uv": "setup-uv",
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
    "aws-actions/configure-aws-credentials": "configure-aws-credentials",
    "actions/attest-build-provenance": "attest-build-provenance",
}
REPO = "acme/session_recs"
ACT_TIMEOUT_S = 40 * 60
LEAKY_VARIABLES = ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
MARKER = "<!-- smoke-run-report -->"


def pinned_uses(project: Path) -> set[str]:
    """Every `owner/repo@sha` the project's workflows use."""
    found = set()
    for workflow in (project / ".github" / "workflows").glob("*.yml"):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            found |= {step["uses"] for step in job.get("steps", []) if "uses" in step}
    return found


@dataclass
class Bake:
    """A baked project committed to git, and where act leaves what the doubles record."""

    project: Path
    artifacts: Path
    cache: Path
    venv: Path

    def act(
        self,
        event_name: str,
        workflow: str,
        event: Mapping[str, Any],
        job: str | None = None,
        variables: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run one workflow with act; return its exit code and log."""
        event_file = self.cache / f"{workflow}-event.json"
        event_file.write_text(json.dumps(event))
        command = [
            str(TOOLS / "act"), event_name, "--workflows", f".github/workflows/{workflow}",
            "--eventpath", str(event_file), "-P", "ubuntu-latest=-self-hosted",
            "--cache-server-addr", "127.0.0.1", "--artifact-server-addr", "127.0.0.1",
            "--env-file", os.devnull, "--var-file", os.devnull, "--secret-file", os.devnull,
        ]  # fmt: skip
        if job:
            command += ["--job", job]
        for uses in sorted(pinned_uses(self.project)):
            action = uses.split("@")[0]
            assert action in ACTIONS, f"no act double for {action}: add one to {DOUBLES}"
            command += ["--local-repository", f"{uses}={DOUBLES / ACTIONS[action]}"]
        job_env = {
            "ACT_ARTIFACTS": str(self.artifacts),
            "UV": str(DOUBLES / "bin" / "uv-prepared"),
            "UV_PROJECT_ENVIRONMENT": str(self.venv),
            "PYTHONPATH": "src",  # the bake's own code, ahead of what the environment holds
            **(extra_env or {}),
        }
        for key, value in job_env.items():
            command += ["--env", f"{key}={value}"]
        for key, value in (variables or {}).items():
            command += ["--var", f"{key}={value}"]
        for key, value in (secrets or {}).items():
            command += ["--secret", f"{key}={value}"]
        env = {key: value for key, value in os.environ.items() if key not in LEAKY_VARIABLES}
        env |= {
            "XDG_CACHE_HOME": str(self.cache),
            "PATH": f"{DOUBLES / 'bin'}{os.pathsep}{env['PATH']}",
        }
        log = self.cache / f"act-{workflow}-{job or 'all'}.log"
        with log.open("w") as out:
            proc = subprocess.run(
                command, cwd=self.project, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=ACT_TIMEOUT_S,
            )  # fmt: skip
        return proc.returncode, log.read_text(errors="replace")


def step_report(log: str) -> str:
    """The report a job wrote to $GITHUB_STEP_SUMMARY, as act logs it: it is also the step's
    `markdown` output (act deletes a job's summary file when the job ends)."""
    marker = "::set-output:: markdown="
    assert marker in log, "no report step output in the log"
    return log.split(marker, 1)[1]


def git(project: Path, *args: str) -> None:
    identity = ["-c", "user.name=act test", "-c", "user.email=act@example.invalid"]
    subprocess.run(["git", *identity, *args], cwd=project, check=True, capture_output=True)


@pytest.fixture(scope="session")
def project_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python environment with the generated project's dependencies."""
    prepared = os.environ.get("TEMPLATE_TEST_VENV")
    if prepared:
        return Path(prepared)
    scratch = tmp_path_factory.mktemp("venv-bake")
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(scratch)))
    venv = scratch / "venv"
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_VARIABLES}
    subprocess.run(
        # Not the GPU image's extra: gigabytes of CUDA wheels that no workflow job uses.
        ["uv", "sync", "--frozen", "--all-extras", "--no-extra", "gpu"],
        cwd=project,
        env=env | {"UV_PROJECT_ENVIRONMENT": str(venv)},
        check=True,
    )
    return venv


def act_compatible(project: Path) -> None:
    """Rewrite `uses: $/...` (a reusable workflow of the same repository) as `uses: ./...`: the same
    commit's file on GitHub, and the only form act reads."""
    for workflow in (project / ".github" / "workflows").glob("*.yml"):
        text = workflow.read_text()
        workflow.write_text(text.replace("uses: $/.github/", "uses: ./.github/"))


@pytest.fixture
def act_bake(tmp_path: Path, project_venv: Path) -> Bake:
    """The defaults baked into a git repository whose remote names the test's GitHub repo."""
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path)))
    act_compatible(project)
    git(project, "init", "--quiet", "--initial-branch", "main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "bake")
    git(project, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    artifacts, cache = tmp_path / "artifacts", tmp_path / "act-cache"
    artifacts.mkdir()
    cache.mkdir()
    return Bake(project, artifacts, cache, project_venv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def start_moto(python: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """Start moto's server (with the UpdateEndpoint it lacks: act_doubles/moto_server.py), wait
    until it listens, create the buckets the workflows use."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(python), str(DOUBLES / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not listening(port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"moto_server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    for bucket in ("flows", "models"):  # moto takes unsigned requests
        urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"))
    return url, server


@pytest.fixture
def moto(project_venv: Path, tmp_path: Path) -> Iterator[str]:
    """A moto server (a dev dependency of the generated project) for the workflows' AWS calls."""
    url, server = start_moto(project_venv / "bin" / "python", tmp_path / "moto.log")
    yield url
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def aws_variables() -> dict[str, str]:
    """Repository variables of a project that trains on AWS (moto) without Batch."""
    return {
        "BATCH": "false",
        "AWS_REGION": "us-east-1",
        "AWS_TRAIN_ROLE_ARN": "arn:aws:iam::123456789012:role/ci-train",
        "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/ci-deploy",
        "METAFLOW_DATASTORE_SYSROOT_S3": "s3://flows/metaflow",
        "MODEL_BUCKET": "models",
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/sagemaker",
        "SAGEMAKER_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/session-recs:1",
    }


def aws_env(moto: str) -> dict[str, str]:
    """What points the jobs at moto: the doubles' endpoint and Metaflow's S3 endpoint (no
    repository variable can: each job reads only the variables it lists)."""
    return {"ACT_AWS_ENDPOINT_URL": moto, "METAFLOW_S3_ENDPOINT_URL": moto}


# What the database holds: each schema's tables with their row counts, as JSON.
DESCRIBE_DATABASE = """
import json
from session_recs.settings import Settings
from session_recs.warehouse import snowflake_backend
with snowflake_backend.cursor(Settings()) as cur:
    tables = cur.execute(
        "select lower(table_schema), lower(table_name) from information_schema.tables "
        "where table_type = 'BASE TABLE' and lower(table_schema) <> 'information_schema'"
    ).fetchall()
    print(json.dumps({f"{schema}.{name}": cur.execute(f"select count(*) from {schema}.{name}")
                      .fetchone()[0] for schema, name in tables}))
"""


@pytest.fixture
def fakesnow(project_venv: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fakesnow server; the settings that point the project (and a workflow's jobs) at it."""
    port = free_port()
    with (tmp_path / "fakesnow.log").open("wb") as out:
        server = subprocess.Popen(
            [str(project_venv / "bin" / "fakesnow"), "-s", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not listening(port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("fakesnow did not start")
        time.sleep(0.2)
    yield {"SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(port), "SNOWFLAKE_PROTOCOL": "http"}
    server.terminate()
    server.wait(timeout=10)


SNOWFLAKE_SECRETS = {
    "SNOWFLAKE_ACCOUNT": "fakesnow",
    "SNOWFLAKE_USER": "ci",
    "SNOWFLAKE_PASSWORD": "not-a-real-password",
}
SNOWFLAKE_VARIABLES = {
    "SNOWFLAKE_ROLE": "recs_pipeline",
    "SNOWFLAKE_WAREHOUSE": "recs_wh",
    "SNOWFLAKE_DATABASE": "recs",
}


def queue_smoke_answers(moto: str, *sizes: int) -> None:
    """What moto's invoke_endpoint answers next: one answer per size, that many lists, in order.

    moto answers each new request body with the next queued answer (and replays it for the same
    body); the deploy's smoke test must get as many lists as it sent sessions.
    """
    answer = [{"sku": "sku-1", "score": 0.9}]
    bodies = [json.dumps({"recommendations": [answer] * size}) for size in sizes]
    results = [{"Body": body, "ContentType": "application/json"} for body in bodies]
    request = urllib.request.Request(
        f"{moto}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def describe_database(bake: Bake, settings: Mapping[str, str]) -> dict[str, int]:
    """Each table of the Snowflake database that `settings` name (schema.table): its row count."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(bake.project / "src"), **settings}
    command = [str(bake.venv / "bin" / "python"), "-c", DESCRIBE_DATABASE]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
