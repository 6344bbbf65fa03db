"""A botocore client plugin that logs every AWS API call of a process, for tests/iam.py.

With AWS_CALL_LOG=<file>, BOTOCORE_EXPERIMENTAL__PLUGINS=aws_calls=aws_calls and this folder on
PYTHONPATH, each botocore client created afterwards, in this process or a child that inherits the
environment (Metaflow's steps and S3 workers), appends one JSON line per call: service, operation,
region and the parameters that name resources. botocore marks its plugin hook experimental and
skips a plugin that fails to load without a word, so each test asserts that calls were logged.
"""

from __future__ import annotations

import json
import os
from typing import Any

# The parameters that name what a call touches (the resource of its IAM action).
RESOURCE_PARAMS = {
    "Bucket",
    "Key",
    "CopySource",
    "ModelName",
    "EndpointName",
    "EndpointConfigName",
    "ExecutionRoleArn",
    "StackName",
    "ChangeSetName",
    "jobQueue",
    "jobDefinition",
    "jobDefinitionName",
    "jobId",
    "jobRoleArn",
    "executionRoleArn",
}


def initialize_client_plugin(client: Any) -> None:
    """botocore calls this for every new client while the plugin is named in the environment."""
    meta = client.meta

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        path = os.environ.get("AWS_CALL_LOG")
        if not path:
            return
        # A Batch job definition names its roles inside containerProperties.
        flat = {**params, **(params.get("containerProperties") or {})}
        named = {k: v for k, v in flat.items() if k in RESOURCE_PARAMS and isinstance(v, str)}
        line = {
            "service": meta.service_model.signing_name,
            "operation": model.name,
            "region": meta.region_name,
            "params": named,
        }
        with open(path, "a") as log:  # one short append per call: safe across processes
            log.write(json.dumps(line) + "\n")

    meta.events.register("before-parameter-build", record)
