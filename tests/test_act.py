"""Run a baked project's GitHub workflows with act, on this machine, against test doubles.

act runs each job on the host (`-P ubuntu-latest=-self-hosted`) in a copy of the bake's git tree.
Every action the workflows use is replaced by a composite double from tests/act_doubles/ (see its
README), given to act with `--local-repository owner/repo@<sha>=<folder>`; `gh` (on PATH) and the
Makefile's `UV` are doubles too. act does not know GitHub's `$/` self-repository syntax yet, so the
bake's call of its reusable deploy workflow is rewritten to the equivalent `./` form before it runs.
AWS is a moto server started here; the jobs run with BATCH=false (no containers on this host: a
repository variable that real CI leaves unset, so it gets true).

The jobs reuse a prepared Python environment instead of `make setup`: TEMPLATE_TEST_VENV names one
that holds the project's dependencies (its tests import the bake's own src/ through PYTHONPATH);
without it the bake's environment is made once with `uv sync` (network, minutes).

The act tests are slow (whole flow runs): marked bake_run, so the speed flag -F skips them, and
`act` (`pytest -m act` runs only them).
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
PASSING_GATE = {
    "GATE_MIN_MRR_AT_20": "0",
    "GATE_MIN_HIT_RATE_AT_20": "0",
    "GATE_MIN_LIFT_OVER_BEST_BASELINE": "-1",
}


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


@pytest.fixture(scope="module")
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
        ["uv", "sync", "--frozen", "--all-extras"],
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
def bake(tmp_path: Path, project_venv: Path) -> Bake:
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


# The event feed's export: the generator's events as one Coveo-format CSV file in a landing folder.
LAND_EVENTS = """
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.csv as csv, pyarrow.parquet as pq
from session_recs.ingest import synthetic
from session_recs.settings import Settings
out, sessions = Path(sys.argv[1]), int(sys.argv[2])
config = synthetic.GeneratorConfig.from_settings(Settings(_env_file=None), n_sessions=sessions)
table = pa.concat_tables(pq.read_table(p) for p in synthetic.write_events(config, out / "g").paths)
strings = (pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
           for f in table.schema)
(out / "landing").mkdir()
csv.write_csv(table.cast(pa.schema(strings)), out / "landing" / "2026-01-29.csv",
              csv.WriteOptions(quoting_style="none"))
"""


def land_events(bake: Bake, folder: Path, sessions: int = 1500) -> str:
    """EVENTS_URI of a landing folder holding one export of `sessions` sessions (main.yml loads
    it: production trains on the landed events, never on synthetic ones)."""
    python = bake.venv / "bin" / "python"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(bake.project / "src")}
    command = [str(python), "-c", LAND_EVENTS, str(folder), str(sessions)]
    subprocess.run(command, cwd=folder.parent, env=env, check=True, capture_output=True)
    return str(folder / "landing")


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


def start_moto(moto_server: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """Start moto's server, wait until it listens, create the buckets the workflows use."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
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
    url, server = start_moto(project_venv / "bin" / "moto_server", tmp_path / "moto.log")
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


DISPATCH = {"inputs": {"n_sessions": "1500", "epochs": "1"}, "ref": "refs/heads/main"}
PULL_REQUEST = {
    "pull_request": {
        "number": 7,
        "head": {"repo": {"full_name": REPO}, "ref": "feature"},
        "base": {"ref": "main"},
    },
    "repository": {"full_name": REPO},
}


def test_pr_comment_is_updated_not_duplicated(tmp_path: Path) -> None:
    """The comment step edits the comment that carries the marker (quick: no act, no flow)."""
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path)))
    workflow = yaml.safe_load((project / ".github" / "workflows" / "pr.yml").read_text())
    script = workflow["jobs"]["comment"]["steps"][0]["run"]
    (tmp_path / "gh-existing-comment").write_text("4242\n")
    env = os.environ | {
        "PATH": f"{DOUBLES / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "ACT_ARTIFACTS": str(tmp_path),
        "GH_TOKEN": "token",
        "REPO": REPO,
        "PR": "7",
        "REPORT": "### RecsFlow/1 (finished)",
        "RUN_URL": "https://github.com/acme/session_recs/actions/runs/1",
    }
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], env=env, check=True)
    calls = (tmp_path / "gh-calls.txt").read_text().splitlines()
    assert len(calls) == 2
    assert calls[1].startswith(f"api --method PATCH repos/{REPO}/issues/comments/4242 -f body=")
    body = (tmp_path / "pr-comment.md").read_text()
    assert body.startswith(MARKER + "\n### RecsFlow/1 (finished)")
    assert body.rstrip().endswith("actions/runs/1")


