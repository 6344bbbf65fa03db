"""IAM for the tests: the template's policies resolved, AWS calls as IAM requests, and a decision.

`resolve` evaluates the intrinsic functions of infra/template.yaml with given values;
`stack_values` gives the values a deployed stack would have (names and ARNs from the
parameters); `requests` turns a call logged by tests/aws_calls.py into the IAM requests AWS
authorises (action, resource, context keys); `decide` evaluates a role's statements as IAM does:
an explicit Deny wins, then an Allow, else the implicit deny. `denied` is the check the tests run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
OIDC_HOST = "token.actions.githubusercontent.com"

# --- the template -------------------------------------------------------------------------------


def load_template(path: Path) -> dict[str, Any]:
    """A template as CloudFormation reads it (short-form tags become Fn:: keys)."""
    data, problems = decode(str(path))
    assert not problems, problems
    return data


def resolve(node: Any, values: Mapping[str, Any], conditions: Mapping[str, Any]) -> Any:
    """Resolve Ref, Fn::GetAtt, Fn::Sub, Fn::If/Equals/Not/And, Fn::Select and Fn::Split; a
    name without a value becomes `<name>` (`<Bucket.Arn>`), which the static tests read."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: walk(v) for k, v in value.items()}
        ((key, arg),) = value.items()
        if key == "Ref":
            return values.get(arg, f"<{arg}>")
        if key == "Fn::GetAtt":
            name = ".".join(arg) if isinstance(arg, list) else arg
            return values.get(name, f"<{name}>")
        if key == "Fn::If":
            name, yes, no = arg
            return walk(yes if walk(conditions[name]) else no)
        if key == "Fn::Equals":
            left, right = walk(arg)
            return left == right
        if key == "Fn::Not":
            return not walk(arg[0])
        if key == "Fn::And":
            return all(walk(a) for a in arg)
        if key == "Fn::Select":
            return walk(arg[1])[int(arg[0])]
        if key == "Fn::Split":
            return walk(arg[1]).split(arg[0])
        if key == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], walk(arg[1]))
            known = {**values, **names}
            return re.sub(r"\$\{([\w:.]+)\}", lambda m: str(known.get(m[1], f"<{m[1]}>")), text)
        return {key: walk(arg)}

    return walk(node)


def pseudo_parameters() -> dict[str, str]:
    return {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}


# How a resource's Ref and Arn read, from its name property (the resources policies point at).
_NAMED = {
    "AWS::S3::Bucket": ("BucketName", "{name}", "arn:aws:s3:::{name}"),
    "AWS::IAM::Role": ("RoleName", "{name}", "arn:aws:iam::{account}:role/{name}"),
    "AWS::Batch::JobQueue": (
        "JobQueueName",
        "arn:aws:batch:{region}:{account}:job-queue/{name}",
        "arn:aws:batch:{region}:{account}:job-queue/{name}",
    ),
    "AWS::DynamoDB::Table": (
        "TableName",
        "{name}",
        "arn:aws:dynamodb:{region}:{account}:table/{name}",
    ),
    "AWS::ECR::Repository": (
        "RepositoryName",
        "{name}",
        "arn:aws:ecr:{region}:{account}:repository/{name}",
    ),
}


def stack_values(data: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, str]:
    """Every Ref and Fn::GetAtt the policies use, as the stack deployed with `parameters` (the
    others at their defaults) has them: names from the name properties, ARNs in AWS's formats."""
    defaults = {name: str(spec.get("Default", "")) for name, spec in data["Parameters"].items()}
    values: dict[str, str] = {**defaults, **parameters, **pseudo_parameters()}
    values["GitHubOidcProvider"] = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_HOST}"
    for logical, resource in data["Resources"].items():
        if resource["Type"] not in _NAMED:
            continue
        prop, ref, arn = _NAMED[resource["Type"]]
        name = resolve(resource["Properties"][prop], values, data["Conditions"])
        fields = {"name": name, "region": REGION, "account": ACCOUNT}
        values[logical] = ref.format(**fields)
        values[f"{logical}.Arn"] = arn.format(**fields)
    return values


