"""SageMaker deployment against moto's server (S3, SageMaker, SageMaker runtime).

moto creates endpoints InService at once and answers `invoke_endpoint` with bodies queued through
its own API (`/moto-api/static/sagemaker/endpoint-results`); it replays the answer it first gave
to an identical request body, whatever the endpoint, so each test sends its own sessions. It has
no `update_endpoint`, so the
blue/green update of an existing endpoint and the rollback to its previous config are checked with
botocore's Stubber on the SageMaker client (S3 and the runtime stay on moto where they can).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from conftest import Emulator
from helpers import make_release, metrics

from {{ cookiecutter.project }} import deploy
from {{ cookiecutter.project }}.deploy import sagemaker
from {{ cookiecutter.project }}.release import sha256_hex
from {{ cookiecutter.project }}.release.bundle import DeployRefused, write_release
from {{ cookiecutter.project }}.release.champion import (
    champion_status,
    load_champion_archive,
    read_champion,
    write_champion,
)
from {{ cookiecutter.project }}.release.gate import ChampionStatus
from {{ cookiecutter.project }}.settings import Settings

pytestmark = pytest.mark.cloud

ARCHIVE = b"model.tar.gz bytes"
GOOD_ANSWER = {"recommendations": [[{"sku": "sku-3", "score": 0.9}]]}


def settings_for(tmp_path: Path, bucket: str | None, endpoint: str, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        deploy_target="sagemaker",
        model_bucket=bucket,
        sagemaker_endpoint=endpoint,
        sagemaker_role_arn="arn:aws:iam::123456789012:role/sagemaker-execution",
        sagemaker_image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/recs:1",
        **extra,
    )


def queue_answers(moto: Emulator, *bodies: str) -> None:
    """What moto's invoke_endpoint answers next, in order (moto's test API)."""
    results = [{"Body": body, "ContentType": "application/json"} for body in bodies]
    request = urllib.request.Request(
        f"{moto.url}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


@pytest.fixture
def bucket(aws_env: Emulator) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def endpoint() -> str:
    return f"recs-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sessions(endpoint: str) -> list[list[str]]:
    """Smoke sessions unique to the test, so moto answers it with what the test queued."""
    return [[f"{endpoint}-sku-1", "sku-2"]]


def test_first_deploy_creates_the_endpoint(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    queue_answers(aws_env, json.dumps(GOOD_ANSWER))
    lines: list[str] = []
    record = sagemaker.deploy(
        ARCHIVE, settings_for(tmp_path, bucket, endpoint), sessions, k=5, log=lines.append
    )

    assert record["previous_config"] is None
    assert record["endpoint_name"] == endpoint
    assert record["smoke_answer"] == GOOD_ANSWER
    assert record["smoke_payload"] == {"sessions": sessions, "k": 5}
    key = f"models/{record['model_name']}/model.tar.gz"
    assert record["model_uri"] == f"s3://{bucket}/{key}"
    assert boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == ARCHIVE
    described = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == record["endpoint_config_name"]
    model = boto3.client("sagemaker").describe_model(ModelName=record["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == record["model_uri"]
    assert any("InService" in line for line in lines), lines


def test_a_new_endpoint_that_fails_its_smoke_test_is_deleted(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    queue_answers(aws_env, "<html>not the contract</html>")
    with pytest.raises(sagemaker.SmokeTestFailed, match="not the serving contract.*deleted"):
        sagemaker.deploy(ARCHIVE, settings_for(tmp_path, bucket, endpoint), sessions)
    assert sagemaker.current_config(boto3.client("sagemaker"), endpoint) is None


@pytest.mark.parametrize("missing", ["model_bucket", "sagemaker_role_arn", "sagemaker_image_uri"])
def test_missing_settings_are_named_before_any_aws_call(
    tmp_path: Path, missing: str, sessions: list[list[str]]
) -> None:
    settings = settings_for(tmp_path, "bucket", "recs").model_copy(update={missing: None})
    with pytest.raises(sagemaker.SageMakerError, match=f"needs {missing.upper()}:"):
        sagemaker.deploy(ARCHIVE, settings, sessions, clients=sagemaker.Clients(None, None, None))


def test_missing_credentials_give_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(sagemaker.SageMakerError, match="No AWS credentials: set AWS_ACCESS_KEY_ID"):
        sagemaker.Clients.from_session()


def test_a_missing_bucket_is_a_clear_error(
    aws_env: Emulator, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    settings = settings_for(tmp_path, f"absent-{uuid.uuid4().hex[:8]}", endpoint)
    with pytest.raises(sagemaker.SageMakerError, match="NoSuchBucket.*MODEL_BUCKET exist"):
        sagemaker.deploy(ARCHIVE, settings, sessions)


# --- an existing endpoint: update and rollback (Stubber: moto has no update_endpoint) ----------


def _described(endpoint: str, config: str, status: str, reason: str | None = None) -> dict:
    now = datetime.now(UTC)
    answer = {
        "EndpointName": endpoint,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{endpoint}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": now,
        "LastModifiedTime": now,
    }
    return answer | ({"FailureReason": reason} if reason else {})


def _stub_update(stub: Stubber, endpoint: str, old: str, new: str) -> None:
    """describe (exists on `old`), create model + config, update to `new`, Updating, InService."""
    stub.add_response("describe_endpoint", _described(endpoint, old, "InService"))
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:::model/{new}"})
    stub.add_response(
        "create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:::ec/{new}"}
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": f"arn:aws:sagemaker:::endpoint/{endpoint}"},
        {"EndpointName": endpoint, "EndpointConfigName": new},
    )
    stub.add_response("describe_endpoint", _described(endpoint, old, "Updating"))
    stub.add_response("describe_endpoint", _described(endpoint, new, "InService"))


def _clients(stubbed_sagemaker: Any, runtime: Any = None) -> sagemaker.Clients:
    return sagemaker.Clients(
        s3=boto3.client("s3"),
        sagemaker=stubbed_sagemaker,
        runtime=runtime or boto3.client("sagemaker-runtime"),
    )


def test_an_existing_endpoint_is_updated_blue_green(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    client = boto3.client("sagemaker")
    queue_answers(aws_env, json.dumps(GOOD_ANSWER))
    with Stubber(client) as stub:
        _stub_update(stub, endpoint, "old-config", "new-config")
        record = sagemaker.deploy(
            ARCHIVE,
            settings_for(tmp_path, bucket, endpoint),
            sessions,
            clients=_clients(client),
            name="new-config",
            poll_s=0.01,
            log=lambda line: None,
        )
        stub.assert_no_pending_responses()
    assert (record["previous_config"], record["endpoint_config_name"]) == (
        "old-config",
        "new-config",
    )
    assert record["smoke_answer"] == GOOD_ANSWER


def test_a_failed_smoke_test_rolls_back_to_the_previous_config(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    client, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    with Stubber(client) as stub, Stubber(runtime) as runtime_stub:
        _stub_update(stub, endpoint, "old-config", "new-config")
        runtime_stub.add_client_error(
            "invoke_endpoint", "ModelError", "the model crashed", http_status_code=424
        )
        stub.add_response(  # the rollback: back to the config it had
            "update_endpoint",
            {"EndpointArn": f"arn:aws:sagemaker:::endpoint/{endpoint}"},
            {"EndpointName": endpoint, "EndpointConfigName": "old-config"},
        )
        stub.add_response("describe_endpoint", _described(endpoint, "old-config", "InService"))
        with pytest.raises(sagemaker.SmokeTestFailed, match="ModelError.*back on old-config"):
            sagemaker.deploy(
                ARCHIVE,
                settings_for(tmp_path, bucket, endpoint),
                sessions,
                clients=_clients(client, runtime),
                name="new-config",
                poll_s=0.01,
                log=lambda line: None,
            )
        stub.assert_no_pending_responses()
        runtime_stub.assert_no_pending_responses()


def test_an_update_sagemaker_gave_up_on_is_an_error() -> None:
    """SageMaker keeps the old config InService and sets FailureReason when an update fails."""
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response("describe_endpoint", _described("e", "old", "InService", "no /ping"))
        with pytest.raises(sagemaker.SageMakerError, match="did not go InService on new: no /ping"):
            sagemaker.wait_in_service(client, "e", "new", 60, 0.01, log=lambda line: None)


def test_waiting_is_bounded_by_the_timeout() -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_response("describe_endpoint", _described("e", "new", "Creating"))
        with pytest.raises(sagemaker.SageMakerError, match="still Creating.*SAGEMAKER_TIMEOUT_S"):
            sagemaker.wait_in_service(client, "e", "new", 0.5, 0.3, log=lambda line: None)


def test_deployment_names_are_unique_and_valid() -> None:
    names = {sagemaker.deployment_name("{{ cookiecutter.project | replace('_', '-') }}" * 10) for _ in range(20)}
    assert len(names) == 20
    assert all(len(n) <= 63 and n[0].isalnum() and "--" not in n for n in names)


# --- a release deployed to SageMaker becomes the champion (its S3 store: test_champion_s3) ---


def test_a_release_goes_to_sagemaker_and_becomes_the_champion(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    release = replace(make_release(ARCHIVE, passed=True), smoke_sessions=sessions, run_id="42")
    write_release(release, tmp_path / "release")
    settings = settings_for(tmp_path, bucket, endpoint)
    assert read_champion(settings) is None
    queue_answers(aws_env, json.dumps(GOOD_ANSWER))

    outcome = deploy.deploy_release(tmp_path / "release", settings)

    assert outcome["deployed"] and outcome["endpoint"] == endpoint
    champion = read_champion(settings)
    assert champion == outcome["champion"]
    assert champion["run_id"] == "42" and champion["target"] == "sagemaker"
    assert champion["metrics"] == metrics(0.25, 0.55) and champion["sha256"] == sha256_hex(ARCHIVE)
    assert champion["endpoint_config"] == outcome["endpoint_config_name"]
    assert champion["model_uri"] == outcome["model_uri"]
    datetime.fromisoformat(champion["deployed_at"])
    assert load_champion_archive(settings) == ARCHIVE
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"models/champion/champion.json", "models/champion/model.tar.gz"} <= keys

    queue_answers(aws_env, json.dumps(GOOD_ANSWER))  # `make smoke`: one more request
    assert deploy.smoke_endpoint(settings, [[endpoint, "again"]]) == (endpoint, GOOD_ANSWER)


def test_a_new_endpoint_that_never_comes_up_is_deleted(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    client = boto3.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_endpoint", "ValidationException", f"Could not find endpoint '{endpoint}'."
        )
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:::model/new"})
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:::x"})
        stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:::endpoint/e"})
        stub.add_response(
            "describe_endpoint", _described(endpoint, "new", "Failed", "ping health check failed")
        )
        stub.add_response("delete_endpoint", {}, {"EndpointName": endpoint})
        with pytest.raises(sagemaker.SageMakerError, match="health check failed.*was deleted"):
            sagemaker.deploy(
                ARCHIVE,
                settings_for(tmp_path, bucket, endpoint),
                sessions,
                clients=_clients(client),
                name="new",
                log=lambda line: None,
            )
        stub.assert_no_pending_responses()


# --- the champion record held against the live endpoint (DescribeEndpoint on moto) -------------


def go_live(endpoint: str, config: str) -> None:
    """An endpoint serving `config`, made outside the project (as by hand in the console)."""
    client = boto3.client("sagemaker")
    settings = settings_for(Path("."), None, endpoint)
    client.create_model(
        ModelName=config,
        PrimaryContainer={"Image": settings.sagemaker_image_uri},
        ExecutionRoleArn=settings.sagemaker_role_arn,
    )
    variant = {"VariantName": "AllTraffic", "ModelName": config, "InitialInstanceCount": 1}
    variant |= {"InstanceType": "ml.m5.large"}
    client.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[variant])
    client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)


def checked_champion(settings: Settings) -> ChampionStatus:
    """What `make deploy` and the flow's gate step compare with."""
    return deploy.check_champion(champion_status(settings)[0], settings)


