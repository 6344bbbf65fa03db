"""Deployment: the local endpoint end to end (unpack, detached server, health wait, smoke request,
stop), deploying only what passed the gate, the champion record it leaves, and the deploy and smoke
commands."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from helpers import (
    build_tiny_model,
    flip_to_passed,
    free_port,
    make_release,
    make_tar,
    metrics,
)

from {{ cookiecutter.project }} import cli
from {{ cookiecutter.project }}.deploy import deploy_if_passed
from {{ cookiecutter.project }}.deploy.local import (
    DeployError,
    deploy_local,
    smoke_request,
    stop_local,
)
from {{ cookiecutter.project }}.modeling.archive import ArchiveError
from {{ cookiecutter.project }}.release.bundle import write_release
from {{ cookiecutter.project }}.release.champion import load_champion_archive, read_champion
from {{ cookiecutter.project }}.release.gate import GateDecision
from {{ cookiecutter.project }}.settings import BAKE, Settings, SettingsError, get_settings


@pytest.fixture(scope="session")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory)[1]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


DEPLOY_IN_CHILD = """
import sys
from pathlib import Path
from {{ cookiecutter.project }}.deploy.local import deploy_local
print(deploy_local(Path(sys.argv[1]), Path(sys.argv[2]), "127.0.0.1", int(sys.argv[3])).pid)
"""


def test_deploy_outlives_its_caller_is_replaced_and_stops(model_tar: Path, tmp_path: Path) -> None:
    deploy_dir, port = tmp_path / "endpoint", free_port()
    url = f"http://127.0.0.1:{port}"
    first = subprocess.run(
        [sys.executable, "-c", DEPLOY_IN_CHILD, str(model_tar), str(deploy_dir), str(port)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    first_pid = int(first.stdout.split()[-1])
    # The wait for the model is not silent: it says when it starts and how long it took.
    loading = f"deploy: the endpoint at {url} is loading the model"
    assert f"{loading} ...\n" in first.stdout
    assert re.search(rf"{re.escape(loading)}: \d+\.\d s\n", first.stdout)
    assert re.search(r"deploy: smoke request of 1 session\(s\) took \d+ ms", first.stdout)
    try:
        # The process that deployed has exited; the endpoint still answers.
        answer = smoke_request(url, [["sku-1", "sku-2"]], k=3)
        assert [len(recs) for recs in answer["recommendations"]] == [3]

        deployment = deploy_local(model_tar, deploy_dir, "127.0.0.1", port, 300, [["sku-4"]], k=2)
        assert not running(first_pid), "the previous endpoint was not stopped"
        assert (deployment.url, deployment.pid != first_pid) == (url, True)
        assert deployment.smoke_payload == {"sessions": [["sku-4"]], "k": 2}
        assert len(deployment.smoke_answer["recommendations"][0]) == 2
        assert deployment.smoke_latency_ms > 0
        assert (deployment.model_dir / "saved_model.pb").is_file()
        assert "listening on" in deployment.log_path.read_text()

        assert stop_local(deploy_dir) is True
        assert not running(deployment.pid)
        with pytest.raises(DeployError, match="cannot reach"):
            smoke_request(url, [["sku-1"]])
        assert stop_local(deploy_dir) is False
    finally:
        stop_local(deploy_dir)
        if running(first_pid):
            psutil.Process(first_pid).kill()


def test_a_model_that_cannot_load_fails_fast_and_leaves_nothing_running(tmp_path: Path) -> None:
    broken = make_tar(tmp_path / "model.tar.gz", {"saved_model.pb": b"not a SavedModel"})
    deploy_dir = tmp_path / "endpoint"
    with pytest.raises(DeployError, match="cannot load the model"):
        deploy_local(broken, deploy_dir, "127.0.0.1", free_port(), timeout_s=300)
    assert not (deploy_dir / "endpoint.json").exists()


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="not found: train and package"):
        deploy_local(tmp_path / "model.tar.gz", tmp_path / "endpoint", "127.0.0.1", free_port())


def test_archive_that_is_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "model.tar.gz").write_bytes(b"plain text")
    with pytest.raises(ArchiveError, match="cannot unpack"):
        deploy_local(tmp_path / "model.tar.gz", tmp_path / "endpoint", "127.0.0.1", free_port())


def test_a_port_in_use_names_the_setting(model_tar: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeployError, match=f"port {port} .*SERVING_PORT"):
            deploy_local(model_tar, tmp_path / "endpoint", "127.0.0.1", port)


def test_stop_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "endpoint.json").write_text(json.dumps({"pid": other.pid, "url": "x"}))
        assert stop_local(tmp_path) is False
        assert other.poll() is None
        assert not (tmp_path / "endpoint.json").exists()  # the stale record is cleared
    finally:
        other.kill()
        other.wait()


def _decision(passed: bool) -> GateDecision:
    return GateDecision(candidate="lstm", passed=passed, checks=())


@pytest.mark.parametrize(
    "passed,enabled,reason",
    [(False, True, "failed the gate"), (False, False, "failed the gate"), (True, False, "off")],
)
def test_a_model_that_may_not_deploy_is_never_started(
    tmp_path: Path, model_tar: Path, passed: bool, enabled: bool, reason: str
) -> None:
    outcome = deploy_if_passed(
        _decision(passed), model_tar.read_bytes(), [["sku"]], enabled, tmp_path / "endpoint"
    )
    assert outcome["deployed"] is False and reason in outcome["reason"]
    assert not (tmp_path / "endpoint").exists()


def local_settings(tmp_path: Path) -> Settings:
    """Local deployment into tmp_path on a free port, whatever .env says."""
    return Settings(_env_file=None, data_dir=tmp_path / "data", serving_port=free_port())


def test_a_passed_model_is_deployed_smoke_tested_and_becomes_the_champion(
    tmp_path: Path, model_tar: Path
) -> None:
    settings = local_settings(tmp_path)
    assert read_champion(settings) is None and load_champion_archive(settings) is None
    deploy_dir = tmp_path / "endpoint"
    evaluation = {"models": {"lstm": {"metrics": {"mrr@20": 0.25}}, "markov": {"metrics": {}}}}
    try:
        outcome = deploy_if_passed(
            _decision(True),
            model_tar.read_bytes(),
            [["sku"]],
            True,
            deploy_dir,
            evaluation=evaluation,
            run_id="7",
            flow="RecsFlow",
            settings=settings,
        )
        assert outcome["deployed"] and outcome["url"].endswith(f":{settings.serving_port}")
        assert outcome["endpoint"] == outcome["url"]
        assert len(outcome["smoke_answer"]["recommendations"]) == 1
    finally:
        stop_local(deploy_dir)
    champion = read_champion(settings)
    assert champion == outcome["champion"]
    assert (champion["run_id"], champion["flow"], champion["target"]) == ("7", "RecsFlow", "local")
    assert champion["metrics"] == {"mrr@20": 0.25}
    assert champion["model_uri"] == str(settings.data_dir.resolve() / "deployments/model.tar.gz")
    datetime.fromisoformat(champion["deployed_at"])
    assert load_champion_archive(settings) == model_tar.read_bytes()


# --- releases through the deploy / smoke commands (the release files: test_bundle) -------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI reads its settings from the environment: a tmp DATA_DIR and a free port."""
    monkeypatch.chdir(tmp_path)  # no .env of the project
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SERVING_PORT", str(free_port()))
    monkeypatch.setenv("DEPLOY_TARGET", "local")
    get_settings.cache_clear()
    yield tmp_path / "data"
    stop_local(tmp_path / "data" / "deploy")
    get_settings.cache_clear()


