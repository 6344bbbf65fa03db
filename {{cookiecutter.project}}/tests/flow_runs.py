"""The whole-flow runs the end-to-end tests share (a pytest plugin: conftest names it).

A whole run costs minutes on 2 cores, so one clean run serves several test modules: `s3_run`
runs the flow once with FLOW_PARAMS on the S3 datastore of the moto server (test_aws.py checks the
bucket, the code package and the Batch switch on it; test_flow.py checks that its local run,
failed and resumed, ends with the same artifacts). FLOW_SETTINGS are the settings both share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from {{ cookiecutter.project }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
FLOW = PROJECT / "flows" / "recs_flow.py"
BUCKET = "recs-datastore"
QUEUE = "recs-queue"
# Small enough for minutes, large enough for every card's tables and two tuning trials.
FLOW_PARAMS = ["--n_sessions", "1500", "--n_products", "150", "--days", "14", "--epochs", "1"]
FLOW_PARAMS += ["--tune_grid", '[{}, {"learning_rate": 0.005}]']
FLOW_SETTINGS = {
    "METAFLOW_USER": "tester",  # Metaflow refuses root, which CI runs as
    "DBT_PROJECT_DIR": str(PROJECT / "dbt"),
    "DBT_RUNNER": "core",
    "EVAL_MAX_EXAMPLES": "1500",
    "GATE_MIN_LIFT_OVER_BEST_BASELINE": "-0.9",  # a one-epoch model passes: these test plumbing
    "TRACKING": "none",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "GX_ANALYTICS_ENABLED": "false",
}


def run_python(
    args: list[str], cwd: Path, env: dict, timeout: float
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# Prints, for the latest run of the working directory's datastore, what each step left behind and
# what the S3 tests read back (the package's files, the code package, the cards).
_DESCRIBE_RUN = """
import hashlib, json
from pathlib import Path
from metaflow import Flow, namespace
from metaflow.cards import get_cards
import {{ cookiecutter.project }} as package
namespace(None)
run = Flow("RecsFlow").latest_run
split = run["dataset"].task.data.split
root = Path(package.__file__).parent
package_files = sorted(
    p.relative_to(root.parent).as_posix()
    for p in root.rglob("*")
    if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts
)
shipped = run.code.tarball.getnames() if run.code else []
print(json.dumps({
    "id": run.id,
    "successful": run.successful,
    "steps": sorted(s.id for s in run),
    "artifacts": {s.id: sorted(a.id for a in s.task.artifacts) for s in run},
    "split": {
        name: hashlib.sha256("\\n".join(frame["session_id"]).encode()).hexdigest()
        for name, frame in (("train", split.train), ("test", split.test))
    },
    "train_sessions": len(split.train),
    "models": {m: r.metrics for m, r in run["evaluate"].task.data.evaluation.models.items()},
    "gate": run["gate"].task.data.gate_decision is not None,
    "evaluate_cards": len(get_cards(run["evaluate"].task)),
    "package_files": package_files,
    "not_shipped": [f for f in package_files if not any(n.endswith(f) for n in shipped)],
}, default=str))
"""


def describe_run(work: Path, env: dict[str, str]) -> dict:
    """What the latest run in `work` (with `env`'s datastore) left behind, read back through
    Metaflow's client API in a process that sees the same METAFLOW_* variables."""
    described = run_python(["-c", _DESCRIBE_RUN], work, env, 300)
    assert described.returncode == 0, described.stderr[-3000:]
    return json.loads(described.stdout.strip().splitlines()[-1])


class _BatchRecorder(BaseHTTPRequestHandler):
    """Forwards Batch API calls to moto and keeps their JSON bodies: moto's DescribeJobs does not
    echo the resources of a submission, the request Metaflow sent does."""

    upstream = ""
    calls: list[tuple[str, dict]] = []

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if body:
            self.calls.append((self.path, json.loads(body)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
        request = urllib.request.Request(
            self.upstream + self.path, data=body or None, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def aws(moto_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A datastore bucket, a Batch queue and a recording Batch endpoint; the base environment."""
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), _BatchRecorder)
    _BatchRecorder.upstream = moto_server.url
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    keys = dict.fromkeys(("aws_access_key_id", "aws_secret_access_key"), "testing")  # moto's
    credentials = {name.upper(): value for name, value in keys.items()}
    credentials["AWS_DEFAULT_REGION"] = "us-east-1"
    client = {"endpoint_url": moto_server.url, "region_name": "us-east-1"}
    _create_batch_queue(client | keys)
    boto3.client("s3", **client, **keys).create_bucket(Bucket=BUCKET)
    work = tmp_path_factory.mktemp("aws")
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "METAFLOW_")) and k not in settings_names
        },
        **credentials,
        "AWS_ENDPOINT_URL": moto_server.url,
        **FLOW_SETTINGS,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{BUCKET}/metaflow",
        "METAFLOW_S3_ENDPOINT_URL": moto_server.url,
        "DATA_DIR": str(work / "data"),
        "DUCKDB_PATH": str(work / "data" / "warehouse.duckdb"),
    }
    yield {
        "work": work,
        "env": env,
        "batch_url": f"http://127.0.0.1:{recorder.server_address[1]}",
        "calls": _BatchRecorder.calls,
        "s3": boto3.client("s3", **client, **keys),
    }
    recorder.shutdown()


def _create_batch_queue(client: dict) -> None:
    """A MANAGED compute environment and a job queue, as Metaflow's @batch expects."""
    ec2, iam, batch = (boto3.client(name, **client) for name in ("ec2", "iam", "batch"))
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    role = iam.create_role(RoleName="recs-batch-service", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="recs-ecs-instance")
    environment = batch.create_compute_environment(
        computeEnvironmentName="recs-compute",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 16,
            "instanceTypes": ["optimal"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile["InstanceProfile"]["Arn"],
        },
        serviceRole=role["Role"]["Arn"],
    )
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}
        ],
    )


@pytest.fixture(scope="session")
def s3_run(aws) -> dict:
    """One clean run (FLOW_PARAMS, deployment off) whose artifacts and cards live in the moto
    bucket, described by `describe_run`."""
    # A run whose steps all stay local keeps no code package unless asked to: this flag makes it
    # upload the package that Batch tasks download, so the tests can look inside it.
    env = {**aws["env"], "METAFLOW_FEAT_ALWAYS_UPLOAD_CODE_PACKAGE": "true"}
    command = [str(FLOW), "--no-pylint", "run", *FLOW_PARAMS, "--deploy_enabled", "False"]
    ran = run_python(command, aws["work"], env, 1500)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return describe_run(aws["work"], aws["env"])
