"""The AWS stack (infra/template.yaml, infra/stack.py): lint, least privilege, trust, a deployment.

Static checks read the template itself, the single source of the IAM policies: cfn-lint, no `*`
where AWS does not require it, the actions the code calls are allowed, GitHub's OIDC subjects of
each job of main.yml against the trust policies (both subject formats). The `cloud` test deploys
the stack to the moto server with infra/stack.py and reads the resources and outputs back; what
moto cannot create is listed in MOTO_GAPS, and those resources are checked statically here.
tests/test_policies.py checks the calls the code really makes against the same policies.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml
from botocore import xform_name
from iam import load_template, resolve
from metaflow import metaflow_config

from {{ cookiecutter.project }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
TEMPLATE = PROJECT / "infra" / "template.yaml"
MAIN_WORKFLOW = PROJECT / ".github" / "workflows" / "main.yml"
DEPLOY_WORKFLOW = PROJECT / ".github" / "workflows" / "deploy.yml"  # called by main.yml
PACKAGE = PROJECT / "src" / "{{ cookiecutter.project }}"
BIN = Path(sys.executable).parent
REPO = "acme/session-recs"
OWNER_ID, REPO_ID = "1234", "98765"
SAGEMAKER = {% if cookiecutter.deployment == "sagemaker" %}True{% else %}False{% endif %}

# What moto's CloudFormation does not create or apply, each with why; the static tests below
# check these resources and properties in the template instead.
MOTO_GAPS = {
    "AWS::S3::BucketPolicy": "not implemented by moto (it warns and skips the resource)",
    "AWS::IAM::OIDCProvider": "not implemented by moto (it warns and skips the resource)",
    "AWS::S3::Bucket VersioningConfiguration, PublicAccessBlockConfiguration, "
    "LifecycleConfiguration, OwnershipControls": "moto applies only BucketEncryption and Tags",
    "AWS::ECR::Repository LifecyclePolicy": "moto does not apply it",
}
# What the moto deployment changes in the template, each with why.
MOTO_ADAPTATIONS = {
    "ServiceRole": "moto's Batch requires a compute environment's ServiceRole; AWS uses the "
    "service-linked role AWSServiceRoleForBatch when it is left out, as the template does",
}
# Actions AWS grants only on "Resource": "*" (no resource-level permission).
STAR_ONLY_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "batch:DescribeComputeEnvironments",
    "batch:DescribeJobQueues",
    "batch:DescribeJobDefinitions",
    "batch:DescribeJobs",
    "cloudwatch:PutMetricData",
}


def load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_stack", PROJECT / "infra" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stack = load_stack_module()


def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def main_workflow() -> dict[str, Any]:
    data = yaml.safe_load(MAIN_WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the `on:` key as True
    return data


def workflow_jobs() -> dict[str, Any]:
    """main.yml's jobs, its deploy job as it runs: the job of deploy.yml that main.yml calls
    (its environment, timeout and steps are the called job's)."""
    jobs = dict(main_workflow()["jobs"])
    if "deploy" in jobs:
        jobs["deploy"] = yaml.safe_load(DEPLOY_WORKFLOW.read_text())["jobs"]["deploy"]
    return jobs


def parameters(**given: str) -> dict[str, str]:
    """The template's defaults, overridden by `given`."""
    defaults = {
        name: str(spec.get("Default", "")) for name, spec in template()["Parameters"].items()
    }
    return defaults | {"GitHubRepository": REPO} | given


def resolved(resource: str, **given: str) -> dict[str, Any]:
    data = template()
    return resolve(data["Resources"][resource], parameters(**given), data["Conditions"])


# --- lint -------------------------------------------------------------------------------------


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True)