def record(settings: Settings, endpoint: str, config: str) -> dict[str, Any]:
    fields = {"run_id": "7", "target": "sagemaker", "endpoint": endpoint, "endpoint_config": config}
    return write_champion(settings, fields, ARCHIVE)


def test_no_endpoint_and_no_record_is_a_first_deployment(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    assert checked_champion(settings_for(tmp_path, bucket, endpoint)).state == "none"


def test_a_record_that_names_the_live_config_is_the_champion(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, bucket, endpoint)
    go_live(endpoint, f"{endpoint}-a")
    written = record(settings, endpoint, f"{endpoint}-a")
    assert checked_champion(settings) == ChampionStatus("deployed", "", written)


def test_a_live_endpoint_without_a_champion_record_fails_closed(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, bucket, endpoint)
    go_live(endpoint, f"{endpoint}-by-hand")
    champion = checked_champion(settings)
    assert champion.state == "unavailable"
    assert f"endpoint {endpoint} is live (config {endpoint}-by-hand)" in champion.reason
    assert f"no champion record at s3://{bucket}/models/champion/" in champion.reason
    assert "MODEL_PREFIX" in champion.reason and "first deployment" in champion.reason


def test_a_record_of_another_config_than_the_live_one_fails_closed(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, bucket, endpoint)
    go_live(endpoint, f"{endpoint}-by-hand")
    record(settings, endpoint, f"{endpoint}-recorded")
    champion = checked_champion(settings)
    assert champion.state == "unavailable" and champion.record["run_id"] == "7"
    assert f"serves config {endpoint}-by-hand" in champion.reason
    assert f"says {endpoint}-recorded" in champion.reason
    assert f"--endpoint-config-name {endpoint}-recorded" in champion.reason


def test_a_record_whose_endpoint_is_gone_fails_closed(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, bucket, endpoint)
    record(settings, endpoint, f"{endpoint}-a")
    champion = checked_champion(settings)
    assert champion.state == "unavailable"
    assert f"says endpoint {endpoint} serves config {endpoint}-a" in champion.reason
    assert "no such endpoint" in champion.reason and "AWS_DEFAULT_REGION" in champion.reason


def test_a_record_of_another_endpoint_fails_closed(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, bucket, endpoint)
    go_live(endpoint, f"{endpoint}-a")
    record(settings, "recs-renamed", f"{endpoint}-a")
    champion = checked_champion(settings)
    assert champion.state == "unavailable"
    assert f"for endpoint recs-renamed, not SAGEMAKER_ENDPOINT={endpoint}" in champion.reason


def test_an_endpoint_that_cannot_be_described_fails_closed(
    aws_env: Emulator, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    first = ChampionStatus("none", "no champion deployed yet")
    champion = deploy.check_champion(first, settings_for(tmp_path, "bucket", endpoint))
    assert champion.state == "unavailable"
    assert f"cannot tell which config endpoint {endpoint} serves" in champion.reason


def test_make_deploy_refuses_while_the_endpoint_and_its_record_disagree(
    aws_env: Emulator, bucket: str, endpoint: str, tmp_path: Path, sessions: list[list[str]]
) -> None:
    """The release passed its gate as a first deployment; since then, an endpoint went live."""
    release = replace(make_release(ARCHIVE, passed=True), smoke_sessions=sessions)
    write_release(release, tmp_path / "release")
    go_live(endpoint, f"{endpoint}-by-hand")
    settings = settings_for(tmp_path, bucket, endpoint)
    with pytest.raises(DeployRefused, match=f"failed its gate(.|\n)*{endpoint} is live"):
        deploy.deploy_release(tmp_path / "release", settings)
    assert read_champion(settings) is None
    described = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    assert described["EndpointConfigName"] == f"{endpoint}-by-hand"