@pytest.mark.bake_run
@pytest.mark.act
def test_pr_workflow_uploads_cards_and_comments_the_gate(bake: Bake) -> None:
    code, log = bake.act("pull_request", "pr.yml", PULL_REQUEST, job="comment")
    assert code == 0, log[-6000:]
    cards = {path.name for path in (bake.artifacts / "cards").rglob("*.html")}
    assert {"train.html", "evaluate.html", "gate.html"} <= cards, cards
    assert (bake.artifacts / "dbt-docs" / "static_index.html").stat().st_size > 100_000
    comment = (bake.artifacts / "pr-comment.md").read_text()
    assert comment.startswith(MARKER)
    assert "| lstm |" in comment and "**Deployment gate" in comment
    assert "**Deployment gate" in step_report(log)
    calls = (bake.artifacts / "gh-calls.txt").read_text().splitlines()
    assert calls[0].startswith(f"api --paginate repos/{REPO}/issues/7/comments")
    assert calls[1].startswith(f"api --method POST repos/{REPO}/issues/7/comments")


def test_deploy_verifies_every_release_file_against_its_attestation(tmp_path: Path) -> None:
    """The deploy job's verify step with the attest and gh doubles (quick: no act, no flow): the
    attested release passes, a file swapped after the train job attested it stops the job."""
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path)))
    workflow = yaml.safe_load((project / ".github" / "workflows" / "deploy.yml").read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    (verify,) = [step for step in steps if "attestation verify" in step.get("run", "")]
    release = project / "data" / "release"
    release.mkdir(parents=True)
    for name in ("model.tar.gz", "gate.json", "manifest.json"):
        (release / name).write_text(f"the trained {name}")
    env = os.environ | {
        "PATH": f"{DOUBLES / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "ACT_ARTIFACTS": str(tmp_path),
        "GH_TOKEN": "token",
        "REPOSITORY": REPO,
    }
    attest = yaml.safe_load((DOUBLES / "attest-build-provenance" / "action.yml").read_text())
    script = attest["runs"]["steps"][0]["run"]
    subjects = env | {"SUBJECTS": "data/release/*"}
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=project, env=subjects, check=True)

    def run_verify() -> subprocess.CompletedProcess[str]:
        command = ["bash", "-eo", "pipefail", "-c", verify["run"]]
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)

    assert run_verify().returncode == 0
    (release / "gate.json").write_text('{"passed": true}')
    refused = run_verify()
    assert refused.returncode != 0 and "no attestation matches data/release/gate.json" in (
        refused.stderr
    )


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


@pytest.mark.bake_run
@pytest.mark.act
def test_main_workflow_deploys_a_model_that_passes_the_gate(
    bake: Bake, moto: str, tmp_path: Path
) -> None:
    # `make deploy` sends the release's three test sessions, then `make smoke` one default session.
    queue_smoke_answers(moto, 3, 1)
    variables = aws_variables() | PASSING_GATE | {"EVENTS_URI": land_events(bake, tmp_path)}
    code, log = bake.act("workflow_dispatch", "main.yml", DISPATCH, variables=variables,
                         extra_env=aws_env(moto))  # fmt: skip
    assert code == 0, log[-6000:]
    release = {path.name for path in (bake.artifacts / "release").iterdir()}
    assert {"model.tar.gz", "gate.json", "run.json", "manifest.json"} <= release, release
    # dbt's manifest of production, which the pull requests' slim CI defers to.
    assert (bake.artifacts / "dbt-manifest" / "manifest.json").is_file()
    # Every release file was attested by the train job and verified before `make deploy`.
    calls = (bake.artifacts / "gh-calls.txt").read_text().splitlines()
    signer = f"--repo {REPO} --signer-workflow {REPO}/.github/workflows/main.yml"
    assert sorted(calls) == sorted(
        f"attestation verify data/release/{name} {signer}" for name in release
    )
    assert "Success - Main make deploy" in log and "Success - Main make smoke" in log
    # Each job assumes its own role, for as long as it may run (train 240, deploy 60 minutes).
    roles = (bake.artifacts / "aws-role.txt").read_text().splitlines()
    assert roles == [
        f"{variables['AWS_TRAIN_ROLE_ARN']} 14400", f"{variables['AWS_DEPLOY_ROLE_ARN']} 3600"
    ]  # fmt: skip
    assert "**Deployment gate PASSED**" in step_report(log)
    assert "Success - Main Summary" in log  # the deploy job's summary