def test_cfn_lint_is_clean() -> None:
    proc = cfn_lint(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    broken = (
        text.replace("MaxvCpus: !Ref GpuMaxVcpus", "MaxvCpu: !Ref GpuMaxVcpus")  # a typo
        .replace("Type: AWS::Batch::JobQueue", "Type: AWS::Batch::Queue", 1)  # no such type
        .replace("!GetAtt ForeachTable.Arn", "!GetAtt ForeachTabel.Arn", 1)  # no such resource
    )
    assert broken != text
    (tmp_path / "broken.yaml").write_text(broken)
    proc = cfn_lint(tmp_path / "broken.yaml")
    assert proc.returncode != 0
    for code in ("E3002", "E3006", "E1010"):
        assert code in proc.stdout, proc.stdout


# --- least privilege --------------------------------------------------------------------------


def policy_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource, statement) of every policy in the template: inline, bucket, trust."""
    for name, resource in template()["Resources"].items():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        documents += [
            props[k] for k in ("PolicyDocument", "AssumeRolePolicyDocument") if k in props
        ]
        for document in documents:
            for statement in document["Statement"]:
                yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_wildcard_action_or_resource_except_where_aws_requires_it() -> None:
    text = TEMPLATE.read_text()
    for name, statement in policy_statements():
        actions = as_list(statement.get("Action", []))
        assert (
            "*" not in actions
            and not any(a.endswith(":*") for a in actions)
            or (statement["Effect"] == "Deny")
        ), (name, statement)
        if "*" in as_list(statement.get("Resource", [])):
            assert set(actions) <= STAR_ONLY_ACTIONS, (name, statement)
            # ... and the template says why, on the statement's Sid line.
            sid = statement["Sid"]
            assert re.search(rf"Sid: {sid} # .*no resource-level permission", text), sid
        principal = statement.get("Principal")
        if principal == "*":
            assert statement["Effect"] == "Deny", (name, statement)


def test_only_the_batch_instances_use_an_aws_managed_policy() -> None:
    # The ECS agent's actions (register the instance, poll for tasks, pull, log) are AWS's to keep
    # up to date; they include "Resource": "*" that this template does not write.
    managed = {
        name: resource["Properties"]["ManagedPolicyArns"]
        for name, resource in template()["Resources"].items()
        if "ManagedPolicyArns" in resource.get("Properties", {})
    }
    assert list(managed) == ["BatchInstanceRole"]
    (arn,) = managed["BatchInstanceRole"]
    assert arn["Fn::Sub"].endswith(":policy/service-role/AmazonEC2ContainerServiceforEC2Role")


def allowed_actions(role: str) -> set[str]:
    props = template()["Resources"][role]["Properties"]
    return {
        action
        for policy in props.get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


def operations_called(source: str, service: str, receiver: str = r"") -> set[str]:
    """The `service` API operations a piece of code calls (boto3 method names), as IAM actions."""
    model = boto3.session.Session(region_name="us-east-1").client(service).meta.service_model
    by_method = {xform_name(op): op for op in model.operation_names}
    called = set(re.findall(rf"{receiver}\.([a-z_0-9]+)\(", source))
    called |= set(re.findall(r"get_paginator\(\"([a-z_0-9]+)\"\)", source))
    prefix = model.signing_name if service != "sagemaker-runtime" else "sagemaker"
    # HeadBucket is authorised as s3:ListBucket.
    special = {"HeadBucket": "ListBucket"}
    return {f"{prefix}:{special.get(by_method[m], by_method[m])}" for m in called & set(by_method)}


def package_source() -> str:
    return "\n".join(p.read_text() for p in sorted(PACKAGE.rglob("*.py")))


def test_the_train_role_allows_what_the_flow_and_metaflow_call() -> None:
    batch_client = Path(metaflow_config.__file__).parent / "plugins/aws/batch/batch_client.py"
    batch = operations_called(batch_client.read_text(), "batch", r"_client")
    # ListJobs serves only Metaflow's `batch list` and `batch kill` commands, not a run.
    batch.discard("batch:ListJobs")
    assert {"batch:SubmitJob", "batch:RegisterJobDefinition", "batch:DescribeJobs"} <= batch
    s3 = operations_called(package_source(), "s3", r"(?:client|s3|_s3_client\(\))")
    needed = batch | {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "iam:PassRole"}
    assert "s3:ListBucket" in s3  # the preflight's head_bucket
    assert needed <= allowed_actions("TrainRole")
    push = {"ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"}
    assert push | {"ecr:PutImage", "ecr:GetAuthorizationToken"} <= allowed_actions("TrainRole")
    assert "docker push" in MAIN_WORKFLOW.read_text()


def test_the_train_role_reads_the_landing_prefix_it_points_events_uri_at() -> None:
    """make new-events lists and reads the event files on the runner, with the train role."""
    statements = resolved("TrainRole")["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    readable = {
        resource
        for statement in statements
        if "s3:GetObject" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    assert "<Bucket.Arn>/landing/*" in readable
    assert template()["Outputs"]["EventsUri"]["Value"] == {
        "Fn::Sub": "s3://${Bucket}/${LandingPrefix}/"
    }
    assert stack.variable_name("EventsUri") == "EVENTS_URI"


def test_the_batch_job_role_reads_and_writes_only_its_prefixes() -> None:
    role = resolved("BatchJobRole")
    statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    objects = {
        resource
        for statement in statements
        if any(a.startswith("s3:") and a != "s3:ListBucket" for a in as_list(statement["Action"]))
        for resource in as_list(statement["Resource"])
    }
    assert objects == {
        "<Bucket.Arn>/metaflow/*",
        "<Bucket.Arn>/models/champion/*",
    }
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}

{%- if cookiecutter.deployment == "sagemaker" %}


def test_the_deploy_role_allows_what_the_sagemaker_deployer_calls() -> None:
    source = package_source()
    needed = operations_called(source, "sagemaker", r"\bsagemaker")
    needed |= operations_called(source, "sagemaker-runtime", r"\bruntime")
    assert {"sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"} <= needed
    assert "sagemaker:InvokeEndpoint" in needed
    allowed = allowed_actions("DeployRole")
    assert needed | {"s3:PutObject", "s3:GetObject", "iam:PassRole"} <= allowed
    execution = allowed_actions("SageMakerExecutionRole")
    assert {"s3:GetObject", "ecr:BatchGetImage", "logs:PutLogEvents"} <= execution
{%- endif %}


# --- GitHub OIDC: who may assume the CI roles ---------------------------------------------------


def subject(job: str, event: str, ref: str = "refs/heads/main", form: str = "classic",
            repo: str = REPO) -> str:  # fmt: skip
    """The `sub` claim of main.yml's `job` on `event`: classic, or immutable ids ('@' or '-')."""
    owner, name = repo.split("/")
    if form != "classic":
        owner, name = f"{owner}{form}{OWNER_ID}", f"{name}{form}{REPO_ID}"
    jobs = workflow_jobs()
    environment = jobs[job].get("environment") if job in jobs else None
    if environment:
        context = f"environment:{environment['name']}"
    elif event == "pull_request":
        context = "pull_request"
    else:
        context = f"ref:{ref}"
    return f"repo:{owner}/{name}:{context}"


