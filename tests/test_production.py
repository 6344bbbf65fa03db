"""Production rehearsal (`make test-production`): main.yml's life cycle under act, run after run,
with production settings — the warehouse is Snowflake (a fakesnow server); the AWS side is the
bake's own CloudFormation stack (infra/template.yaml, `make infra`'s code) deployed to a moto
server, and its outputs are the repository variables; DEPLOY_TARGET=sagemaker; nothing but the
services' state carries from one run to the next, as on GitHub. Every AWS call each job makes is
logged (the bake's tests/aws_calls.py) and checked against its role's policy in the stack
(the bake's tests/iam.py).

1. The event feed drops its first export in the S3 landing prefix; a push to main loads it into
   Snowflake, trains, gates (no champion yet) and deploys; the champion record is in S3.
2. The nightly run finds no new export: it trains nothing and deploys nothing, and says so.
3. A second export, and a degraded candidate (one epoch, run by hand): the comparison with the
   champion, re-scored on the same split, blocks it; the deploy job does not run.
4. A third export and a good candidate (a push): it deploys, and the champion record moves.
5. Tampering with what the rehearsal left (an edited release, a swapped champion archive, a deleted
   champion record) stops `make deploy` with a one-line reason, before any AWS change.

Each run tunes one configuration only (METAFLOW_RUN_TUNE_GRID) and the gate's quality floors are
relaxed for the small data (PASSING_GATE); the champion comparison keeps its default. No image is
built (no container engine here): IMAGE_REPOSITORY stays unset and SAGEMAKER_IMAGE_URI names a tag
in the stack's repository; the steps run on the runner (BATCH=false), so the train role makes
the flow's calls.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from act_harness import (
    REPO,
    SNOWFLAKE_SECRETS,
    SNOWFLAKE_VARIABLES,
    Bake,
    aws_env,
    describe_database,
    queue_smoke_answers,
    step_report,
)

pytestmark = [pytest.mark.bake_run, pytest.mark.act, pytest.mark.production]

PASSING_GATE = {
    "GATE_MIN_MRR_AT_20": "0",
    "GATE_MIN_HIT_RATE_AT_20": "0",
    "GATE_MIN_LIFT_OVER_BEST_BASELINE": "-1",
}
STACK = "recs"  # the stack's ProjectName: its bucket is recs-<account>-<region>
ENDPOINT = "session-recs"  # the bake's default SAGEMAKER_ENDPOINT, the stack's EndpointName
ROLES = {f"{STACK}-github-train": "TrainRole", f"{STACK}-github-deploy": "DeployRole"}
# The feed's history: 21 days of the generator's events, dropped as three exports (by day).
EXPORTS = {"2026-01-14.csv": (0, 14), "2026-01-17.csv": (14, 17), "2026-01-21.csv": (17, 21)}
WRITE_EXPORTS = """
import json, sys
from datetime import date
from pathlib import Path
from typing import Any
import pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as csv, pyarrow.parquet as pq
from session_recs.ingest import synthetic
out, exports = Path(sys.argv[1]), json.loads(sys.argv[2])
config = synthetic.GeneratorConfig(n_sessions=4500, n_products=150, n_intents=10, days=21,
                                   start_date=date(2026, 1, 1))
table = pa.concat_tables(pq.read_table(p) for p in synthetic.write_events(config, out / "g").paths)
table = table.cast(pa.schema(
    pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
    for f in table.schema))
start_ms = int(table["server_timestamp_epoch_ms"].to_numpy().min() // 86_400_000 * 86_400_000)
day = pc.divide(pc.subtract(table["server_timestamp_epoch_ms"], start_ms), 86_400_000)
for name, (first, last) in exports.items():
    part = table.filter(pc.and_(pc.greater_equal(day, first), pc.less(day, last)))
    csv.write_csv(part, out / name, csv.WriteOptions(quoting_style="none"))
"""
# `make infra` against moto (the template as moto can deploy it: the bake's test_infra.py):
# the stack's parameters, the repository variables it prints and the settings it writes.
DEPLOY_STACK = """
import contextlib, io, json, sys
from pathlib import Path
from typing import Any
import boto3
sys.path[:0] = ["tests", "infra"]
import stack
from test_infra import moto_template
out, name, repo = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
params = {"ProjectName": name, "EndpointName": sys.argv[4]}
command = ["deploy", "--github-repo", repo, "--stack-name", name, "--env-file", str(out / ".env"),
           "--template", str(moto_template(out / "template.json"))]
command += [arg for key, value in params.items() for arg in ("--param", f"{key}={value}")]
with contextlib.redirect_stdout(io.StringIO()):
    assert stack.main(command) == 0
outputs = stack.stack_outputs(boto3.client("cloudformation"), name)
print(json.dumps({"parameters": params | {"GitHubRepository": repo},
                  "variables": stack.repository_variables(outputs)}))
"""
# Each role's logged calls against its policy in infra/template.yaml: {role: [denied requests]}.
CHECK_CALLS = """
import json, sys
from pathlib import Path
from typing import Any
sys.path.insert(0, "tests")
import iam
data = iam.load_template(Path("infra/template.yaml"))
parameters, logs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({role: iam.denied(iam.read_calls(Path(log)), role,
                                   iam.role_statements(data, role, parameters))
                  for role, log in logs.items()}))