def role_statements(
    data: Mapping[str, Any], role: str, parameters: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The statements of `role`'s inline policies, resolved for a stack with `parameters`."""
    resolved = resolve(data["Resources"][role], stack_values(data, parameters), data["Conditions"])
    return [
        statement
        for policy in resolved["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


# --- AWS calls as IAM requests ---------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes for a call: an action on a resource, with context keys."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


# S3 operations whose IAM action is not s3:<operation> (AWS's "Actions, resources, and condition
# keys for Amazon S3"). Each maps to (action, on the bucket rather than the object).
_S3 = {
    "ListObjectsV2": ("s3:ListBucket", True),
    "ListObjects": ("s3:ListBucket", True),
    "HeadBucket": ("s3:ListBucket", True),
    "GetBucketLocation": ("s3:GetBucketLocation", True),
    "GetObject": ("s3:GetObject", False),
    "HeadObject": ("s3:GetObject", False),
    "PutObject": ("s3:PutObject", False),
    "CreateMultipartUpload": ("s3:PutObject", False),
    "UploadPart": ("s3:PutObject", False),
    "CompleteMultipartUpload": ("s3:PutObject", False),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", False),
    "ListParts": ("s3:ListMultipartUploadParts", False),
    "DeleteObject": ("s3:DeleteObject", False),
}
# SageMaker operations and the resource types they are authorised on; CreateModel also passes
# its execution role, CreateEndpoint and UpdateEndpoint also read the endpoint config.
_SAGEMAKER = {
    "ModelName": "model",
    "EndpointConfigName": "endpoint-config",
    "EndpointName": "endpoint",
}
# Calls that need no permission.
FREE = {"sts:GetCallerIdentity"}


def requests(call: Mapping[str, Any]) -> list[Request]:
    """The IAM requests of one logged call (tests/aws_calls.py); unknown S3 operations raise, so
    that a new call gets its real IAM action rather than a guess."""
    service, operation, params = call["service"], call["operation"], call["params"]
    region = call.get("region") or REGION
    if service == "s3":
        if operation == "CopyObject" or operation == "UploadPartCopy":
            source = params["CopySource"].lstrip("/").split("?")[0]
            return [
                Request("s3:GetObject", f"arn:aws:s3:::{source}"),
                Request("s3:PutObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"),
            ]
        if operation not in _S3:
            raise KeyError(f"s3:{operation} has no IAM mapping yet: add it to tests/iam.py _S3")
        action, on_bucket = _S3[operation]
        path = params["Bucket"] if on_bucket else f"{params['Bucket']}/{params['Key']}"
        return [Request(action, f"arn:aws:s3:::{path}")]
    if service == "sagemaker":
        found = [
            Request(
                f"sagemaker:{operation}",
                f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{params[name].lower()}",
            )
            for name, kind in _SAGEMAKER.items()
            if name in params
        ]
        if "ExecutionRoleArn" in params:
            passed = {"iam:PassedToService": "sagemaker.amazonaws.com"}
            found.append(Request("iam:PassRole", params["ExecutionRoleArn"], passed))
        return found or [Request(f"sagemaker:{operation}", "*")]
    if service == "batch":
        return _batch(operation, params, region)
    if service == "cloudformation" and "StackName" in params:
        stack = params["StackName"]
        arn = (
            stack
            if stack.startswith("arn:")
            else f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{stack}/*"
        )
        return [Request(f"cloudformation:{operation}", arn)]
    action = f"{service}:{operation}"
    return [] if action in FREE else [Request(action, "*")]


def _batch(operation: str, params: Mapping[str, str], region: str) -> list[Request]:
    """Batch's resource-level actions: job definitions (by name, name:revision or ARN), queues
    (by name or ARN), jobs; registering a definition passes the roles it names."""
    arn = f"arn:aws:batch:{region}:{ACCOUNT}"
    found = []
    if operation == "RegisterJobDefinition":
        found.append(
            Request(
                "batch:RegisterJobDefinition", f"{arn}:job-definition/{params['jobDefinitionName']}"
            )
        )
        found += [
            Request("iam:PassRole", params[k])
            for k in ("jobRoleArn", "executionRoleArn")
            if k in params
        ]
    elif operation == "SubmitJob":
        for kind, name in (("job-definition", "jobDefinition"), ("job-queue", "jobQueue")):
            value = params[name]
            found.append(
                Request(
                    "batch:SubmitJob",
                    value if value.startswith("arn:") else f"{arn}:{kind}/{value}",
                )
            )
    elif operation == "TerminateJob":
        found.append(Request("batch:TerminateJob", f"{arn}:job/{params['jobId']}"))
    return found or [Request(f"batch:{operation}", "*")]


def read_calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the decision ----------------------------------------------------------------------------


@cache
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (also `/` and `:`), `?` any one character."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def _matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    listed = patterns if isinstance(patterns, list) else [patterns]
    return any(_pattern(p, ignore_case).fullmatch(value) for p in listed)


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        action_ok = _matches(statement["Action"], request.action, ignore_case=True)
    else:
        action_ok = not _matches(statement["NotAction"], request.action, ignore_case=True)
    if "Resource" in statement:
        resource_ok = _matches(statement["Resource"], request.resource)
    else:
        resource_ok = not _matches(statement["NotResource"], request.resource)
    return action_ok and resource_ok and _conditions_hold(statement.get("Condition", {}), request)


def _conditions_hold(condition: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    """StringEquals and StringLike on the request's context keys (the only operators identity
    policies here use); a key the request does not carry fails the condition, as in IAM."""
    for operator, tests in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            raise ValueError(f"condition operator {operator} is not evaluated by tests/iam.py")
        for key, expected in tests.items():
            actual = request.context.get(key)
            if actual is None:
                return False
            listed = expected if isinstance(expected, list) else [expected]
            if operator == "StringEquals" and actual not in listed:
                return False
            if operator == "StringLike" and not _matches(listed, actual):
                return False
    return True


def decide(statements: Iterable[Mapping[str, Any]], request: Request) -> str:
    """'allow', 'deny' (an explicit Deny applies) or 'implicit' (no Allow applies)."""
    applying = [s for s in statements if _applies(s, request)]
    if any(s["Effect"] == "Deny" for s in applying):
        return "deny"
    return "allow" if applying else "implicit"


def denied(
    calls: Iterable[Mapping[str, Any]], role: str, statements: list[dict[str, Any]]
) -> list[str]:
    """One line per request of `calls` that `role`'s statements do not allow: action, resource."""
    problems = []
    for call in calls:
        for request in requests(call):
            decision = decide(statements, request)
            if decision != "allow":
                reason = "explicitly denied" if decision == "deny" else "not allowed"
                problems.append(
                    f"{role} {reason}: {request.action} on {request.resource} (the code's "
                    f"{call['service']}.{call['operation']}); allow it in infra/template.yaml"
                )
    return sorted(set(problems))