def trusts(role: str, sub: str, **given: str) -> bool:
    """Whether `role`'s trust policy lets a GitHub token with `sub` assume it (IAM StringLike)."""
    for statement in resolved(role, **given)["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        condition = statement["Condition"]
        assert condition["StringEquals"] == {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"
        }
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        patterns = as_list(condition["StringLike"]["token.actions.githubusercontent.com:sub"])
        # IAM's `*` and `?` are fnmatch's; IAM has no character classes, and no pattern uses `[`.
        assert not any("[" in p for p in patterns)
        if any(fnmatchcase(sub, pattern) for pattern in patterns):
            return True
    return False


WITH_IDS = {"GitHubOwnerId": OWNER_ID, "GitHubRepositoryId": REPO_ID}
FORMS = [("classic", {}), ("classic", WITH_IDS), ("@", {}), ("@", WITH_IDS), ("-", WITH_IDS)]
ROLES = ["TrainRole"] + (["DeployRole"] if SAGEMAKER else [])


def test_main_workflow_triggers_are_the_ones_trusted() -> None:
    on = main_workflow()["on"]
    assert set(on) == {"push", "schedule", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]


@pytest.mark.parametrize(("form", "given"), FORMS, ids=[f"{f}-{bool(g)}" for f, g in FORMS])
def test_train_role_trusts_main_only(form: str, given: dict[str, str]) -> None:
    # push, schedule and workflow_dispatch on main all carry the ref of main.
    for event in ("push", "schedule", "workflow_dispatch"):
        assert trusts("TrainRole", subject("train", event, form=form), **given), event
    assert not trusts("TrainRole", subject("train", "push", "refs/heads/dev", form), **given)
    assert not trusts("TrainRole", subject("train", "push", "refs/tags/v1", form), **given)
    assert not trusts("TrainRole", subject("pr", "pull_request", form=form), **given)
    if SAGEMAKER:
        assert not trusts("TrainRole", subject("deploy", "push", form=form), **given)

{%- if cookiecutter.deployment == "sagemaker" %}


@pytest.mark.parametrize(("form", "given"), FORMS, ids=[f"{f}-{bool(g)}" for f, g in FORMS])
def test_deploy_role_trusts_the_production_environment_only(form: str, given: dict) -> None:
    assert workflow_jobs()["deploy"]["environment"]["name"] == "production"
    assert trusts("DeployRole", subject("deploy", "push", form=form), **given)
    for event in ("push", "schedule", "workflow_dispatch"):
        assert not trusts("DeployRole", subject("train", event, form=form), **given)
    assert not trusts("DeployRole", subject("pr", "pull_request", form=form), **given)
{%- endif %}


@pytest.mark.parametrize("role", ROLES)
def test_other_repositories_and_look_alike_owners_are_not_trusted(role: str) -> None:
    job = "train" if role == "TrainRole" else "deploy"
    for form, given in FORMS:
        for repo in ("acme-evil/session-recs", "acme/session-recs-fork", "other/session-recs"):
            assert not trusts(role, subject(job, "push", form=form, repo=repo), **given)
    # An owner `acme-9` must not pass for `acme` in the immutable `-` form: that form is trusted
    # only with the ids given, never through a `-*` wildcard.
    context = "ref:refs/heads/main" if job == "train" else "environment:production"
    look_alike = f"repo:acme-9/session-recs-{REPO_ID}:{context}"
    assert not any(trusts(role, look_alike, **given) for _, given in FORMS)


def test_role_sessions_outlast_the_jobs() -> None:
    jobs = workflow_jobs()
    train_s = jobs["train"]["timeout-minutes"] * 60
    assert int(parameters()["TrainSessionSeconds"]) >= train_s
    role = template()["Resources"]["TrainRole"]["Properties"]
    assert role["MaxSessionDuration"] == {"Ref": "TrainSessionSeconds"}
    credentials = [
        s for s in jobs["train"]["steps"] if "configure-aws-credentials" in s.get("uses", "")
    ]
    asked = credentials[0]["with"]["role-duration-seconds"]
    # AssumeRoleWithWebIdentity refuses a session longer than the role's MaxSessionDuration.
    assert train_s <= asked <= int(parameters()["TrainSessionSeconds"])
    if SAGEMAKER:
        deploy_s = jobs["deploy"]["timeout-minutes"] * 60
        assert template()["Resources"]["DeployRole"]["Properties"]["MaxSessionDuration"] >= deploy_s


def test_roles_trust_the_oidc_provider_created_or_already_there() -> None:
    for create, expected in (("true", "<GitHubOidcProvider>"), ("false", "oidc-provider/token")):
        for role in ROLES:
            props = resolved(role, CreateOidcProvider=create)["Properties"]
            federated = props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Federated"]
            assert expected in federated
    provider = template()["Resources"]["GitHubOidcProvider"]
    assert provider["Condition"] == "CreateOidc"
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]


