"""Deploy, preview or read the project's AWS stack (infra/template.yaml) with boto3.

    uv run python infra/stack.py deploy [--github-repo OWNER/REPO] [--param Key=Value ...]
    uv run python infra/stack.py diff   [same options]     # the change set, not applied
    uv run python infra/stack.py outputs                   # .env lines and repository variables

`make infra` and `make infra-diff` call it. Each stack output is one variable, named by its key
in CamelCase (MetaflowDatastoreSysrootS3 is METAFLOW_DATASTORE_SYSROOT_S3); `deploy` and `outputs`
write the settings into .env and print the repository variables CI needs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

TEMPLATE = Path(__file__).with_name("template.yaml")
DEFAULT_STACK = "session-recs"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]  # the template names its IAM roles
OIDC_HOST = "token.actions.githubusercontent.com"
POLL_S = 2.0

# Variables only the workflows read (not settings): repository variables, never .env lines.
CI_ONLY = frozenset({"AWS_REGION", "AWS_TRAIN_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "IMAGE_REPOSITORY"})
# Step Functions is deployed from a developer's machine (make deploy-schedule): .env only.
LOCAL_ONLY = frozenset(
    {
        "METAFLOW_BATCH_JOB_QUEUE",
        "METAFLOW_SFN_IAM_ROLE",
        "METAFLOW_SFN_DYNAMO_DB_TABLE",
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE",
    }
)
# Outputs no code reads yet, written as comments with what to do with them.
NOT_SETTINGS = {
    "BATCH_GPU_QUEUE": "to train on GPUs set BATCH_QUEUE to this queue and BATCH_GPU=1",
}


class InfraError(Exception):
    """The stack cannot be deployed or read; the message says what to do."""


def variable_name(output_key: str) -> str:
    """The variable an output stands for: MetaflowEcsS3AccessIamRole is
    METAFLOW_ECS_S3_ACCESS_IAM_ROLE."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", output_key).upper()


def github_repository(remote_url: str) -> str | None:
    """OWNER/REPO of a github.com remote URL (https or ssh), else None."""
    match = re.search(r"github\.com[:/]([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", remote_url.strip())
    return f"{match[1]}/{match[2]}" if match else None


def origin_repository() -> str | None:
    """OWNER/REPO of this checkout's `origin` remote, if it is on GitHub."""
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return github_repository(url)


def existing_stack(cfn: Any, stack: str) -> dict[str, Any] | None:
    """The stack's description, or None when there is none (or only an unexecuted change set)."""
    try:
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return None if described["StackStatus"] == "REVIEW_IN_PROGRESS" else described


def oidc_provider_exists(iam: Any) -> bool:
    """Whether the account already has GitHub's OIDC provider (an account holds one per URL)."""
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    return any(p["Arn"].endswith(f"/{OIDC_HOST}") for p in providers)


def stack_parameters(
    given: Mapping[str, str],
    stack: Mapping[str, Any] | None,
    github_repo: str | None,
    oidc_exists: bool,
    accepted: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """CloudFormation parameters: those given win; an update keeps every earlier value that the
    template still `accepted` (sent as values: the template has no NoEcho parameter); a new stack
    gets the GitHub repository and creates the OIDC provider only where there is none."""
    previous = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in (stack or {}).get("Parameters", [])
        if accepted is None or p["ParameterKey"] in accepted
    }
    values = previous | dict(given)
    if github_repo:
        values.setdefault("GitHubRepository", github_repo)
    if stack is None:
        if "GitHubRepository" not in values:
            raise InfraError(
                "the stack needs the GitHub repository whose workflows may assume its roles: "
                'pass --github-repo OWNER/REPO (make infra ARGS="--github-repo OWNER/REPO")'
            )
        values.setdefault("CreateOidcProvider", "false" if oidc_exists else "true")
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(values.items())]