"""
PUSH = {"ref": "refs/heads/main", "repository": {"full_name": REPO}}
SCHEDULE = {"schedule": "17 3 * * *", "repository": {"full_name": REPO}}
DEGRADED = {"inputs": {"epochs": "1"}, "ref": "refs/heads/main"}
# The deploy job's champion check, as `make deploy` runs it: one line, or a traceback if broken.
DEPLOY = ["-m", "session_recs.cli", "deploy", "--release"]


def bake_python(act_bake: Bake, script: str, *args: str, **env: str) -> str:
    """A script run with the bake's environment in the bake's folder: its output."""
    command = [str(act_bake.venv / "bin" / "python"), "-c", script, *args]
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(act_bake.project / "src")}
    done = subprocess.run(command, cwd=act_bake.project, env=base | env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def s3_client(moto: str) -> Any:
    """An S3 client of the moto server (moto's fixed test credentials)."""
    keys = dict.fromkeys(("aws_access_key_id", "aws_secret_access_key"), "testing")
    return boto3.client("s3", endpoint_url=moto, region_name="us-east-1", **keys)


@pytest.fixture
def production(act_bake: Bake, moto: str, fakesnow: dict[str, str], tmp_path: Path):
    """The stack on moto; what every run gets (repository variables and secrets, the job
    environment); the feed's exports (written, not yet dropped); where the calls are logged."""
    exports, calls = tmp_path / "exports", tmp_path / "aws-calls"
    calls.mkdir()
    bake_python(act_bake, WRITE_EXPORTS, str(exports), json.dumps(EXPORTS))
    aws = {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    infra = json.loads(bake_python(act_bake, DEPLOY_STACK, str(tmp_path), STACK, REPO, ENDPOINT,
                                   **aws))  # fmt: skip
    stack = infra["variables"]
    image = stack.pop("IMAGE_REPOSITORY")  # no container engine here: no image is built
    variables = stack | PASSING_GATE | SNOWFLAKE_VARIABLES | {
        "BATCH": "false", "SAGEMAKER_IMAGE_URI": f"{image}:rehearsal",
        "WAREHOUSE": "snowflake", "DBT_TARGET": "snowflake", "SNOWFLAKE_SCHEMA": "analytics",
    }  # fmt: skip
    job_env = aws_env(moto) | fakesnow | {
        "METAFLOW_RUN_TUNE_GRID": "[{}]",
        "ACT_AWS_CALLS": str(calls),
        "BOTOCORE_EXPERIMENTAL__PLUGINS": "aws_calls=aws_calls",
        "PYTHONPATH": "src:tests",  # the bake's code, and its call-logging plugin
    }  # fmt: skip
    return exports, variables, job_env, aws, infra["parameters"], calls


def test_the_production_life_cycle(
    act_bake: Bake, moto: str, fakesnow: dict[str, str], production
) -> None:
    exports, variables, job_env, aws, parameters, calls = production
    bucket = variables["MODEL_BUCKET"]  # the stack's one bucket: datastore, landing, models
    champion_key = f"{variables['MODEL_PREFIX']}/champion"
    s3 = s3_client(moto)
    names = list(EXPORTS)

    def drop(name: str) -> None:
        s3.put_object(Bucket=bucket, Key=f"landing/{name}", Body=(exports / name).read_bytes())

    def run(event_name: str, event: dict, label: str) -> tuple[Bake, str]:
        artifacts = act_bake.artifacts.parent / f"artifacts-{label}"
        artifacts.mkdir()
        this = Bake(act_bake.project, artifacts, act_bake.cache, act_bake.venv)
        code, log = this.act(event_name, "main.yml", event, variables=variables,
                             secrets=SNOWFLAKE_SECRETS, extra_env=job_env)  # fmt: skip
        assert code == 0, log[-8000:]
        return this, log

    def database() -> dict[str, int]:
        settings = {name: variables[name] for name in ("WAREHOUSE", "SNOWFLAKE_SCHEMA")}
        return describe_database(
            act_bake, fakesnow | SNOWFLAKE_SECRETS | SNOWFLAKE_VARIABLES | settings
        )

    def champion() -> dict:
        return json.loads(
            s3.get_object(Bucket=bucket, Key=f"{champion_key}/champion.json")["Body"].read()
        )

    # 1. The first export: loaded into Snowflake, trained, gated, deployed; the champion recorded.
    drop(names[0])
    queue_smoke_answers(moto, 3, 1)  # `make deploy`'s three release sessions, then `make smoke`
    first, log = run("push", PUSH, "1")
    assert "**Deployment gate PASSED**" in step_report(log)
    assert "Success - Main make deploy" in log and "Success - Main make smoke" in log
    loaded = database()
    assert loaded["raw.events"] > 0 and loaded["analytics.sessions"] > 0
    release = {path.name for path in (first.artifacts / "release").iterdir()}
    assert {"model.tar.gz", "gate.json", "run.json", "manifest.json"} <= release, release
    assert (first.artifacts / "dbt-manifest" / "manifest.json").is_file()  # for the PRs' slim CI
    signer = f"--repo {REPO} --signer-workflow {REPO}/.github/workflows/main.yml"
    verified = (first.artifacts / "gh-calls.txt").read_text().splitlines()
    expected = [f"attestation verify data/release/{name} {signer}" for name in release]
    assert sorted(verified) == sorted(expected)
    roles = (first.artifacts / "aws-role.txt").read_text().splitlines()
    assert roles == [
        f"{variables['AWS_TRAIN_ROLE_ARN']} 14400",
        f"{variables['AWS_DEPLOY_ROLE_ARN']} 3600",
    ]  # fmt: skip: each job its own role, for as long as it may run
    first_run = json.loads((first.artifacts / "release" / "run.json").read_text())["run_id"]
    assert champion()["run_id"] == first_run

    # 2. The nightly run, no new export: nothing trained, nothing deployed, and the summary says so.
    nightly, log = run("schedule", SCHEDULE, "2")
    assert "no new events since" in log and "Nothing to train" in log
    assert "Run the flow" not in log and not (nightly.artifacts / "release").exists()
    assert database() == loaded

    # 3. A second export and a degraded candidate: the champion comparison blocks it.
    drop(names[1])
    degraded, log = run("workflow_dispatch", DEGRADED, "3")
    report = step_report(log)
    assert "**Deployment gate FAILED**" in report and "vs_champion" in report, report
    assert "**Not deployed**: the model failed its gate" in report
    assert "make deploy" not in log and not (degraded.artifacts / "release").exists()
    assert champion()["run_id"] == first_run

    # 4. A third export and a good candidate: deployed; the champion record moves.
    drop(names[2])
    queue_smoke_answers(moto, 3, 1)
    good, log = run("push", PUSH, "4")
    assert "**Deployment gate PASSED**" in step_report(log)
    assert "Success - Main make deploy" in log
    good_run = json.loads((good.artifacts / "release" / "run.json").read_text())["run_id"]
    record = champion()
    assert record["run_id"] == good_run != first_run
    assert database()["raw.events"] > loaded["raw.events"]

    # Every AWS call of steps 1-4, by the role that made it, is allowed by that role's policy.
    logs = {ROLES[path.stem]: str(path) for path in calls.glob("*.jsonl")}
    assert set(logs) == set(ROLES.values()), logs
    assert all(Path(log).stat().st_size for log in logs.values()), "no call logged"
    checked = bake_python(act_bake, CHECK_CALLS, json.dumps(parameters), json.dumps(logs))
    denied = json.loads(checked)
    assert denied == {role: [] for role in logs}, denied

    # 5. Tampering: each stops `make deploy` with one line that says why.
    deploy_env = aws | PASSING_GATE | {
        "PATH": os.environ["PATH"], "PYTHONPATH": str(act_bake.project / "src"),
        "DEPLOY_TARGET": "sagemaker", "MODEL_BUCKET": bucket,
        "SAGEMAKER_ROLE_ARN": variables["SAGEMAKER_ROLE_ARN"],
        "SAGEMAKER_IMAGE_URI": variables["SAGEMAKER_IMAGE_URI"],
    }  # fmt: skip
    python = str(act_bake.venv / "bin" / "python")

    def refused(release: Path) -> str:
        done = subprocess.run([python, *DEPLOY, str(release)], cwd=act_bake.project, env=deploy_env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    edited = good.artifacts / "release-edited"
    edited.mkdir()
    for path in (good.artifacts / "release").iterdir():
        (edited / path.name).write_bytes(path.read_bytes())
    gate = json.loads((edited / "gate.json").read_text())
    (edited / "gate.json").write_text(json.dumps(gate | {"candidate": "markov"}))
    assert "the sha256 of gate.json is not the one in manifest.json" in refused(edited)

    archive_key = f"{champion_key}/model.tar.gz"
    kept = s3.get_object(Bucket=bucket, Key=archive_key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=archive_key, Body=kept + b"tampered")
    assert "is not its record's" in refused(good.artifacts / "release")  # never loaded

    s3.delete_object(Bucket=bucket, Key=archive_key)
    s3.delete_object(Bucket=bucket, Key=f"{champion_key}/champion.json")
    assert "is live" in refused(good.artifacts / "release")  # and has no champion record