# --- outputs: one variable each -----------------------------------------------------------------


def workflow_variables() -> set[str]:
    texts = [w.read_text() for w in (MAIN_WORKFLOW, DEPLOY_WORKFLOW) if w.exists()]
    return set(re.findall(r"vars\.([A-Z_0-9]+)", "\n".join(texts)))


def test_each_output_is_a_setting_a_metaflow_variable_or_a_workflow_variable() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for key in template()["Outputs"]:
        name = stack.variable_name(key)
        metaflow = name.startswith("METAFLOW_") and hasattr(metaflow_config, name[9:])
        known = name in settings or metaflow or name in workflow_variables()
        assert known or name in stack.NOT_SETTINGS, f"{key} ({name}) is read by nothing"
    roles = {"AWS_TRAIN_ROLE_ARN"} | ({"AWS_DEPLOY_ROLE_ARN"} if SAGEMAKER else set())
    assert roles | {"IMAGE_REPOSITORY", "AWS_REGION"} <= workflow_variables()
    assert "AWS_ROLE_ARN" not in workflow_variables()


def test_variable_names_and_repository_urls() -> None:
    assert stack.variable_name("MetaflowEcsS3AccessIamRole") == "METAFLOW_ECS_S3_ACCESS_IAM_ROLE"
    assert stack.variable_name("MetaflowSfnDynamoDbTable") == "METAFLOW_SFN_DYNAMO_DB_TABLE"
    assert stack.github_repository("git@github.com:acme/session-recs.git") == REPO
    assert stack.github_repository("https://github.com/acme/session-recs") == REPO
    assert stack.github_repository("https://gitlab.com/acme/session-recs.git") is None


