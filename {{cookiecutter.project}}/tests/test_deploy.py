"""Local deployment end to end: unpack, detached server, health wait, smoke request, stop."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
from test_serving import build_tiny_model, free_port

from {{ cookiecutter.project }}.deploy import (
    DeployError,
    deploy_local,
    smoke_request,
    stop_local,
    unpack_model,
)


@pytest.fixture(scope="session")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory)[1]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


DEPLOY_IN_CHILD = """
import sys
from pathlib import Path
from {{ cookiecutter.project }}.deploy import deploy_local
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
    with pytest.raises(DeployError, match="cannot unpack"):
        deploy_local(tmp_path / "model.tar.gz", tmp_path / "endpoint", "127.0.0.1", free_port())


def test_archive_members_cannot_escape_the_model_dir(tmp_path: Path) -> None:
    evil = make_tar(tmp_path / "model.tar.gz", {"../../escaped.txt": b"x"})
    with pytest.raises(DeployError, match="cannot unpack"):
        unpack_model(evil, tmp_path / "deploy" / "model")
    assert not (tmp_path / "escaped.txt").exists()


def test_unpack_replaces_the_previous_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    unpack_model(make_tar(tmp_path / "a.tar.gz", {"old.txt": b"1"}), model_dir)
    unpack_model(make_tar(tmp_path / "b.tar.gz", {"new.txt": b"2", "sub/x.txt": b"3"}), model_dir)
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "new.txt",
        "sub",
        "sub/x.txt",
    ]


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


def _decision(passed: bool):
    from {{ cookiecutter.project }}.gate import GateDecision

    return GateDecision(candidate="lstm", passed=passed, checks=())


@pytest.mark.parametrize(
    "passed,enabled,reason",
    [(False, True, "failed the gate"), (False, False, "failed the gate"), (True, False, "off")],
)
def test_a_model_that_may_not_deploy_is_never_started(
    tmp_path: Path, model_tar: Path, passed: bool, enabled: bool, reason: str
) -> None:
    from {{ cookiecutter.project }}.deploy import deploy_if_passed

    outcome = deploy_if_passed(
        _decision(passed), model_tar.read_bytes(), [["sku"]], enabled, tmp_path / "endpoint"
    )
    assert outcome["deployed"] is False and reason in outcome["reason"]
    assert not (tmp_path / "endpoint").exists()


def test_a_passed_model_is_deployed_and_smoke_tested(tmp_path: Path, model_tar: Path) -> None:
    from {{ cookiecutter.project }}.deploy import deploy_if_passed
    from {{ cookiecutter.project }}.settings import get_settings

    settings = get_settings()
    deploy_dir = tmp_path / "endpoint"
    port = free_port()
    original = settings.serving_port
    settings.serving_port = port
    try:
        outcome = deploy_if_passed(
            _decision(True), model_tar.read_bytes(), [["sku"]], True, deploy_dir
        )
        assert outcome["deployed"] and outcome["url"].endswith(f":{port}")
        assert len(outcome["smoke_answer"]["recommendations"]) == 1
    finally:
        settings.serving_port = original
        stop_local(deploy_dir)