def create_change_set(
    cfn: Any, stack: str, template: str, parameters: Sequence[Mapping[str, Any]], update: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Create a change set and wait for it; return its name and its changes ([] for none)."""
    name = f"{stack}-{time.strftime('%Y%m%d%H%M%S')}"
    cfn.create_change_set(
        StackName=stack,
        ChangeSetName=name,
        ChangeSetType="UPDATE" if update else "CREATE",
        TemplateBody=template,
        Parameters=list(parameters),
        Capabilities=CAPABILITIES,
    )
    while True:
        described = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        if described["Status"] not in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            break
        time.sleep(POLL_S)
    if described["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            cfn.delete_change_set(StackName=stack, ChangeSetName=name)
            return name, []
        raise InfraError(f"change set {name} failed: {reason}")
    changes = list(described.get("Changes", []))
    while described.get("NextToken"):
        described = cfn.describe_change_set(
            StackName=stack, ChangeSetName=name, NextToken=described["NextToken"]
        )
        changes += described.get("Changes", [])
    return name, changes


def describe_changes(changes: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per change: action, logical id, type, and whether it replaces the resource."""
    lines = []
    for change in changes:
        resource = change.get("ResourceChange", {})
        replace = " (replaces it)" if resource.get("Replacement") == "True" else ""
        lines.append(
            f"  {resource.get('Action', '?'):<7} {resource.get('LogicalResourceId', '?'):<32} "
            f"{resource.get('ResourceType', '')}{replace}"
        )
    return lines


def preview(
    cfn: Any, stack: str, template: str, parameters: Sequence[Mapping[str, Any]], update: bool
) -> list[dict[str, Any]]:
    """The changes a deployment would make: a change set, deleted again (with the empty stack a
    first preview leaves behind)."""
    try:
        name, changes = create_change_set(cfn, stack, template, parameters, update)
        if changes:
            cfn.delete_change_set(StackName=stack, ChangeSetName=name)
    finally:
        if not update:
            cfn.delete_stack(StackName=stack)  # the REVIEW_IN_PROGRESS shell of the preview
    return changes


def deploy(
    cfn: Any, stack: str, template: str, parameters: Sequence[Mapping[str, Any]], update: bool
) -> bool:
    """Create or update the stack and wait for it; False when an update had nothing to change."""
    request = {
        "StackName": stack,
        "TemplateBody": template,
        "Parameters": list(parameters),
        "Capabilities": CAPABILITIES,
    }
    if update:
        try:
            cfn.update_stack(**request)
        except ClientError as error:
            if "No updates are to be performed" in str(error):
                return False
            raise
    else:
        cfn.create_stack(**request)
    waiter = cfn.get_waiter("stack_update_complete" if update else "stack_create_complete")
    try:
        waiter.wait(StackName=stack, WaiterConfig={"Delay": POLL_S, "MaxAttempts": 1800})
    except WaiterError:
        raise InfraError(f"stack {stack} did not deploy: {failure_reason(cfn, stack)}") from None
    return True


def failure_reason(cfn: Any, stack: str) -> str:
    """The first resource failure of the stack's latest events."""
    for event in cfn.describe_stack_events(StackName=stack)["StackEvents"]:
        if event.get("ResourceStatus", "").endswith("_FAILED"):
            return f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason', '?')}"
    return "see the stack's events in the CloudFormation console"


def stack_outputs(cfn: Any, stack: str) -> dict[str, str]:
    """The stack's outputs as variables: {"MODEL_BUCKET": "...", ...}."""
    described = existing_stack(cfn, stack)
    if described is None:
        raise InfraError(f"there is no stack {stack}: run make infra first")
    return {variable_name(o["OutputKey"]): o["OutputValue"] for o in described.get("Outputs", [])}


def env_lines(outputs: Mapping[str, str], region: str) -> dict[str, str]:
    """The .env lines of the outputs: settings and Metaflow's variables, not CI's."""
    lines = {"AWS_DEFAULT_REGION": f"AWS_DEFAULT_REGION={region}"}
    for name, value in outputs.items():
        if name in CI_ONLY:
            continue
        note = NOT_SETTINGS.get(name)
        lines[name] = f"# {name}={value}  # {note}" if note else f"{name}={value}"
    return lines


def repository_variables(outputs: Mapping[str, str]) -> dict[str, str]:
    """The repository variables of the main workflow (Settings > Secrets and variables)."""
    return {
        name: value
        for name, value in outputs.items()
        if name not in LOCAL_ONLY and name not in NOT_SETTINGS
    }


def update_env_file(path: Path, lines: Mapping[str, str]) -> None:
    """Replace each variable's line in `path` (also a commented-out `# NAME=` example), append
    the others; every other line stays as it was."""
    text = path.read_text() if path.exists() else ""
    kept: list[str] = []
    done: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        name = match[1] if match else None
        if name in lines and name not in done:
            kept.append(lines[name])
            done.add(name)
        else:
            kept.append(line)
    missing = [line for name, line in lines.items() if name not in done]
    if missing:
        kept += ["", "# --- written by make infra (infra/stack.py) ---", *missing]
    path.write_text("\n".join(kept).lstrip("\n") + "\n")


def report(outputs: Mapping[str, str], region: str, env_file: Path) -> None:
    """Write .env and print the repository variables to set."""
    update_env_file(env_file, env_lines(outputs, region))
    print(f"\nWrote the stack's settings into {env_file}. Set these repository variables:\n")
    variables = repository_variables(outputs)
    width = max(map(len, variables), default=0)
    for name, value in variables.items():
        print(f"  {name:<{width}}  {value}")
    print("\nwith the GitHub CLI:")
    for name, value in variables.items():
        print(f"  gh variable set {name} --body '{value}'")
    print(
        "\nTo run on AWS also set BATCH=true, METAFLOW_DEFAULT_DATASTORE=s3 and BATCH_IMAGE "
        "(IMAGE_REPOSITORY:tag); see the README's Going to production."
    )


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InfraError(f"--param takes Key=Value, not {pair!r}")
        values[key] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "diff", "outputs"])
    parser.add_argument("--stack-name", default=DEFAULT_STACK)
    parser.add_argument("--github-repo", help="OWNER/REPO (default: the origin remote)")
    parser.add_argument("--param", action="append", default=[], help="Key=Value, repeatable")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--region", help="default: AWS_DEFAULT_REGION or your AWS profile's")
    args = parser.parse_args(argv)
    try:
        session = boto3.session.Session(region_name=args.region)
        region = session.region_name
        if not region:
            raise InfraError("no AWS region: set AWS_DEFAULT_REGION in .env or pass --region")
        cfn = session.client("cloudformation")
        if args.command != "outputs":
            stack = existing_stack(cfn, args.stack_name)
            template = args.template.read_text()
            summary = cfn.get_template_summary(TemplateBody=template)
            parameters = stack_parameters(
                parse_params(args.param),
                stack,
                args.github_repo or (None if stack else origin_repository()),
                stack is None and oidc_provider_exists(session.client("iam")),
                accepted=[p["ParameterKey"] for p in summary["Parameters"]],
            )
            if stack and stack["StackStatus"] == "ROLLBACK_COMPLETE":
                raise InfraError(
                    f"stack {args.stack_name} failed to create and cannot be updated: delete it "
                    f"(aws cloudformation delete-stack --stack-name {args.stack_name}), then retry"
                )
            update = stack is not None
            if args.command == "diff":
                changes = preview(cfn, args.stack_name, template, parameters, update)
                print(f"Stack {args.stack_name} ({region}): {len(changes)} change(s), not applied")
                print("\n".join(describe_changes(changes)))
                return 0
            changed = deploy(cfn, args.stack_name, template, parameters, update)
            done = ("updated" if update else "created") if changed else "unchanged"
            print(f"Stack {args.stack_name} ({region}): {done}")
        report(stack_outputs(cfn, args.stack_name), region, args.env_file)
    except InfraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(f"error: AWS: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