def test_env_file_keeps_other_lines_and_fills_the_examples(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("SEED=7\n# MODEL_BUCKET=         # where archives go\nBATCH_QUEUE=old\n")
    stack.update_env_file(env, {"MODEL_BUCKET": "MODEL_BUCKET=b", "BATCH_QUEUE": "BATCH_QUEUE=q",
                                "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION=eu-west-1"})  # fmt: skip
    lines = env.read_text().splitlines()
    assert lines[:3] == ["SEED=7", "MODEL_BUCKET=b", "BATCH_QUEUE=q"]
    assert lines[-1] == "AWS_DEFAULT_REGION=eu-west-1"


def test_a_new_stack_needs_the_repository_and_an_update_keeps_earlier_values() -> None:
    with pytest.raises(stack.InfraError, match="--github-repo"):
        stack.stack_parameters({}, None, None, oidc_exists=False)
    created = stack.stack_parameters({}, None, REPO, oidc_exists=True)
    assert {"ParameterKey": "CreateOidcProvider", "ParameterValue": "false"} in created
    earlier = {"GitHubRepository": REPO, "CpuMaxVcpus": "64", "RemovedFromTheTemplate": "x"}
    existing = {
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in earlier.items()]
    }
    updated = stack.stack_parameters(
        {"CpuMaxVcpus": "8"}, existing, None, oidc_exists=True, accepted=parameters()
    )
    assert updated == [
        {"ParameterKey": "CpuMaxVcpus", "ParameterValue": "8"},
        {"ParameterKey": "GitHubRepository", "ParameterValue": REPO},
    ]


