"""The local endpoint: the same server and archive as on SageMaker, as a process on this machine.

`deploy_local` unpacks model.tar.gz as SageMaker does into /opt/ml/model, replaces the endpoint
it started before, starts the server as a detached process (it outlives the caller, so the demo
leaves a live endpoint), waits for /ping and sends one smoke request; `stop_local` stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from ..modeling.archive import unpack_model
from ..progress import say, timed
from ..release import ARCHIVE_FILE
from ..serving.server import command as server_command
from ..settings import Settings, get_settings

ENDPOINT_FILE = "endpoint.json"  # pid and url of the server we started
LOG_FILE = "server.log"
MODEL_SUBDIR = "model"
DEFAULT_SMOKE_SESSIONS: tuple[tuple[str, ...], ...] = (("smoke-test-sku",),)

# Never send requests for our own endpoint through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DeployError(ProjectError):
    """The local endpoint could not be deployed or reached; the message says what to do."""


@dataclass(frozen=True)
class LocalDeployment:
    """A running local endpoint and the result of its smoke request."""

    url: str
    pid: int
    model_dir: Path
    log_path: Path
    smoke_payload: dict[str, Any]
    smoke_answer: dict[str, Any]
    smoke_latency_ms: float


def smoke_request(
    url: str, sessions: Sequence[Sequence[str]], k: int = 20, timeout_s: float = 10.0
) -> dict[str, Any]:
    """POST `sessions` to `url`/invocations and return the decoded answer."""
    payload = json.dumps({"sessions": [list(s) for s in sessions], "k": k}).encode()
    request = urllib.request.Request(
        f"{url}/invocations",
        data=payload,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DeployError(f"{url}/invocations answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DeployError(
            f"cannot reach {url}/invocations ({exc}): is the endpoint running?"
        ) from None


def deploy_local(
    model_tar: Path,
    deploy_dir: Path,
    host: str | None = None,
    port: int | None = None,
    timeout_s: float = 120.0,
    smoke_sessions: Sequence[Sequence[str]] = DEFAULT_SMOKE_SESSIONS,
    k: int = 10,
) -> LocalDeployment:
    """Serve `model_tar` from `deploy_dir` on host:port (default: settings) until `stop_local`."""
    host = host or get_settings().serving_host
    port = get_settings().serving_port if port is None else port
    deploy_dir = Path(deploy_dir)
    deploy_dir.mkdir(parents=True, exist_ok=True)
    if not Path(model_tar).is_file():
        raise DeployError(f"model archive {model_tar} not found: train and package a model first")
    stop_local(deploy_dir)
    model_dir = unpack_model(Path(model_tar), deploy_dir / MODEL_SUBDIR)
    _check_port_free(host, port)
    log_path = deploy_dir / LOG_FILE
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    pid = _spawn_server(model_dir, host, port, log_path)
    (deploy_dir / ENDPOINT_FILE).write_text(json.dumps({"pid": pid, "url": url}))
    try:
        # Loading the model takes seconds (TensorFlow's import, then a warm-up request).
        with timed(f"deploy: the endpoint at {url} is loading the model"):
            _wait_until_healthy(url, pid, log_path, timeout_s)
        started = time.perf_counter()
        answer = smoke_request(url, smoke_sessions, k)
        latency_ms = (time.perf_counter() - started) * 1000
        say(f"deploy: smoke request of {len(smoke_sessions)} session(s) took {latency_ms:.0f} ms")
        if len(answer.get("recommendations", [])) != len(smoke_sessions):
            raise DeployError(f"smoke request got an answer of the wrong shape: {answer}")
    except DeployError:
        stop_local(deploy_dir)
        raise
    return LocalDeployment(
        url=url,
        pid=pid,
        model_dir=model_dir,
        log_path=log_path,
        smoke_payload={"sessions": [list(s) for s in smoke_sessions], "k": k},
        smoke_answer=answer,
        smoke_latency_ms=latency_ms,
    )


def deploy(
    model_archive: bytes,
    settings: Settings,
    smoke_sessions: Sequence[Sequence[str]],
    deploy_dir: Path | None = None,
) -> dict[str, Any]:
    """`deploy_local` of archive bytes into `deploy_dir` (default DATA_DIR/deploy), as plain data.

    The keys match what the flow artifact, the card and the CLI read of any target's deployment.
    """
    deploy_dir = deploy_dir or settings.data_dir / "deploy"
    deploy_dir.mkdir(parents=True, exist_ok=True)
    model_tar = deploy_dir / ARCHIVE_FILE
    model_tar.write_bytes(model_archive)
    local = deploy_local(
        model_tar,
        deploy_dir,
        settings.serving_host,
        settings.serving_port,
        smoke_sessions=smoke_sessions,
    )
    return {
        "reason": f"Deployed locally at {local.url} (stop it with `make stop`).",
        "endpoint": local.url,
        "url": local.url,
        "pid": local.pid,
        "log_path": str(local.log_path),
        "smoke_payload": local.smoke_payload,
        "smoke_answer": local.smoke_answer,
        "smoke_latency_ms": local.smoke_latency_ms,
    }


def smoke_local(
    deploy_dir: Path, sessions: Sequence[Sequence[str]], k: int = 10
) -> tuple[str, dict[str, Any]]:
    """One request to the endpoint `deploy_local` started in `deploy_dir`: (url, answer)."""
    endpoint_file = Path(deploy_dir) / ENDPOINT_FILE
    try:
        url = json.loads(endpoint_file.read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DeployError(
            f"No local endpoint is running (no {endpoint_file}): deploy one first "
            "(make run, or make release && make deploy)."
        ) from None
    return url, smoke_request(url, sessions, k)


def stop_local(deploy_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the endpoint `deploy_local` started in `deploy_dir`; False if none was running."""
    endpoint_file = Path(deploy_dir) / ENDPOINT_FILE
    try:
        pid = int(json.loads(endpoint_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    stopped = False
    # The pid may have been reused by an unrelated process since: only signal our server.
    if _alive(pid) and server_command.__module__ in _command_line(pid):
        os.kill(pid, signal.SIGTERM)  # the server drains in-flight requests, then exits
        if not _wait_for_exit(pid, timeout_s):
            os.kill(pid, signal.SIGKILL)
            _wait_for_exit(pid, 5.0)
        stopped = True
    endpoint_file.unlink(missing_ok=True)
    return stopped


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DeployError(
                f"port {port} on {host} is not available ({exc.strerror}): stop what uses it "
                "or set SERVING_PORT (serving_port) to a free port"
            ) from None


def _spawn_server(model_dir: Path, host: str, port: int, log_path: Path) -> int:
    """Start the server in its own session (Ctrl-C in the caller's terminal leaves it running)."""
    package_root = str(Path(__file__).resolve().parents[2])  # import the same code as the caller
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [*server_command(model_dir, host, port), "--log-requests"]
    with open(log_path, "wb") as log:
        # posix_spawn, not Popen: nothing here waits for this process; `_alive` reaps it.
        return os.posix_spawn(
            sys.executable,
            command,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
            ],
            setsid=True,
        )


def _wait_until_healthy(url: str, pid: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not _alive(pid):
            raise DeployError(
                f"the server exited before it was ready; its log ({log_path}):\n{_tail(log_path)}"
            )
        status, body = _ping(url)
        if status == 200:
            return
        if body.get("state") == "failed":
            raise DeployError(f"the server cannot load the model: {body.get('error')}")
        if time.monotonic() > deadline:
            raise DeployError(
                f"{url}/ping was not healthy within timeout_s={timeout_s} (last: {status} "
                f"{body.get('error', '')}); the server log ({log_path}):\n{_tail(log_path)}"
            )
        time.sleep(0.2)


def _ping(url: str) -> tuple[int | None, dict[str, Any]]:
    """Status and JSON body of GET /ping; (None, {}) while the port does not answer yet."""
    try:
        with _OPENER.open(f"{url}/ping", timeout=2.0) as response:
            return response.status, {}
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None, {}


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:  # our own child that exited: reap it
            return False
    except ChildProcessError:
        pass  # started by another process (e.g. an earlier flow step)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _command_line(pid: int) -> str:
    """The process's command line ('' if unknown): /proc on Linux, ps elsewhere."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        pass
    try:
        result = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return result.stdout


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