def test_deploy_refuses_a_release_that_failed_its_gate(
    cli_env: Path, model_tar: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_release(make_release(model_tar.read_bytes(), passed=False), cli_env / "release")
    assert cli.main(["deploy", "--release", str(cli_env / "release")]) == 1
    err = capsys.readouterr().err
    assert "run 12 failed its gate" in err and "[FAIL] mrr@20" in err
    assert not (cli_env / "deploy").exists() and not (cli_env / "deployments").exists()


def test_deploy_refuses_a_failed_release_edited_into_a_pass(
    cli_env: Path, model_tar: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gate.json's `passed` and the failed checks' flags set to true, its manifest sealed again:
    `make deploy` decides again from the release's metrics and refuses it."""
    release_dir = cli_env / "release"
    write_release(make_release(model_tar.read_bytes(), passed=False), release_dir)
    flip_to_passed(release_dir)
    assert cli.main(["deploy", "--release", str(release_dir)]) == 1
    err = capsys.readouterr().err
    assert "run 12 failed its gate (decided again from its evaluation.json" in err
    assert "its gate.json differs in passed, check mrr@20" in err and "[FAIL] mrr@20" in err
    assert not (cli_env / "deploy").exists() and not (cli_env / "deployments").exists()


def test_deploy_refuses_an_edited_or_incomplete_release(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release_dir = cli_env / "release"
    write_release(make_release(b"archive", passed=False), release_dir)
    gate = json.loads((release_dir / "gate.json").read_text())
    (release_dir / "gate.json").write_text(json.dumps(gate | {"passed": True}))
    assert cli.main(["deploy", "--release", str(release_dir)]) == 1
    assert "sha256 of gate.json is not the one in manifest.json" in capsys.readouterr().err
    (release_dir / "smoke.json").unlink()
    assert cli.main(["deploy", "--release", str(release_dir)]) == 1
    assert "lacks smoke.json" in capsys.readouterr().err
    assert not (cli_env / "deploy").exists()


def test_deploy_refuses_a_release_gated_against_another_champion(
    cli_env: Path, model_tar: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A champion deployed since the gate ran (or a store that fails its checks) refuses it."""
    write_release(make_release(model_tar.read_bytes(), passed=True), cli_env / "release")
    (cli_env / "deployments").mkdir(parents=True)
    (cli_env / "deployments" / "model.tar.gz").write_bytes(b"an archive without its record")
    assert cli.main(["deploy", "--release", str(cli_env / "release")]) == 1
    err = capsys.readouterr().err
    assert "failed its gate" in err and "without its champion.json" in err
    assert not (cli_env / "deploy").exists()


def test_deploy_and_smoke_commands_serve_a_passed_release(
    cli_env: Path, model_tar: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_release(make_release(model_tar.read_bytes(), passed=True), cli_env / "release")
    assert cli.main(["deploy", "--release", str(cli_env / "release")]) == 0
    out = capsys.readouterr().out
    url = f"http://127.0.0.1:{os.environ['SERVING_PORT']}"
    assert f"Endpoint: {url}" in out
    champion = json.loads((cli_env / "deployments" / "champion.json").read_text())
    assert (champion["run_id"], champion["metrics"]) == ("12", metrics(0.25, 0.55))
    assert champion["sha256"] == hashlib.sha256(model_tar.read_bytes()).hexdigest()

    assert cli.main(["smoke", "--release", str(cli_env / "release")]) == 0
    out = capsys.readouterr().out  # the release's two smoke sessions get two lists
    assert f"{url} answered 2 recommendation list(s); the first starts: sku-" in out
    assert "unknown SKUs per session: [0, 0]" in out  # the model knows both sessions' SKUs


def test_smoke_without_an_endpoint_says_what_to_do(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["smoke"]) == 1
    assert "No local endpoint is running" in capsys.readouterr().err


def test_a_bake_without_sagemaker_refuses_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """deployment=none removes deploy/sagemaker.py: settings refuse DEPLOY_TARGET=sagemaker."""
    monkeypatch.setitem(BAKE, "deployment", "none")
    monkeypatch.setenv("DEPLOY_TARGET", "sagemaker")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="needs a project baked with deployment=sagemaker"):
            get_settings()
    finally:
        get_settings.cache_clear()