def test_bucket_is_private_encrypted_versioned_and_archives_old_runs() -> None:
    bucket = resolved("Bucket")["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    # The datastore is content-addressed (new runs reuse old blobs): archived, never expired.
    assert rules["ArchiveOldRuns"]["Prefix"] == "metaflow/"
    assert "ExpirationInDays" not in rules["ArchiveOldRuns"]
    assert rules["ExpireLandedFiles"]["Prefix"] == "landing/"
    assert "Prefix" not in rules["ExpireOverwrittenVersions"]  # champion records' history
    assert "ExpirationInDays" not in rules["ExpireOverwrittenVersions"]
    deny = resolved("BucketPolicy")["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def test_image_repository_scans_and_keeps_the_newest_images() -> None:
    repository = resolved("ImageRepository")["Properties"]
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    policy = json.loads(repository["LifecyclePolicy"]["LifecyclePolicyText"].replace(
        "<ImagesKept>", parameters()["ImagesKept"]))  # fmt: skip
    selection = policy["rules"][0]["selection"]
    assert selection["countType"] == "imageCountMoreThan" and selection["countNumber"] == 30


# --- moto: the stack deploys and its outputs are read back --------------------------------------


def moto_template(path: Path) -> Path:
    """The template as moto can deploy it (MOTO_ADAPTATIONS), as JSON."""
    data = template()
    for resource in data["Resources"].values():
        if resource["Type"] == "AWS::Batch::ComputeEnvironment":
            resource["Properties"]["ServiceRole"] = {"Fn::GetAtt": ["BatchInstanceRole", "Arn"]}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.cloud
def test_stack_deploys_to_moto_and_writes_its_outputs(aws_env, tmp_path: Path, capsys) -> None:
    name = "infra-test"
    options = ["--stack-name", name, "--template", str(moto_template(tmp_path / "t.json")),
               "--env-file", str(tmp_path / ".env"), "--param", f"ProjectName={name}"]  # fmt: skip
    assert stack.main(["diff", "--github-repo", REPO, *options]) == 0
    preview = capsys.readouterr().out
    assert "Add     CpuQueue" in preview and "not applied" in preview
    stacks = boto3.client("cloudformation").describe_stacks()["Stacks"]
    assert name not in {s["StackName"] for s in stacks}  # no shell left (other tests' may be)

    assert stack.main(["deploy", "--github-repo", REPO, *options]) == 0
    printed = capsys.readouterr().out
    env = dict(
        line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines() if "=" in line
    )
    bucket = f"{name}-123456789012-us-east-1"
    assert env["METAFLOW_DATASTORE_SYSROOT_S3"] == f"s3://{bucket}/metaflow"
    assert env["MODEL_BUCKET"] == bucket and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["BATCH_QUEUE"] == env["METAFLOW_BATCH_JOB_QUEUE"]
    assert env["METAFLOW_ECS_S3_ACCESS_IAM_ROLE"].endswith(f":role/{name}-batch-job")
    assert "AWS_TRAIN_ROLE_ARN" not in env  # CI's variable, printed instead
    train_role = f"arn:aws:iam::123456789012:role/{name}-github-train"
    assert f"gh variable set AWS_TRAIN_ROLE_ARN --body '{train_role}'" in printed
    assert "# BATCH_GPU_QUEUE=" in (tmp_path / ".env").read_text()

    s3 = boto3.client("s3")
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    ecr = boto3.client("ecr")
    repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"

    batch = boto3.client("batch")
    queues = {q["jobQueueName"]: q for q in batch.describe_job_queues()["jobQueues"]}
    assert {f"{name}-cpu", f"{name}-gpu"} <= set(queues)
    environments = {
        e["computeEnvironmentName"]: e["computeResources"]
        for e in batch.describe_compute_environments()["computeEnvironments"]
    }
    assert environments[f"{name}-cpu"]["maxvCpus"] == 64
    assert environments[f"{name}-gpu"]["instanceTypes"] == ["g4dn.xlarge"]

    iam = boto3.client("iam")
    assert iam.get_role(RoleName=f"{name}-github-train")["Role"]["MaxSessionDuration"] == 14400
    deployed = iam.get_role_policy(RoleName=f"{name}-github-train", PolicyName="train")
    document = deployed["PolicyDocument"]  # moto's CloudFormation stores Python's repr of it
    document = ast.literal_eval(document) if isinstance(document, str) else document
    sids = [s["Sid"] for s in document["Statement"]]
    assert sids == [s["Sid"] for s in resolved("TrainRole")["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"]]  # fmt: skip
    table = boto3.client("dynamodb").describe_table(TableName=f"{name}-metaflow-foreach")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pathspec", "KeyType": "HASH"}]

    # What moto skipped is still in the template, checked by the static tests.
    types = {r["Type"] for r in template()["Resources"].values()}
    assert {gap.split()[0] for gap in MOTO_GAPS} <= types

    assert stack.main(["outputs", *options]) == 0
    assert "AWS_TRAIN_ROLE_ARN" in capsys.readouterr().out
    # An update keeps the repository given at creation.
    assert stack.main(["deploy", *options, "--param", "GpuMaxVcpus=0"]) == 0
    assert f"Stack {name} (us-east-1): updated" in capsys.readouterr().out
    described = boto3.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    given = {p["ParameterKey"]: p.get("ParameterValue") for p in described["Parameters"]}
    assert given["GitHubRepository"] == REPO and given["GpuMaxVcpus"] == "0"


def test_a_missing_region_is_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert stack.main(["outputs", "--env-file", str(tmp_path / ".env")]) == 1
    assert "no AWS region" in capsys.readouterr().err
