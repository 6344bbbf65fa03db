"""Least privilege, recorded: every AWS call the code makes on the moto server, checked against the
policy of the identity that makes it in production (infra/template.yaml, resolved by tests/iam.py).

Each test runs a real code path with tests/aws_calls.py logging every botocore call (in this
process and in the processes it starts), then asserts that the role's statements allow each
call's IAM action on the resource it touched, and that dropping any one of those actions from the
template makes the check fail naming it. The identities:

{% if cookiecutter.deployment == "sagemaker" %}* deploy job (DeployRole): `deploy.deploy_release` - the champion check, the archive upload, the
  SageMaker model, endpoint config and endpoint, the smoke request, the champion record;
{% endif %}* train job (TrainRole): the landing reads of `make new-events`, the flow's S3 datastore (the
  launcher, its local steps and the code package), the launch of steps on Batch{% if cookiecutter.deployment == "sagemaker" %}, and
  the champion read of `evaluate` (BATCH=false) and the gate step's DescribeEndpoint{% endif %};
* Batch tasks (BatchJobRole): the same datastore calls{% if cookiecutter.deployment == "sagemaker" %} and the champion read{% endif %}, from inside a step.

What the recording cannot tell: conditions other than StringEquals/StringLike on a key the
request carries{% if cookiecutter.deployment == "sagemaker" %} (`iam:PassedToService` is set for the role SageMaker is
given){% endif %}; the bucket policy's TLS-only Deny (moto is plain HTTP); service control
policies, permission boundaries, KMS key policies (the bucket uses SSE-S3); the calls AWS
services make with their own roles (Batch's and ECS's agents{% if cookiecutter.deployment == "sagemaker" %}, SageMaker pulling the
image{% endif %}): those only a real account shows.
"""

from __future__ import annotations

import copy
{%- if cookiecutter.deployment == "sagemaker" %}
import json
{%- endif %}
import os
import subprocess
import sys
import uuid
{%- if cookiecutter.deployment == "sagemaker" %}
from dataclasses import replace
{%- endif %}
from pathlib import Path
from typing import Any

import boto3
import iam
import pytest
{%- if cookiecutter.deployment == "sagemaker" %}
from botocore.stub import Stubber
{%- endif %}
from conftest import Emulator
{%- if cookiecutter.deployment == "sagemaker" %}
from helpers import make_release
{%- endif %}
from test_infra import moto_template
from test_infra import stack as infra_stack
from test_landing import drop, landing_settings
{%- if cookiecutter.deployment == "sagemaker" %}
from test_sagemaker import (
    ARCHIVE,
    GOOD_ANSWER,
    _clients,
    _described,
    _stub_update,
    queue_answers,
    settings_for,
)
{%- endif %}

{% if cookiecutter.deployment == "sagemaker" -%}
from {{ cookiecutter.project }} import deploy
from {{ cookiecutter.project }}.deploy import sagemaker
{% endif -%}
from {{ cookiecutter.project }}.ingest import load
{%- if cookiecutter.deployment == "sagemaker" %}
from {{ cookiecutter.project }}.release.bundle import write_release
from {{ cookiecutter.project }}.release.champion import champion_status, write_champion
{%- endif %}

pytestmark = pytest.mark.cloud

TESTS = Path(__file__).resolve().parent
TEMPLATE = TESTS.parent / "infra" / "template.yaml"
REPO = "acme/session-recs"