@pytest.mark.bake_run
@pytest.mark.act
def test_main_workflow_skips_deploy_when_the_gate_fails(
    bake: Bake, moto: str, tmp_path: Path
) -> None:
    variables = aws_variables() | {"GATE_MIN_MRR_AT_20": "0.99"}
    variables["EVENTS_URI"] = land_events(bake, tmp_path)
    code, log = bake.act("workflow_dispatch", "main.yml", DISPATCH, variables=variables,
                         extra_env=aws_env(moto))  # fmt: skip
    assert code == 0, log[-6000:]
    report = step_report(log)
    assert "**Deployment gate FAILED**" in report and "0.9900" in report  # the MRR@20 floor
    assert "**Not deployed**: the model failed its gate" in report
    assert "the deploy job is skipped" in log  # the warning annotation
    assert "make deploy" not in log
    assert not (bake.artifacts / "release").exists()


@pytest.mark.bake_run
@pytest.mark.act
def test_main_workflow_refuses_an_input_that_is_not_digits(bake: Bake) -> None:
    """A dispatch input never reaches a shell command line: `1; touch PWNED` stops the run at its
    first step, before any credentials, and runs nothing."""
    event = {"inputs": {"n_sessions": "1; touch PWNED", "epochs": "1"}, "ref": "refs/heads/main"}
    code, log = bake.act("workflow_dispatch", "main.yml", event, variables=aws_variables())
    assert code != 0
    assert "n_sessions must be digits only" in log
    assert not list(bake.project.rglob("PWNED")) and not list(bake.cache.rglob("PWNED"))
    assert not (bake.artifacts / "aws-role.txt").exists()


# Production's raw log on the fakesnow server: the generator's events loaded by the project's code.
SEED_PRODUCTION = """
import sys
from pathlib import Path
from session_recs import warehouse
from session_recs.ingest import synthetic
from session_recs.settings import Settings
config = synthetic.GeneratorConfig(n_sessions=300, n_products=80, n_intents=4, days=3)
warehouse.load_to_warehouse(synthetic.write_events(config, Path(sys.argv[1])).paths, Settings())
"""
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


@pytest.mark.bake_run
@pytest.mark.act
def test_a_pull_request_builds_only_in_its_schemas_and_closing_drops_them(
    bake: Bake, fakesnow: dict[str, str], tmp_path: Path
) -> None:
    production = fakesnow | SNOWFLAKE_SECRETS | SNOWFLAKE_VARIABLES | {
        "WAREHOUSE": "snowflake", "SNOWFLAKE_SCHEMA": "analytics", "PATH": os.environ["PATH"],
        "PYTHONPATH": str(bake.project / "src"),
    }  # fmt: skip
    python = str(bake.venv / "bin" / "python")

    def database() -> dict[str, int]:
        command = [python, "-c", DESCRIBE_DATABASE]
        done = subprocess.run(command, env=production, check=True, capture_output=True, text=True)
        return json.loads(done.stdout)

    command = [python, "-c", SEED_PRODUCTION, str(tmp_path / "events")]
    subprocess.run(command, cwd=tmp_path, env=production, check=True, capture_output=True)
    before = database()
    assert before["raw.events"] > 0

    code, log = bake.act(
        "pull_request", "pr.yml", PULL_REQUEST, job="snowflake",
        variables=SNOWFLAKE_VARIABLES, secrets=SNOWFLAKE_SECRETS, extra_env=fakesnow,
    )  # fmt: skip
    assert code == 0, log[-6000:]
    during = database()
    production_tables = {name: rows for name, rows in during.items() if name.startswith("raw.")}
    assert production_tables == before  # production's raw log: untouched
    # The PR's raw log: production's events (a clone) plus its sample; its models in pr_7.
    assert during["pr_7_raw.events"] > before["raw.events"]
    assert during["pr_7.sessions"] > 0
    assert "No production manifest in" in log  # the first pull request: a full build

    closed = PULL_REQUEST | {"action": "closed"}
    code, log = bake.act(
        "pull_request", "pr-closed.yml", closed,
        variables=SNOWFLAKE_VARIABLES, secrets=SNOWFLAKE_SECRETS, extra_env=fakesnow,
    )  # fmt: skip
    assert code == 0, log[-6000:]
    assert database() == before