class CallLog:
    """The AWS calls made while recording: tests/aws_calls.py, loaded by every new client."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self._monkeypatch = path, monkeypatch

    def start(self) -> None:
        """Log the calls of the clients created from now on (setup before this is not logged)."""
        self.path.unlink(missing_ok=True)
        self._monkeypatch.setenv("AWS_CALL_LOG", str(self.path))
        self._monkeypatch.setenv("BOTOCORE_EXPERIMENTAL__PLUGINS", "aws_calls=aws_calls")
        paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        self._monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))

    def stop(self) -> list[dict[str, Any]]:
        self._monkeypatch.delenv("AWS_CALL_LOG")
        return iam.read_calls(self.path)


@pytest.fixture
def call_log(aws_env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CallLog:
    return CallLog(tmp_path / "calls.jsonl", monkeypatch)


@pytest.fixture
def stack() -> dict[str, str]:
    """The parameters of a stack of its own (the bucket's name comes from ProjectName)."""
    project = f"pol-{uuid.uuid4().hex[:10]}"
    return {"ProjectName": project, "GitHubRepository": REPO, "EndpointName": project}


def template() -> dict[str, Any]:
    return iam.load_template(TEMPLATE)


def bucket_of(parameters: dict[str, str]) -> str:
    name = iam.stack_values(template(), parameters)["Bucket"]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def without(data: dict[str, Any], role: str, action: str) -> dict[str, Any]:
    """The template with `action` removed from every statement of `role`'s policies."""
    data = copy.deepcopy(data)
    for policy in data["Resources"][role]["Properties"]["Policies"]:
        kept = []
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            statement["Action"] = [a for a in actions if a != action]
            if statement["Action"]:
                kept.append(statement)
        policy["PolicyDocument"]["Statement"] = kept
    return data


def assert_allowed(calls: list[dict[str, Any]], role: str, parameters: dict[str, str]) -> None:
    """Every call is allowed to `role`, and each of its actions is needed: without it in the
    template, the check fails naming it."""
    assert calls, "no AWS call was logged: did botocore load tests/aws_calls.py?"
    data = template()
    problems = iam.denied(calls, role, iam.role_statements(data, role, parameters))
    assert not problems, "\n".join(problems)
    actions = {r.action for call in calls for r in iam.requests(call)}
    for action in sorted(actions):
        statements = iam.role_statements(without(data, role, action), role, parameters)
        problems = iam.denied(calls, role, statements)
        assert problems and all(f": {action} on " in p for p in problems), (action, problems)


def operations(calls: list[dict[str, Any]]) -> set[str]:
    return {f"{c['service']}:{c['operation']}" for c in calls}


# --- the check itself --------------------------------------------------------------------------


def test_s3_calls_become_their_iam_actions() -> None:
    head = {"service": "s3", "operation": "HeadObject", "params": {"Bucket": "b", "Key": "k/1"}}
    assert iam.requests(head) == [iam.Request("s3:GetObject", "arn:aws:s3:::b/k/1")]
    listing = {"service": "s3", "operation": "ListObjectsV2", "params": {"Bucket": "b"}}
    assert iam.requests(listing) == [iam.Request("s3:ListBucket", "arn:aws:s3:::b")]
    part = {"service": "s3", "operation": "UploadPart", "params": {"Bucket": "b", "Key": "k"}}
    assert iam.requests(part)[0].action == "s3:PutObject"
    copied = {"Bucket": "b", "Key": "to", "CopySource": "a/from?versionId=1"}
    copy_call = {"service": "s3", "operation": "CopyObject", "params": copied}
    assert iam.requests(copy_call) == [
        iam.Request("s3:GetObject", "arn:aws:s3:::a/from"),
        iam.Request("s3:PutObject", "arn:aws:s3:::b/to"),
    ]
    with pytest.raises(KeyError, match="s3:PutBucketPolicy has no IAM mapping"):
        iam.requests({"service": "s3", "operation": "PutBucketPolicy", "params": {"Bucket": "b"}})


def test_the_evaluator_matches_wildcards_and_lets_a_deny_win() -> None:
    allow = {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/data/*"}
    deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/data/secret?"}
    assert iam.decide([allow], iam.Request("s3:getobject", "arn:aws:s3:::b/data/x/y")) == "allow"
    assert iam.decide([allow], iam.Request("s3:GetObject", "arn:aws:s3:::b/other")) == "implicit"
    assert iam.decide([allow], iam.Request("s3:PutObject", "arn:aws:s3:::b/data/x")) == "implicit"
    assert (
        iam.decide([allow, deny], iam.Request("s3:GetObject", "arn:aws:s3:::b/data/secret1"))
        == "deny"
    )
    passing = {
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "arn:aws:iam::1:role/r",
        "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
    }
    to_sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert (
        iam.decide([passing], iam.Request("iam:PassRole", "arn:aws:iam::1:role/r", to_sagemaker))
        == "allow"
    )
    assert iam.decide([passing], iam.Request("iam:PassRole", "arn:aws:iam::1:role/r")) == "implicit"
    elsewhere = {"Effect": "Allow", "NotAction": "s3:Delete*", "NotResource": "arn:aws:s3:::b/*"}
    assert iam.decide([elsewhere], iam.Request("s3:GetObject", "arn:aws:s3:::c/k")) == "allow"
    assert iam.decide([elsewhere], iam.Request("s3:GetObject", "arn:aws:s3:::b/k")) == "implicit"
    assert iam.decide([elsewhere], iam.Request("s3:DeleteObject", "arn:aws:s3:::c/k")) == "implicit"


# --- the train job and the Batch tasks ---------------------------------------------------------


def test_landing_reads_are_allowed_to_the_train_role(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    """`make new-events` on the runner: list the landing prefix, download the new files."""
    bucket = bucket_of(stack)
    for key, prefix in (
        ("landing/2026-12-01.csv", "aaaa"),
        ("landing/more/2026-12-02.csv", "bbbb"),
    ):
        boto3.client("s3").upload_file(
            str(drop(tmp_path / "drops", Path(key).name, prefix, 20)), bucket, key
        )
    settings = landing_settings(tmp_path, f"s3://{bucket}/landing/")
    call_log.start()
    assert load.ingest(settings, source="landing", progress=None).files_loaded == 2
    calls = call_log.stop()
    assert {"s3:ListObjectsV2", "s3:HeadObject", "s3:GetObject"} <= operations(calls)
    assert_allowed(calls, "TrainRole", stack)


FLOW = '''
from metaflow import FlowSpec, card, current, step
from metaflow.cards import Markdown


class DatastoreFlow(FlowSpec):
    """What every step of RecsFlow does with the S3 datastore: artifacts, a card, the preflight."""

    @card(type="blank")
    @step
    def start(self):
        from {{ cookiecutter.project }}.pipeline.compute import check_datastore

        check_datastore()
        self.sessions = [[f"sku-{i}", f"sku-{i + 1}"] for i in range(20_000)]
        current.card.append(Markdown("# card"))
        self.next(self.end)

    @step
    def end(self):
        assert len(self.sessions) == 20_000


if __name__ == "__main__":
    DatastoreFlow()
'''


def run_flow(folder: Path, bucket: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """DatastoreFlow run in `folder` on the S3 datastore in `bucket` (moto)."""
    (folder / "flow.py").write_text(FLOW)
    env = {
        **os.environ,
        "METAFLOW_USER": "tester",
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow",
        "METAFLOW_S3_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        **env,
    }
    command = [sys.executable, "flow.py", "--no-pylint", "run", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def deploy_stack(stack: dict[str, str], folder: Path, *commands: str) -> None:
    """`make infra` (infra/stack.py) with `commands` (diff, deploy) for `stack` on moto."""
    name = stack["ProjectName"]
    options = ["--stack-name", name, "--template", str(moto_template(folder / "t.json")),
               "--env-file", str(folder / ".env"), "--param", f"ProjectName={name}",
               "--github-repo", REPO]  # fmt: skip
    for command in commands:
        assert infra_stack.main([command, *options]) == 0


def test_the_s3_datastore_is_allowed_to_the_train_and_batch_job_roles(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    """A Metaflow run on the S3 datastore, its code package uploaded as for Batch: the launcher
    and local steps run as the train role, a Batch task's step makes the same calls as the job
    role."""
    bucket = bucket_of(stack)
    call_log.start()
    ran = run_flow(tmp_path, bucket, METAFLOW_FEAT_ALWAYS_UPLOAD_CODE_PACKAGE="true")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    calls = call_log.stop()
    assert {"s3:HeadBucket", "s3:PutObject", "s3:GetObject"} <= operations(calls), operations(calls)
    assert {c["params"]["Bucket"] for c in calls} == {bucket}
    assert_allowed(calls, "TrainRole", stack)
    assert_allowed(calls, "BatchJobRole", stack)


def test_batch_submission_is_allowed_to_the_train_role(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    """The run launched with the steps on Batch, into the stack deployed to moto: Metaflow finds
    the queue, registers the job definition (passing the job role) and submits the job, which
    moto cannot run (no container engine), so the run then fails."""
    deploy_stack(stack, tmp_path, "deploy")
    values = iam.stack_values(template(), stack)
    call_log.start()
    ran = run_flow(
        tmp_path,
        values["Bucket"],
        "--with",
        "batch",
        METAFLOW_BATCH_JOB_QUEUE=values["CpuQueue"],
        METAFLOW_ECS_S3_ACCESS_IAM_ROLE=values["BatchJobRole.Arn"],
        METAFLOW_BATCH_CONTAINER_IMAGE=f"{values['ImageRepository']}:test",
    )
    calls = call_log.stop()
    assert ran.returncode != 0  # moto accepted the job but cannot run it
    submitted = {"batch:RegisterJobDefinition", "batch:SubmitJob"}
    assert submitted <= operations(calls), ran.stderr[-3000:]
    assert_allowed(calls, "TrainRole", stack)

{%- if cookiecutter.deployment == "sagemaker" %}


# --- the deploy job and the champion read of evaluate ---------------------------------------------


def deploy_settings(stack: dict[str, str], tmp_path: Path) -> Any:
    values = iam.stack_values(template(), stack)
    settings = settings_for(tmp_path, bucket_of(stack), stack["EndpointName"])
    return settings.model_copy(update={"sagemaker_role_arn": values["SageMakerExecutionRole.Arn"]})


def test_the_deploy_job_is_allowed_to_the_deploy_role(
    aws_env: Emulator, call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    settings = deploy_settings(stack, tmp_path)
    sessions = [[f"{stack['EndpointName']}-sku-1", "sku-2"]]
    release = replace(make_release(ARCHIVE, passed=True), smoke_sessions=sessions)
    write_release(release, tmp_path / "release")
    queue_answers(aws_env, json.dumps(GOOD_ANSWER))
    call_log.start()
    assert deploy.deploy_release(tmp_path / "release", settings)["deployed"]
    calls = call_log.stop()
    expected = {
        "sagemaker:CreateModel",
        "sagemaker:CreateEndpointConfig",
        "sagemaker:CreateEndpoint",
    }
    assert expected | {"sagemaker:InvokeEndpoint", "s3:PutObject", "s3:GetObject"} <= operations(
        calls
    )
    assert_allowed(calls, "DeployRole", stack)


def test_a_blue_green_update_and_its_rollback_are_allowed_to_the_deploy_role(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    """An endpoint that exists: update to the new config, a failed smoke test, back to the old
    one (SageMaker stubbed: moto has no UpdateEndpoint; the calls are logged all the same)."""
    settings = deploy_settings(stack, tmp_path)
    endpoint = stack["EndpointName"]
    old, new = (
        f"{endpoint}-20261201-010101-aaaa",
        sagemaker.deployment_name(endpoint),
    )
    call_log.start()
    client, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    with Stubber(client) as stub, Stubber(runtime) as runtime_stub:
        _stub_update(stub, endpoint, old, new)
        runtime_stub.add_client_error(
            "invoke_endpoint", "ModelError", "crashed", http_status_code=424
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:::endpoint/e"},
            {"EndpointName": endpoint, "EndpointConfigName": old},
        )
        stub.add_response("describe_endpoint", _described(endpoint, old, "InService"))
        with pytest.raises(sagemaker.SmokeTestFailed, match=f"back on {old}"):
            sagemaker.deploy(
                ARCHIVE,
                settings,
                [["sku-1"]],
                clients=_clients(client, runtime),
                name=new,
                poll_s=0.01,
                log=lambda line: None,
            )
    calls = call_log.stop()
    assert {"sagemaker:UpdateEndpoint", "sagemaker:InvokeEndpoint"} <= operations(calls)
    assert_allowed(calls, "DeployRole", stack)


@pytest.mark.parametrize("deployed", [False, True], ids=["first-run", "champion"])
def test_the_champion_read_of_evaluate_is_allowed_where_evaluate_runs(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path, deployed: bool
) -> None:
    """The gate's champion read (`champion_status`, as `load_champion` in the evaluate step):
    on Batch as the job role, with BATCH=false on the runner as the train role."""
    settings = deploy_settings(stack, tmp_path)
    if deployed:
        write_champion(settings, {"run_id": "7", "target": "sagemaker"}, ARCHIVE)
    call_log.start()
    status, _ = champion_status(settings)
    assert status.state == ("deployed" if deployed else "none"), status
    calls = call_log.stop()
    assert operations(calls) == {"s3:GetObject"}
    assert_allowed(calls, "BatchJobRole", stack)
    assert_allowed(calls, "TrainRole", stack)


def test_the_gate_steps_endpoint_check_is_allowed_to_the_train_role(
    aws_env: Emulator, call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    """The gate step (on the runner, as the train role) describes the live endpoint."""
    settings = deploy_settings(stack, tmp_path)
    call_log.start()
    status = deploy.check_champion(champion_status(settings)[0], settings)
    assert status.state == "none", status
    calls = call_log.stop()
    assert operations(calls) == {"s3:GetObject", "sagemaker:DescribeEndpoint"}
    assert_allowed(calls, "TrainRole", stack)

{%- endif %}


# --- make infra --------------------------------------------------------------------------------

# Whoever runs `make infra` (README: an administrator of the account) needs these for
# infra/stack.py's own calls; CloudFormation then creates the resources with the same credentials
# (IAM roles included), which moto's CloudFormation does inside the server, out of the log's sight.
INFRA_ACTIONS = {
    "cloudformation:CreateChangeSet",
    "cloudformation:CreateStack",
    "cloudformation:DeleteChangeSet",
    "cloudformation:DeleteStack",
    "cloudformation:DescribeChangeSet",
    "cloudformation:DescribeStacks",
    "cloudformation:GetTemplateSummary",
    "iam:ListOpenIDConnectProviders",
}


def test_make_infra_calls_only_cloudformation_on_its_stack(
    call_log: CallLog, stack: dict[str, str], tmp_path: Path
) -> None:
    call_log.start()
    deploy_stack(stack, tmp_path, "diff", "deploy")
    calls = call_log.stop()
    requested = {r for call in calls for r in iam.requests(call)}
    assert {r.action for r in requested} == INFRA_ACTIONS
    own_stack = f"arn:aws:cloudformation:us-east-1:123456789012:stack/{stack['ProjectName']}/*"
    assert {r.resource for r in requested} == {own_stack, "*"}
    unscoped = {r.action for r in requested if r.resource == "*"}
    # Neither has resource-level permissions.
    assert unscoped == {"cloudformation:GetTemplateSummary", "iam:ListOpenIDConnectProviders"}
    readme = (TESTS.parent / "README.md").read_text()
    assert all(action in readme for action in INFRA_ACTIONS)
